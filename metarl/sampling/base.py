"""The sampler interface shared by both backends: argument checks, chunking, parameter and policy preparation.

A backend only implements ``_run_chunks`` (roll out a list of chunks, results in chunk order) and ``close``.
"""

from __future__ import annotations

import copy
import numbers
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from metarl.episodes import EpisodeBatch
from metarl.errors import UserError
from metarl.sampling.lanes import lanes_per_chunk
from metarl.sampling.rollout import Chunk, ParamSet, RolloutSpec

Params = dict[str, Tensor]


class SamplerError(UserError, RuntimeError):
    """The sampler cannot do its job (Ray unreachable, workers cannot start or keep dying); the message says why."""


def _check_count(value: Any, name: str) -> int:
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return int(value)


def _cpu(t: Tensor) -> Tensor:
    return t.detach().to("cpu")


class Sampler(ABC):
    """Collects episodes of a task-distribution env: ``sample(...) -> EpisodeBatch`` (NumPy arrays).

    ``tasks_per_chunk`` fixes the unit of work (one lockstep batch of envs); the same value gives bitwise equal
    episodes with any backend and worker count. ``None`` picks it from the env family and the call's lanes per
    task (deterministically).
    """

    def __init__(self, env_id: str, env_kwargs: Mapping[str, Any] | None, tasks_per_chunk: int | None) -> None:
        self.env_id = env_id
        self.env_kwargs = dict(env_kwargs or {})
        self.tasks_per_chunk = None if tasks_per_chunk is None else _check_count(tasks_per_chunk, "tasks_per_chunk")
        self._policy_source: nn.Module | None = None
        self._policy_key: tuple | None = None
        self._policy_copy: nn.Module | None = None
        self.policy_version = 0
        self._closed = False

    # -- public API ---------------------------------------------------------------------------------------------
    def sample(
        self,
        policy: nn.Module,
        params: Mapping[str, Tensor] | Sequence[Mapping[str, Tensor]],
        tasks: Sequence[Mapping[str, Any]],
        episodes_per_task: int,
        seed: int,
        horizon: int | None = None,
        episodes_per_trial: int | None = None,
    ) -> EpisodeBatch:
        """Sample ``episodes_per_task`` episodes of every task, arrays ``[len(tasks), episodes_per_task, T, ...]``.

        ``params``: one dict for all tasks, or a list with one dict per task (adapted policies); names are the
        policy's parameter names, missing ones take the module's current values. ``horizon`` defaults to the env's.
        A stateful policy (``policy.is_stateful``) keeps its state over the ``episodes_per_trial`` consecutive
        episodes of a trial (default: all episodes of a task form one trial) and starts afresh at each trial.
        """
        if self._closed:
            raise SamplerError("the sampler is closed")
        spec, chunks, param_set = self._prepare(
            policy, params, tasks, episodes_per_task, seed, horizon, episodes_per_trial
        )
        self._refresh_policy(policy)
        batches = self._run_chunks(param_set, spec, chunks)
        return EpisodeBatch.concatenate(batches)

    def close(self) -> None:
        """Release workers (idempotent)."""
        self._closed = True

    def __enter__(self) -> Sampler:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- backend hook -------------------------------------------------------------------------------------------
    @abstractmethod
    def _run_chunks(self, param_set: ParamSet, spec: RolloutSpec, chunks: list[Chunk]) -> list[EpisodeBatch]:
        """Roll out every chunk with ``self._policy_copy``; return the batches in chunk order."""

    # -- shared preparation -------------------------------------------------------------------------------------
    def _prepare(
        self,
        policy: nn.Module,
        params: Mapping[str, Tensor] | Sequence[Mapping[str, Tensor]],
        tasks: Sequence[Mapping[str, Any]],
        episodes_per_task: int,
        seed: int,
        horizon: int | None,
        episodes_per_trial: int | None,
    ) -> tuple[RolloutSpec, list[Chunk], ParamSet]:
        if not isinstance(policy, nn.Module):
            raise TypeError(f"policy must be a torch.nn.Module, got {type(policy).__name__}")
        tasks = [dict(task) for task in tasks]
        if not tasks:
            raise ValueError("tasks must not be empty")
        episodes_per_task = _check_count(episodes_per_task, "episodes_per_task")
        if not isinstance(seed, numbers.Integral) or isinstance(seed, bool) or seed < 0:
            raise ValueError(f"seed must be a non-negative int, got {seed!r}")
        if horizon is not None:
            horizon = _check_count(horizon, "horizon")
        stateful = bool(getattr(policy, "is_stateful", False))
        if episodes_per_trial is None:
            episodes_per_trial = episodes_per_task if stateful else 1
        episodes_per_trial = _check_count(episodes_per_trial, "episodes_per_trial")
        if episodes_per_task % episodes_per_trial:
            raise ValueError(
                f"episodes_per_task ({episodes_per_task}) must be a multiple of episodes_per_trial "
                f"({episodes_per_trial})"
            )
        per_task = not isinstance(params, Mapping)
        param_set = self._param_set(policy, params, len(tasks))
        spec = RolloutSpec(episodes_per_task, episodes_per_trial, horizon, int(seed), per_task)
        lanes_per_task = episodes_per_task // episodes_per_trial if stateful else episodes_per_task
        size = self.tasks_per_chunk or default_chunking(self.env_id, lanes_per_task)
        chunks = [Chunk(start, tasks[start : start + size]) for start in range(0, len(tasks), size)]
        return spec, chunks, param_set

    @staticmethod
    def _param_set(
        policy: nn.Module, params: Mapping[str, Tensor] | Sequence[Mapping[str, Tensor]], num_tasks: int
    ) -> ParamSet:
        """Detached CPU parameters: the given ones (stacked over tasks when per task) and the module's others."""
        own = dict(policy.named_parameters()) | dict(policy.named_buffers())
        if isinstance(params, Mapping):
            given = {name: _cpu(value) for name, value in params.items()}
            names = list(given)
        else:
            per_task = list(params)
            if len(per_task) != num_tasks:
                raise ValueError(f"got {len(per_task)} parameter sets for {num_tasks} tasks")
            names = list(per_task[0])
            for i, p in enumerate(per_task):
                if sorted(p) != sorted(names):
                    raise ValueError(f"parameter set {i} has names {sorted(p)}, set 0 has {sorted(names)}")
            given = {name: torch.stack([_cpu(p[name]) for p in per_task]) for name in names}
        unknown = [name for name in names if name not in own]
        if unknown:
            raise ValueError(f"params name no parameter or buffer of the policy: {unknown}")
        for name in names:
            shape = given[name].shape[0 if isinstance(params, Mapping) else 1 :]
            if shape != own[name].shape:
                raise ValueError(f"param {name!r} has shape {tuple(shape)}, the policy's is {tuple(own[name].shape)}")
        rest = {name: _cpu(value) for name, value in own.items() if name not in given}
        return ParamSet(given, rest)

    def _refresh_policy(self, policy: nn.Module) -> None:
        """Keep a CPU copy of the module; a new copy (and version) only when a different module or architecture
        comes in. Its parameter values never matter: every call sends its parameters."""
        key = (
            type(policy),
            tuple((name, tuple(t.shape), t.dtype) for name, t in policy.state_dict().items()),
        )
        if policy is self._policy_source and key == self._policy_key:
            return
        snapshot = copy.deepcopy(policy).to("cpu")
        for p in snapshot.parameters():
            p.requires_grad_(False)
        self._policy_source, self._policy_key, self._policy_copy = policy, key, snapshot
        self.policy_version += 1


def default_chunking(env_id: str, lanes_per_task: int) -> int:
    """Tasks per chunk when ``tasks_per_chunk`` is None: about ``lanes_per_chunk(env_id)`` lanes, at least 1 task."""
    return max(1, lanes_per_chunk(env_id) // lanes_per_task)
