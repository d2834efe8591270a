"""Policy-gradient losses on one task's episodes, as functions of (params, batch) for the meta-learner.

A *batch* here is a dict of one task's tensors (episodes ``E`` by steps ``T``): ``observations [E, T, obs_dim]``,
``actions [E, T, act_dim]`` or ``[E, T]``, ``mask [E, T]`` and ``advantages [E, T]`` (constants, computed from the
episodes beforehand with :func:`metarl.advantages.compute_advantages`). The policy is called functionally, so the
same loss serves the pre-update params and the adapted ones, and works under ``torch.func.vmap``. With params stacked
over tasks (a leading task axis ``N`` on every parameter and every batch tensor) all tasks run in one graph and each
loss returns one value per task, ``[N]``.

Bind the policy with ``functools.partial(reinforce_loss, policy)`` to get the learner's ``loss_fn(params, batch)``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call

from metarl.advantages import masked_mean
from metarl.policies import is_stacked

Params = dict[str, Tensor]
Dist = tuple[Tensor, ...]
Batch = dict[str, Tensor]


def distribution(policy: nn.Module, params: Params, observations: Tensor) -> Dist:
    """The policy's distribution parameters at ``observations`` under ``params``.

    Stacked params (a leading task axis, see :func:`metarl.policies.is_stacked`) run every task in one batched call
    of the policy's ``forward_stacked``; observations then lead with the same task axis.
    """
    if is_stacked(policy, params):
        return policy.forward_stacked(params, observations)
    return functional_call(policy, params, (observations,))


def task_mean(x: Tensor, mask: Tensor) -> Tensor:
    """Mean over one task's valid steps (the trailing episode and time axes): a scalar, or ``[N]`` when stacked."""
    return masked_mean(x, mask, dim=(-2, -1))


def log_prob(policy: nn.Module, params: Params, batch: Batch) -> Tensor:
    """``log pi(a_t | s_t)`` of the batch's actions under ``params``, shape ``[E, T]``."""
    return policy.log_prob(distribution(policy, params, batch["observations"]), batch["actions"])


def reinforce_loss(policy: nn.Module, params: Params, batch: Batch) -> Tensor:
    """The MAML paper's inner loss: ``-mean_valid(log pi(a|s) * A)``.

    Its gradient is the policy gradient. Differentiated twice (MAML's second-order term) it yields only
    ``E[grad^2 log pi * A]``: autodiff drops the ``E[grad log pi grad log pi^T A]`` part of the true Hessian of the
    expected return, because the sampling distribution's dependence on the params is invisible to it.
    """
    return -task_mean(log_prob(policy, params, batch) * batch["advantages"], batch["mask"])


def lvc_loss(policy: nn.Module, params: Params, batch: Batch) -> Tensor:
    """ProMP's low-variance curvature (LVC) inner loss: ``-mean_valid(pi / stop_grad(pi) * A)``.

    Value and gradient equal :func:`reinforce_loss`'s at the sampling params (the ratio is 1, its gradient is
    ``grad log pi``). The Hessian differs: per step it is ``(grad^2 log pi + grad log pi grad log pi^T) * A``, so it
    restores the score outer-product term REINFORCE's autodiff Hessian misses, while, unlike DiCE's unbiased
    estimator, it leaves out the products of score functions *across* time steps, whose variance grows with the
    horizon. Rothfuss et al. 2019 (ProMP, Sec. 5) show its Hessian estimate has far lower variance than DiCE's at a
    small bias, and that it gives better meta-gradients than MAML's REINFORCE inner loss; pick it when the
    second-order term matters and the episodes are long.
    """
    logp = log_prob(policy, params, batch)
    ratio = torch.exp(logp - logp.detach())
    return -task_mean(ratio * batch["advantages"], batch["mask"])


INNER_LOSSES = {"reinforce": reinforce_loss, "lvc": lvc_loss}


def detach_dist(dist: Dist) -> Dist:
    """Distribution parameters cut from the graph (the fixed "old" policy of TRPO)."""
    return tuple(d.detach() for d in dist)


def surrogate_and_kl(
    policy: nn.Module, params: Params, batch: Batch, old_dist: Dist | None = None
) -> tuple[Tensor, Tensor, Dist]:
    """TRPO's outer terms on one task's query episodes under (adapted) ``params``.

    surrogate: ``mean_valid(exp(log pi_new - log pi_old) * A)`` (to maximise);
    kl: ``mean_valid KL(pi_old || pi_new)``;
    old_dist: the fixed old distribution used. When ``old_dist`` is None the new distribution, detached, is the old
    one: the ratio is then 1 and the KL 0 in value, while their derivatives (policy gradient, Fisher) are exact.
    """
    return trpo_terms(policy, distribution(policy, params, batch["observations"]), batch, old_dist)


def trpo_terms(
    policy: nn.Module, new_dist: Dist, batch: Batch, old_dist: Dist | None = None
) -> tuple[Tensor, Tensor, Dist]:
    """:func:`surrogate_and_kl` from the new distribution itself (e.g. stacked over tasks: values per task)."""
    if old_dist is None:
        old_dist = detach_dist(new_dist)
    actions, mask = batch["actions"], batch["mask"]
    log_ratio = policy.log_prob(new_dist, actions) - policy.log_prob(old_dist, actions)
    surrogate = task_mean(torch.exp(log_ratio) * batch["advantages"], mask)
    kl = task_mean(policy.kl(old_dist, new_dist), mask)
    return surrogate, kl, old_dist


def inner_loss_fn(name: str) -> Any:
    """The inner loss called ``name`` ("reinforce" or "lvc"), with a clear error otherwise."""
    if name not in INNER_LOSSES:
        raise ValueError(f"unknown inner_loss {name!r}; choose one of {sorted(INNER_LOSSES)}")
    return INNER_LOSSES[name]
