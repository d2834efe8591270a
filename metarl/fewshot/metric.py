"""Metric-learning baselines: prototypical networks and matching networks, on ``Conv4`` embeddings.

These do not adapt parameters per task: a task is solved by comparing query embeddings with support embeddings.
Each is a loss function of ``(params, episode)`` (``episode = (support_x, support_y, query_x, query_y)``, one task, or a
batch of tasks with a leading task axis: the loss is then the mean over tasks) to be minimised with Adam, plus an
accuracy function of the same arguments. Support and query are embedded in separate forward calls (batch-statistics
batch norm, see ``models``), so query images never influence the support embeddings.

- Prototypical networks (Snell et al., 2017): prototype of class ``c`` = mean support embedding of class ``c``;
  logits = minus the squared Euclidean distance from each query embedding to each prototype.
- Matching networks (Vinyals et al., 2016), the simple version: one shared embedding ``f = g`` and *no* full-context
  embeddings (no LSTM over the support set, no attention-LSTM over the query). ``p(y=c | x) = sum_i a(x, x_i) [y_i=c]``
  with attention ``a = softmax_i(scale * cos(f(x), g(x_i)))``. The functions return ``log p`` as logits (they are
  already normalised, so cross entropy on them is the paper's negative log-likelihood). ``scale=1`` is the paper's
  plain cosine; a larger scale (an inverse temperature, e.g. 10) sharpens the attention and usually trains faster.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

Params = dict[str, Tensor]
Episode = tuple[Tensor, Tensor, Tensor, Tensor]
EpisodeFn = Callable[[Params, Episode], Tensor]


def _one_hot(labels: Tensor, n_way: int, dtype: torch.dtype) -> Tensor:
    """``[S] -> [S, n_way]``; written as a comparison so that it also works under ``torch.func.vmap``."""
    return (labels[:, None] == torch.arange(n_way, device=labels.device)).to(dtype)


def prototypes(support_emb: Tensor, support_y: Tensor, n_way: int) -> Tensor:
    """Mean support embedding per class: ``[S, D], [S] -> [n_way, D]`` (every class needs >= 1 support example)."""
    one_hot = _one_hot(support_y, n_way, support_emb.dtype)
    return one_hot.T @ support_emb / one_hot.sum(0)[:, None]


def prototypical_logits(support_emb: Tensor, support_y: Tensor, query_emb: Tensor, n_way: int) -> Tensor:
    """``-||query - prototype_c||^2``: ``[Q, n_way]`` logits from embeddings."""
    protos = prototypes(support_emb, support_y, n_way)
    return -((query_emb[:, None, :] - protos[None, :, :]) ** 2).sum(-1)


def matching_log_probs(
    support_emb: Tensor, support_y: Tensor, query_emb: Tensor, n_way: int, scale: float = 1.0
) -> Tensor:
    """``log p(y=c | query)`` ``[Q, n_way]`` under cosine attention over the support set (see module docstring)."""
    sim = scale * F.normalize(query_emb, dim=-1) @ F.normalize(support_emb, dim=-1).T  # [Q, S]
    in_class = _one_hot(support_y, n_way, torch.bool).T  # [n_way, S]
    per_class = sim[:, None, :].masked_fill(~in_class[None], float("-inf"))  # [Q, n_way, S]
    return torch.logsumexp(per_class, dim=-1) - torch.logsumexp(sim, dim=-1, keepdim=True)


def _embed(model: nn.Module, params: Params, x: Tensor) -> Tensor:
    return functional_call(model, params, (x,), {"embed_only": True})


def episode_logits(
    model: nn.Module, params: Params, episode: Episode, n_way: int, method: str = "proto", scale: float = 1.0
) -> tuple[Tensor, Tensor]:
    """``(logits, query_y)`` of one episode (``[Q, n_way]``, ``[Q]``) or of a batch (``[B, Q, n_way]``, ``[B, Q]``).

    ``method`` is ``"proto"`` or ``"matching"``. Each task's support and query are embedded in separate calls.
    """
    support_x, support_y, query_x, query_y = episode
    if support_x.dim() == 5:  # a batch of tasks: loop, so batch norm never pools statistics across tasks
        per_task = [
            episode_logits(model, params, (support_x[i], support_y[i], query_x[i], query_y[i]), n_way, method, scale)[0]
            for i in range(support_x.shape[0])
        ]
        return torch.stack(per_task), query_y
    s_emb, q_emb = _embed(model, params, support_x), _embed(model, params, query_x)
    if method == "proto":
        return prototypical_logits(s_emb, support_y, q_emb, n_way), query_y
    if method == "matching":
        return matching_log_probs(s_emb, support_y, q_emb, n_way, scale), query_y
    raise ValueError(f"unknown metric method {method!r}; expected 'proto' or 'matching'")


def _loss_fn(model: nn.Module, n_way: int, method: str, scale: float) -> EpisodeFn:
    def loss(params: Params, episode: Episode) -> Tensor:
        logits, labels = episode_logits(model, params, episode, n_way, method, scale)
        return F.cross_entropy(logits.reshape(-1, n_way), labels.reshape(-1))

    return loss


def _accuracy_fn(model: nn.Module, n_way: int, method: str, scale: float) -> EpisodeFn:
    def acc(params: Params, episode: Episode) -> Tensor:
        with torch.no_grad():
            logits, labels = episode_logits(model, params, episode, n_way, method, scale)
            return (logits.argmax(-1) == labels).float().mean()

    return acc


def prototypical_loss(model: nn.Module, n_way: int) -> EpisodeFn:
    """``fn(params, episode) -> cross entropy`` of the prototypical-network logits on the query set."""
    return _loss_fn(model, n_way, "proto", 1.0)


def prototypical_accuracy(model: nn.Module, n_way: int) -> EpisodeFn:
    """``fn(params, episode) -> query accuracy`` of the nearest prototype."""
    return _accuracy_fn(model, n_way, "proto", 1.0)


def matching_loss(model: nn.Module, n_way: int, scale: float = 1.0) -> EpisodeFn:
    """``fn(params, episode) -> -mean log p(query label)`` under the matching-network attention."""
    return _loss_fn(model, n_way, "matching", scale)


def matching_accuracy(model: nn.Module, n_way: int, scale: float = 1.0) -> EpisodeFn:
    """``fn(params, episode) -> query accuracy`` of the matching-network prediction."""
    return _accuracy_fn(model, n_way, "matching", scale)
