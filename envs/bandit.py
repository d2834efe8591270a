"""Bernoulli multi-armed bandits (RL^2, Duan et al. 2016; SNAIL, Mishra et al. 2018)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from metarl_envs.tasks import Task, TaskFamily, hybridmethod, task_array


class Bandit(TaskFamily, gym.Env[np.ndarray, np.int64]):
    """K-armed Bernoulli bandit (RL^2, Duan et al. 2016, sec. 4.1; SNAIL, Mishra et al. 2018, sec. 4.1).

    - Task: ``{"means": [p_1, ..., p_K]}``, each arm's success probability ~ U[0, 1] independently (K =
      ``num_arms``, default 5).
    - Action: the arm, ``Discrete(K)``. Reward: 1.0 with probability p_arm else 0.0, drawn from ``np_random``
      (``np_random.random() < p_arm``, so means 0 and 1 are deterministic).
    - Observation: the constant float32 vector [0.0], shape (1,); a recurrent agent sees its previous action
      and reward through the sampler.
    - One episode = one pull: every step terminates (horizon 1, fixed). A trial of N pulls (N episodes of the
      same task, the agent's hidden state carried across them) is the sampler's business, as in RL^2 / SNAIL.
    - ``info``: ``arm_mean`` (p of the pulled arm) and ``best_mean`` (max p), for regret.
    """

    metadata = {"render_modes": []}
    TASK_KEYS = ("means",)
    TASK_PARAMETERS = "means ~ U[0, 1]^K (K = num_arms, default 5)"
    PAPER = "Duan et al. 2016, RL^2 (arXiv:1611.02779) sec. 4.1; Mishra et al. 2018, SNAIL (arXiv:1707.03141)"
    num_arms: int = 5
    horizon: int = 1

    def __init__(self, num_arms: int = 5, task: Mapping[str, Any] | None = None) -> None:
        if not isinstance(num_arms, int) or isinstance(num_arms, bool) or num_arms < 1:
            raise ValueError(f"num_arms must be a positive int, got {num_arms!r}")
        self.num_arms = num_arms
        self.observation_space = spaces.Box(0.0, 1.0, (1,), np.float32)
        self.action_space = spaces.Discrete(num_arms)
        self._observation = np.zeros(1, dtype=np.float32)
        self._t = 0
        self._set_default_task(task)

    @hybridmethod
    def _draw_tasks(owner, n: int, generator: np.random.Generator) -> list[Task]:  # noqa: N805
        return [{"means": means} for means in generator.uniform(0.0, 1.0, size=(n, owner.num_arms)).tolist()]

    def _apply_task(self, task: Mapping[str, Any]) -> Task:
        family = type(self).__name__
        means = task_array(task["means"], (self.num_arms,), "means", family)
        if ((means < 0.0) | (means > 1.0)).any():
            raise ValueError(f"{family} task['means'] must lie in [0, 1], got {means.tolist()}")
        self._means = means
        self._best = float(means.max())
        return {"means": means.tolist()}

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        self._begin_episode(options)
        return self._observation.copy(), {}

    def step(self, action: int | np.integer) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        if not self.action_space.contains(action):
            raise ValueError(f"action must be an arm in [0, {self.num_arms}), got {action!r}")
        mean = float(self._means[int(action)])
        reward = 1.0 if self.np_random.random() < mean else 0.0
        self._t += 1
        return self._observation.copy(), reward, True, False, {"arm_mean": mean, "best_mean": self._best}
