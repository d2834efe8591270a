"""Ant goal velocity and goal direction (MAML, Finn et al. 2017, sec. 5.3) on gymnasium's MuJoCo ant model."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import mujoco
import numpy as np
from gymnasium import utils
from gymnasium.envs.mujoco.ant_v5 import AntEnv

from metarl_envs.tasks import Task, TaskFamily, check_horizon, hybridmethod, task_float, task_sign

# Reward constants of the paper's code, cbfinn/maml_rl rllab/envs/mujoco/ant_env_rand{,_direc}.py.
CTRL_COST_WEIGHT = 0.5 * 1e-2
CONTACT_COST_WEIGHT = 0.5 * 1e-3
CONTACT_FORCE_RANGE = (-1.0, 1.0)
SURVIVE_REWARD = 0.05
VELOCITY_BONUS = 1.0  # "make it happy, not suicidal": added to the goal-velocity forward reward only
HEALTHY_Z_RANGE = (0.2, 1.0)
VELOCITY_LOW, VELOCITY_HIGH = 0.0, 3.0


class _AntTask(TaskFamily, AntEnv):
    """Shared step of the ant task families (gymnasium ``ant.xml``, frame skip 5, dt 0.05 s).

    Constants from cbfinn/maml_rl ``ant_env_rand.py`` / ``ant_env_rand_direc.py`` (rllab):

    - ctrl_cost = 0.5 * 1e-2 * sum((a / scaling)^2), scaling = (high - low) / 2 of the action space (= 1
      here);
    - contact_cost = 0.5 * 1e-3 * sum(clip(cfrc_ext, -1, 1)^2) over all bodies;
    - survive_reward = 0.05 on every step (also the terminating one);
    - reward = forward_reward - ctrl_cost - contact_cost + survive_reward (forward_reward per family);
    - terminated when the state (qpos, qvel) is not finite or torso z = qpos[2] is outside [0.2, 1.0] (rllab
      ant); truncated at ``horizon`` steps (default 200, the MAML paper's).

    Differences from the reference code, on purpose: vx is the torso's x velocity by finite difference,
    (qpos[0] after - qpos[0] before) / dt (qpos[0] is the torso frame origin, which is also the torso body's
    centre of mass in this model), whereas rllab used the instantaneous velocity of the torso subtree's centre
    of mass; the model, observation (gymnasium v5: qpos[2:], qvel, clipped cfrc_ext[1:], 105 float64) and
    reset noise (qpos + U[-0.1, 0.1], qvel + 0.1 * N(0, 1), from ``np_random``) are gymnasium's. Actions are
    clipped to the action space [-1, 1]^8 (the reference code's ``normalize`` wrapper clipped too); the
    control cost uses the clipped action.
    """

    PAPER = "Finn et al. 2017, MAML (arXiv:1703.03400), sec. 5.3; cbfinn/maml_rl ant_env_rand*.py"

    def __init__(self, horizon: int = 200, task: Mapping[str, Any] | None = None, **kwargs: Any) -> None:
        AntEnv.__init__(
            self,
            ctrl_cost_weight=CTRL_COST_WEIGHT,
            contact_cost_weight=CONTACT_COST_WEIGHT,
            healthy_reward=SURVIVE_REWARD,
            healthy_z_range=HEALTHY_Z_RANGE,
            contact_force_range=CONTACT_FORCE_RANGE,
            **kwargs,
        )
        utils.EzPickle.__init__(self, horizon=horizon, task=task, **kwargs)
        self.horizon = check_horizon(horizon)
        self._t = 0
        data = self.data
        self._qpos, self._qvel, self._ctrl, self._cfrc_ext = data.qpos, data.qvel, data.ctrl, data.cfrc_ext
        self._low = self.action_space.low.astype(np.float64)
        self._high = self.action_space.high.astype(np.float64)
        self._scaling = (self._high - self._low) / 2.0
        self._step_dt = self.dt
        self._set_default_task(task)

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
        return AntEnv.reset(self, seed=seed)

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        action = np.asarray(action, dtype=np.float64)
        if action.shape != self._low.shape:
            raise ValueError(f"action must have shape {self._low.shape}, got {action.shape}")
        action = np.minimum(np.maximum(action, self._low), self._high)
        qpos, qvel = self._qpos, self._qvel
        x_before = float(qpos[0])
        self._ctrl[:] = action
        mujoco.mj_step(self.model, self.data, nstep=self.frame_skip)
        mujoco.mj_rnePostConstraint(self.model, self.data)  # fills cfrc_ext
        x_after = float(qpos[0])
        x_velocity = (x_after - x_before) / self._step_dt
        forward = self._forward_reward(x_velocity)
        scaled = action / self._scaling
        ctrl_cost = CTRL_COST_WEIGHT * float(scaled @ scaled)
        contact = np.clip(self._cfrc_ext, *CONTACT_FORCE_RANGE)
        contact_cost = CONTACT_COST_WEIGHT * float(np.square(contact).sum())
        reward = forward - ctrl_cost - contact_cost + SURVIVE_REWARD
        z = float(qpos[2])
        finite = np.isfinite(qpos).all() and np.isfinite(qvel).all()
        healthy = finite and HEALTHY_Z_RANGE[0] <= z <= HEALTHY_Z_RANGE[1]
        self._t += 1
        info = {
            "x_position": x_after,
            "x_velocity": x_velocity,
            "reward_forward": forward,
            "reward_ctrl": -ctrl_cost,
            "reward_contact": -contact_cost,
            "reward_survive": SURVIVE_REWARD,
        }
        if self.render_mode == "human":
            self.render()
        observation = np.concatenate((qpos[2:], qvel, contact[1:].ravel()))
        return observation, reward, not healthy, self._t >= self.horizon, info


class AntVel(_AntTask):
    """Ant running at a goal velocity (MAML paper, sec. 5.3; cbfinn/maml_rl ``ant_env_rand.py``).

    forward_reward = -|vx - v| + 1.0; task ``{"velocity": v}``, v ~ U[0, 3] (m/s). Other terms, termination,
    horizon (200) and the differences from the reference code: see ``_AntTask``.
    """

    TASK_KEYS = ("velocity",)
    TASK_PARAMETERS = "velocity ~ U[0, 3]"

    @hybridmethod
    def _draw_tasks(owner, n: int, generator: np.random.Generator) -> list[Task]:  # noqa: N805
        return [{"velocity": v} for v in generator.uniform(VELOCITY_LOW, VELOCITY_HIGH, size=n).tolist()]

    def _apply_task(self, task: Mapping[str, Any]) -> Task:
        self._velocity = task_float(task["velocity"], "velocity", type(self).__name__)
        return {"velocity": self._velocity}

    def _forward_reward(self, x_velocity: float) -> float:
        return -abs(x_velocity - self._velocity) + VELOCITY_BONUS


class AntDir(_AntTask):
    """Ant running forward or backward (MAML paper, sec. 5.3; cbfinn/maml_rl ``ant_env_rand_direc.py``).

    forward_reward = direction * vx; task ``{"direction": +1 or -1}``, each with probability 1/2 (the
    reference code drew g ~ U[0, 3] and used -1 if g < 1.5 else +1). The task space has two points, so
    held-out ("test") tasks come from a separate random stream but cannot differ from training tasks. Other
    terms: see ``_AntTask``.
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
