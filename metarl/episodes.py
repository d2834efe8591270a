"""One episode batch type for every sampler and learner.

Arrays are fixed-horizon and shaped ``[tasks, episodes, T, ...]``. ``mask`` is 1 for steps that happened and 0 after
an episode terminated early, so every reduction over time multiplies by it. The same dataclass holds NumPy arrays on
the worker side and tensors on the learner side (``to_torch``).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np
import torch

ARRAY_FIELDS = ("observations", "actions", "rewards", "log_probs", "mask")


@dataclass
class EpisodeBatch:
    """Episodes of several tasks.

    observations: ``[N, E, T, obs_dim]`` float32
    actions: ``[N, E, T, act_dim]`` float32 (continuous) or ``[N, E, T]`` int64 (discrete)
    rewards, log_probs, mask: ``[N, E, T]`` float32; log_probs are those of the behaviour policy
    tasks: the N task dicts, in order
    success: ``[N, E]`` float32, 1 where the episode succeeded at some step (envs that report ``info["success"]``,
    such as Meta-World), else None
    """

    observations: Any
    actions: Any
    rewards: Any
    log_probs: Any
    mask: Any
    tasks: list[dict] = field(default_factory=list)
    success: Any = None

    @property
    def num_tasks(self) -> int:
        return self.rewards.shape[0]

    @property
    def episodes_per_task(self) -> int:
        return self.rewards.shape[1]

    @property
    def horizon(self) -> int:
        return self.rewards.shape[2]

    @property
    def returns(self) -> Any:
        """Undiscounted return of each episode, ``[N, E]``."""
        return (self.rewards * self.mask).sum(-1)

    @property
    def lengths(self) -> Any:
        """Number of steps each episode lasted, ``[N, E]``."""
        return self.mask.sum(-1)

    @property
    def num_steps(self) -> int:
        """Environment steps taken in the whole batch."""
        return int(self.mask.sum())

    @property
    def success_rate(self) -> float | None:
        """Fraction of the batch's episodes that succeeded, or None when the env does not report success."""
        return None if self.success is None else float(np.asarray(self.success, dtype=np.float64).mean())

    def task(self, index: int) -> EpisodeBatch:
        """The episodes of one task, keeping a leading task axis of size 1."""
        return self.select([index])

    def select(self, indices: list[int]) -> EpisodeBatch:
        """The episodes of the given tasks, in that order."""
        arrays = {name: getattr(self, name)[list(indices)] for name in ARRAY_FIELDS}
        success = None if self.success is None else self.success[list(indices)]
        return EpisodeBatch(**arrays, tasks=[self.tasks[i] for i in indices] if self.tasks else [], success=success)

    def to_torch(self, device: torch.device | str = "cpu") -> EpisodeBatch:
        """A copy holding tensors on ``device`` (float32, actions int64 when discrete)."""
        arrays = {}
        for name in ARRAY_FIELDS:
            value = getattr(self, name)
            arrays[name] = torch.as_tensor(np.asarray(value) if not torch.is_tensor(value) else value, device=device)
        return EpisodeBatch(**arrays, tasks=list(self.tasks), success=self.to_numpy_success())

    def to_numpy(self) -> EpisodeBatch:
        """A copy holding NumPy arrays."""
        arrays = {}
        for name in ARRAY_FIELDS:
            value = getattr(self, name)
            arrays[name] = value.detach().cpu().numpy() if torch.is_tensor(value) else np.asarray(value)
        return EpisodeBatch(**arrays, tasks=list(self.tasks), success=self.to_numpy_success())

    def to_numpy_success(self) -> np.ndarray | None:
        """``success`` as a NumPy array (it stays on the CPU: it is a statistic, never a training input)."""
        if self.success is None:
            return None
        return self.success.detach().cpu().numpy() if torch.is_tensor(self.success) else np.asarray(self.success)

    @staticmethod
    def concatenate(batches: list[EpisodeBatch]) -> EpisodeBatch:
        """Join batches along the task axis (all must have the same episodes and horizon)."""
        first = batches[0]
        stack = torch.cat if torch.is_tensor(first.rewards) else np.concatenate
        arrays = {name: stack([getattr(b, name) for b in batches]) for name in ARRAY_FIELDS}
        successes = [b.to_numpy_success() for b in batches]
        success = None if any(s is None for s in successes) else np.concatenate(successes)
        return EpisodeBatch(**arrays, tasks=[t for b in batches for t in b.tasks], success=success)

    def equals(self, other: EpisodeBatch) -> bool:
        """Bitwise equality of every array and the task list (for determinism tests)."""
        a, b = self.to_numpy(), other.to_numpy()
        if (a.success is None) != (b.success is None):
            return False
        if a.success is not None and not np.array_equal(a.success, b.success):
            return False
        return a.tasks == b.tasks and all(
            np.array_equal(getattr(a, f.name), getattr(b, f.name)) for f in fields(self) if f.name in ARRAY_FIELDS
        )
