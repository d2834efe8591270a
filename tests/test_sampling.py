"""Samplers: local vs Ray, worker counts, a killed worker, per-task parameters, stateful policies, masks.

One embedded Ray session serves the whole module (starting Ray costs seconds); the Ray samplers are module fixtures.
"""

from __future__ import annotations

import math
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from ray_faults import kill_busy_worker

import metarl  # noqa: F401  (registers the envs)
from metarl.episodes import EpisodeBatch
from metarl.policies import GaussianMLPPolicy, policy_params
from metarl.recurrent import GRUCategoricalPolicy, replay
from metarl.sampling import LocalSampler, SamplerError, make_sampler
from metarl.sampling.lanes import HalfCheetahLanes, make_lanes
from metarl.sampling.ray_sampler import probe_ray_address
from metarl.sampling.rollout import Chunk, ParamSet, RolloutSpec, rollout_chunk

NAV = "metarl/Navigation2D-v0"
CHEETAH = "metarl/HalfCheetahVel-v0"
CHEETAH_DIR = "metarl/HalfCheetahDir-v0"
BANDIT = "metarl/Bandit-v0"
MDP = "metarl/TabularMDP-v0"


def tasks_of(env_id: str, n: int, seed: int = 0) -> list[dict]:
    return gym.make(env_id).unwrapped.sample_tasks(n, seed)


def gaussian(obs_dim: int, act_dim: int, seed: int, init_std: float = 1.0) -> GaussianMLPPolicy:
    torch.manual_seed(seed)
    return GaussianMLPPolicy(obs_dim, act_dim, (32, 32), init_std=init_std)


def heading(policy: GaussianMLPPolicy, velocity: list[float], std: float) -> dict[str, torch.Tensor]:
    """Parameters of a constant-mean policy: action ~ N(velocity, std^2) whatever the observation."""
    params = {k: torch.zeros_like(v) for k, v in policy_params(policy).items()}
    last = max(k for k in params if k.startswith("mean.") and k.endswith(".bias"))
    params[last] = torch.tensor(velocity)
    params["log_std"] = torch.full((len(velocity),), math.log(std))
    return params


def perturbed(policy: torch.nn.Module, seed: int, scale: float = 0.3) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {k: v.detach() + scale * torch.randn(v.shape, generator=gen) for k, v in policy_params(policy).items()}


def assert_equal(a: EpisodeBatch, b: EpisodeBatch) -> None:
    assert a.observations.shape == b.observations.shape
    assert a.equals(b), "batches differ"


# -- fixtures -----------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def home_ray_before() -> bool:
    return (Path.home() / ".ray").exists()


@pytest.fixture(scope="module")
def cheetah2(home_ray_before):
    """Starts the embedded Ray session of this module (first Ray sampler created)."""
    with make_sampler(CHEETAH, {}, backend="ray", num_workers=2, tasks_per_chunk=1) as sampler:
        yield sampler


@pytest.fixture(scope="module")
def cheetah1(cheetah2):
    with make_sampler(CHEETAH, {}, backend="ray", num_workers=1, tasks_per_chunk=1) as sampler:
        yield sampler


@pytest.fixture(scope="module")
def bandit_ray(cheetah2):
    with make_sampler(BANDIT, {}, backend="ray", num_workers=2, tasks_per_chunk=2) as sampler:
        yield sampler


@pytest.fixture(scope="module")
def nav_ray(cheetah2):
    with make_sampler(NAV, {}, backend="ray", num_workers=2, tasks_per_chunk=2) as sampler:
        yield sampler


# -- local backend: shapes, masks, log-probs, seeds -----------------------------------------------------------------
def test_early_termination_masks_and_pads() -> None:
    """A policy heading straight for the goal at full speed (0.1 per axis) reaches (0.5, 0.5) in 5 steps."""
    policy = gaussian(2, 2, 0)
    params = heading(policy, [0.1, 0.1], 1e-6)
    tasks = [{"goal": [0.5, 0.5]}, {"goal": [0.3, -0.3]}]  # the second is never reached: (0.3, 0.3) is the closest
    batch = LocalSampler(NAV).sample(policy, params, tasks, episodes_per_task=3, seed=0)
    assert batch.observations.shape == (2, 3, 100, 2)
    assert batch.actions.shape == (2, 3, 100, 2)
    assert batch.rewards.shape == batch.mask.shape == batch.log_probs.shape == (2, 3, 100)
    assert batch.rewards.dtype == np.float32 and batch.mask.dtype == np.float32
    np.testing.assert_array_equal(batch.lengths, [[5, 5, 5], [100, 100, 100]])
    assert batch.num_steps == 315
    np.testing.assert_array_equal(batch.mask[0, :, :5], 1)
    for name in ("observations", "actions", "rewards", "log_probs", "mask"):
        assert not getattr(batch, name)[0, :, 5:].any(), f"{name} not zero-padded after termination"
    np.testing.assert_allclose(batch.returns[0], -math.sqrt(2) * (0.4 + 0.3 + 0.2 + 0.1), atol=1e-4)
    np.testing.assert_allclose(batch.observations[0, 0, :5, 0], [0.0, 0.1, 0.2, 0.3, 0.4], atol=1e-5)
    assert batch.tasks == tasks


def test_batched_navigation_equals_gym_loop() -> None:
    policy = gaussian(2, 2, 1, init_std=0.1)
    spec = RolloutSpec(episodes_per_task=4, episodes_per_trial=1, horizon=None, seed=3, per_task_params=False)
    chunk = Chunk(0, [{"goal": [0.05, 0.02]}, *tasks_of(NAV, 3)])
    params = ParamSet(heading(policy, [0.05, 0.02], 0.01), {})
    fast = rollout_chunk(make_lanes(NAV, {}, batched=True), policy, params, spec, chunk)
    slow = rollout_chunk(make_lanes(NAV, {}, batched=False), policy, params, spec, chunk)
    assert fast.lengths.min() < 100 and fast.lengths.max() == 100  # termination is exercised
    assert_equal(fast, slow)


@pytest.mark.parametrize("env_id", [CHEETAH, CHEETAH_DIR])
def test_lean_half_cheetah_step_equals_env_step(env_id: str) -> None:
    policy = gaussian(17, 6, 1)
    spec = RolloutSpec(episodes_per_task=3, episodes_per_trial=1, horizon=None, seed=7, per_task_params=False)
    chunk = Chunk(2, tasks_of(env_id, 3))
    params = ParamSet(policy_params(policy), {})
    lean_lanes = make_lanes(env_id, {"horizon": 25}, batched=True)
    assert isinstance(lean_lanes, HalfCheetahLanes)
    lean = rollout_chunk(lean_lanes, policy, params, spec, chunk)
    plain = rollout_chunk(make_lanes(env_id, {"horizon": 25}, batched=False), policy, params, spec, chunk)
    assert lean.rewards.shape == (3, 3, 25) and lean.mask.all()
    assert_equal(lean, plain)


def test_log_probs_are_those_of_recorded_actions() -> None:
    policy = gaussian(17, 6, 2)
    tasks = tasks_of(CHEETAH, 3)
    per_task = [perturbed(policy, i) for i in range(3)]
    sampler = LocalSampler(CHEETAH)
    for params in (policy_params(policy), per_task):
        batch = sampler.sample(policy, params, tasks, episodes_per_task=2, seed=5, horizon=30).to_torch()
        with torch.no_grad():
            for i in range(3):
                p = params if isinstance(params, dict) else params[i]
                dist = torch.func.functional_call(policy, p, (batch.observations[i],))
                expected = policy.log_prob(dist, batch.actions[i]) * batch.mask[i]
                torch.testing.assert_close(batch.log_probs[i], expected, atol=1e-5, rtol=1e-5)


def test_seed_determines_episodes() -> None:
    policy = gaussian(17, 6, 3)
    tasks = tasks_of(CHEETAH, 2)
    sampler = LocalSampler(CHEETAH)
    a = sampler.sample(policy, policy_params(policy), tasks, 2, seed=11, horizon=20)
    b = sampler.sample(policy, policy_params(policy), tasks, 2, seed=11, horizon=20)
    c = sampler.sample(policy, policy_params(policy), tasks, 2, seed=12, horizon=20)
    assert_equal(a, b)
    assert not np.array_equal(a.observations, c.observations)
    assert not np.array_equal(a.observations[:, 0], a.observations[:, 1])  # episodes differ from each other


def test_bad_arguments_are_rejected() -> None:
    policy = gaussian(2, 2, 0)
    sampler = LocalSampler(NAV)
    tasks = tasks_of(NAV, 2)
    with pytest.raises(ValueError, match="2 tasks"):
        sampler.sample(policy, [policy_params(policy)] * 3, tasks, 1, seed=0)
    with pytest.raises(ValueError, match="multiple of episodes_per_trial"):
        sampler.sample(policy, policy_params(policy), tasks, 3, seed=0, episodes_per_trial=2)
    with pytest.raises(ValueError, match="no parameter"):
        sampler.sample(policy, {"nope": torch.zeros(1)}, tasks, 1, seed=0)
    with pytest.raises(ValueError, match="seed"):
        sampler.sample(policy, policy_params(policy), tasks, 1, seed=-1)
    with pytest.raises(ValueError, match="backend"):
        make_sampler(NAV, {}, backend="dask")


# -- per-task parameters -------------------------------------------------------------------------------------------
def test_each_task_follows_its_own_params() -> None:
    policy = gaussian(2, 2, 4, init_std=0.05)
    tasks = tasks_of(NAV, 3)
    p = [perturbed(policy, i, scale=0.5) for i in range(3)]
    sampler = LocalSampler(NAV, tasks_per_chunk=3)
    mixed = sampler.sample(policy, p, tasks, 4, seed=1)
    for i in range(3):
        same = sampler.sample(policy, [p[i]] * 3, tasks, 4, seed=1)  # same shapes, only the params differ
        assert_equal(mixed.task(i), same.task(i))
        other = (i + 1) % 3
        assert not np.array_equal(mixed.task(other).actions, same.task(other).actions)
        shared = sampler.sample(policy, p[i], tasks, 4, seed=1)  # plain forward instead of vmap: close, not bitwise
        np.testing.assert_allclose(mixed.task(i).observations, shared.task(i).observations, atol=1e-3)


def test_per_task_params_cost_one_forward_per_step() -> None:
    class Counting(GaussianMLPPolicy):
        calls = 0

        def forward(self, obs):
            Counting.calls += 1
            return super().forward(obs)

    torch.manual_seed(0)
    policy = Counting(2, 2, (16,))
    tasks = [{"goal": [0.5, 0.5]}] * 4  # far goals: no early stop
    sampler = LocalSampler(NAV, {"horizon": 7}, tasks_per_chunk=4)
    Counting.calls = 0
    sampler.sample(policy, [perturbed(policy, i) for i in range(4)], tasks, 3, seed=0)
    assert Counting.calls == 7  # one chunk, 7 steps, all 4 tasks x 3 episodes in each forward


# -- stateful policies ---------------------------------------------------------------------------------------------
def test_gru_state_carries_within_trials_and_resets_between() -> None:
    torch.manual_seed(0)
    policy = GRUCategoricalPolicy(1, 5, 16)
    params = policy_params(policy)
    tasks = tasks_of(BANDIT, 4)
    sampler = LocalSampler(BANDIT)
    two_trials = sampler.sample(policy, params, tasks, 6, seed=2, episodes_per_trial=3)
    first_trial = sampler.sample(policy, params, tasks, 3, seed=2, episodes_per_trial=3)
    fresh = sampler.sample(policy, params, tasks, 6, seed=2, episodes_per_trial=1)  # state reset every episode
    assert two_trials.actions.shape == (4, 6, 1) and two_trials.actions.dtype == np.int64
    for name in ("actions", "rewards", "mask", "observations"):
        np.testing.assert_array_equal(getattr(two_trials, name)[:, :3], getattr(first_trial, name))
    np.testing.assert_allclose(two_trials.log_probs[:, :3], first_trial.log_probs, atol=1e-6)
    # Episodes 0 and 3 start a trial: same inputs and state as a fresh start. The others carry state.
    for e in (0, 3):
        np.testing.assert_allclose(two_trials.log_probs[:, e], fresh.log_probs[:, e], atol=1e-6)
    for e in (1, 2, 4, 5):
        assert np.abs(two_trials.log_probs[:, e] - fresh.log_probs[:, e]).max() > 1e-3
    # A learner's replay of the trials reproduces the behaviour log-probabilities.
    batch = two_trials.to_torch()
    with torch.no_grad():
        torch.testing.assert_close(policy.log_prob(replay(policy, None, batch, 3), batch.actions), batch.log_probs)


def test_gru_replay_matches_multi_step_episodes() -> None:
    torch.manual_seed(1)
    policy = GRUCategoricalPolicy(10, 5, 16)
    tasks = tasks_of(MDP, 3)
    batch = LocalSampler(MDP).sample(policy, policy_params(policy), tasks, 4, seed=0, episodes_per_trial=2)
    assert batch.observations.shape == (3, 4, 10, 10)
    batch = batch.to_torch()
    with torch.no_grad():
        log_probs = policy.log_prob(replay(policy, None, batch, 2), batch.actions)
    torch.testing.assert_close(log_probs, batch.log_probs)


# -- Ray backend ---------------------------------------------------------------------------------------------------
def test_embedded_ray_is_private_quiet_and_leaves_cpu_for_tasks(cheetah2, home_ray_before) -> None:
    import ray

    host = ray.get_runtime_context().gcs_address.rsplit(":", 1)[0]
    assert host in ("127.0.0.1", "localhost", "::1"), host
    assert ray.cluster_resources()["CPU"] == 2
    assert ray.available_resources()["CPU"] == 2  # embedded actors hold no CPU

    @ray.remote
    def plain_task() -> int:
        return 7

    assert ray.get(plain_task.remote(), timeout=60) == 7  # the actors do not starve plain tasks

    @ray.remote
    def niceness() -> int:
        import os

        return os.nice(0)

    # Ray's default would start workers 15 nice levels below the driver: starved on any loaded machine.
    assert ray.get(niceness.remote(), timeout=60) - os.nice(0) < 5
    if not home_ray_before:
        assert not (Path.home() / ".ray").exists()


def test_ray_equals_local_any_worker_count(cheetah2, cheetah1) -> None:
    policy = gaussian(17, 6, 5)
    tasks = tasks_of(CHEETAH, 5)
    local = LocalSampler(CHEETAH, tasks_per_chunk=1).sample(policy, policy_params(policy), tasks, 3, seed=9, horizon=40)
    two = cheetah2.sample(policy, policy_params(policy), tasks, 3, seed=9, horizon=40)
    one = cheetah1.sample(policy, policy_params(policy), tasks, 3, seed=9, horizon=40)
    assert_equal(local, two)
    assert_equal(local, one)
    per_task = [perturbed(policy, i) for i in range(5)]
    local = LocalSampler(CHEETAH, tasks_per_chunk=1).sample(policy, per_task, tasks, 2, seed=9, horizon=40)
    assert_equal(local, cheetah2.sample(policy, per_task, tasks, 2, seed=9, horizon=40))


def test_ray_equals_local_navigation(nav_ray) -> None:
    policy = gaussian(2, 2, 6)
    tasks = [{"goal": [0.05, 0.0]}, *tasks_of(NAV, 6)]
    params = heading(policy, [0.05, 0.0], 0.01)
    local = LocalSampler(NAV, tasks_per_chunk=2).sample(policy, params, tasks, 5, seed=4)
    assert local.lengths.min() < 100
    assert_equal(local, nav_ray.sample(policy, params, tasks, 5, seed=4))
    params = perturbed(policy, 1)
    local = LocalSampler(NAV, tasks_per_chunk=2).sample(policy, params, tasks, 5, seed=4)
    assert_equal(local, nav_ray.sample(policy, params, tasks, 5, seed=4))


def test_ray_equals_local_stateful_per_task(bandit_ray) -> None:
    torch.manual_seed(3)
    policy = GRUCategoricalPolicy(1, 5, 16)
    tasks = tasks_of(BANDIT, 5)
    for params in (policy_params(policy), [perturbed(policy, i) for i in range(5)]):
        local = LocalSampler(BANDIT, tasks_per_chunk=2).sample(policy, params, tasks, 6, seed=1, episodes_per_trial=3)
        assert_equal(local, bandit_ray.sample(policy, params, tasks, 6, seed=1, episodes_per_trial=3))


def test_policy_is_shipped_only_when_it_changes(nav_ray) -> None:
    policy = gaussian(2, 2, 7)
    tasks = tasks_of(NAV, 2)
    nav_ray.sample(policy, policy_params(policy), tasks, 1, seed=0, horizon=5)
    version = nav_ray.policy_version
    nav_ray.sample(policy, perturbed(policy, 0), tasks, 1, seed=1, horizon=5)
    assert nav_ray.policy_version == version  # new parameters, same module: nothing re-sent
    nav_ray.sample(gaussian(2, 2, 8), policy_params(policy), tasks, 1, seed=0, horizon=5)
    assert nav_ray.policy_version == version + 1


def test_killed_worker_is_replaced_and_batch_is_complete(cheetah2) -> None:
    policy = gaussian(17, 6, 8)
    tasks = tasks_of(CHEETAH, 12)
    expected = LocalSampler(CHEETAH, tasks_per_chunk=1).sample(policy, policy_params(policy), tasks, 6, seed=1)
    replaced_before = cheetah2.workers_replaced
    killed: list[bool] = []

    def kill_when_busy() -> None:
        deadline = time.monotonic() + 60
        while not cheetah2._in_flight and time.monotonic() < deadline:
            time.sleep(0.005)
        time.sleep(0.05)  # the first chunks (1200 steps each) are running
        if kill_busy_worker(cheetah2):
            killed.append(True)

    killer = threading.Thread(target=kill_when_busy)
    killer.start()
    batch = cheetah2.sample(policy, policy_params(policy), tasks, 6, seed=1)
    killer.join()
    assert killed, "the call finished before the worker could be killed"
    assert cheetah2.workers_replaced == replaced_before + 1
    assert_equal(batch, expected)


def test_unreachable_ray_address_fails_fast_with_clear_error(cheetah2) -> None:
    start = time.monotonic()
    with pytest.raises(SamplerError, match=r"cannot reach Ray at 127\.0\.0\.1:1"):
        make_sampler(NAV, {}, backend="ray", num_workers=1, ray_address="127.0.0.1:1")
    assert time.monotonic() - start < 10
    # Something listens but is not Ray: bounded by connect_timeout_s instead of ray.init's endless retries.
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        address = f"127.0.0.1:{server.getsockname()[1]}"
        start = time.monotonic()
        with pytest.raises(SamplerError, match="cannot reach Ray"):
            make_sampler(NAV, {}, backend="ray", num_workers=1, ray_address=address, connect_timeout_s=1.0)
        assert time.monotonic() - start < 10
    import ray

    probe_ray_address(ray.get_runtime_context().gcs_address)  # a live Ray answers the same check


QUIET_SCRIPT = """
import gymnasium as gym, ray
import metarl
from metarl.policies import GaussianMLPPolicy, policy_params
from metarl.sampling import make_sampler
policy = GaussianMLPPolicy(17, 6, (16,))
tasks = gym.make("metarl/HalfCheetahVel-v0").unwrapped.sample_tasks(2, 0)
with make_sampler("metarl/HalfCheetahVel-v0", {}, backend="ray", num_workers=2) as sampler:
    for seed in range(2):
        sampler.sample(policy, policy_params(policy), tasks, 2, seed=seed, horizon=10)
    assert ray.is_initialized()
assert not ray.is_initialized(), "the embedded Ray was not shut down"
"""


def test_embedded_ray_session_is_quiet_and_shut_down_at_close(tmp_path) -> None:
    """In a fresh process: start, sample twice, close. Nothing on stdout or stderr; Ray gone afterwards."""
    result = subprocess.run(
        [sys.executable, "-c", QUIET_SCRIPT], capture_output=True, text=True, timeout=170, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "" and result.stderr == ""
