"""Relation network and Siamese network as few-shot methods, with the surface the training loop and evaluation use.

- ``relationnet`` (:class:`RelationMethod`, Sung et al. 2018): Adam on the MSE between the relation scores of an
  episode's (query, class) pairs and the one-hot query labels, the paper's loss; gradient norms clipped to 0.5 per
  module (encoder, relation module) as in the paper's code. ``meta_batch_size`` episodes per update (paper: 1).
- ``siamese`` (:class:`SiameseMethod`, Koch et al. 2015): Adam on the binary cross entropy of same/different pairs
  drawn from the training alphabets (:mod:`metarl.fewshot.pairs`, ``meta_batch_size`` pairs per update; paper: 128).
  Nothing is trained on episodes; validation and test are N-way one-shot episodes solved by nearest match.

Like the metric baselines, nothing adapts at test time: ``adaptation_curve`` gives one accuracy per task
(``[tasks, 1]``), and the query labels of an episode are used only to score the prediction.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import Config
from .comparison import RelationNet, SiameseNet, one_hot
from .episodic import AdamTrainedMethod
from .pairs import PairBatch
from .problem import FewShotProblem
from .tasks import FewShotBatch

Episode = tuple[Tensor, Tensor, Tensor, Tensor]

RELATION_CLIP = 0.5
"""Gradient-norm clip per module in the relation network's code (``clip_grad_norm_(..., 0.5)``)."""


class ComparisonMethod(AdamTrainedMethod, ABC):
    """What both methods share besides the model and Adam: the episode loop, scoring of test episodes."""

    model: RelationNet | SiameseNet

    @abstractmethod
    def class_scores(self, episode: Episode, n_way: int) -> Tensor:
        """``[Q, n_way]`` scores of one episode (higher = more likely); the prediction is their argmax."""

    @abstractmethod
    def episode_loss(self, scores: Tensor, query_y: Tensor, n_way: int) -> Tensor:
        """The method's loss on one episode's class scores."""

    def _episodes(self, batch: FewShotBatch, n_way: int) -> tuple[Tensor, Tensor]:
        """Mean loss and accuracy over the batch's episodes (one forward per episode: batch norm stays per task)."""
        losses, accs = [], []
        for i in range(len(batch)):
            episode = batch.episode(i)
            scores = self.class_scores(episode, n_way)
            losses.append(self.episode_loss(scores, episode[3], n_way))
            accs.append((scores.detach().argmax(-1) == episode[3]).float().mean())
        return torch.stack(losses).mean(), torch.stack(accs).mean()

    def query_loss(self, batch: FewShotBatch) -> tuple[float, float]:
        """``(loss, accuracy)`` of test-way episodes (``n_way``), without updating anything."""
        with torch.no_grad():
            loss, acc = self._episodes(batch, self.problem.n_way)
        return float(loss), float(acc)

    def adaptation_curve(self, batch: FewShotBatch, steps: int = 0) -> np.ndarray:
        """Per-task query accuracy ``[tasks, 1]`` (nothing adapts: ``steps`` is ignored)."""
        out = np.zeros((len(batch), 1))
        with torch.no_grad():
            for i in range(len(batch)):
                episode = batch.episode(i)
                scores = self.class_scores(episode, self.problem.n_way)
                out[i, 0] = float((scores.argmax(-1) == episode[3]).float().mean())
        return out


class RelationMethod(ComparisonMethod):
    """Sung et al. 2018: relation scores in [0, 1], MSE to the one-hot labels, Adam (see the module docstring)."""

    model: RelationNet

    def class_scores(self, episode: Episode, n_way: int) -> Tensor:
        support_x, support_y, query_x, _ = episode  # the query labels are not an input
        return self.model(support_x, support_y, query_x, n_way)

    def episode_loss(self, scores: Tensor, query_y: Tensor, n_way: int) -> Tensor:
        return F.mse_loss(scores, one_hot(query_y, n_way, scores.dtype))

    def train_step(self, batch: FewShotBatch, iteration: int) -> dict[str, float]:
        lr = self.set_lr(iteration)
        loss, acc = self._episodes(batch, self.problem.train_ways)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        encoder = list(self.model.encoder.parameters())
        relation = [p for n, p in self.model.named_parameters() if not n.startswith("encoder.")]
        nn.utils.clip_grad_norm_(encoder, RELATION_CLIP)
        nn.utils.clip_grad_norm_(relation, RELATION_CLIP)
        self.optimizer.step()
        return {"loss": float(loss.detach()), "metric": float(acc), "lr": lr}


class SiameseMethod(ComparisonMethod):
    """Koch et al. 2015: verification on pairs in training, nearest match on episodes (see the module docstring)."""

    model: SiameseNet

    def class_scores(self, episode: Episode, n_way: int) -> Tensor:
        support_x, support_y, query_x, _ = episode  # the query labels are not an input
        return self.model.class_logits(support_x, support_y, query_x, n_way)

    def episode_loss(self, scores: Tensor, query_y: Tensor, n_way: int) -> Tensor:
        """Binary cross entropy of the (query, class) "same" logits: the training loss, on episode pairs."""
        return F.binary_cross_entropy_with_logits(scores, one_hot(query_y, n_way, scores.dtype))

    def train_step(self, batch: PairBatch, iteration: int) -> dict[str, float]:
        """One Adam step on the verification loss of ``batch``; the metric is the pairs' verification accuracy."""
        if not isinstance(batch, PairBatch):
            raise TypeError(f"the Siamese network trains on PairBatch pairs, got {type(batch).__name__}")
        lr = self.set_lr(iteration)
        logits = self.model(batch.x1, batch.x2)
        loss = F.binary_cross_entropy_with_logits(logits, batch.same)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        accuracy = ((logits.detach() > 0).float() == batch.same).float().mean()
        return {"loss": float(loss.detach()), "metric": float(accuracy), "lr": lr}


def build_comparison_method(
    config: Config, problem: FewShotProblem, device: torch.device, dtype: torch.dtype = torch.float32
) -> ComparisonMethod:
    """``relationnet`` or ``siamese`` with a freshly initialised model."""
    if config.algorithm == "relationnet":
        return RelationMethod(config, problem, device, dtype)
    if config.algorithm == "siamese":
        return SiameseMethod(config, problem, device, dtype)
    raise ValueError(f"not a comparison method: {config.algorithm!r}")
