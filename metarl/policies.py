"""Stochastic MLP policies, written to be called functionally.

A policy is an ``nn.Module`` whose ``forward(obs)`` returns *distribution parameters* as a tuple of tensors
(Gaussian: ``(mean, log_std)``; categorical: ``(logits,)``). Everything else is a method on those tuples, so the same
code serves the sampler (actions from pre-drawn noise), the learners (log-probabilities under adapted parameters via
``torch.func.functional_call``) and TRPO (KL between old and new distributions).

Actions are a deterministic function of distribution parameters and noise drawn by the caller from a seeded NumPy
generator (``draw_noise``). That is what makes sampling reproducible whatever the batching or worker count.
The Gaussian is hand-written: ``torch.distributions.Normal`` costs ~45 us per call at small batch (DESIGN.md).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor, nn

if TYPE_CHECKING:
    import gymnasium

Dist = tuple[Tensor, ...]
Params = dict[str, Tensor]

ACTIVATIONS = {"tanh": nn.Tanh, "relu": nn.ReLU}
LOG_2PI = math.log(2.0 * math.pi)


def mlp(in_dim: int, out_dim: int, hidden_sizes: tuple[int, ...], activation: str) -> nn.Sequential:
    """A plain MLP: Linear -> activation per hidden layer, then a linear output layer."""
    layers: list[nn.Module] = []
    last = in_dim
    for size in hidden_sizes:
        layers += [nn.Linear(last, size), ACTIVATIONS[activation]()]
        last = size
    layers.append(nn.Linear(last, out_dim))
    return nn.Sequential(*layers)


def stacked_mlp(net: nn.Sequential, prefix: str, params: Params, x: Tensor) -> Tensor:
    """:func:`mlp` ``net`` run with per-task parameters stacked along a leading task axis.

    ``params[f"{prefix}.{i}.weight"]`` is ``[N, out, in]``, ``x`` is ``[N, B, in]``; each layer is one batched matmul
    (``baddbmm``), so the number of operator calls does not grow with the number of tasks.
    """
    for i, layer in enumerate(net):
        if isinstance(layer, nn.Linear):
            weight, bias = params[f"{prefix}.{i}.weight"], params[f"{prefix}.{i}.bias"]
            x = torch.baddbmm(bias.unsqueeze(1), x, weight.transpose(1, 2))
        else:
            x = layer(x)
    return x


def is_stacked(policy: nn.Module, params: Params) -> bool:
    """Whether ``params`` carry a leading task axis in front of the policy's own parameter shapes."""
    name, reference = next(iter(policy.named_parameters()))
    return params[name].dim() == reference.dim() + 1


def _flat_tasks(obs: Tensor) -> tuple[Tensor, tuple[int, ...]]:
    """``[N, ..., d]`` observations as ``[N, B, d]``, and the middle shape to restore."""
    return obs.reshape(obs.shape[0], -1, obs.shape[-1]), tuple(obs.shape[1:-1])


class GaussianMLPPolicy(nn.Module):
    """Diagonal Gaussian over continuous actions: MLP mean, state-independent learned log-std (as in MAML).

    ``action_scale`` (fixed, not learned) multiplies the whole distribution: actions are
    ``action_scale * (mlp(obs) + exp(log_std) * noise)``, so ``init_std`` and the parameters live in units of
    ``action_scale``. With the env's action bound as the scale this is the normalized action space of the MAML
    reference code (rllab's ``normalize`` wrapper maps policy outputs in [-1, 1] onto the bounds), which matters for
    Navigation2D, whose velocity bound is 0.1.
    """

    is_stateful = False
    discrete = False

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        hidden_sizes: tuple[int, ...] = (100, 100),
        activation: str = "relu",
        init_std: float = 1.0,
        action_scale: float = 1.0,
    ) -> None:
        super().__init__()
        if not action_scale > 0:
            raise ValueError(f"action_scale must be > 0, got {action_scale}")
        self.obs_dim, self.act_dim = obs_dim, act_dim
        self.action_scale = float(action_scale)
        self.mean = mlp(obs_dim, act_dim, tuple(hidden_sizes), activation)
        self.log_std = nn.Parameter(torch.full((act_dim,), math.log(init_std)))

    def forward(self, obs: Tensor) -> Dist:
        mean, log_std = self.mean(obs), self.log_std
        if self.action_scale != 1.0:
            mean, log_std = mean * self.action_scale, log_std + math.log(self.action_scale)
        return mean, log_std.expand_as(mean)

    def forward_stacked(self, params: Params, obs: Tensor) -> Dist:
        """:meth:`forward` with per-task params stacked on a leading task axis; ``obs`` is ``[N, ..., obs_dim]``."""
        x, middle = _flat_tasks(obs)
        mean, log_std = stacked_mlp(self.mean, "mean", params, x), params["log_std"]
        if self.action_scale != 1.0:
            mean, log_std = mean * self.action_scale, log_std + math.log(self.action_scale)
        mean = mean.reshape(mean.shape[0], *middle, self.act_dim)
        log_std = log_std.reshape(log_std.shape[0], *([1] * len(middle)), self.act_dim)
        return mean, log_std.expand_as(mean)

    def draw_noise(self, rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
        """Standard-normal noise for ``shape`` steps, shape ``shape + (act_dim,)``."""
        return rng.standard_normal(shape + (self.act_dim,)).astype(np.float32)

    @staticmethod
    def sample(dist: Dist, noise: Tensor) -> Tensor:
        mean, log_std = dist
        return mean + log_std.exp() * noise

    @staticmethod
    def mode(dist: Dist) -> Tensor:
        return dist[0]

    @staticmethod
    def log_prob(dist: Dist, actions: Tensor) -> Tensor:
        mean, log_std = dist
        z = (actions - mean) * torch.exp(-log_std)
        return (-0.5 * z.pow(2) - log_std - 0.5 * LOG_2PI).sum(-1)

    @staticmethod
    def kl(old: Dist, new: Dist) -> Tensor:
        """KL(old || new) per sample."""
        mean_old, log_std_old = old
        mean_new, log_std_new = new
        var_ratio = torch.exp(2.0 * (log_std_old - log_std_new))
        mean_term = (mean_old - mean_new).pow(2) * torch.exp(-2.0 * log_std_new)
        return (0.5 * (var_ratio + mean_term - 1.0) + log_std_new - log_std_old).sum(-1)

    @staticmethod
    def entropy(dist: Dist) -> Tensor:
        log_std = dist[1]
        return (log_std + 0.5 * (1.0 + LOG_2PI)).sum(-1)


class CategoricalMLPPolicy(nn.Module):
    """Categorical over ``num_actions`` discrete actions with MLP logits."""

    is_stateful = False
    discrete = True

    def __init__(
        self,
        obs_dim: int,
        num_actions: int,
        hidden_sizes: tuple[int, ...] = (100, 100),
        activation: str = "relu",
    ) -> None:
        super().__init__()
        self.obs_dim, self.num_actions = obs_dim, num_actions
        self.logits = mlp(obs_dim, num_actions, tuple(hidden_sizes), activation)

    def forward(self, obs: Tensor) -> Dist:
        return (self.logits(obs),)

    def forward_stacked(self, params: Params, obs: Tensor) -> Dist:
        """:meth:`forward` with per-task params stacked on a leading task axis; ``obs`` is ``[N, ..., obs_dim]``."""
        x, middle = _flat_tasks(obs)
        logits = stacked_mlp(self.logits, "logits", params, x)
        return (logits.reshape(logits.shape[0], *middle, self.num_actions),)

    def draw_noise(self, rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
        """Uniform [0, 1) noise, one number per step (inverse-CDF sampling)."""
        return rng.random(shape).astype(np.float32)

    @staticmethod
    def sample(dist: Dist, noise: Tensor) -> Tensor:
        cdf = torch.softmax(dist[0], dim=-1).cumsum(-1)
        index = torch.searchsorted(cdf, noise.unsqueeze(-1).contiguous()).squeeze(-1)
        return index.clamp(max=dist[0].shape[-1] - 1)

    @staticmethod
    def mode(dist: Dist) -> Tensor:
        return dist[0].argmax(-1)

    @staticmethod
    def log_prob(dist: Dist, actions: Tensor) -> Tensor:
        log_probs = torch.log_softmax(dist[0], dim=-1)
        return log_probs.gather(-1, actions.long().unsqueeze(-1)).squeeze(-1)

    @staticmethod
    def kl(old: Dist, new: Dist) -> Tensor:
        """KL(old || new) per sample."""
        log_p, log_q = torch.log_softmax(old[0], -1), torch.log_softmax(new[0], -1)
        return (log_p.exp() * (log_p - log_q)).sum(-1)

    @staticmethod
    def entropy(dist: Dist) -> Tensor:
        log_p = torch.log_softmax(dist[0], -1)
        return -(log_p.exp() * log_p).sum(-1)


def policy_params(policy: nn.Module) -> Params:
    """The policy's parameters as a plain dict (the functional learners' currency)."""
    return {name: p for name, p in policy.named_parameters()}


def make_policy(
    observation_space: gymnasium.spaces.Space,
    action_space: gymnasium.spaces.Space,
    hidden_sizes: tuple[int, ...] = (100, 100),
    activation: str = "relu",
    init_std: float = 1.0,
    action_scale: float = 1.0,
) -> nn.Module:
    """The MLP policy that fits an environment's spaces: Gaussian for Box actions, categorical for Discrete.

    ``action_scale``: see :class:`GaussianMLPPolicy`; discrete actions have no scale (it must stay 1)."""
    from gymnasium import spaces

    if not isinstance(observation_space, spaces.Box) or len(observation_space.shape) != 1:
        raise ValueError(f"MLP policies need a flat Box observation space, got {observation_space}")
    obs_dim = int(observation_space.shape[0])
    if isinstance(action_space, spaces.Box):
        dims = (obs_dim, int(action_space.shape[0]), tuple(hidden_sizes), activation, init_std, action_scale)
        return GaussianMLPPolicy(*dims)
    if action_scale != 1.0:
        from .config import ConfigError

        raise ConfigError(f"config key 'policy.action_scale': discrete actions have no scale, got {action_scale}")
    if isinstance(action_space, spaces.Discrete):
        return CategoricalMLPPolicy(obs_dim, int(action_space.n), tuple(hidden_sizes), activation)
    raise ValueError(f"no MLP policy for action space {action_space}")
