"""PPO pieces for trial-based agents (RL^2): GAE over a whole trial and the clipped surrogate.

Tensors are ``[L, S]``: ``L`` trials of ``S`` steps (all episodes of the trial in order) with a ``mask`` that is 1
for steps that happened. A trial is one long episode for the outer loop (Duan et al. 2016): the discount and the
advantage run across episode boundaries, and nothing is bootstrapped after the trial's last step. Steps with mask 0
(after an early termination) are skipped: the step before them sees the value of the next real step.
"""

from __future__ import annotations

import torch
from torch import Tensor


def trial_gae(rewards: Tensor, values: Tensor, mask: Tensor, gamma: float, lam: float) -> tuple[Tensor, Tensor]:
    """GAE (Schulman et al. 2016) per trial: ``delta_s = r_s + gamma V_next - V_s``, ``A_s = delta_s + gamma lam
    A_next`` over the real steps, ``V = 0`` after the last. Returns ``(advantages, returns = A + V)``, 0 where
    masked."""
    advantages = torch.zeros_like(rewards)
    next_value = torch.zeros_like(rewards[:, 0])
    running = torch.zeros_like(rewards[:, 0])
    for s in range(rewards.shape[1] - 1, -1, -1):
        real = mask[:, s] > 0
        delta = rewards[:, s] + gamma * next_value - values[:, s]
        candidate = delta + gamma * lam * running
        running = torch.where(real, candidate, running)
        next_value = torch.where(real, values[:, s], next_value)
        advantages[:, s] = torch.where(real, candidate, torch.zeros_like(candidate))
    return advantages, (advantages + values) * mask


def clipped_surrogate(
    log_probs: Tensor, old_log_probs: Tensor, advantages: Tensor, mask: Tensor, clip: float
) -> Tensor:
    """PPO's loss ``-mean min(rho A, clip(rho, 1 - eps, 1 + eps) A)`` over the real steps, ``rho = exp(logp - old)``."""
    ratio = torch.exp(log_probs - old_log_probs)
    objective = torch.minimum(ratio * advantages, ratio.clamp(1.0 - clip, 1.0 + clip) * advantages)
    return -(objective * mask).sum() / mask.sum().clamp(min=1.0)


def masked_moments(x: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    """Mean and (population) variance of ``x`` over the real steps of the whole batch."""
    count = mask.sum().clamp(min=1.0)
    mean = (x * mask).sum() / count
    return mean, ((x - mean) * mask).pow(2).sum() / count


def masked_normalize(x: Tensor, mask: Tensor, eps: float = 1e-8) -> Tensor:
    """Zero mean, unit std over the real steps of the whole batch; masked steps stay 0."""
    mean, var = masked_moments(x, mask)
    return (x - mean) / (var.sqrt() + eps) * mask
