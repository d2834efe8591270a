"""What every few-shot problem hands to a learner: a batch of tasks, each a support set and a query set.

A learner's loss function is called per task with ``(x, y)`` (``batch.support(i)`` / ``batch.query(i)``; without ``i``
the same tuples with a leading task axis, as ``GradientLearner.meta_loss`` takes them), or, for the metric baselines,
with an episode ``(support_x, support_y, query_x, query_y)`` (``batch.episode(i)``).

Randomness: task streams are NumPy generators derived from ``(seed, split)`` with
``SeedSequence(entropy=seed, spawn_key=(split_id,))``, so train, validation and test streams never share draws, and
the same seed gives the same tasks. ``fixed_task_rng(seed, split, i)`` gives task ``i`` of a fixed evaluation list its
own generator, so an evaluation set does not depend on the batch size it is drawn in.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import torch
from torch import Tensor

SPLIT_IDS: dict[str, int] = {"train": 0, "val": 1, "test": 2}
"""Spawn keys of the task streams; fixed forever so that seeds keep meaning the same tasks."""


def _split_id(split: str) -> int:
    if split not in SPLIT_IDS:
        raise ValueError(f"unknown split {split!r}; expected one of {sorted(SPLIT_IDS)}")
    return SPLIT_IDS[split]


def split_rng(seed: int, split: str = "train") -> np.random.Generator:
    """The task stream of ``split`` under ``seed``: disjoint (independent spawn key) from the other splits' streams."""
    return np.random.default_rng(np.random.SeedSequence(entropy=seed, spawn_key=(_split_id(split),)))


def fixed_task_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """Generator of task ``index`` in the fixed evaluation list ``(seed, split)``; independent of any batching."""
    return np.random.default_rng(np.random.SeedSequence(entropy=seed, spawn_key=(_split_id(split), index)))


def as_rng(rng: np.random.Generator | int) -> np.random.Generator:
    """Accept a generator (used as is, advancing its state) or an int seed (a fresh ``default_rng(seed)``)."""
    return rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)


@dataclass(frozen=True)
class FewShotBatch:
    """A batch of ``B`` tasks: tensors with a leading task axis, plus per-task metadata in ``info``.

    Sinusoid: ``support_x [B, K, 1]`` float32, ``support_y [B, K, 1]``. Omniglot: ``support_x [B, N*K, 1, 28, 28]``
    float32 in [0, 1], ``support_y [B, N*K]`` int64 in ``0..N-1``. ``query_*`` likewise with the query size.
    ``info`` holds task parameters (amplitude/phase, class ids) as tensors or arrays with a leading ``B`` axis.
    """

    support_x: Tensor
    support_y: Tensor
    query_x: Tensor
    query_y: Tensor
    info: dict[str, Tensor | np.ndarray] = field(default_factory=dict)

    def __len__(self) -> int:
        return self.support_x.shape[0]

    def support(self, i: int | None = None) -> tuple[Tensor, Tensor]:
        """Task ``i``'s support set ``(x, y)``, the batch a learner's inner loop adapts on; with ``i=None`` all
        tasks (leading task axis), as ``GradientLearner.adapt_many`` / ``meta_loss`` take them."""
        if i is None:
            return self.support_x, self.support_y
        return self.support_x[i], self.support_y[i]

    def query(self, i: int | None = None) -> tuple[Tensor, Tensor]:
        """Task ``i``'s query set ``(x, y)``, on which the outer (meta) loss is measured; ``i=None``: all tasks."""
        if i is None:
            return self.query_x, self.query_y
        return self.query_x[i], self.query_y[i]

    def episode(self, i: int | None = None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Task ``i`` as ``(support_x, support_y, query_x, query_y)``, the input of the metric baselines;
        ``i=None``: all tasks (leading task axis), which the metric losses also accept (mean over tasks)."""
        if i is None:
            return self.support_x, self.support_y, self.query_x, self.query_y
        return self.support_x[i], self.support_y[i], self.query_x[i], self.query_y[i]

    def to(self, device: torch.device | str) -> FewShotBatch:
        """The same batch with its tensors on ``device`` (metadata tensors too)."""
        info = {k: v.to(device) if isinstance(v, Tensor) else v for k, v in self.info.items()}
        return replace(
            self,
            support_x=self.support_x.to(device),
            support_y=self.support_y.to(device),
            query_x=self.query_x.to(device),
            query_y=self.query_y.to(device),
            info=info,
        )

    def __getitem__(self, index: int | slice) -> FewShotBatch:
        """A sub-batch of tasks (an int keeps the task axis, as a batch of one)."""
        sl = slice(index, index + 1) if isinstance(index, int) else index
        return FewShotBatch(
            self.support_x[sl],
            self.support_y[sl],
            self.query_x[sl],
            self.query_y[sl],
            {k: v[sl] for k, v in self.info.items()},
        )


def concat_batches(batches: list[FewShotBatch]) -> FewShotBatch:
    """Stack tasks of several batches (same shapes per task) into one batch."""
    if not batches:
        raise ValueError("concat_batches needs at least one batch")

    def cat(items: list[Tensor | np.ndarray]) -> Tensor | np.ndarray:
        return torch.cat(items) if isinstance(items[0], Tensor) else np.concatenate(items)  # type: ignore[arg-type]

    return FewShotBatch(
        torch.cat([b.support_x for b in batches]),
        torch.cat([b.support_y for b in batches]),
        torch.cat([b.query_x for b in batches]),
        torch.cat([b.query_y for b in batches]),
        {k: cat([b.info[k] for b in batches]) for k in batches[0].info},
    )
