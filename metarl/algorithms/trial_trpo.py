"""A TRPO step on a trial agent's policy network, as Duan et al. (2016) trained RL^2 (``rl2.outer: trpo``).

The policy's parameters (the first of the agent's ``parameter_groups``) take one trust-region step on the batch of
whole trials: maximise the importance-weighted surrogate ``mean(rho A) + entropy_coef * mean(entropy)`` over the real
steps, ``rho = pi(a) / pi_old(a)``, subject to the mean ``KL(pi_old || pi) <= trpo.max_kl``, with ``pi_old`` the
policy at the start of the step recomputed on the stored trials. The KL's Hessian enters through exact products:
``trpo.hvp: gauss_newton`` (the default; J^T H J through the action distribution's parameters,
:func:`metarl.trpo.gauss_newton_hvp`, equal to the Hessian at the current parameters) or ``double_backward`` (through
the unrolled GRU, :func:`metarl.trpo.hvp_from_grad`), ``trpo.cg_iters`` conjugate-gradient
iterations with ``trpo.cg_damping``, then :func:`metarl.trpo.backtracking_line_search` (``trpo.ls_max_steps``,
``trpo.ls_backtrack_ratio``) accepts a step only if the surrogate improves and the KL stays within ``max_kl``.
The value network is fitted afterwards on its own (:func:`fit_value`: the config's epochs and minibatches of Adam on
the value loss), which is why this needs the value on a network of its own (``rl2.separate_value``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.nn.utils import clip_grad_norm_, parameters_to_vector

from metarl.config_sections import TRPOConfig
from metarl.trpo import (
    backtracking_line_search,
    conjugate_gradient,
    flat_grad,
    gauss_newton_hvp,
    hvp_from_grad,
    trust_region_step,
    unflatten,
)

# trials -> (action distribution parameters [L, K, T, ...]); runs the agent's unroll
Unroll = Callable[[dict[str, Tensor]], tuple]


def _assign(params: list[torch.nn.Parameter], vector: Tensor) -> None:
    """Copy a flat vector into the parameters in place (the optimizer keeps tracking the same tensors)."""
    with torch.no_grad():
        for p, value in zip(params, unflatten(vector, params), strict=True):
            p.copy_(value)


def trpo_policy_step(
    policy: torch.nn.Module,
    params: list[torch.nn.Parameter],
    unroll: Unroll,
    trials: dict[str, Tensor],
    advantages: Tensor,
    mask: Tensor,
    trpo: TRPOConfig,
    entropy_coef: float = 0.0,
    fisher_stride: int = 1,
) -> dict[str, float]:
    """One TRPO step of ``params`` (updated in place); ``advantages`` and ``mask`` are ``[L, K * T]``. Returns the
    step's metrics: surrogate before and after, the KL after, line-search steps, accepted, entropy.
    ``fisher_stride``: the KL's curvature (the conjugate-gradient products, most of the step's cost) is measured on
    every ``fisher_stride``-th trial only; the gradient, the line search and its KL test use the whole batch."""
    num = mask.shape[0]
    count = mask.sum().clamp(min=1.0)
    actions = trials["actions"]

    def flat(x: Tensor) -> Tensor:
        return x.reshape(num, -1)

    dist = unroll(trials)  # one forward: its detached copy is pi_old, the graph gives the gradient and curvature
    old = tuple(t.detach() for t in dist)
    old_log_probs = flat(policy.log_prob(old, actions))

    def surrogate_and_kl(dist: tuple) -> tuple[Tensor, Tensor, Tensor]:
        ratio = torch.exp(flat(policy.log_prob(dist, actions)) - old_log_probs)
        entropy = (flat(policy.entropy(dist)) * mask).sum() / count
        surrogate = (ratio * advantages * mask).sum() / count + entropy_coef * entropy
        kl = (flat(policy.kl(old, dist)) * mask).sum() / count
        return surrogate, kl, entropy

    x0 = parameters_to_vector(params).detach()
    surrogate, _, entropy = surrogate_and_kl(dist)
    gradient = flat_grad(surrogate, params, retain_graph=True)
    if fisher_stride > 1:  # the curvature from a subset of the trials: its own forward pass
        rows = torch.arange(0, num, fisher_stride, device=mask.device)
        part = {key: value[rows] for key, value in trials.items()}
        c_old, c_mask, c_dist = tuple(t[rows] for t in old), mask[rows], unroll(part)
    else:
        c_old, c_mask, c_dist = old, mask, dist

    def mean_kl(d: tuple) -> Tensor:
        return (policy.kl(c_old, d).reshape(c_mask.shape) * c_mask).sum() / c_mask.sum().clamp(min=1.0)

    if trpo.hvp == "gauss_newton":  # exact at x0 (the KL's gradient in the outputs vanishes there), cheaper
        hvp = gauss_newton_hvp(c_dist, params, mean_kl, trpo.cg_damping)
    else:
        hvp = hvp_from_grad(flat_grad(mean_kl(c_dist), params, create_graph=True), params, trpo.cg_damping)
    direction, product = conjugate_gradient(hvp, gradient, trpo.cg_iters, return_product=True)
    step = trust_region_step(direction, hvp, trpo.max_kl, product)
    before = float(surrogate.detach())
    del dist, c_dist, hvp

    def evaluate(x: Tensor) -> tuple[float, float]:
        _assign(params, x)
        with torch.no_grad():
            s, k, _ = surrogate_and_kl(unroll(trials))
        return float(s), float(k)

    metrics = {"surrogate_before": before, "entropy": float(entropy.detach()), "grad_norm": float(gradient.norm())}
    if step is None:  # no usable curvature: the parameters were never moved
        return {**metrics, "surrogate_after": before, "kl": 0.0, "line_search_steps": 0.0, "accepted": 0.0}
    result = backtracking_line_search(
        evaluate, x0, step, before, trpo.max_kl, trpo.ls_max_steps, trpo.ls_backtrack_ratio
    )
    _assign(params, result.x)
    return {
        **metrics,
        "surrogate_after": result.surrogate,
        "kl": result.kl,
        "line_search_steps": float(result.steps),
        "accepted": float(result.accepted),
        "step_fraction": result.fraction,
    }


def fit_value(
    policy: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    trials: dict[str, Tensor],
    returns: Tensor,
    mask: Tensor,
    section: Any,
    value_scale: float,
    seed: int,
) -> dict[str, float]:
    """``section.epochs`` passes of Adam on the value loss alone, in ``section.minibatches`` minibatches of whole
    trials (shuffled from ``seed``), the value network's gradient norm clipped; only the value GRU is unrolled."""
    num = mask.shape[0]
    value_params = policy.parameter_groups()[1]
    generator = torch.Generator().manual_seed(int(seed))
    sizes = [len(part) for part in np.array_split(np.arange(num), min(section.minibatches, num))]
    total, updates, norm = 0.0, 0, 0.0
    for _ in range(section.epochs):
        order = torch.randperm(num, generator=generator).to(mask.device)
        for part in torch.split(order, sizes):
            sub = {key: value[part] for key, value in trials.items()}
            values = policy.unroll(sub["obs"], sub["actions"], sub["rewards"], sub["mask"], parts="value")[1]
            m = mask[part]
            value_loss = (
                0.5 * ((values.reshape(len(part), -1) - returns[part]).pow(2) * m).sum() / m.sum().clamp(min=1.0)
            )
            optimizer.zero_grad(set_to_none=True)
            (section.value_coef * value_scale * value_loss).backward()
            norm = float(clip_grad_norm_(value_params, section.max_grad_norm))
            optimizer.step()
            total += float(value_loss.detach())
            updates += 1
    return {"value_loss": total / updates, "value_grad_norm": norm}


def trpo_update(
    policy: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    trials: dict[str, Tensor],
    advantages: Tensor,
    returns: Tensor,
    mask: Tensor,
    trpo: TRPOConfig,
    section: Any,
    value_scale: float,
    seed: int,
) -> dict[str, float]:
    """One TRPO step of the policy network (:func:`trpo_policy_step`), then :func:`fit_value` on the value network;
    both from the same batch and advantages (computed with the value before its fit)."""

    def unroll(t: dict[str, Tensor]) -> tuple:
        return policy.unroll(t["obs"], t["actions"], t["rewards"], t["mask"], parts="policy")[0]

    metrics = trpo_policy_step(
        policy,
        policy.parameter_groups()[0],
        unroll,
        trials,
        advantages,
        mask,
        trpo,
        section.entropy_coef,
        section.fisher_stride,
    )
    return {**metrics, **fit_value(policy, optimizer, trials, returns, mask, section, value_scale, seed)}
