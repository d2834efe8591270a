"""Lockstep batches of environments ("lanes") that a rollout worker steps with one policy forward per step.

One interface, three kinds: :class:`GymLanes` steps a pool of unwrapped gymnasium envs in a Python loop (any
family); :class:`HalfCheetahLanes` is the same pool with the half-cheetah step written lean (clipping vectorized, no
info dict), bitwise equal to ``env.step`` (a test holds it to that); :class:`BatchedNavigationLanes` steps all lanes
of ``metarl/Navigation2D-v0`` as one NumPy operation through ``metarl_envs.navigation.BatchedNavigation2D``
(bitwise equal to the single envs, see its docstring).

A lane is one environment running one episode at a time. ``reset`` starts a new episode on every lane (task and
reset seed per lane); ``step`` advances only the ``active`` lanes (the others have finished their episode) and
reports ``done`` = terminated or truncated.
"""

from __future__ import annotations

from typing import Any, Protocol

import gymnasium as gym
import mujoco
import numpy as np

import metarl  # noqa: F401  (registers the metarl/ envs with gymnasium)

NAVIGATION_ID = "metarl/Navigation2D-v0"


class Lanes(Protocol):
    """What a rollout needs from a batch of environments."""

    horizon: int
    """The env's own episode length (it truncates there)."""
    discrete: bool
    act_dim: int
    """Action dimension (continuous) or number of actions (discrete)."""
    reports_success: bool
    """Whether the env reports ``info["success"]`` (Meta-World); then ``success`` holds the last step's flags."""
    success: np.ndarray
    """``[L]`` bool: the success flag of each lane's last step (meaningful only when ``reports_success``)."""

    def reset(self, tasks: list[dict], seeds: list[int]) -> np.ndarray:
        """Start an episode on every lane; observations ``[L, obs_dim]`` float32."""
        ...

    def step(self, actions: np.ndarray, active: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Step the active lanes: observations ``[L, obs_dim]`` float32, rewards ``[L]`` float32, done ``[L]``.

        Values of inactive lanes are unspecified (the caller masks them)."""
        ...


def _make_env(env_id: str, env_kwargs: dict[str, Any]) -> gym.Env:
    return gym.make(env_id, disable_env_checker=True, **env_kwargs).unwrapped


def _space_info(env: gym.Env) -> tuple[bool, int]:
    space = env.action_space
    if isinstance(space, gym.spaces.Discrete):
        return True, int(space.n)
    if isinstance(space, gym.spaces.Box) and len(space.shape) == 1:
        return False, int(space.shape[0])
    raise TypeError(f"unsupported action space {space} (need Discrete or a 1-D Box)")


class GymLanes:
    """A growing pool of unwrapped gymnasium envs, one per lane, stepped one after the other."""

    def __init__(self, env_id: str, env_kwargs: dict[str, Any], first: gym.Env | None = None) -> None:
        self._env_id, self._env_kwargs = env_id, dict(env_kwargs)
        self._envs: list[gym.Env] = [first if first is not None else _make_env(env_id, self._env_kwargs)]
        self.horizon = int(self._envs[0].horizon)
        self.discrete, self.act_dim = _space_info(self._envs[0])
        self.reports_success = bool(getattr(self._envs[0], "reports_success", False))
        self._obs = np.zeros((0,), np.float32)
        self._rewards = np.zeros((0,), np.float32)
        self._done = np.zeros((0,), bool)
        self.success = np.zeros((0,), bool)

    def reset(self, tasks: list[dict], seeds: list[int]) -> np.ndarray:
        n = len(tasks)
        while len(self._envs) < n:
            self._envs.append(_make_env(self._env_id, self._env_kwargs))
        first = []
        for env, task, seed in zip(self._envs, tasks, seeds, strict=False):
            env.set_task(task)
            first.append(env.reset(seed=seed)[0])
        self._obs = np.asarray(first, dtype=np.float32)
        self._rewards = np.zeros(n, np.float32)
        self._done = np.zeros(n, bool)
        self.success = np.zeros(n, bool)
        return self._obs.copy()

    def step(self, actions: np.ndarray, active: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        obs, rewards, done, envs, success = self._obs, self._rewards, self._done, self._envs, self.success
        for i in np.flatnonzero(active).tolist():
            o, r, terminated, truncated, info = envs[i].step(actions[i])
            obs[i] = o
            rewards[i] = r
            done[i] = terminated or truncated
            success[i] = bool(info.get("success", False))
        return obs, rewards, done


class HalfCheetahLanes(GymLanes):
    """Half-cheetah families with a lean step: the env's own arithmetic
    (``metarl_envs.half_cheetah._HalfCheetahTask.step``) minus its per-call overhead, which is about a third of the
    physics time. Used only for envs whose ``step`` is exactly that method."""

    def __init__(self, env_id: str, env_kwargs: dict[str, Any], first: gym.Env | None = None) -> None:
        super().__init__(env_id, env_kwargs, first)
        from metarl_envs.half_cheetah import CTRL_COST_WEIGHT

        self._ctrl_cost_weight = CTRL_COST_WEIGHT
        self._low, self._high = self._envs[0]._low, self._envs[0]._high

    @staticmethod
    def supports(env: gym.Env) -> bool:
        try:
            from metarl_envs.half_cheetah import _HalfCheetahTask
        except ImportError:
            return False
        return isinstance(env, _HalfCheetahTask) and type(env).step is _HalfCheetahTask.step

    def step(self, actions: np.ndarray, active: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        obs, rewards, done, envs = self._obs, self._rewards, self._done, self._envs
        clipped = np.minimum(np.maximum(actions.astype(np.float64), self._low), self._high)
        mj_step, weight = mujoco.mj_step, self._ctrl_cost_weight
        for i in np.flatnonzero(active).tolist():
            env, action = envs[i], clipped[i]
            qpos = env._qpos
            x_before = float(qpos[0])
            env._ctrl[:] = action
            mj_step(env.model, env.data, nstep=env.frame_skip)
            x_velocity = (float(qpos[0]) - x_before) / env._step_dt
            rewards[i] = env._forward_reward(x_velocity) - weight * float(action @ action)
            obs[i, : qpos.shape[0] - 1] = qpos[1:]
            obs[i, qpos.shape[0] - 1 :] = env._qvel
            env._t += 1
            done[i] = env._t >= env.horizon
        return obs, rewards, done


class BatchedNavigationLanes:
    """All lanes of Navigation2D as one ``BatchedNavigation2D`` (rebuilt when the lane count changes)."""

    reports_success = False

    def __init__(self, env_kwargs: dict[str, Any]) -> None:
        probe = _make_env(NAVIGATION_ID, env_kwargs)  # validates the kwargs like the single env does
        self.horizon = int(probe.horizon)
        self.discrete, self.act_dim = _space_info(probe)
        self._batch = None
        self.success = np.zeros((0,), bool)

    def reset(self, tasks: list[dict], seeds: list[int]) -> np.ndarray:
        from metarl_envs.navigation import BatchedNavigation2D

        if self._batch is None or self._batch.num_envs != len(tasks):
            self._batch = BatchedNavigation2D(len(tasks), self.horizon)
        self._batch.set_tasks(tasks)
        return self._batch.reset()  # deterministic: every episode starts at the origin, seeds are not needed

    def step(self, actions: np.ndarray, active: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        obs, rewards, terminated, truncated = self._batch.step(actions)
        return obs, rewards.astype(np.float32), terminated | truncated


def make_lanes(env_id: str, env_kwargs: dict[str, Any], batched: bool = True) -> Lanes:
    """The fastest exact lanes for ``env_id`` (``batched=False`` forces the generic gymnasium pool)."""
    if batched and env_id == NAVIGATION_ID:
        return BatchedNavigationLanes(env_kwargs)
    first = _make_env(env_id, env_kwargs)
    if batched and HalfCheetahLanes.supports(first):
        return HalfCheetahLanes(env_id, env_kwargs, first)
    return GymLanes(env_id, env_kwargs, first)


def lanes_per_chunk(env_id: str) -> int:
    """How many lanes a chunk aims for by default: large for the one-op batched env, moderate for env loops
    (enough for a cheap batched forward, small enough that several workers share the work), small for Meta-World,
    whose step is ~90% of a rollout's time: batching the policy saves little there, and many small chunks keep
    every worker busy to the end (``benchmarks/sampling_metaworld.py``)."""
    from metarl_envs import EXTRA_FAMILIES

    if env_id == NAVIGATION_ID:
        return 4096
    return 10 if env_id in EXTRA_FAMILIES else 80
