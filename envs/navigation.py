"""2D point navigation to a goal (MAML, Finn et al. 2017, sec. 5.3), single and batched."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from metarl_envs.tasks import Task, TaskFamily, check_horizon, check_task_keys, hybridmethod, task_array

MAX_SPEED = np.float32(0.1)
GOAL_LOW, GOAL_HIGH = -0.5, 0.5
SUCCESS_RADIUS = 0.01


def _step_positions(positions: np.ndarray, actions: Any, goals: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Clip actions (float32) and move; return the new float32 positions and float64 distances to goal."""
    clipped = np.clip(np.asarray(actions, dtype=np.float32), -MAX_SPEED, MAX_SPEED)
    if clipped.shape != positions.shape:
        raise ValueError(f"actions must have shape {positions.shape}, got {clipped.shape}")
    moved = positions + clipped
    delta = moved.astype(np.float64) - goals
    return moved, np.sqrt(delta[..., 0] * delta[..., 0] + delta[..., 1] * delta[..., 1])


def _goal(task: Mapping[str, Any], family: str) -> np.ndarray:
    return task_array(task["goal"], (2,), "goal", family)


class Navigation2D(TaskFamily, gym.Env[np.ndarray, np.ndarray]):
    """Point agent moving in the plane to a task's goal (MAML paper, Finn et al. 2017, sec. 5.3;
    cbfinn/maml_rl ``point_env_randgoal.py``).

    - Observation: the agent's position, float32, shape (2,); every episode starts at the origin (0, 0).
    - Action: a velocity, clipped to [-0.1, 0.1]^2 (float32); new position = position + clipped action.
    - Reward: minus the Euclidean distance from the new position to the goal (computed in float64).
    - Task: ``{"goal": [x, y]}``, goals ~ U[-0.5, 0.5]^2.
    - Termination: distance to the goal < 0.01 (the paper: "terminates when the agent is within 0.01 of the
      goal"; the reference code tests |dx| < 0.01 and |dy| < 0.01).
    - Truncation at ``horizon`` steps (default 100, the paper's).
    - No randomness: ``reset(seed=...)`` only seeds ``np_random``; same task -> same episode.
    """

    metadata = {"render_modes": []}
    TASK_KEYS = ("goal",)
    TASK_PARAMETERS = "goal ~ U[-0.5, 0.5]^2"
    PAPER = "Finn et al. 2017, MAML (arXiv:1703.03400), sec. 5.3, 2D navigation"

    def __init__(self, horizon: int = 100, task: Mapping[str, Any] | None = None) -> None:
        self.horizon = check_horizon(horizon)
        self.observation_space = spaces.Box(-np.inf, np.inf, (2,), np.float32)
        self.action_space = spaces.Box(-MAX_SPEED, MAX_SPEED, (2,), np.float32)
        self._position = np.zeros(2, dtype=np.float32)
        self._t = 0
        self._set_default_task(task)

    @hybridmethod
    def _draw_tasks(owner, n: int, generator: np.random.Generator) -> list[Task]:  # noqa: N805
        return [{"goal": goal} for goal in generator.uniform(GOAL_LOW, GOAL_HIGH, size=(n, 2)).tolist()]

    def _apply_task(self, task: Mapping[str, Any]) -> Task:
        self._goal = _goal(task, type(self).__name__)
        return {"goal": self._goal.tolist()}

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        self._begin_episode(options)
        self._position = np.zeros(2, dtype=np.float32)
        return self._position.copy(), {}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        self._position, distance = _step_positions(self._position, action, self._goal)
        self._t += 1
        dist = float(distance)
        info = {"distance": dist}
        return self._position.copy(), -dist, dist < SUCCESS_RADIUS, self._t >= self.horizon, info


class BatchedNavigation2D:
    """N ``Navigation2D`` agents, any mix of goals, stepped as one NumPy operation.

    Step for step (bitwise) equal to N single ``Navigation2D`` envs given the same tasks and actions. All
    agents reset together and share one step counter. Agents that terminated keep being stepped (not frozen):
    exactly what a single env does if stepped past termination, and ``terminated`` is recomputed from the new
    position each step, so callers (the sampler) mask every step after an agent's first
    ``terminated``/``truncated``.
    """

    def __init__(self, num_envs: int, horizon: int = 100) -> None:
        if not isinstance(num_envs, int) or num_envs < 1:
            raise ValueError(f"num_envs must be a positive int, got {num_envs!r}")
        self.num_envs = num_envs
        self.horizon = check_horizon(horizon)
        self.single_observation_space = spaces.Box(-np.inf, np.inf, (2,), np.float32)
        self.single_action_space = spaces.Box(-MAX_SPEED, MAX_SPEED, (2,), np.float32)
        self._positions = np.zeros((num_envs, 2), dtype=np.float32)
        self._t = 0
        self.set_tasks(Navigation2D.sample_tasks(num_envs, 0, "train"))

    sample_tasks = Navigation2D.sample_tasks

    def set_tasks(self, tasks: Sequence[Mapping[str, Any]]) -> None:
        """Set one task per agent (``len(tasks) == num_envs``); ValueError on a bad list or dict."""
        if len(tasks) != self.num_envs:
            raise ValueError(f"expected {self.num_envs} tasks, got {len(tasks)}")
        family = type(self).__name__
        for task in tasks:
            check_task_keys(task, Navigation2D.TASK_KEYS, family)
        self._goals = np.stack([_goal(task, family) for task in tasks])

    def get_tasks(self) -> list[Task]:
        """Return the agents' task dicts."""
        return [{"goal": goal} for goal in self._goals.tolist()]

    def reset(self) -> np.ndarray:
        """Put every agent at the origin; return observations [N, 2] (float32)."""
        self._positions = np.zeros((self.num_envs, 2), dtype=np.float32)
        self._t = 0
        return self._positions.copy()

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Step all agents with ``actions`` [N, 2]; return observations, rewards, terminated, truncated."""
        self._positions, distances = _step_positions(self._positions, actions, self._goals)
        self._t += 1
        truncated = np.full(self.num_envs, self._t >= self.horizon)
        return self._positions.copy(), -distances, distances < SUCCESS_RADIUS, truncated
