"""Meta-World (the optional extra) and the success rate that the sampler records for envs reporting it.

The success-recording tests and the missing-extra test run everywhere; the Meta-World tests skip, saying why, where
``metaworld`` is not installed (``pip install -e ".[metaworld]"`` installs it, with ``mujoco==3.3.0``).
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch
from cli_runs import sets, train

import metarl  # noqa: F401  (registers the envs)
import metarl_envs
from metarl.cli import main
from metarl.policies import GaussianMLPPolicy, policy_params
from metarl.sampling import LocalSampler
from metarl.sampling.lanes import GymLanes

HAVE_METAWORLD = importlib.util.find_spec("metaworld") is not None
needs_metaworld = pytest.mark.skipif(
    not HAVE_METAWORLD, reason='Meta-World is not installed (optional extra: pip install -e ".[metaworld]")'
)
ML1 = "metarl/MetaWorldML1-v0"
ML10 = "metarl/MetaWorldML10-v0"
REACH = "experiments/maml_trpo_ml1_reach.yaml"


# --- success recording, on a small env written for it ----------------------------------------------------------
class SuccessLine(gym.Env):
    """A point on a line: ``x += clip(a, -1, 1)``; ``info["success"]`` is ``x > 1`` at that step (it can come and
    go); the episode terminates early when ``x < -2``; horizon 12. Task: the start ``{"x0": ...}``."""

    reports_success = True
    horizon = 12

    def __init__(self) -> None:
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (1,), np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)
        self._x0, self._x, self._t = 0.0, 0.0, 0

    def set_task(self, task: dict) -> None:
        self._x0 = float(task["x0"])

    def sample_tasks(self, n: int, rng: Any, split: str = "train") -> list[dict]:
        return [{"x0": float(x)} for x in np.random.default_rng(rng).uniform(-0.5, 0.5, n)]

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self._x, self._t = self._x0, 0
        return np.array([self._x], np.float32), {}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict]:
        self._x += float(np.clip(action[0], -1.0, 1.0))
        self._t += 1
        info = {"success": self._x > 1.0}
        return np.array([self._x], np.float32), -abs(self._x), self._x < -2.0, self._t >= self.horizon, info


LINE = "metarl-test/SuccessLine-v0"
if LINE not in gym.registry:
    gym.register(id=LINE, entry_point=SuccessLine)


def replayed_success(task: dict, actions: np.ndarray, mask: np.ndarray) -> float:
    """1.0 if any step that happened had ``x > 1``, computed from the recorded actions by hand."""
    x = task["x0"]
    for action, live in zip(actions[:, 0], mask, strict=True):
        if not live:
            break
        x += float(np.clip(action, -1.0, 1.0))
        if x > 1.0:
            return 1.0
    return 0.0


def test_episode_success_is_any_step_success_and_stops_at_termination() -> None:
    torch.manual_seed(0)
    policy = GaussianMLPPolicy(1, 1, (8,), init_std=1.5)
    params = {k: v.detach() for k, v in policy_params(policy).items()}
    tasks = SuccessLine().sample_tasks(6, 0)
    batch = LocalSampler(LINE).sample(policy, params, tasks, episodes_per_task=8, seed=3)
    assert batch.success.shape == (6, 8) and batch.success.dtype == np.float32
    expected = np.array(
        [[replayed_success(t, batch.actions[i, e], batch.mask[i, e]) for e in range(8)] for i, t in enumerate(tasks)]
    )
    np.testing.assert_array_equal(batch.success, expected)
    assert 0 < expected.mean() < 1  # some episodes succeed, some do not: the comparison can fail
    assert (batch.lengths < SuccessLine.horizon).any()  # and some ended early (x < -2)
    assert batch.success_rate == pytest.approx(expected.mean())
    # select, concatenate, to_torch and to_numpy keep it; equals compares it
    both = type(batch).concatenate([batch.select([0, 1]), batch.select([2, 3, 4, 5])])
    assert both.equals(batch) and both.to_torch().to_numpy().equals(batch)
    flipped = batch.select(list(range(6)))
    flipped.success = 1.0 - flipped.success
    assert not flipped.equals(batch)


def test_envs_without_success_record_none() -> None:
    policy = GaussianMLPPolicy(2, 2, (8,))
    params = {k: v.detach() for k, v in policy_params(policy).items()}
    batch = LocalSampler("metarl/Navigation2D-v0").sample(policy, params, [{"goal": [0.1, 0.2]}], 2, seed=0)
    assert batch.success is None and batch.success_rate is None


def test_a_metaworld_config_without_the_extra_is_one_line_and_exit_2(monkeypatch, tmp_path, capsys) -> None:
    monkeypatch.setitem(sys.modules, "metaworld", None)  # `import metaworld` now raises ImportError
    monkeypatch.delitem(sys.modules, "metarl_envs.meta_world", raising=False)
    run = tmp_path / "run"
    assert main(["train", REACH, "--run-dir", str(run), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert 'pip install -e ".[metaworld]"' in err and "env.id" in err
    assert not run.exists()
    rows = {row["id"]: row for row in metarl_envs.describe_families()}
    assert rows[ML1]["not_installed"] == 'pip install -e ".[metaworld]"'


# --- Meta-World --------------------------------------------------------------------------------------------------
@needs_metaworld
def test_ml1_splits_are_disjoint_balanced_and_seeded() -> None:
    env = gym.make(ML1).unwrapped
    train_tasks = env.sample_tasks(50, 7, "train")
    assert sorted(t["index"] for t in train_tasks) == list(range(50))  # all 50 goals once before any repeat
    assert {t["split"] for t in train_tasks} == {"train"} and {t["env_name"] for t in train_tasks} == {"reach-v3"}
    assert env.sample_tasks(50, 7, "train") == train_tasks
    assert env.sample_tasks(50, 8, "train") != train_tasks
    goals = {}
    for split in ("train", "test"):
        for task in env.sample_tasks(50, 0, split):
            env.reset(options={"task": task})
            goals[(split, task["index"])] = tuple(np.round(env.goal(), 6))
    train_goals = {g for (s, _), g in goals.items() if s == "train"}
    test_goals = {g for (s, _), g in goals.items() if s == "test"}
    assert len(train_goals) == len(test_goals) == 50 and not train_goals & test_goals
    assert len(env.sample_tasks(120, 0, "test")) == 120


@needs_metaworld
def test_ml10_draws_every_class_equally_and_holds_out_five() -> None:
    env = gym.make(ML10).unwrapped
    train_names, test_names = env.class_names("train"), env.class_names("test")
    assert len(train_names) == 10 and len(test_names) == 5 and not set(train_names) & set(test_names)
    train_tasks = env.sample_tasks(20, 0, "train")
    assert sorted(t["env_name"] for t in train_tasks) == sorted(train_names * 2)
    test_tasks = env.sample_tasks(10, 0, "test")
    assert sorted(t["env_name"] for t in test_tasks) == sorted(test_names * 2)
    for task in (train_tasks[0], test_tasks[0]):  # each class's own model is stepped
        observation, _ = env.reset(options={"task": task})
        assert observation.shape == (39,)
        assert env.step(np.zeros(4))[0].shape == (39,)


@needs_metaworld
@pytest.mark.parametrize(
    "task, message",
    [
        ({"env_name": "reach-v3", "split": "valid", "index": 0}, "split"),
        ({"env_name": "reach-v3", "split": "test", "index": 50}, "index"),
        ({"env_name": "push-v3", "split": "test", "index": 0}, "belongs to"),
        ({"env_name": "reach-v3", "index": 0}, "keys"),
    ],
)
def test_bad_tasks_are_rejected(task: dict, message: str) -> None:
    env = gym.make(ML1).unwrapped
    with pytest.raises(ValueError, match=message):
        env.set_task(task)


@needs_metaworld
@pytest.mark.filterwarnings("ignore:Constant.s. may be too high:UserWarning")  # Meta-World's scripted policy
def test_steps_equal_metaworld_and_success_flags_reach_the_lanes() -> None:
    """Drive the adapter, the sampler's lanes and Meta-World's own env with Meta-World's scripted reach policy:
    identical observations and rewards, and the lanes' success flags are the env's ``info["success"]``."""
    import metaworld
    from metaworld.policies import SawyerReachV3Policy

    env = gym.make(ML1, horizon=80).unwrapped
    task = env.sample_tasks(1, 0, "test")[0]
    bench = metaworld.ML1("reach-v3", seed=0)
    raw = bench.test_classes["reach-v3"]()
    raw.set_task(bench.test_tasks[task["index"]])
    lanes = GymLanes(ML1, {"horizon": 80})
    scripted = SawyerReachV3Policy()
    observation, _ = env.reset(options={"task": task})
    raw_observation, _ = raw.reset()
    lane_observation = lanes.reset([task], [0])
    np.testing.assert_array_equal(observation, raw_observation)
    np.testing.assert_array_equal(lane_observation[0], observation.astype(np.float32))
    flags = []
    for t in range(80):
        seen = raw_observation.copy()
        seen[36:39] = env.goal()  # the ML benchmarks hide the goal; the scripted policy needs it
        action = np.clip(scripted.get_action(seen), -1, 1).astype(np.float32)
        raw_observation, raw_reward, _, _, raw_info = raw.step(action)
        observation, reward, terminated, truncated, info = env.step(action)
        lane_observation, lane_reward, done = lanes.step(action[None], np.ones(1, bool))
        np.testing.assert_array_equal(observation, raw_observation)
        assert reward == raw_reward and lane_reward[0] == np.float32(reward)
        assert bool(lanes.success[0]) == bool(info["success"]) == bool(raw_info["success"])
        assert not terminated and truncated == (t == 79) == bool(done[0])
        flags.append(bool(info["success"]))
    assert any(flags) and not flags[0]  # the scripted policy gets there, not at once


@needs_metaworld
def test_ray_and_local_samplers_agree_with_success(tmp_path) -> None:
    from metarl.sampling import make_sampler

    env = gym.make(ML1).unwrapped
    torch.manual_seed(0)
    policy = GaussianMLPPolicy(39, 4, (16,))
    params = {k: v.detach() for k, v in policy_params(policy).items()}
    tasks = env.sample_tasks(3, 0, "train")
    local = LocalSampler(ML1, {"horizon": 25}).sample(policy, params, tasks, 2, seed=5)
    with make_sampler(ML1, {"horizon": 25}, backend="ray", num_workers=2, tasks_per_chunk=1) as sampler:
        remote = sampler.sample(policy, params, tasks, 2, seed=5)
    assert local.success is not None and local.success.shape == (3, 2)
    assert remote.equals(local)


TINY_ML1 = [
    "sampler.backend=local",
    "maml.meta_batch_size=2",
    "maml.episodes_per_task=2",
    "policy.hidden_sizes=[8]",
    "env.kwargs.horizon=15",
    "logging.checkpoint_every=1",
    "logging.tensorboard=false",
    "iterations=2",
]


def _csv_rows(path: Path) -> list[dict[str, str]]:
    import csv

    with path.open(encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


@needs_metaworld
def test_maml_trains_evaluates_and_plots_success_on_ml1(tmp_path) -> None:
    run = tmp_path / "run"
    assert train(REACH, "--run-dir", str(run), *sets(*TINY_ML1)) == 0
    rows = _csv_rows(run / "progress.csv")
    assert len(rows) == 2 and all(0.0 <= float(r[k]) <= 1.0 for r in rows for k in ("success_pre", "success_post"))
    assert main(["evaluate", str(run), "--tasks", "3", "--episodes", "2", "--backend", "local"]) == 0
    summary = json.loads((run / "evaluation" / "summary.json").read_text())
    entry = summary["methods"]["maml"]
    assert [r["step"] for r in entry["success_steps"]] == [0, 1, 2, 3] and entry["success_steps"][0]["n"] == 3
    table = _csv_rows(run / "evaluation" / "adaptation.csv")
    assert (
        len(table) == 12 and {r["split"] for r in table} == {"test"} and {r["env_name"] for r in table} == {"reach-v3"}
    )
    means = [np.mean([float(r["success"]) for r in table if r["step"] == str(s)]) for s in range(4)]
    assert means == pytest.approx([r["mean"] for r in entry["success_steps"]])
    for extra in ([], ["--training"]):
        out = tmp_path / f"success{len(extra)}.png"
        assert main(["plot", str(run), "--success", *extra, "-o", str(out)]) == 0 and out.stat().st_size > 0
    # no oracle: Meta-World's tasks are named goals, not numbers the oracle could observe
    assert main(["baseline", "train", str(run), "--kind", "oracle"]) == 2
    assert not (run / "baselines").exists()


@needs_metaworld
def test_rl2_reports_success_per_episode_of_the_trial(tmp_path) -> None:
    run = tmp_path / "rl2"
    overrides = [
        "sampler.backend=local",
        "rl2.tasks_per_iteration=2",
        "rl2.episodes_per_trial=2",
        "rl2.hidden_size=8",
        "rl2.minibatches=1",
        "env.kwargs.horizon=10",
        "iterations=1",
        "logging.tensorboard=false",
    ]
    assert train("experiments/rl2_ml1_reach.yaml", "--run-dir", str(run), *sets(*overrides)) == 0
    row = _csv_rows(run / "progress.csv")[0]
    assert 0.0 <= float(row["success_first_episode"]) <= 1.0
    assert main(["evaluate", str(run), "--tasks", "2", "--episodes", "2", "--backend", "local"]) == 0
    entry = json.loads((run / "evaluation" / "summary.json").read_text())["methods"]["rl2"]
    assert [r["step"] for r in entry["success_steps"]] == [0, 1]
