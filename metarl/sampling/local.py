"""In-process backend: the same chunks as the Ray backend, run one after the other (tests, debugging)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from metarl.episodes import EpisodeBatch
from metarl.sampling.base import Sampler
from metarl.sampling.rollout import Chunk, ParamSet, RolloutSpec, RolloutWorker


class LocalSampler(Sampler):
    """Runs the chunks one after the other in this process, on one torch thread during each chunk (like each Ray
    worker, so results match bitwise); the caller's thread setting is restored afterwards."""

    def __init__(
        self, env_id: str, env_kwargs: Mapping[str, Any] | None = None, tasks_per_chunk: int | None = None
    ) -> None:
        super().__init__(env_id, env_kwargs, tasks_per_chunk)
        self._worker = RolloutWorker(self.env_id, self.env_kwargs)

    def _run_chunks(self, param_set: ParamSet, spec: RolloutSpec, chunks: list[Chunk]) -> list[EpisodeBatch]:
        return [self._worker.run(self._policy_copy, param_set, spec, chunk) for chunk in chunks]
