"""Returns, baselines and advantages on padded episode tensors.

Every function works on tensors shaped ``[N, E, T]`` (tasks, episodes, steps) with a ``mask`` that is 1 for steps
that happened and 0 after an episode ended, so a batch of many tasks is handled in one call and padded steps
contribute nothing. None of this is differentiated: advantages are constants of the policy-gradient losses.
"""

from __future__ import annotations

import torch
from torch import Tensor


def masked_mean(x: Tensor, mask: Tensor, dim: int | tuple[int, ...] | None = None) -> Tensor:
    """Mean of ``x`` over the steps where ``mask`` is 1 (over ``dim``, or everything when ``dim`` is None)."""
    if dim is None:
        return (x * mask).sum() / mask.sum().clamp(min=1.0)
    return (x * mask).sum(dim) / mask.sum(dim).clamp(min=1.0)


def discounted_returns(rewards: Tensor, mask: Tensor, gamma: float) -> Tensor:
    """Reward-to-go ``G_t = sum_{k>=t} gamma^(k-t) r_k`` over valid steps; 0 on padded steps. Shape ``[..., T]``."""
    rewards = rewards * mask
    returns = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[..., 0])
    for t in range(rewards.shape[-1] - 1, -1, -1):
        running = rewards[..., t] + gamma * running * mask[..., t]
        returns[..., t] = running
    return returns * mask


def gae(rewards: Tensor, values: Tensor, mask: Tensor, gamma: float, lam: float = 1.0) -> Tensor:
    """Generalised advantage estimation (Schulman et al. 2016) on ``[..., T]`` tensors.

    ``delta_t = r_t + gamma V_{t+1} - V_t`` with ``V`` taken as 0 after the last valid step (the episode ended, or the
    horizon cut it: MAML bootstraps neither), and ``A_t = sum_k (gamma lam)^k delta_{t+k}``. With ``lam = 1`` (the
    MAML paper's choice) this is exactly ``discounted_returns - values``.
    """
    rewards, values = rewards * mask, values * mask
    next_values = torch.cat([values[..., 1:], torch.zeros_like(values[..., :1])], dim=-1)
    deltas = rewards + gamma * next_values - values
    advantages = torch.zeros_like(deltas)
    running = torch.zeros_like(deltas[..., 0])
    for t in range(deltas.shape[-1] - 1, -1, -1):
        running = deltas[..., t] + gamma * lam * running * mask[..., t]
        advantages[..., t] = running
    return advantages * mask


def normalize_advantages(advantages: Tensor, mask: Tensor, eps: float = 1e-8) -> Tensor:
    """Per task (leading axis) zero mean, unit std over valid steps; padded steps stay 0."""
    dims = tuple(range(1, advantages.dim()))
    count = mask.sum(dims, keepdim=True).clamp(min=1.0)
    mean = (advantages * mask).sum(dims, keepdim=True) / count
    var = ((advantages - mean).pow(2) * mask).sum(dims, keepdim=True) / count
    return (advantages - mean) / (var.sqrt() + eps) * mask


class LinearFeatureBaseline:
    """rllab's linear value baseline, fitted per task by ridge least squares, batched over tasks.

    Features of a step: ``[o, o^2, s, s^2, s^3, 1]`` with ``o`` the observation clipped to ``[-obs_clip, obs_clip]``
    (as rllab does) and ``s = t / 100`` the scaled time index. The fit solves ``(X^T X + reg I) w = X^T y`` in float64
    on the valid steps of each task's episodes; if the Cholesky factorisation fails or the solution is not finite, the
    regulariser grows 10x (rllab: from 1e-5, up to 5 tries) and a pseudo-inverse is the last resort.
    """

    def __init__(self, reg_coeff: float = 1e-5, max_tries: int = 5, obs_clip: float = 10.0, time_scale: float = 100.0):
        self.reg_coeff, self.max_tries = reg_coeff, max_tries
        self.obs_clip, self.time_scale = obs_clip, time_scale
        self.coeffs: Tensor | None = None

    def features(self, observations: Tensor, mask: Tensor) -> Tensor:
        """``[N, E, T, 2 * obs_dim + 4]`` features; rows of padded steps are zero."""
        obs = observations.clamp(-self.obs_clip, self.obs_clip)
        steps = torch.arange(mask.shape[-1], device=mask.device, dtype=obs.dtype) / self.time_scale
        time = steps.expand(mask.shape).unsqueeze(-1)
        ones = torch.ones_like(time)
        feats = torch.cat([obs, obs.pow(2), time, time.pow(2), time.pow(3), ones], dim=-1)
        return feats * mask.unsqueeze(-1).to(feats.dtype)

    def fit(self, observations: Tensor, returns: Tensor, mask: Tensor) -> Tensor:
        """Fit one coefficient vector per task to ``returns`` (``[N, E, T]``); returns coeffs ``[N, F]`` (float64)."""
        feats = self.features(observations, mask).double().flatten(1, 2)  # [N, E*T, F]
        targets = (returns * mask).double().flatten(1, 2)  # [N, E*T]
        gram = feats.transpose(1, 2) @ feats  # [N, F, F]
        rhs = (feats.transpose(1, 2) @ targets.unsqueeze(-1)).squeeze(-1)  # [N, F]
        eye = torch.eye(gram.shape[-1], dtype=gram.dtype, device=gram.device)
        reg = torch.full((gram.shape[0],), float(self.reg_coeff), dtype=gram.dtype, device=gram.device)
        coeffs = torch.zeros_like(rhs)
        todo = torch.ones(gram.shape[0], dtype=torch.bool, device=gram.device)
        for _ in range(self.max_tries):
            chol, info = torch.linalg.cholesky_ex(gram + reg[:, None, None] * eye)
            sol = torch.cholesky_solve(rhs.unsqueeze(-1), chol).squeeze(-1)
            good = (info == 0) & torch.isfinite(sol).all(-1)
            coeffs = torch.where((todo & good)[:, None], sol, coeffs)
            todo = todo & ~good
            if not bool(todo.any()):
                break
            reg = torch.where(todo, reg * 10.0, reg)
        if bool(todo.any()):  # still ill-conditioned: minimum-norm least squares
            sol = (torch.linalg.pinv(gram + reg[:, None, None] * eye) @ rhs.unsqueeze(-1)).squeeze(-1)
            coeffs = torch.where(todo[:, None], sol, coeffs)
        self.coeffs = coeffs
        return coeffs

    def predict(self, observations: Tensor, mask: Tensor) -> Tensor:
        """Values ``[N, E, T]`` under the fitted coefficients (zeros before any fit, and on padded steps)."""
        if self.coeffs is None:
            return torch.zeros_like(mask, dtype=observations.dtype)
        feats = self.features(observations, mask).double()
        values = (feats @ self.coeffs[:, None, :, None]).squeeze(-1)
        return values.to(observations.dtype) * mask


@torch.no_grad()
def compute_advantages(
    observations: Tensor,
    rewards: Tensor,
    mask: Tensor,
    gamma: float = 0.99,
    gae_lambda: float = 1.0,
    normalize: bool = True,
    baseline: LinearFeatureBaseline | None = None,
) -> Tensor:
    """Advantages ``[N, E, T]`` of a batch: fit the baseline per task on these episodes, then GAE (+ normalisation).

    The baseline is fitted on the same episodes whose advantages it shapes, as in the MAML and ProMP code (support
    episodes for the inner loss, query episodes for the outer surrogate).
    """
    baseline = baseline if baseline is not None else LinearFeatureBaseline()
    returns = discounted_returns(rewards, mask, gamma)
    baseline.fit(observations, returns, mask)
    values = baseline.predict(observations, mask)
    advantages = gae(rewards, values, mask, gamma, gae_lambda)
    return normalize_advantages(advantages, mask) if normalize else advantages
