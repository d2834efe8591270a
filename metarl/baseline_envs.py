"""Gymnasium wrappers that turn a task-distribution env into the single-task MDPs the SB3 baselines train on.

- :class:`TaskSamplingWrapper`: every ``reset`` draws a fresh task from the family's ``train`` split, so PPO learns
  one policy for the whole distribution without seeing which task it is in ("pretrained" baseline).
- :class:`TaskObservationWrapper`: appends the current task's parameters to the observation, so PPO can learn a
  task-conditioned policy ("oracle" baseline, an upper bound on what adaptation could reach).

Also here: how a task dict becomes numbers (:func:`task_vector`) and CSV columns (:func:`task_columns`).
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

AXES = ("x", "y", "z")


def task_vector(task: Mapping[str, Any]) -> np.ndarray:
    """Every number of a task dict, in key order, flattened to one float32 vector (the oracle's extra inputs)."""
    parts = [np.asarray(value, dtype=np.float64).ravel() for value in task.values()]
    return np.concatenate(parts).astype(np.float32) if parts else np.zeros(0, dtype=np.float32)


def task_columns(task: Mapping[str, Any]) -> dict[str, float | int | str]:
    """Task parameters as flat CSV columns: a number keeps its key (``velocity``); a short vector becomes
    ``goal_x, goal_y`` (2 or 3 entries) or ``means_0, means_1, ...``; an int stays an int and a string a string
    (Meta-World's index and env_name). Matrices (TabularMDP) are left out: they
    would add hundreds of columns and the task index already identifies the task.
    """
    columns: dict[str, float | int | str] = {}
    for key, value in task.items():
        if isinstance(value, str):  # Meta-World: env_name, split
            columns[key] = value
            continue
        if isinstance(value, numbers.Integral) and not isinstance(value, bool):  # a direction, Meta-World's index
            columns[key] = int(value)
            continue
        if isinstance(value, numbers.Real) and not isinstance(value, bool):
            columns[key] = float(value)
            continue
        array = np.asarray(value, dtype=np.float64)
        if array.ndim != 1:
            continue
        names = AXES if len(array) in (2, 3) else [str(i) for i in range(len(array))]
        columns.update({f"{key}_{name}": float(x) for name, x in zip(names, array, strict=False)})
    return columns


class TaskSamplingWrapper(gym.Wrapper):
    """Resets into a new task of ``split`` drawn from a seeded stream; the task is not shown to the agent.

    ``reset(options={"task": task})`` still pins a given task (used when evaluating on held-out tasks).
    """

    def __init__(self, env: gym.Env, seed: int, split: str = "train") -> None:
        super().__init__(env)
        self.split = split
        self._rng = np.random.default_rng(seed)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict]:
        options = dict(options or {})
        if "task" not in options:
            options["task"] = self.env.unwrapped.sample_tasks(1, self._rng, split=self.split)[0]
        return self.env.reset(seed=seed, options=options)


class TaskObservationWrapper(gym.Wrapper):
    """Observation = the env's observation followed by :func:`task_vector` of the current task (read at reset)."""

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        base = env.observation_space
        if not isinstance(base, spaces.Box) or len(base.shape) != 1:
            raise ValueError(f"the oracle needs a flat Box observation space, got {base}")
        extra = len(task_vector(env.unwrapped.get_task()))
        low = np.concatenate([base.low, np.full(extra, -np.inf)]).astype(np.float32)
        high = np.concatenate([base.high, np.full(extra, np.inf)]).astype(np.float32)
        self.observation_space = spaces.Box(low, high, dtype=np.float32)
        self._task = np.zeros(extra, dtype=np.float32)

    def _observe(self, obs: np.ndarray) -> np.ndarray:
        return np.concatenate([np.asarray(obs, dtype=np.float32), self._task])

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict]:
        obs, info = self.env.reset(seed=seed, options=options)
        self._task = task_vector(self.env.unwrapped.get_task())
        return self._observe(obs), info

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict]:
        obs, reward, terminated, truncated, info = self.env.step(action)
        return self._observe(obs), reward, terminated, truncated, info


def make_baseline_env(env_id: str, env_kwargs: dict[str, Any], kind: str, seed: int) -> gym.Env:
    """The training env of a baseline: train tasks resampled per episode; the oracle also sees the task."""
    env: gym.Env = TaskSamplingWrapper(gym.make(env_id, **env_kwargs), seed=seed, split="train")
    if kind == "oracle":
        env = TaskObservationWrapper(env)
    return env
