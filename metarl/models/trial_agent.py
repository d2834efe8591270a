"""What every trial agent (RL^2's GRU, SNAIL) shares: its per-step input and the action-distribution API.

The input convention is :mod:`metarl.recurrent`'s: at every step an agent reads ``concat(obs, prev_action,
prev_reward, prev_done)`` (the previous action one-hot when discrete, all zeros / zeros at the first step of a
trial). :func:`trial_inputs` rebuilds those previous-step inputs for whole recorded trials exactly as the sampler fed
them, so an agent's full-sequence recomputation sees what it saw while acting.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from metarl.policies import CategoricalMLPPolicy, Dist, GaussianMLPPolicy
from metarl.recurrent import NO_ACTION


def step_features(
    obs: Tensor, prev_action: Tensor, prev_reward: Tensor, prev_done: Tensor, discrete: bool, action_dim: int
) -> Tensor:
    """The agent's input ``[..., obs_dim + action_dim + 2]``; a discrete ``prev_action`` of -1: all-zero one-hot."""
    if discrete:
        arms = torch.arange(action_dim, device=obs.device)
        action = (prev_action.long().unsqueeze(-1) == arms).to(obs.dtype)
    else:
        action = prev_action.to(obs.dtype)
    reward, done = prev_reward.unsqueeze(-1).to(obs.dtype), prev_done.unsqueeze(-1).to(obs.dtype)
    return torch.cat([obs, action, reward, done], dim=-1)


def trial_inputs(
    actions: Tensor, rewards: Tensor, mask: Tensor, discrete: bool, action_dim: int
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """For trials ``actions [L, K, T(, A)]``, ``rewards`` / ``mask [L, K, T]``: the previous action, reward and done
    flag each step saw (``[L, K * T, ...]``) and which steps happened (``[L, K * T]`` bool). A step ended its episode
    when the next step of the episode did not happen or it was the horizon's last; steps after an early termination
    leave the inputs unchanged."""
    lanes, k, horizon = rewards.shape
    flat = (lanes, k * horizon)
    real = rewards.dtype if rewards.is_floating_point() else torch.float32  # float64 trials stay float64
    rewards, mask = rewards.to(real).reshape(flat), mask.to(real).reshape(flat)
    actions = actions.reshape(*flat, *actions.shape[3:])
    ended = torch.ones(lanes, k, horizon, dtype=torch.bool, device=mask.device)
    ended[..., :-1] = mask.reshape(lanes, k, horizon)[..., 1:] == 0
    ended = ended.reshape(flat).to(real)
    if discrete:
        prev_a = torch.full((lanes,), NO_ACTION, dtype=torch.long, device=mask.device)
    else:
        prev_a = torch.zeros(lanes, action_dim, dtype=real, device=mask.device)
    prev_r, prev_d = torch.zeros(lanes, dtype=real, device=mask.device), torch.zeros_like(mask[:, 0])
    inputs: list[tuple[Tensor, Tensor, Tensor]] = []
    active = mask > 0
    for s in range(flat[1]):  # the inputs of step s: the last real step before it (cheap tensor ops only)
        inputs.append((prev_a, prev_r, prev_d))
        a = active[:, s]
        taken = actions[:, s].long() if discrete else actions[:, s].to(real)
        prev_a = torch.where(a.view(-1, *([1] * (taken.dim() - 1))), taken, prev_a)
        prev_r = torch.where(a, rewards[:, s], prev_r)
        prev_d = torch.where(a, ended[:, s], prev_d)
    pa, pr, pd = (torch.stack(x, dim=1) for x in zip(*inputs, strict=True))
    return pa, pr, pd, active


class TrialDistributions:
    """The distribution API the sampler and learners call (categorical or Gaussian), for agents with ``discrete``
    and ``action_dim``."""

    discrete: bool
    action_dim: int

    def parameter_groups(self) -> list[list[torch.nn.Parameter]]:
        """Parameter groups whose gradient norms a learner clips separately (default: one, all parameters)."""
        return [list(self.parameters())]  # type: ignore[attr-defined]

    def _family(self) -> type:
        return CategoricalMLPPolicy if self.discrete else GaussianMLPPolicy

    def draw_noise(self, rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
        """Uniform noise per step (discrete: inverse CDF) or standard normal ``shape + (action_dim,)``."""
        if self.discrete:
            return rng.random(shape).astype(np.float32)
        return rng.standard_normal(shape + (self.action_dim,)).astype(np.float32)

    def sample(self, dist: Dist, noise: Tensor) -> Tensor:
        return self._family().sample(dist, noise)

    def mode(self, dist: Dist) -> Tensor:
        return self._family().mode(dist)

    def log_prob(self, dist: Dist, actions: Tensor) -> Tensor:
        return self._family().log_prob(dist, actions)

    def kl(self, old: Dist, new: Dist) -> Tensor:
        return self._family().kl(old, new)

    def entropy(self, dist: Dist) -> Tensor:
        return self._family().entropy(dist)
