"""Episode sampling: one interface, two backends (in-process and Ray actors), bitwise equal given the same seed.

``make_sampler(env_id, env_kwargs, backend, num_workers, ray_address)`` returns a :class:`Sampler`; use it as a
context manager (or call ``close``). ``sampler.sample(policy, params, tasks, episodes_per_task, seed)`` returns an
:class:`metarl.episodes.EpisodeBatch` of NumPy arrays. Rollout mechanics (seeding, chunks, lanes, stateful policies)
are described in :mod:`metarl.sampling.rollout`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal

from metarl.sampling.base import Sampler, SamplerError
from metarl.sampling.local import LocalSampler

if TYPE_CHECKING:
    from metarl.config import Config

__all__ = ["LocalSampler", "RaySampler", "Sampler", "SamplerError", "configured_sampler", "make_sampler"]


def make_sampler(
    env_id: str,
    env_kwargs: Mapping[str, Any] | None = None,
    backend: Literal["ray", "local"] = "ray",
    num_workers: int = 2,
    ray_address: str | None = None,
    tasks_per_chunk: int | None = None,
    connect_timeout_s: float = 10.0,
) -> Sampler:
    """A sampler for ``env_id``: Ray actors (``backend="ray"``, the default) or in-process (``"local"``, which
    ignores ``num_workers`` and ``ray_address``). Raises SamplerError when Ray cannot be reached or started."""
    if backend == "local":
        return LocalSampler(env_id, env_kwargs, tasks_per_chunk)
    if backend == "ray":
        from metarl.sampling.ray_sampler import RaySampler

        return RaySampler(env_id, env_kwargs, num_workers, ray_address, tasks_per_chunk, connect_timeout_s)
    raise ValueError(f"backend must be 'ray' or 'local', got {backend!r}")


def configured_sampler(
    config: Config, backend: str | None = None, num_workers: int | None = None, ray_address: str | None = None
) -> Sampler:
    """The sampler an experiment's ``env`` and ``sampler`` sections describe; given arguments override the config's
    (``metarl evaluate --backend/--workers/--ray-address``)."""
    return make_sampler(
        config.env.id,
        config.env.kwargs,
        backend=backend or config.sampler.backend,
        num_workers=num_workers or config.sampler.num_workers,
        ray_address=ray_address or config.sampler.ray_address,
    )


def __getattr__(name: str) -> Any:
    if name == "RaySampler":  # imported lazily: importing ray costs about a second
        from metarl.sampling.ray_sampler import RaySampler

        return RaySampler
    raise AttributeError(f"module 'metarl.sampling' has no attribute {name!r}")
