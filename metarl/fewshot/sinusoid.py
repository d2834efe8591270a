"""Sinusoid regression, the toy few-shot problem of the MAML paper (Finn et al., 2017, section 5.1).

A task is ``y = A sin(x - phase)`` with ``A ~ U[0.1, 5.0]`` and ``phase ~ U[0, pi]``; inputs ``x ~ U[-5, 5]``. A learner
sees ``K`` support points of a task and is scored by mean squared error on query points of the same task.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .tasks import FewShotBatch, as_rng, concat_batches, fixed_task_rng


class SinusoidTasks:
    """The sinusoid task distribution; ranges default to the MAML paper's."""

    def __init__(
        self,
        amplitude_range: tuple[float, float] = (0.1, 5.0),
        phase_range: tuple[float, float] = (0.0, math.pi),
        x_range: tuple[float, float] = (-5.0, 5.0),
    ) -> None:
        for name, (lo, hi) in (("amplitude", amplitude_range), ("phase", phase_range), ("x", x_range)):
            if not lo <= hi:
                raise ValueError(f"{name}_range must be (low, high) with low <= high, got {(lo, hi)}")
        self.amplitude_range = amplitude_range
        self.phase_range = phase_range
        self.x_range = x_range

    def sample(self, n_tasks: int, k_shot: int, k_query: int, rng: np.random.Generator | int) -> FewShotBatch:
        """``n_tasks`` tasks with ``k_shot`` support and ``k_query`` query points each.

        Returns ``support_x, support_y [n, k_shot, 1]``, ``query_x, query_y [n, k_query, 1]`` (float32) and
        ``info = {"amplitude": [n], "phase": [n]}``. Deterministic given the generator state (or int seed).
        Use ``tasks.split_rng(seed, "train"|"test")`` for disjoint train/test streams.
        """
        if n_tasks < 1 or k_shot < 0 or k_query < 0:
            raise ValueError(f"need n_tasks >= 1 and k_shot, k_query >= 0, got {n_tasks}, {k_shot}, {k_query}")
        rng = as_rng(rng)
        amplitude = rng.uniform(*self.amplitude_range, size=n_tasks)
        phase = rng.uniform(*self.phase_range, size=n_tasks)
        x = rng.uniform(*self.x_range, size=(n_tasks, k_shot + k_query, 1))
        y = amplitude[:, None, None] * np.sin(x - phase[:, None, None])
        x_t = torch.from_numpy(x.astype(np.float32))
        y_t = torch.from_numpy(y.astype(np.float32))
        return FewShotBatch(
            support_x=x_t[:, :k_shot],
            support_y=y_t[:, :k_shot],
            query_x=x_t[:, k_shot:],
            query_y=y_t[:, k_shot:],
            info={"amplitude": torch.from_numpy(amplitude), "phase": torch.from_numpy(phase)},
        )

    def fixed(self, n_tasks: int, k_shot: int, k_query: int, seed: int = 0, split: str = "test") -> FewShotBatch:
        """A fixed evaluation list: task ``i`` drawn from ``fixed_task_rng(seed, split, i)`` (batch-size free)."""
        return concat_batches([self.sample(1, k_shot, k_query, fixed_task_rng(seed, split, i)) for i in range(n_tasks)])

    @staticmethod
    def evaluate(x: torch.Tensor, amplitude: float | torch.Tensor, phase: float | torch.Tensor) -> torch.Tensor:
        """The true curve of a task at ``x`` (e.g. a dense grid for plots)."""
        return amplitude * torch.sin(x - phase)
