"""Env rewards, transitions and terminations against hand-computed values; batched navigation."""

from __future__ import annotations

import copy
import math

import mujoco
import numpy as np
import pytest

import metarl_envs as envs

# --- Navigation2D -------------------------------------------------------------------------------------------


def test_navigation_reward_clip_and_start() -> None:
    env = envs.Navigation2D(task={"goal": [0.3, -0.2]})
    obs, _ = env.reset(seed=0)
    assert obs.dtype == np.float32 and obs.tolist() == [0.0, 0.0]
    obs, reward, terminated, truncated, info = env.step(np.array([0.05, 0.7]))  # y clipped to 0.1
    assert obs.tolist() == [np.float32(0.05), np.float32(0.1)]
    assert reward == pytest.approx(-math.hypot(0.05 - 0.3, 0.1 + 0.2), abs=1e-7)
    assert info["distance"] == pytest.approx(-reward)
    assert not terminated and not truncated
    obs, reward, *_ = env.step(np.array([-3.0, -0.04], dtype=np.float32))  # x clipped to -0.1
    assert obs == pytest.approx([-0.05, 0.06], abs=1e-7)
    assert reward == pytest.approx(-math.hypot(-0.05 - 0.3, 0.06 + 0.2), abs=1e-7)


def test_navigation_terminates_within_0_01_and_truncates_at_horizon() -> None:
    env = envs.Navigation2D(task={"goal": [0.1, 0.0]}, horizon=4)
    env.reset()
    _, reward, terminated, _, _ = env.step([0.1, 0.011])  # distance 0.011: not yet
    assert reward == pytest.approx(-0.011, abs=1e-7) and not terminated
    _, reward, terminated, truncated, _ = env.step([0.0, -0.002])  # distance 0.009: done
    assert reward == pytest.approx(-0.009, abs=1e-7) and terminated and not truncated
    env.reset()
    flags = [env.step([0.0, 0.0])[3] for _ in range(4)]
    assert flags == [False, False, False, True]


def test_batched_navigation_equals_single_envs_bitwise() -> None:
    n, horizon = 48, 30
    rng = np.random.default_rng(0)
    tasks = envs.Navigation2D.sample_tasks(n - 8, 4)
    reachable = [[0.1 * k, -0.05 * k] for k in range(1, 9)]  # reached exactly by the scripted agents below
    tasks += [{"goal": g} for g in reachable]
    batch = envs.BatchedNavigation2D(n, horizon=horizon)
    batch.set_tasks(tasks)
    assert batch.get_tasks() == tasks
    singles = [envs.Navigation2D(task=t, horizon=horizon) for t in tasks]
    obs = batch.reset()
    assert np.array_equal(obs, np.stack([env.reset()[0] for env in singles]))
    saw_termination = False
    for t in range(horizon):
        actions = rng.uniform(-0.15, 0.15, size=(n, 2))  # some clipped
        scripted = np.array(reachable) / np.arange(1, 9)[:, None]  # k steps of (0.1, -0.05) reach goal k
        actions[n - 8 :] = np.where(t < np.arange(1, 9)[:, None], scripted, 0.0)
        obs, rewards, terminated, truncated = batch.step(actions)
        single = [env.step(a) for env, a in zip(singles, actions, strict=True)]
        assert obs.dtype == np.float32 and obs.shape == (n, 2)
        assert np.array_equal(obs, np.stack([s[0] for s in single]))
        assert rewards.tobytes() == np.array([s[1] for s in single]).tobytes()
        assert terminated.tolist() == [s[2] for s in single]
        assert truncated.tolist() == [s[3] for s in single] == [t == horizon - 1] * n
        saw_termination |= bool(terminated.any())
    assert saw_termination


def test_batched_navigation_rejects_bad_input() -> None:
    batch = envs.BatchedNavigation2D(3)
    with pytest.raises(ValueError, match="3 tasks"):
        batch.set_tasks([{"goal": [0, 0]}] * 2)
    with pytest.raises(ValueError, match="BatchedNavigation2D"):
        batch.set_tasks([{"goal": [0, 0]}, {"goal": [0, 0]}, {"goal": [0]}])
    batch.reset()
    with pytest.raises(ValueError, match="shape"):
        batch.step(np.zeros((2, 2)))


# --- MuJoCo families ----------------------------------------------------------------------------------------


def _known_state(env, qpos_delta: float, qvel_scale: float, settle_steps: int = 0):
    """Put the env in a chosen state; optionally let it settle (the ant onto its feet) with zero actions."""
    env.reset(seed=0)
    rng = np.random.default_rng(42)
    qpos = env.init_qpos + qpos_delta * rng.uniform(-1, 1, env.model.nq)
    qvel = qvel_scale * rng.standard_normal(env.model.nv)
    env.set_state(qpos, qvel)
    for _ in range(settle_steps):
        env.step(np.zeros(env.action_space.shape))


def _reference_step(env, action: np.ndarray, post_constraint: bool):
    """Step a copy of the env's MjData by hand (5 mj_step, ctrl = action); return (x before, data after)."""
    data = copy.deepcopy(env.data)
    x_before = float(data.qpos[0])
    data.ctrl[:] = action
    for _ in range(5):
        mujoco.mj_step(env.model, data)
    if post_constraint:
        mujoco.mj_rnePostConstraint(env.model, data)
    return x_before, data


@pytest.mark.parametrize("velocity", [0.0, 1.3])
def test_half_cheetah_vel_reward_by_hand(velocity: float) -> None:
    env = envs.HalfCheetahVel(task={"velocity": velocity})
    assert env.dt == pytest.approx(0.05) and env.frame_skip == 5
    _known_state(env, 0.1, 1.0)
    action = np.array([0.5, -0.3, 0.9, -1.0, 0.2, 0.0])
    x_before, ref = _reference_step(env, action, post_constraint=False)
    obs, reward, terminated, truncated, info = env.step(action)
    v = (float(ref.qpos[0]) - x_before) / 0.05
    ctrl = 0.05 * (0.25 + 0.09 + 0.81 + 1.0 + 0.04)
    assert abs(v) > 0.05  # a real velocity, not a trivial zero
    assert reward == pytest.approx(-abs(v - velocity) - ctrl, rel=1e-12, abs=1e-12)
    assert info["x_velocity"] == pytest.approx(v, rel=1e-12)
    assert info["reward_ctrl"] == pytest.approx(-ctrl, rel=1e-12)
    assert info["reward_forward"] == pytest.approx(-abs(v - velocity), rel=1e-12)
    assert np.array_equal(obs, np.concatenate([ref.qpos[1:], ref.qvel]))
    assert not terminated and not truncated


def test_half_cheetah_dir_reward_and_action_clipping() -> None:
    env = envs.HalfCheetahDir(task={"direction": -1})
    _known_state(env, 0.1, 1.0)
    action = np.array([2.0, -3.0, 0.5, 0.0, 0.0, 0.0])  # first two clipped to +-1
    x_before, ref = _reference_step(env, np.clip(action, -1, 1), post_constraint=False)
    _, reward, _, _, info = env.step(action)
    v = (float(ref.qpos[0]) - x_before) / 0.05
    assert reward == pytest.approx(-v - 0.05 * 2.25, rel=1e-12, abs=1e-12)
    assert np.array_equal(env.data.ctrl, np.clip(action, -1, 1))
    env.set_task({"direction": 1})
    x_before, ref = _reference_step(env, np.zeros(6), post_constraint=False)
    _, reward, *_ = env.step(np.zeros(6))
    assert reward == pytest.approx((float(ref.qpos[0]) - x_before) / 0.05, rel=1e-12, abs=1e-12)


def test_half_cheetah_never_terminates() -> None:
    env = envs.HalfCheetahVel(horizon=200)
    env.reset(seed=3)
    env.action_space.seed(3)
    flags = [env.step(env.action_space.sample())[2:4] for _ in range(200)]
    assert flags == [(False, False)] * 199 + [(False, True)]


ANT_TASKS = [(envs.AntVel, {"velocity": 2.2}), (envs.AntDir, {"direction": -1})]


@pytest.mark.parametrize(("cls", "task"), ANT_TASKS)
def test_ant_reward_by_hand(cls: type, task: dict) -> None:
    env = cls(task=task)
    _known_state(env, 0.05, 0.5, settle_steps=15)  # feet on the floor: non-zero contact forces
    action = np.array([0.5, -0.5, 1.0, -1.0, 0.25, 0.0, -0.75, 0.1])
    x_before, ref = _reference_step(env, action, post_constraint=True)
    obs, reward, terminated, _, info = env.step(action)
    vx = (float(ref.qpos[0]) - x_before) / 0.05
    forward = -abs(vx - 2.2) + 1.0 if "velocity" in task else -vx
    ctrl = 0.5 * 1e-2 * float(np.sum(action**2))  # scaling = (1 - (-1)) / 2 = 1
    contact = 0.5 * 1e-3 * float(np.sum(np.clip(ref.cfrc_ext, -1, 1) ** 2))
    assert contact > 1e-4  # the contact term is exercised
    assert reward == pytest.approx(forward - ctrl - contact + 0.05, rel=1e-12, abs=1e-12)
    assert info["reward_contact"] == pytest.approx(-contact, rel=1e-12)
    assert info["reward_ctrl"] == pytest.approx(-ctrl, rel=1e-12)
    assert info["reward_survive"] == 0.05
    assert info["x_velocity"] == pytest.approx(vx, rel=1e-12)
    expected_obs = np.concatenate([ref.qpos[2:], ref.qvel, np.clip(ref.cfrc_ext[1:], -1, 1).ravel()])
    assert np.array_equal(obs, expected_obs)
    assert not terminated


def test_ant_terminates_outside_z_range() -> None:
    env = envs.AntVel()
    env.reset(seed=0)
    for z, done in ((1.5, True), (0.75, False)):
        qpos = env.init_qpos.copy()
        qpos[2] = z
        env.set_state(qpos, np.zeros(env.model.nv))
        _, reward, terminated, _, info = env.step(np.zeros(8))
        assert terminated is done
        assert info["reward_survive"] == 0.05  # survive reward is paid on every step, as in rllab


# --- Bandit -------------------------------------------------------------------------------------------------


def test_bandit_deterministic_arms_and_one_pull_episodes() -> None:
    env = envs.Bandit(num_arms=2, task={"means": [0.0, 1.0]})
    obs, _ = env.reset(seed=0)
    assert obs.dtype == np.float32 and obs.tolist() == [0.0]
    for _ in range(200):
        for arm, expected in ((0, 0.0), (1, 1.0)):
            obs, reward, terminated, truncated, info = env.step(arm)
            assert reward == expected and terminated and not truncated
            assert info == {"arm_mean": expected, "best_mean": 1.0}
            env.reset()
    with pytest.raises(ValueError, match="arm"):
        env.step(2)


def test_bandit_reward_frequency() -> None:
    env = envs.Bandit(task={"means": [0.3, 0.9, 0.1, 0.5, 0.7]})
    env.reset(seed=1)
    rewards = []
    for _ in range(20000):
        rewards.append(env.step(0)[1])
        env.reset()
    assert abs(np.mean(rewards) - 0.3) < 0.015  # 4.6 standard errors


# --- TabularMDP ---------------------------------------------------------------------------------------------


def _deterministic_mdp(s: int = 10, a: int = 5) -> dict:
    transitions = np.zeros((s, a, s))
    for state in range(s):
        for action in range(a):
            transitions[state, action, (state + action + 1) % s] = 1.0
    reward_means = np.arange(s * a, dtype=float).reshape(s, a) / 10.0
    return {"transitions": transitions.tolist(), "reward_means": reward_means.tolist()}


def test_tabular_mdp_follows_a_deterministic_transition_matrix() -> None:
    env = envs.TabularMDP(task=_deterministic_mdp())
    obs, _ = env.reset(seed=0)
    assert obs.dtype == np.float32 and obs.tolist() == np.eye(10)[0].tolist()  # starts in state 0
    state = 0
    for t, action in enumerate([0, 4, 2, 3, 1, 1, 0, 2, 4, 3]):
        obs, _, terminated, truncated, info = env.step(action)
        state = (state + action + 1) % 10
        assert obs.tolist() == np.eye(10)[state].tolist() and info["state"] == state
        assert not terminated and truncated == (t == 9)


def test_tabular_mdp_reward_and_transition_statistics() -> None:
    task = _deterministic_mdp()
    task["transitions"][0][2] = [0.0, 0.25, 0.0, 0.75] + [0.0] * 6
    env = envs.TabularMDP(task=task, horizon=1)
    env.reset(seed=5)
    rewards, next_states = [], []
    for _ in range(10000):
        _, reward, _, _, info = env.step(2)
        rewards.append(reward)
        next_states.append(info["state"])
        assert info["reward_mean"] == 0.2
        env.reset()
    assert abs(np.mean(rewards) - 0.2) < 0.05 and abs(np.std(rewards) - 1.0) < 0.05  # N(mu(0, 2), 1)
    assert set(next_states) == {1, 3}
    assert abs(next_states.count(3) / 10000 - 0.75) < 0.02
