"""Half-cheetah goal velocity and goal direction (MAML, Finn et al. 2017, sec. 5.3) on gymnasium's model."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator, Mapping
from typing import Any

import mujoco
import numpy as np
from gymnasium import utils
from gymnasium.envs.mujoco.half_cheetah_v5 import HalfCheetahEnv

from metarl_envs.tasks import Task, TaskFamily, check_horizon, hybridmethod, task_float, task_sign

CTRL_COST_WEIGHT = 0.05  # 0.5 * 1e-1 in cbfinn/maml_rl half_cheetah_env_rand*.py
VELOCITY_LOW, VELOCITY_HIGH = 0.0, 2.0
_SETTOTALMASS_DEPRECATION = "compiler attribute 'settotalmass' is deprecated"


@contextlib.contextmanager
def _without_settotalmass_warning() -> Iterator[None]:
    """Drop MuJoCo 4's "settotalmass" deprecation (stderr + MUJOCO_LOG.TXT in the cwd on every
    half_cheetah.xml load); any other MuJoCo warning raised meanwhile is re-emitted as a Python warning."""
    messages: list[str] = []
    previous = mujoco.get_mju_user_warning()
    mujoco.set_mju_user_warning(messages.append)
    try:
        yield
    finally:
        mujoco.set_mju_user_warning(previous)
        for message in messages:
            if not message.startswith(_SETTOTALMASS_DEPRECATION):
                warnings.warn(f"MuJoCo: {message}", RuntimeWarning, stacklevel=3)


class _HalfCheetahTask(TaskFamily, HalfCheetahEnv):
    """Shared lean step of the half-cheetah families (gymnasium ``half_cheetah.xml``, frame skip 5, dt 0.05s).

    - Observation: gymnasium v5's, qpos[1:] and qvel (17 float64).
    - Action: 6 torques; clipped to the action space [-1, 1]^6 (the reference code's ``normalize`` wrapper
      clipped too, and MuJoCo clamps ctrl to ctrlrange anyway); the control cost uses the clipped action.
    - Forward velocity: (qpos[0] after - qpos[0] before) / dt, as gymnasium computes it.
    - Reward: forward term (per family) - 0.05 * sum(action^2); terms in ``info``.
    - Never terminates; truncates at ``horizon`` steps (default 200, the MAML paper's). Reset noise as
      gymnasium: qpos + U[-0.1, 0.1], qvel + 0.1 * N(0, 1), from ``np_random``.
    - The step skips gymnasium's ``mj_rnePostConstraint`` (only contact forces need it; none are used here).
    """

    PAPER = "Finn et al. 2017, MAML (arXiv:1703.03400), sec. 5.3; cbfinn/maml_rl half_cheetah_env_rand*.py"

    def __init__(self, horizon: int = 200, task: Mapping[str, Any] | None = None, **kwargs: Any) -> None:
        HalfCheetahEnv.__init__(self, ctrl_cost_weight=CTRL_COST_WEIGHT, **kwargs)
        utils.EzPickle.__init__(self, horizon=horizon, task=task, **kwargs)
        self.horizon = check_horizon(horizon)
        self._t = 0
        self._qpos, self._qvel, self._ctrl = self.data.qpos, self.data.qvel, self.data.ctrl
        self._low = self.action_space.low.astype(np.float64)
        self._high = self.action_space.high.astype(np.float64)
        self._step_dt = self.dt
        self._set_default_task(task)

    def _initialize_simulation(self) -> tuple[mujoco.MjModel, mujoco.MjData]:
        with _without_settotalmass_warning():
            return HalfCheetahEnv._initialize_simulation(self)

    def __getstate__(self) -> dict[str, Any]:
        state = utils.EzPickle.__getstate__(self)
        state["_ezpickle_kwargs"] = {**state["_ezpickle_kwargs"], "task": self.get_task()}
        return state

    def _forward_reward(self, x_velocity: float) -> float:
        raise NotImplementedError

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        self._begin_episode(options)
        return HalfCheetahEnv.reset(self, seed=seed)

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        action = np.asarray(action, dtype=np.float64)
        if action.shape != self._low.shape:
            raise ValueError(f"action must have shape {self._low.shape}, got {action.shape}")
        action = np.minimum(np.maximum(action, self._low), self._high)
        qpos = self._qpos
        x_before = float(qpos[0])
        self._ctrl[:] = action
        mujoco.mj_step(self.model, self.data, nstep=self.frame_skip)
        x_after = float(qpos[0])
        x_velocity = (x_after - x_before) / self._step_dt
        forward = self._forward_reward(x_velocity)
        ctrl_cost = CTRL_COST_WEIGHT * float(action @ action)
        self._t += 1
        info = {
            "x_position": x_after,
            "x_velocity": x_velocity,
            "reward_forward": forward,
            "reward_ctrl": -ctrl_cost,
        }
        if self.render_mode == "human":
            self.render()
        observation = np.concatenate((qpos[1:], self._qvel))
        return observation, forward - ctrl_cost, False, self._t >= self.horizon, info


class HalfCheetahVel(_HalfCheetahTask):
    """Half-cheetah running at a goal velocity (MAML paper, sec. 5.3; ``half_cheetah_env_rand.py``).

    Reward = -|forward velocity - v| - 0.05 * sum(action^2); task ``{"velocity": v}``, v ~ U[0, 2] (m/s);
    horizon 200 by default, no early termination. See ``_HalfCheetahTask`` for the model, observation and step
    details.
    """

    TASK_KEYS = ("velocity",)
    TASK_PARAMETERS = "velocity ~ U[0, 2]"

    @hybridmethod
    def _draw_tasks(owner, n: int, generator: np.random.Generator) -> list[Task]:  # noqa: N805
        return [{"velocity": v} for v in generator.uniform(VELOCITY_LOW, VELOCITY_HIGH, size=n).tolist()]

    def _apply_task(self, task: Mapping[str, Any]) -> Task:
        self._velocity = task_float(task["velocity"], "velocity", type(self).__name__)
        return {"velocity": self._velocity}

    def _forward_reward(self, x_velocity: float) -> float:
        return -abs(x_velocity - self._velocity)


class HalfCheetahDir(_HalfCheetahTask):
    """Half-cheetah running forward or backward (MAML paper, sec. 5.3; ``half_cheetah_env_rand_direc.py``).

    Reward = direction * forward velocity - 0.05 * sum(action^2); task ``{"direction": +1 or -1}``, each with
    probability 1/2; horizon 200 by default, no early termination. The task space has two points, so held-out
    ("test") tasks come from a separate random stream but cannot differ from training tasks.
    """

    TASK_KEYS = ("direction",)
    TASK_PARAMETERS = "direction ~ U{-1, +1}"

    @hybridmethod
    def _draw_tasks(owner, n: int, generator: np.random.Generator) -> list[Task]:  # noqa: N805
        return [{"direction": 2 * d - 1} for d in generator.integers(0, 2, size=n).tolist()]

    def _apply_task(self, task: Mapping[str, Any]) -> Task:
        self._direction = task_sign(task["direction"], "direction", type(self).__name__)
        return {"direction": self._direction}

    def _forward_reward(self, x_velocity: float) -> float:
        return self._direction * x_velocity
