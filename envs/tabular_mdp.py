"""Random tabular MDPs (RL^2, Duan et al. 2016; SNAIL, Mishra et al. 2018)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from metarl_envs.tasks import Task, TaskFamily, check_horizon, hybridmethod, task_array

REWARD_MEAN_PRIOR = (1.0, 1.0)  # mu(s, a) ~ N(1, 1)
REWARD_NOISE_STD = 1.0  # r ~ N(mu(s, a), 1)
INITIAL_STATE = 0


class TabularMDP(TaskFamily, gym.Env[np.ndarray, np.int64]):
    """Random tabular MDP (RL^2, Duan et al. 2016, sec. 4.2; SNAIL, Mishra et al. 2018, sec. 4.2).

    - Task: ``{"transitions": P, "reward_means": mu}``, nested lists; P[s][a] ~ Dirichlet(1, ..., 1) (flat)
      over next states, shape (S, A, S); mu[s][a] ~ N(1, 1), shape (S, A). S = ``num_states`` (10), A =
      ``num_actions`` (5).
    - Reward: r ~ N(mu(s, a), 1), then s' ~ P(. | s, a), both drawn from ``np_random`` (in that order).
    - Observation: one-hot of the current state, float32, shape (S,). Action: ``Discrete(A)``.
    - Every episode starts in state 0, as in the RL^2 authors' code (rllab sandbox
      ``random_tabular_mdp_env.py``; the paper does not say). No termination; truncation at ``horizon`` steps
      (default 10). A trial of several episodes of one MDP is the sampler's business.
    - ``info``: ``reward_mean`` mu(s, a) of the step, ``state`` the new state.
    """

    metadata = {"render_modes": []}
    TASK_KEYS = ("transitions", "reward_means")
    TASK_PARAMETERS = "transitions P(.|s,a) ~ Dirichlet(1,...,1); reward_means mu(s,a) ~ N(1, 1); S=10, A=5"
    PAPER = "Duan et al. 2016, RL^2 (arXiv:1611.02779) sec. 4.2; Mishra et al. 2018, SNAIL (arXiv:1707.03141)"
    num_states: int = 10
    num_actions: int = 5

    def __init__(
        self,
        num_states: int = 10,
        num_actions: int = 5,
        horizon: int = 10,
        task: Mapping[str, Any] | None = None,
    ) -> None:
        for name, value in (("num_states", num_states), ("num_actions", num_actions)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        self.num_states, self.num_actions = num_states, num_actions
        self.horizon = check_horizon(horizon)
        self.observation_space = spaces.Box(0.0, 1.0, (num_states,), np.float32)
        self.action_space = spaces.Discrete(num_actions)
        self._one_hot = np.eye(num_states, dtype=np.float32)
        self._state = INITIAL_STATE
        self._t = 0
        self._set_default_task(task)

    @hybridmethod
    def _draw_tasks(owner, n: int, generator: np.random.Generator) -> list[Task]:  # noqa: N805
        s, a = owner.num_states, owner.num_actions
        tasks = []
        for _ in range(n):
            transitions = generator.dirichlet(np.ones(s), size=(s, a))
            reward_means = generator.normal(*REWARD_MEAN_PRIOR, size=(s, a))
            tasks.append({"transitions": transitions.tolist(), "reward_means": reward_means.tolist()})
        return tasks

    def _apply_task(self, task: Mapping[str, Any]) -> Task:
        family, s, a = type(self).__name__, self.num_states, self.num_actions
        transitions = task_array(task["transitions"], (s, a, s), "transitions", family)
        if (transitions < 0).any() or not np.allclose(transitions.sum(axis=-1), 1.0, rtol=0.0, atol=1e-6):
            raise ValueError(f"{family} task['transitions'] rows must be probability vectors (>=0, sum to 1)")
        reward_means = task_array(task["reward_means"], (s, a), "reward_means", family)
        self._cdf = np.cumsum(transitions, axis=-1)
        self._cdf[..., -1] = 1.0  # so u in [0, 1) always lands on a state of positive probability
        self._reward_means = reward_means
        return {"transitions": transitions.tolist(), "reward_means": reward_means.tolist()}

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        self._begin_episode(options)
        self._state = INITIAL_STATE
        return self._one_hot[self._state].copy(), {}

    def step(self, action: int | np.integer) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        if not self.action_space.contains(action):
            raise ValueError(f"action must be in [0, {self.num_actions}), got {action!r}")
        state, act = self._state, int(action)
        mean = float(self._reward_means[state, act])
        reward = mean + REWARD_NOISE_STD * float(self.np_random.standard_normal())
        self._state = int(np.searchsorted(self._cdf[state, act], self.np_random.random(), side="right"))
        self._t += 1
        info = {"reward_mean": mean, "state": self._state}
        return self._one_hot[self._state].copy(), reward, False, self._t >= self.horizon, info
