"""Meta-RL algorithms behind one small protocol, picked by the experiment's ``algorithm:`` key.

The training loop (:mod:`metarl.train`) samples the iteration's tasks, hands them to the algorithm with a seed per
phase, logs the row it returns and checkpoints its ``state_dict``; it never names an algorithm. Each algorithm is one
module here that says what it collects per iteration and how it updates:

- ``maml_trpo`` (:mod:`metarl.algorithms.maml_trpo`): support episodes, inner step, query episodes, TRPO meta-step;
- ``rl2`` (:mod:`metarl.algorithms.rl2`): whole trials of several episodes per task, PPO on the recurrent agent;
- ``reptile`` (:mod:`metarl.algorithms.reptile`): k policy-gradient steps per task on fresh episodes, then Reptile's
  interpolation step;
- ``snail`` (:mod:`metarl.algorithms.snail`): the same trials and PPO (:mod:`metarl.algorithms.trial_ppo`) as RL^2
  on a SNAIL agent.

Few-shot (supervised) algorithms keep their own loop (:mod:`metarl.fewshot`); ``config.FEWSHOT_ALGORITHMS`` lists
them. ``reptile`` names both: with a fewshot section it is the supervised learner, without one the meta-RL learner
registered here.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import gymnasium as gym
import numpy as np
import torch

from metarl.config import Config, ConfigError

# algorithm key -> "module:class"; imported only when picked
REGISTRY = {
    "maml_trpo": "metarl.algorithms.maml_trpo:MAMLTRPOAlgorithm",
    "rl2": "metarl.algorithms.rl2:RL2",
    "reptile": "metarl.algorithms.reptile:ReptileAlgorithm",
    "snail": "metarl.algorithms.snail:SNAILAlgorithm",
}

SeedFn = Callable[[int], int]
"""``seed(phase)``: the iteration's 32-bit seed for one phase (1, 2, ...; phase 0 drew the tasks)."""


@dataclass
class IterationResult:
    """What one ``collect_and_update`` did: environment steps taken and the metrics for ``progress.csv`` (in order)."""

    env_steps: int
    metrics: dict[str, float] = field(default_factory=dict)


class MetaAlgorithm(Protocol):
    """What the training loop and ``metarl evaluate`` need from a meta-RL algorithm."""

    name: str
    policy: torch.nn.Module

    @property
    def tasks_per_iteration(self) -> int:
        """How many training tasks one iteration samples."""
        ...

    def collect_and_update(self, sampler: Any, tasks: list[dict], seed: SeedFn) -> IterationResult:
        """Collect this iteration's episodes of ``tasks`` with ``sampler`` and update; every random draw from
        ``seed(phase)`` or the torch RNG (checkpointed by the loop), so a resumed run continues exactly."""
        ...

    def evaluation_returns(self, sampler: Any, tasks: list[dict], episodes: int, seed: int) -> np.ndarray:
        """Per-task held-out returns ``[tasks, steps]`` (MAML: after 0..k gradient steps; RL^2: per episode of a
        trial); ``episodes`` is episodes (MAML) or trials (RL^2) per task and step."""
        ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


def algorithm_class(name: str) -> type:
    """The class registered for ``name``; ``ConfigError`` naming the valid ones otherwise."""
    if name not in REGISTRY:
        raise ConfigError(f"config key 'algorithm': '{name}' is not a meta-RL algorithm (valid: {', '.join(REGISTRY)})")
    module, _, cls = REGISTRY[name].partition(":")
    return getattr(importlib.import_module(module), cls)


def build_algorithm(config: Config, env: gym.Env, device: torch.device) -> MetaAlgorithm:
    """The configured algorithm for ``env``'s spaces, its networks on ``device`` (torch's RNG as the caller seeded
    it)."""
    return algorithm_class(config.algorithm)(config, env.observation_space, env.action_space, device)


__all__ = ["REGISTRY", "IterationResult", "MetaAlgorithm", "SeedFn", "algorithm_class", "build_algorithm"]
