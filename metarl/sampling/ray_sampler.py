"""Ray backend: rollout actors, each taking whole chunks; an embedded local Ray unless an address is given.

Traffic per call: the policy module goes into the object store only when it changes; the call's parameters go in
once (``ray.put``); each chunk is one actor call returning its whole ``EpisodeBatch``. A worker that dies is
replaced and its chunks are sampled again, which gives the same episodes (chunks are deterministic).
"""

from __future__ import annotations

import itertools
import logging
import os
import secrets
import threading
import time
from collections import deque
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import ray
import torch
from ray.exceptions import ActorUnavailableError, RayActorError, WorkerCrashedError

from metarl.episodes import EpisodeBatch
from metarl.sampling.base import Sampler, SamplerError
from metarl.sampling.rollout import Chunk, ParamSet, RolloutSpec, RolloutWorker

_DEAD_WORKER_ERRORS = (RayActorError, ActorUnavailableError, WorkerCrashedError)
_IN_FLIGHT_PER_WORKER = 2  # the next chunk waits at the actor while the current one runs
_PROCESS_TOKEN = secrets.token_hex(32)


class _RolloutActor:
    """A Ray actor around a :class:`RolloutWorker`: one torch thread, CPU, caches of the policy and the params."""

    def __init__(self, env_id: str, env_kwargs: dict[str, Any]) -> None:
        torch.set_num_threads(1)
        self._worker = RolloutWorker(env_id, env_kwargs)
        self._policy: tuple[int, Any] = (-1, None)
        self._params: tuple[int, ParamSet | None] = (-1, None)

    def pid(self) -> int:
        return os.getpid()

    def cpu_seconds(self) -> float:
        """CPU time this worker process has used (for load-independent benchmarks)."""
        return time.process_time()

    def run(
        self,
        policy_version: int,
        policy_ref: list[ray.ObjectRef],
        call_id: int,
        params_ref: list[ray.ObjectRef],
        spec: RolloutSpec,
        chunk: Chunk,
    ) -> EpisodeBatch:
        # Refs arrive wrapped in lists so Ray does not resolve them per call; fetch once per version / call.
        if self._policy[0] != policy_version:
            self._policy = (policy_version, ray.get(policy_ref[0]))
        if self._params[0] != call_id:
            self._params = (call_id, ray.get(params_ref[0]))
        return self._worker.run(self._policy[1], self._params[1], spec, chunk)


_RemoteRolloutActor = ray.remote(_RolloutActor)


# -- Ray session management ---------------------------------------------------------------------------------------
_session_lock = threading.Lock()
_session_users = 0  # samplers using the Ray session one of them opened (started or joined); the last one closes it
_session_embedded = False  # that session is a private local Ray started by a sampler


def _quiet_local_ray_init(num_cpus: int) -> None:
    """Start a private local Ray: loopback only, no dashboard, quiet, token auth without writing ``~/.ray``."""
    has_token = (
        "RAY_AUTH_TOKEN" in os.environ
        or "RAY_AUTH_TOKEN_PATH" in os.environ
        or (Path.home() / ".ray" / "auth_token").exists()
    )
    if not has_token:
        # Ray turns token auth on for a new local cluster and, lacking a token, writes one to ~/.ray/auth_token;
        # an in-memory token (inherited by Ray's processes) avoids that write.
        os.environ["RAY_AUTH_TOKEN"] = _PROCESS_TOKEN
    # Ray starts its workers at niceness 15, so on a busy machine they starve behind the learner and anything else
    # running; rollout workers are the run's main work, so the embedded Ray keeps them at normal priority.
    os.environ.setdefault("RAY_worker_niceness", "0")
    # Ray binds its servers to the node IP it detects (all interfaces); for a single-machine session it uses
    # loopback when clusters are "disabled". Flip that private switch only for the duration of the start.
    from ray._private import ray_constants

    previous = getattr(ray_constants, "ENABLE_RAY_CLUSTER", None)
    if previous is not None:
        ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        ray.init(
            address="local",
            num_cpus=num_cpus,
            include_dashboard=False,
            logging_level=logging.ERROR,
            log_to_driver=False,
            object_store_memory=512 * 2**20,
        )
    finally:
        if previous is not None:
            ray_constants.ENABLE_RAY_CLUSTER = previous


def probe_ray_address(address: str, timeout_s: float = 10.0) -> None:
    """Raise SamplerError unless a Ray GCS answers at ``host:port`` within ``timeout_s`` (ray.init can hang)."""
    import grpc
    from ray.core.generated import gcs_service_pb2, gcs_service_pb2_grpc

    if "://" in address or address in ("auto", "local"):
        return  # ray:// clients and auto-discovery have their own, bounded, connection logic
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise SamplerError(f"cannot reach Ray at {address}: expected HOST:PORT")
    channel = grpc.insecure_channel(address)
    try:
        stub = gcs_service_pb2_grpc.NodeInfoGcsServiceStub(channel)
        stub.GetClusterId(gcs_service_pb2.GetClusterIdRequest(), timeout=timeout_s)
    except grpc.RpcError as exc:
        if exc.code() not in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
            detail = f"{exc.code().name}: {exc.details()}"
            raise SamplerError(f"cannot reach Ray at {address}: {detail}") from None
    finally:
        channel.close()


def _connect(address: str, timeout_s: float) -> None:
    probe_ray_address(address, timeout_s)
    try:
        ray.init(address=address, logging_level=logging.ERROR, log_to_driver=False)
    except Exception as exc:  # noqa: BLE001 (ray raises several types: ConnectionError, RuntimeError, ...)
        raise SamplerError(f"cannot reach Ray at {address}: {exc}") from exc


class RaySampler(Sampler):
    """Samples with ``num_workers`` Ray actors (one torch thread each, CPU only).

    With ``ray_address=None`` and no Ray in this process, starts a private local Ray (``num_workers`` CPUs,
    loopback only) and shuts it down when the last sampler using it closes; its actors reserve no logical CPU,
    so any number of samplers fit and plain Ray tasks never wait for a CPU the actors hold. With an address, joins
    that cluster (reachability checked within ``connect_timeout_s``) and each actor reserves one CPU, which
    spreads them over the nodes. If this process is already connected to Ray, uses that session.
    ``worker_cpus`` overrides the CPUs each actor reserves.
    """

    def __init__(
        self,
        env_id: str,
        env_kwargs: Mapping[str, Any] | None = None,
        num_workers: int = 2,
        ray_address: str | None = None,
        tasks_per_chunk: int | None = None,
        connect_timeout_s: float = 10.0,
        start_timeout_s: float = 120.0,
        worker_cpus: float | None = None,
    ) -> None:
        super().__init__(env_id, env_kwargs, tasks_per_chunk)
        if not isinstance(num_workers, int) or isinstance(num_workers, bool) or num_workers < 1:
            raise ValueError(f"num_workers must be a positive int, got {num_workers!r}")
        self.num_workers = num_workers
        self._owns_ray = False
        self._embedded = False
        self._actors: list[Any] = []
        self._replaced = 0
        self._in_flight: dict[ray.ObjectRef, tuple[int, int, Any]] = {}
        self._call_ids = itertools.count()
        self._policy_ref: ray.ObjectRef | None = None
        self._policy_ref_version = 0
        self._join_or_start(ray_address, connect_timeout_s)
        self.worker_cpus = worker_cpus if worker_cpus is not None else (0.0 if self._embedded else 1.0)
        try:
            self._actors = [self._new_actor() for _ in range(num_workers)]
            self._wait_ready(self._actors, start_timeout_s)
        except BaseException:
            self.close()
            raise

    # -- lifecycle ----------------------------------------------------------------------------------------------
    def _join_or_start(self, ray_address: str | None, connect_timeout_s: float) -> None:
        global _session_users, _session_embedded
        with _session_lock:
            if ray.is_initialized():
                if ray_address is not None:
                    probe_ray_address(ray_address, connect_timeout_s)
                if _session_users:
                    _session_users += 1
                    self._owns_ray, self._embedded = True, _session_embedded
                return
            if ray_address is not None:
                _connect(ray_address, connect_timeout_s)
            else:
                _quiet_local_ray_init(self.num_workers)
            _session_users, _session_embedded = 1, ray_address is None
            self._owns_ray, self._embedded = True, _session_embedded

    def close(self) -> None:
        global _session_users
        if self._closed:
            return
        super().close()
        for actor in self._actors:
            try:
                ray.kill(actor)
            except Exception:  # noqa: BLE001 (already dead or Ray already down)
                pass
        self._actors = []
        with _session_lock:
            if self._owns_ray:
                self._owns_ray = False
                _session_users -= 1
                if _session_users == 0 and ray.is_initialized():
                    ray.shutdown()

    def _new_actor(self) -> Any:
        options = _RemoteRolloutActor.options(num_cpus=self.worker_cpus, max_restarts=0, max_task_retries=0)
        return options.remote(self.env_id, self.env_kwargs)

    def _wait_ready(self, actors: list[Any], timeout_s: float) -> None:
        refs = [actor.pid.remote() for actor in actors]
        try:
            ready, _ = ray.wait(refs, num_returns=len(refs), timeout=timeout_s)
            if len(ready) < len(refs):
                raise SamplerError(
                    f"{len(refs) - len(ready)} of {len(refs)} rollout workers did not start within {timeout_s:.0f} s "
                    f"(each reserves {self.worker_cpus} CPU: not enough free CPUs in the Ray cluster?)"
                )
            ray.get(refs)
        except RayActorError as exc:
            raise SamplerError(f"rollout workers for {self.env_id} failed to start: {exc}") from exc

    # -- sampling -----------------------------------------------------------------------------------------------
    def _run_chunks(self, param_set: ParamSet, spec: RolloutSpec, chunks: list[Chunk]) -> list[EpisodeBatch]:
        if self._policy_ref is None or self._policy_ref_version != self.policy_version:
            self._policy_ref = ray.put(self._policy_copy)
            self._policy_ref_version = self.policy_version
        policy_args = (self.policy_version, [self._policy_ref])
        call_id = next(self._call_ids)
        params_args = (call_id, [ray.put(param_set)])

        results: list[EpisodeBatch | None] = [None] * len(chunks)
        pending = deque(range(len(chunks)))
        in_flight = self._in_flight = {}  # ref -> (chunk, slot, actor)
        load = [0] * self.num_workers
        replacements_left = 2 * self.num_workers + 2
        try:
            while pending or in_flight:
                for slot in range(self.num_workers):
                    while pending and load[slot] < _IN_FLIGHT_PER_WORKER:
                        index = pending.popleft()
                        actor = self._actors[slot]
                        ref = actor.run.remote(*policy_args, *params_args, spec, chunks[index])
                        in_flight[ref] = (index, slot, actor)
                        load[slot] += 1
                done, _ = ray.wait(list(in_flight), num_returns=1)
                for ref in done:
                    index, slot, actor = in_flight.pop(ref)
                    load[slot] -= 1
                    try:
                        results[index] = ray.get(ref)
                    except _DEAD_WORKER_ERRORS as exc:
                        pending.appendleft(index)
                        if self._actors[slot] is actor:  # first failure seen from this actor: replace it
                            if replacements_left == 0:
                                raise SamplerError(f"rollout workers keep dying; last error: {exc}") from exc
                            replacements_left -= 1
                            self._replace(slot)
        finally:
            for ref in in_flight:  # only after an error: do not leave work queued on the actors
                try:
                    ray.cancel(ref)
                except Exception:  # noqa: BLE001 (best effort)
                    pass
            in_flight.clear()
        return results  # type: ignore[return-value]

    def _replace(self, slot: int) -> None:
        try:
            ray.kill(self._actors[slot])
        except Exception:  # noqa: BLE001 (already gone)
            pass
        self._actors[slot] = self._new_actor()
        self._replaced += 1

    def worker_cpu_seconds(self) -> list[float]:
        """CPU seconds used so far by each current worker process."""
        return ray.get([actor.cpu_seconds.remote() for actor in self._actors])

    @property
    def workers_replaced(self) -> int:
        """How many dead workers this sampler has replaced so far."""
        return self._replaced
