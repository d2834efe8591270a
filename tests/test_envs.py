"""Task-distribution envs: registration, gymnasium's check_env, task sampling and validation, seeding."""

from __future__ import annotations

import json
import pickle
import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import metarl_envs as envs

envs.register_all()

IDS = list(envs.FAMILIES)
CONTINUOUS = ["Navigation2D", "HalfCheetahVel", "AntVel", "Bandit", "TabularMDP"]
DIRECTION = ["HalfCheetahDir", "AntDir"]
HORIZONS = {
    "Navigation2D": 100,
    "HalfCheetahVel": 200,
    "HalfCheetahDir": 200,
    "AntVel": 200,
    "AntDir": 200,
    "Bandit": 1,
    "TabularMDP": 10,
}


def family(name: str) -> type:
    return getattr(envs, name)


def env_id(name: str) -> str:
    return f"metarl/{name}-v0"


def task_key(task: dict) -> str:
    return json.dumps(task, sort_keys=True)


# --- registration and gymnasium API -------------------------------------------------------------------------


def test_register_all_is_idempotent_and_complete() -> None:
    envs.register_all()
    envs.register_all()
    assert set(IDS) == {env_id(name) for name in HORIZONS}
    for eid in IDS:
        assert eid in gym.registry
        assert gym.registry[eid].max_episode_steps is None  # no TimeLimit: envs truncate themselves


@pytest.mark.parametrize("eid", IDS)
def test_check_env_passes(eid: str) -> None:
    env = gym.make(eid)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any checker warning fails, but these two:
        warnings.filterwarnings("ignore", message=".*infinity")  # unbounded Box observations, on purpose
        check_env(env.unwrapped, skip_render_check=True)
        warnings.filterwarnings("ignore", message=".*different from the unwrapped")
        check_env(env, skip_render_check=True)
    env.close()


@pytest.mark.parametrize("name", list(HORIZONS))
def test_horizon_default_and_kwarg(name: str) -> None:
    env = gym.make(env_id(name))
    assert env.unwrapped.horizon == HORIZONS[name]
    assert not any(isinstance(w, gym.wrappers.TimeLimit) for w in _wrappers(env))
    if name == "Bandit":
        return
    env = gym.make(env_id(name), horizon=3)
    env.reset(seed=0)
    flags = []
    for _ in range(3):
        _, _, terminated, truncated, _ = env.step(env.action_space.sample())
        assert not terminated
        flags.append(truncated)
    assert flags == [False, False, True]


def _wrappers(env: gym.Env) -> list[gym.Env]:
    out = []
    while isinstance(env, gym.Wrapper):
        out.append(env)
        env = env.env
    return out


def test_describe_families(capfd: pytest.CaptureFixture[str]) -> None:
    rows = envs.describe_families()
    assert [row["id"] for row in rows] == IDS + list(envs.EXTRA_FAMILIES)
    rows = [row for row in rows if row["id"] in IDS]  # the Meta-World extra: tests/test_meta_world.py
    keys = {"id", "family", "task_parameters", "horizon", "observation_space", "action_space", "paper"}
    for row in rows:
        assert set(row) == keys
        assert row["horizon"] == HORIZONS[row["family"]]
        assert all(isinstance(row[k], str) and row[k] for k in keys - {"horizon"})
    by_family = {row["family"]: row for row in rows}
    assert by_family["HalfCheetahVel"]["task_parameters"] == "velocity ~ U[0, 2]"
    assert by_family["AntVel"]["task_parameters"] == "velocity ~ U[0, 3]"
    assert by_family["Navigation2D"]["action_space"] == "Box(-0.1, 0.1, (2,), float32)"
    assert "settotalmass" not in capfd.readouterr().err  # the MuJoCo 4 deprecation line is silenced


# --- task sampling ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(HORIZONS))
def test_sample_tasks_deterministic_and_class_or_instance(name: str) -> None:
    cls = family(name)
    tasks = cls.sample_tasks(20, 7)
    assert tasks == cls.sample_tasks(20, 7)
    assert tasks == cls.sample_tasks(20, 7, split="train")
    assert cls.sample_tasks(20, np.random.default_rng(5)) == cls.sample_tasks(20, np.random.default_rng(5))
    assert gym.make(env_id(name)).unwrapped.sample_tasks(20, 7) == tasks
    json.loads(json.dumps(tasks))  # plain and serializable
    if name in CONTINUOUS:
        assert cls.sample_tasks(20, 8) != tasks
    with pytest.raises(ValueError, match="split"):
        cls.sample_tasks(3, 0, split="validation")
    with pytest.raises(ValueError):
        cls.sample_tasks(-1, 0)
    with pytest.raises(TypeError):
        cls.sample_tasks(3, "seed")
    assert cls.sample_tasks(0, 0) == []


@pytest.mark.parametrize("name", CONTINUOUS)
def test_train_and_test_streams_are_disjoint(name: str) -> None:
    n = 200 if name == "TabularMDP" else 1000
    cls = family(name)
    train = {task_key(t) for t in cls.sample_tasks(n, 0, "train")}
    test = {task_key(t) for t in cls.sample_tasks(n, 0, "test")}
    assert len(train) == len(test) == n
    assert not train & test
    rng = np.random.default_rng(0)  # the Generator form too, drawing both splits from one generator
    train = {task_key(t) for t in cls.sample_tasks(n, rng, "train")}
    test = {task_key(t) for t in cls.sample_tasks(n, rng, "test")}
    assert not train & test


@pytest.mark.parametrize("name", DIRECTION)
def test_direction_tasks_both_signs_in_both_splits(name: str) -> None:
    # Task space {+1, -1}: held-out tasks come from another stream but cannot differ from training ones.
    for split in ("train", "test"):
        directions = [t["direction"] for t in family(name).sample_tasks(1000, 3, split)]
        assert set(directions) == {1, -1}
        assert all(type(d) is int for d in directions)
        assert 0.44 < directions.count(1) / 1000 < 0.56


def test_task_ranges() -> None:
    for name, high in (("HalfCheetahVel", 2.0), ("AntVel", 3.0)):
        v = np.array([t["velocity"] for t in family(name).sample_tasks(2000, 1)])
        assert v.min() >= 0.0 and v.max() <= high
        assert v.min() < 0.05 * high and v.max() > 0.95 * high
    goals = np.array([t["goal"] for t in envs.Navigation2D.sample_tasks(2000, 1)])
    assert goals.shape == (2000, 2) and goals.min() >= -0.5 and goals.max() <= 0.5
    assert goals.min() < -0.45 and goals.max() > 0.45
    means = np.array([t["means"] for t in envs.Bandit.sample_tasks(2000, 1)])
    assert means.shape == (2000, 5) and means.min() >= 0.0 and means.max() <= 1.0
    assert abs(means.mean() - 0.5) < 0.02
    tasks = envs.TabularMDP.sample_tasks(300, 1)
    p = np.array([t["transitions"] for t in tasks])
    mu = np.array([t["reward_means"] for t in tasks])
    assert p.shape == (300, 10, 5, 10) and mu.shape == (300, 10, 5)
    assert p.min() >= 0.0 and np.allclose(p.sum(-1), 1.0)
    assert abs(p.mean() - 0.1) < 1e-9 and abs(p.var() - 9 / 1100) < 5e-4  # flat Dirichlet(1,..,1), K=10
    assert abs(mu.mean() - 1.0) < 0.03 and abs(mu.std() - 1.0) < 0.03


def test_instance_sizes_drive_sampling() -> None:
    assert len(envs.Bandit(num_arms=3).sample_tasks(1, 0)[0]["means"]) == 3
    assert len(envs.Bandit.sample_tasks(1, 0)[0]["means"]) == 5
    task = envs.TabularMDP(num_states=4, num_actions=2).sample_tasks(1, 0)[0]
    assert np.array(task["transitions"]).shape == (4, 2, 4)
    assert np.array(task["reward_means"]).shape == (4, 2)


# --- set_task / get_task ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(HORIZONS))
def test_set_task_round_trip_through_json(name: str) -> None:
    env = gym.make(env_id(name)).unwrapped
    task = family(name).sample_tasks(1, 11, "test")[0]
    env.set_task(json.loads(json.dumps(task)))
    assert env.get_task() == task
    got = env.get_task()
    first = next(iter(got))
    got[first] = None  # a copy: mutating it leaves the env alone
    assert env.get_task() == task
    other = family(name).sample_tasks(1, 12)[0]
    env.reset(options={"task": other})
    assert env.get_task() == other
    with pytest.raises(ValueError, match="options"):
        env.reset(options={"goal": 1})


BAD_TASKS = {
    "Navigation2D": [{"goal": [0.1]}, {"goal": [0.1, float("nan")]}, {"goal": "ab"}, {"target": [0, 0]}],
    "HalfCheetahVel": [{"velocity": "1"}, {"velocity": float("inf")}, {"velocity": True}, {"speed": 1.0}],
    "HalfCheetahDir": [{"direction": 0}, {"direction": True}, {"direction": 0.5}, {"direction": [1]}],
    "AntVel": [{"velocity": None}, {"velocity": 1.0, "extra": 1}],
    "AntDir": [{"direction": 2}, {}],
    "Bandit": [{"means": [0.5] * 4}, {"means": [0.5] * 4 + [1.5]}, {"means": [-0.1] + [0.5] * 4}],
    "TabularMDP": [
        {"transitions": np.full((10, 5, 10), 0.2).tolist(), "reward_means": np.zeros((10, 5)).tolist()},
        {"transitions": np.full((10, 5, 10), 0.1).tolist(), "reward_means": np.zeros((10, 4)).tolist()},
        {"transitions": np.full((10, 5, 10), 0.1).tolist()},
    ],
}


@pytest.mark.parametrize("name", list(HORIZONS))
def test_set_task_rejects_bad_dicts(name: str) -> None:
    env = family(name)()
    before = env.get_task()
    for bad in [*BAD_TASKS[name], None, [1, 2], "velocity"]:
        with pytest.raises(ValueError, match=name):
            env.set_task(bad)
    assert env.get_task() == before


def test_constructor_task_and_pickle_keep_the_task() -> None:
    env = envs.HalfCheetahVel(task={"velocity": 1.25}, horizon=50)
    env.set_task({"velocity": 0.75})
    clone = pickle.loads(pickle.dumps(env))
    assert clone.get_task() == {"velocity": 0.75} and clone.horizon == 50
    nav = envs.Navigation2D(task={"goal": [0.1, -0.2]})
    assert pickle.loads(pickle.dumps(nav)).get_task() == {"goal": [0.1, -0.2]}


# --- seeding ------------------------------------------------------------------------------------------------


def rollout(name: str, seed: int, steps: int) -> list[tuple]:
    env = gym.make(env_id(name))
    env.unwrapped.set_task(family(name).sample_tasks(1, 2)[0])
    env.action_space.seed(99)
    obs, _ = env.reset(seed=seed)
    out = [("reset", obs.tobytes())]
    for _ in range(steps):
        obs, reward, terminated, truncated, _ = env.step(env.action_space.sample())
        out.append((obs.tobytes(), reward, terminated, truncated))
        if terminated or truncated:
            obs, _ = env.reset()
            out.append(("reset", obs.tobytes()))
    return out


@pytest.mark.parametrize("name", list(HORIZONS))
def test_same_seed_same_episode_different_seed_different(name: str) -> None:
    steps = 30
    first = rollout(name, 0, steps)
    assert first == rollout(name, 0, steps)
    if name != "Navigation2D":  # Navigation2D has no randomness at all
        assert first != rollout(name, 1, steps)
