"""The unit of sampling work: roll out one chunk of tasks as one lockstep batch of lanes.

Both backends run exactly this code on exactly the same chunks, which is why their episodes are bitwise equal
whatever the worker count:

- randomness is per task, not per worker: task ``i`` (counting over the whole call) draws the env reset seeds of its
  episodes from ``SeedSequence(seed, spawn_key=(i, 0))`` and their action noise (``policy.draw_noise(rng, (E, T))``)
  from ``SeedSequence(seed, spawn_key=(i, 1))``, episode by episode in order, so asking for more episodes (or a
  longer horizon only changes the noise shape) keeps the first ones' draws; two generators per task instead of
  one per episode keeps the cost negligible even for one-step bandit episodes;
- floating-point results of a batched forward can depend on the batch size, so the batch (a chunk) is fixed by the
  call's arguments and never by the number of workers.

Lanes of a chunk are ``(task, trial)`` pairs. A stateless policy treats every episode as its own trial, so all
episodes of the chunk run side by side; a stateful policy runs the ``episodes_per_trial`` episodes of a trial one
after the other on its lane, carrying its state (input convention in :mod:`metarl.recurrent`).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.func import functional_call, vmap
from torch.utils._pytree import tree_map

from metarl.episodes import EpisodeBatch
from metarl.recurrent import NO_ACTION
from metarl.sampling.lanes import Lanes, make_lanes

Params = dict[str, Tensor]


@dataclass(frozen=True)
class RolloutSpec:
    """What every chunk of one ``sample`` call shares."""

    episodes_per_task: int
    episodes_per_trial: int
    horizon: int | None
    seed: int
    per_task_params: bool


@dataclass(frozen=True)
class Chunk:
    """Consecutive tasks ``start, start + 1, ...`` of one call."""

    start: int
    tasks: list[dict]


@dataclass(frozen=True)
class ParamSet:
    """Parameters for one call: ``params`` (stacked ``[num_tasks, ...]`` when per task) and ``rest``, the module's
    other parameters and buffers (shared), all detached CPU tensors."""

    params: Params
    rest: Params

    def for_chunk(self, chunk: Chunk, per_task: bool) -> ParamSet:
        if not per_task:
            return self
        stop = chunk.start + len(chunk.tasks)
        return ParamSet({k: v[chunk.start : stop] for k, v in self.params.items()}, self.rest)


def task_rngs(seed: int, task_index: int) -> tuple[np.random.Generator, np.random.Generator]:
    """The generators of one task of a call: env reset seeds, and action noise."""
    return tuple(  # type: ignore[return-value]
        np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed, spawn_key=(task_index, stream))))
        for stream in (0, 1)
    )


def draw_task_randomness(
    policy: nn.Module, seed: int, task_index: int, episodes: int, horizon: int
) -> tuple[np.ndarray, np.ndarray]:
    """Reset seeds ``[E]`` and action noise ``[E, T, ...]`` of one task's episodes."""
    reset_rng, noise_rng = task_rngs(seed, task_index)
    return reset_rng.integers(2**31, size=episodes), policy.draw_noise(noise_rng, (episodes, horizon))


class _PolicyStep:
    """One policy forward for all lanes of a chunk.

    Shared parameters are loaded into the worker's own copy of the module once per chunk and the module is called
    directly; per-task parameters go through ``vmap`` over ``functional_call`` with the lanes grouped by task, so a
    step costs one batched forward whatever the number of tasks.
    """

    def __init__(self, policy: nn.Module, param_set: ParamSet, per_task: bool, num_tasks: int) -> None:
        self.policy, self.num_tasks = policy, num_tasks
        if per_task:
            rest = param_set.rest

            def one_task(params: Params, *args: Tensor) -> Any:
                return functional_call(policy, (params, rest), args)

            self._batched = vmap(one_task)
            self._params = param_set.params
        else:
            with torch.no_grad():
                named = dict(policy.named_parameters()) | dict(policy.named_buffers())
                for name, value in (param_set.params | param_set.rest).items():
                    named[name].copy_(value)
            self._batched = None

    def __call__(self, *args: Any) -> Any:
        if self._batched is None:
            return self.policy(*args)
        grouped = tree_map(lambda x: x.reshape(self.num_tasks, -1, *x.shape[1:]), args)
        out = self._batched(self._params, *grouped)
        return tree_map(lambda x: x.reshape(-1, *x.shape[2:]), out)


def _where(active: Tensor, new: Tensor, old: Tensor) -> Tensor:
    return torch.where(active.view(-1, *([1] * (new.dim() - 1))), new, old)


@contextmanager
def one_torch_thread() -> Iterator[None]:
    """Run torch on one thread, then restore the caller's setting: rollouts are small ops, and two threads per
    process on shared cores made them several times slower (DESIGN.md); one thread also keeps results identical
    between the in-process backend and the workers."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def rollout_chunk(
    lanes: Lanes, policy: nn.Module, param_set: ParamSet, spec: RolloutSpec, chunk: Chunk
) -> EpisodeBatch:
    """Sample ``spec.episodes_per_task`` episodes of every task of ``chunk``; arrays ``[C, E, T, ...]``."""
    with one_torch_thread():
        return _rollout_chunk(lanes, policy, param_set, spec, chunk)


def _rollout_chunk(
    lanes: Lanes, policy: nn.Module, param_set: ParamSet, spec: RolloutSpec, chunk: Chunk
) -> EpisodeBatch:
    stateful = bool(getattr(policy, "is_stateful", False))
    ept = spec.episodes_per_trial if stateful else 1
    trials = spec.episodes_per_task // ept
    num_tasks = len(chunk.tasks)
    num_lanes = num_tasks * trials
    horizon = spec.horizon or lanes.horizon
    lane_tasks = [task for task in chunk.tasks for _ in range(trials)]
    step = _PolicyStep(policy, param_set.for_chunk(chunk, spec.per_task_params), spec.per_task_params, num_tasks)

    act_shape = () if lanes.discrete else (lanes.act_dim,)
    obs_rec: np.ndarray | None = None
    act_rec = np.zeros((num_lanes, ept, horizon, *act_shape), np.int64 if lanes.discrete else np.float32)
    rew_rec = np.zeros((num_lanes, ept, horizon), np.float32)
    logp_rec = np.zeros((num_lanes, ept, horizon), np.float32)
    mask_rec = np.zeros((num_lanes, ept, horizon), np.float32)
    success_rec = np.zeros((num_lanes, ept), np.float32) if lanes.reports_success else None

    if stateful:
        state = policy.initial_state(num_lanes)
        if lanes.discrete:
            prev_action = torch.full((num_lanes,), NO_ACTION, dtype=torch.long)
        else:
            prev_action = torch.zeros(num_lanes, lanes.act_dim)
        prev_reward = torch.zeros(num_lanes)
        prev_done = torch.zeros(num_lanes)

    drawn = [
        draw_task_randomness(policy, spec.seed, chunk.start + c, spec.episodes_per_task, horizon)
        for c in range(num_tasks)
    ]
    # [C, E, ...] -> [lanes, ept, ...]: lane (c, j) runs episodes j * ept ... j * ept + ept - 1 of task c.
    all_seeds = np.stack([d[0] for d in drawn]).reshape(num_lanes, ept)
    all_noise = np.stack([d[1] for d in drawn]).reshape(num_lanes, ept, horizon, *drawn[0][1].shape[2:])

    with torch.no_grad():
        for k in range(ept):
            seeds = all_seeds[:, k].tolist()
            noise = torch.from_numpy(np.ascontiguousarray(np.moveaxis(all_noise[:, k], 1, 0)))  # [T, L, ...]
            obs = lanes.reset(lane_tasks, seeds)
            if obs_rec is None:
                obs_rec = np.zeros((num_lanes, ept, horizon, obs.shape[-1]), np.float32)
            active = np.ones(num_lanes, bool)
            for t in range(horizon):
                obs_t = torch.from_numpy(obs)
                if stateful:
                    dist, new_state = step(obs_t, prev_action, prev_reward, prev_done, state)
                else:
                    dist = step(obs_t)
                action = policy.sample(dist, noise[t])
                log_prob = policy.log_prob(dist, action)
                action_np = action.numpy()
                obs_rec[:, k, t] = obs
                act_rec[:, k, t] = action_np
                logp_rec[:, k, t] = log_prob.numpy()
                mask_rec[:, k, t] = active
                obs, rewards, done = lanes.step(action_np, active)
                rew_rec[:, k, t] = rewards
                if success_rec is not None:  # an episode succeeds if any of its steps does (Meta-World's rule)
                    success_rec[:, k] = np.maximum(success_rec[:, k], lanes.success & active)
                if t == horizon - 1:
                    done = np.ones(num_lanes, bool)
                if stateful:
                    live = torch.from_numpy(active)
                    state = tree_map(lambda new, old, live=live: _where(live, new, old), new_state, state)
                    prev_action = _where(live, action, prev_action)
                    prev_reward = _where(live, torch.from_numpy(rewards.copy()), prev_reward)
                    prev_done = _where(live, torch.from_numpy(done.astype(np.float32)), prev_done)
                active = active & ~done
                if not active.any():
                    break

    assert obs_rec is not None
    off = mask_rec == 0
    for array in (obs_rec, act_rec, rew_rec, logp_rec):
        array[off] = 0

    def to_tasks(x: np.ndarray) -> np.ndarray:  # [C * trials, ept, T, ...] -> [C, E, T, ...]
        return x.reshape(num_tasks, trials * ept, *x.shape[2:])

    return EpisodeBatch(
        observations=to_tasks(obs_rec),
        actions=to_tasks(act_rec),
        rewards=to_tasks(rew_rec),
        log_probs=to_tasks(logp_rec),
        mask=to_tasks(mask_rec),
        tasks=[dict(task) for task in chunk.tasks],
        success=None if success_rec is None else success_rec.reshape(num_tasks, trials * ept),
    )


class RolloutWorker:
    """Holds one env family's lanes and runs chunks; the same object serves the local backend and each Ray actor."""

    def __init__(self, env_id: str, env_kwargs: dict[str, Any], batched: bool = True) -> None:
        self.lanes = make_lanes(env_id, env_kwargs, batched)

    def run(self, policy: nn.Module, param_set: ParamSet, spec: RolloutSpec, chunk: Chunk) -> EpisodeBatch:
        return rollout_chunk(self.lanes, policy, param_set, spec, chunk)
