"""Same/different image pairs for training a Siamese verification network (Koch et al. 2015).

A :class:`PairSource` draws pairs from one Omniglot split (the training split: background alphabets minus the
validation ones), so the verification network never sees an evaluation alphabet. Classes are the suite's
(character, rotation) pairs. Of ``n`` pairs, exactly ``round(n * same_fraction)`` are *same* pairs (two distinct
drawings of one class) and the rest *different* pairs (one drawing each of two distinct classes, drawn uniformly);
positions are shuffled. Koch et al. train on balanced pairs (``same_fraction = 0.5``).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import torch
from torch import Tensor

from .omniglot import ROTATIONS, OmniglotSplit
from .tasks import as_rng


@dataclass(frozen=True)
class PairBatch:
    """``x1, x2 [P, 1, S, S]`` float32 in [0, 1]; ``same [P]`` float32 (1 = same class); ``info["classes"]
    [P, 2, 2]`` the (character, rotation) class of each image."""

    x1: Tensor
    x2: Tensor
    same: Tensor
    info: dict[str, np.ndarray] = field(default_factory=dict)

    def __len__(self) -> int:
        return self.x1.shape[0]

    def to(self, device: torch.device | str) -> PairBatch:
        return replace(self, x1=self.x1.to(device), x2=self.x2.to(device), same=self.same.to(device))


class PairSource:
    """Pairs from ``split`` with a fixed fraction of same pairs (see the module docstring)."""

    def __init__(self, split: OmniglotSplit, same_fraction: float = 0.5) -> None:
        if not 0.0 <= same_fraction <= 1.0:
            raise ValueError(f"same_fraction must be in [0, 1], got {same_fraction}")
        ds = split.dataset
        counts = np.diff(ds.char_start)[split.characters]
        if len(counts) == 0 or counts.min() < 2:
            raise ValueError(f"split {split.name!r} needs >= 2 drawings per character for same pairs")
        if split.n_classes < 2:
            raise ValueError(f"split {split.name!r} needs >= 2 classes for different pairs")
        self.split, self.same_fraction = split, same_fraction
        self._classes = split.classes

    def _image(self, cls: np.ndarray, drawing: int) -> np.ndarray:
        ds = self.split.dataset
        image = ds.images[ds.char_start[cls[0]] + drawing]
        return np.rot90(image, int(cls[1])) if cls[1] in ROTATIONS[1:] else image

    def _count(self, cls: np.ndarray) -> int:
        ds = self.split.dataset
        return int(ds.char_start[cls[0] + 1] - ds.char_start[cls[0]])

    def sample(self, n: int, rng: np.random.Generator | int) -> PairBatch:
        """``n`` pairs, deterministic given the generator state (or int seed)."""
        rng = as_rng(rng)
        n_same = int(round(n * self.same_fraction))
        same = np.zeros(n, dtype=bool)
        same[:n_same] = True
        rng.shuffle(same)
        first, second, classes = [], [], []
        for is_same in same:
            if is_same:
                a = b = self._classes[rng.integers(len(self._classes))]
                i, j = rng.choice(self._count(a), 2, replace=False)
            else:
                ia, ib = rng.choice(len(self._classes), 2, replace=False)
                a, b = self._classes[ia], self._classes[ib]
                i, j = rng.integers(self._count(a)), rng.integers(self._count(b))
            first.append(self._image(a, int(i)))
            second.append(self._image(b, int(j)))
            classes.append(np.stack([a, b]))

        def images(items: list[np.ndarray]) -> Tensor:
            return torch.from_numpy(np.ascontiguousarray(np.stack(items))).unsqueeze(1).float().div_(255.0)

        return PairBatch(
            images(first),
            images(second),
            torch.from_numpy(same.astype(np.float32)),
            {"classes": np.stack(classes) if classes else np.zeros((0, 2, 2), dtype=np.int64)},
        )
