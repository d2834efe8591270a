"""Omniglot N-way K-shot classification (Lake et al., 2015), in the protocol of Santoro et al. 2016 / Finn et al. 2017.

Data: the official ``images_background.zip`` and ``images_evaluation.zip`` or their extracted folders, in a ``root``
folder given by the user (a config value / ``--data-dir``; never hard-coded here), read through the array cache of
:mod:`metarl.fewshot.omniglot_files` (which also holds the download and the corrupt/missing-data errors).

Classes are (character, rotation) pairs, rotations 0/90/180/270 degrees counting as distinct classes. Splits are by
whole alphabets, so no character (in any rotation) crosses splits: ``train`` = background alphabets minus
``n_val_alphabets`` chosen with a fixed seed, ``val`` = those, ``test`` = the evaluation alphabets only.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .omniglot_files import PARTS, DataError, default_cache_dir, load_arrays, user_cache_dir
from .omniglot_synthetic import make_synthetic_omniglot
from .tasks import FewShotBatch, as_rng, concat_batches, fixed_task_rng

__all__ = [
    "PARTS",
    "ROTATIONS",
    "DataError",
    "Omniglot",
    "OmniglotSplit",
    "OmniglotTasks",
    "default_cache_dir",
    "make_synthetic_omniglot",
    "user_cache_dir",
]

ROTATIONS: tuple[int, ...] = (0, 1, 2, 3)
"""Rotations as multiples of 90 degrees (``np.rot90`` k); each is an extra class."""

# ----------------------------------------------------------------------------------------------------------------------
# Data set, splits, episodes


class Omniglot:
    """All Omniglot drawings as one uint8 array, with a character index; loads from (and writes) the array cache.

    Attributes: ``images [n_images, S, S]`` uint8 (ink bright), ``char_start [n_chars + 1]`` (drawings of character
    ``c`` are ``images[char_start[c]:char_start[c+1]]``), ``char_part`` / ``char_alphabet`` / ``char_name``
    ``[n_chars]`` string arrays, ``cache_path`` (the cache used or written; None if it could not be written) and
    ``from_cache`` (True when no decoding was needed).
    """

    def __init__(
        self,
        root: str | os.PathLike,
        *,
        download: bool = False,
        cache_dir: str | os.PathLike | None = None,
        image_size: int = 28,
        n_val_alphabets: int = 5,
        split_seed: int = 0,
    ) -> None:
        self.root = Path(root).expanduser()
        self.image_size = image_size
        self.n_val_alphabets = n_val_alphabets
        self.split_seed = split_seed
        arrays, self.cache_path, self.from_cache = load_arrays(self.root, image_size, download, cache_dir)
        self.images: np.ndarray = arrays["images"]
        self.char_start: np.ndarray = arrays["char_start"]
        self.char_part: np.ndarray = arrays["char_part"]
        self.char_alphabet: np.ndarray = arrays["char_alphabet"]
        self.char_name: np.ndarray = arrays["char_name"]
        self._splits = self._make_splits()

    @property
    def n_characters(self) -> int:
        return len(self.char_name)

    def alphabets(self, part: str) -> list[str]:
        """Sorted alphabet names of ``part`` (``images_background`` or ``images_evaluation``)."""
        return sorted(set(self.char_alphabet[self.char_part == part].tolist()))

    def drawings(self, character: int) -> np.ndarray:
        """The ``[n_drawings, S, S]`` uint8 drawings of character index ``character``."""
        return self.images[self.char_start[character] : self.char_start[character + 1]]

    def _make_splits(self) -> dict[str, OmniglotSplit]:
        background = self.alphabets(PARTS[0])
        if not 0 <= self.n_val_alphabets < len(background):
            raise ValueError(
                f"n_val_alphabets must be in [0, {len(background) - 1}] (there are {len(background)} background "
                f"alphabets), got {self.n_val_alphabets}"
            )
        chosen = np.random.default_rng(self.split_seed).choice(len(background), self.n_val_alphabets, replace=False)
        val = sorted(background[i] for i in chosen)
        alphabets = {
            "train": [a for a in background if a not in val],
            "val": val,
            "test": self.alphabets(PARTS[1]),
        }
        splits = {}
        for split, names in alphabets.items():
            part = PARTS[1] if split == "test" else PARTS[0]
            mask = (self.char_part == part) & np.isin(self.char_alphabet, names)
            splits[split] = OmniglotSplit(split, self, np.flatnonzero(mask), tuple(names))
        return splits

    def split(self, name: str) -> OmniglotSplit:
        """``"train"``, ``"val"`` or ``"test"`` (see the module docstring for what each holds)."""
        if name not in self._splits:
            raise ValueError(f"unknown split {name!r}; expected one of {sorted(self._splits)}")
        return self._splits[name]

    def __repr__(self) -> str:
        sizes = ", ".join(f"{k}={v.n_classes}" for k, v in self._splits.items())
        return f"Omniglot({self.root}, {len(self.images)} images of {self.n_characters} characters, classes: {sizes})"


@dataclass(frozen=True)
class OmniglotSplit:
    """The characters of one split; its classes are every (character, rotation) pair."""

    name: str
    dataset: Omniglot
    characters: np.ndarray  # dataset character indices
    alphabets: tuple[str, ...]

    @property
    def classes(self) -> np.ndarray:
        """``[n_classes, 2]`` int64 rows ``(character index, rotation k)``, rotation = k * 90 degrees."""
        chars = np.repeat(self.characters, len(ROTATIONS))
        rots = np.tile(np.asarray(ROTATIONS), len(self.characters))
        return np.stack([chars, rots], axis=1).astype(np.int64)

    @property
    def n_classes(self) -> int:
        return len(self.characters) * len(ROTATIONS)


class OmniglotTasks:
    """N-way K-shot episodes from one split.

    Each task draws ``n_way`` distinct classes (label ``i`` is the ``i``-th drawn, so labels are a fresh random
    permutation per task), then ``k_shot + k_query`` distinct drawings per class, rotated by the class's rotation.
    Support and query positions are shuffled (``shuffle=True``) so that sequence models (SNAIL) see no label order.
    """

    def __init__(self, split: OmniglotSplit, n_way: int, k_shot: int, k_query: int, *, shuffle: bool = True) -> None:
        ds = split.dataset
        counts = np.diff(ds.char_start)[split.characters]
        if n_way < 1 or k_shot < 1 or k_query < 0:
            raise ValueError(f"need n_way >= 1, k_shot >= 1, k_query >= 0; got {n_way}, {k_shot}, {k_query}")
        if n_way > split.n_classes:
            raise ValueError(f"{n_way}-way episodes need {n_way} classes; split {split.name!r} has {split.n_classes}")
        if len(counts) and k_shot + k_query > counts.min():
            raise ValueError(
                f"k_shot + k_query = {k_shot + k_query} exceeds the {counts.min()} drawings of some "
                f"character in split {split.name!r}"
            )
        self.split, self.n_way, self.k_shot, self.k_query, self.shuffle = split, n_way, k_shot, k_query, shuffle
        self._classes = split.classes
        self._max_count = int(counts.max())

    def _task(self, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
        ds, n, k, q = self.split.dataset, self.n_way, self.k_shot, self.k_query
        classes = self._classes[rng.choice(len(self._classes), n, replace=False)]
        chars, rots = classes[:, 0], classes[:, 1]
        start, count = ds.char_start[chars], ds.char_start[chars + 1] - ds.char_start[chars]
        keys = rng.random((n, self._max_count))
        keys[np.arange(self._max_count)[None, :] >= count[:, None]] = np.inf  # never pick beyond a class's drawings
        draws = np.argsort(keys, axis=1)[:, : k + q]
        images = ds.images[start[:, None] + draws]  # [n, k + q, S, S]
        for r in ROTATIONS[1:]:
            sel = rots == r
            if sel.any():
                images[sel] = np.rot90(images[sel], r, axes=(2, 3))
        size = images.shape[-1]
        sx, qx = images[:, :k].reshape(n * k, size, size), images[:, k:].reshape(n * q, size, size)
        sy, qy = np.repeat(np.arange(n), k), np.repeat(np.arange(n), q)
        if self.shuffle:
            ps, pq = rng.permutation(n * k), rng.permutation(n * q)
            sx, sy, qx, qy = sx[ps], sy[ps], qx[pq], qy[pq]
        return sx, sy, qx, qy, classes

    def _batch(self, rngs: Iterator[np.random.Generator]) -> FewShotBatch:
        tasks = [self._task(r) for r in rngs]

        def images(i: int) -> torch.Tensor:
            return torch.from_numpy(np.stack([t[i] for t in tasks])).unsqueeze(2).float().div_(255.0)

        def labels(i: int) -> torch.Tensor:
            return torch.from_numpy(np.stack([t[i] for t in tasks]).astype(np.int64))

        return FewShotBatch(images(0), labels(1), images(2), labels(3), {"classes": labels(4)})

    def sample(self, batch_size: int, rng: np.random.Generator | int) -> FewShotBatch:
        """``batch_size`` episodes: ``support_x [B, N*K, 1, S, S]`` float32 in [0, 1], ``support_y [B, N*K]`` int64,
        ``query_x [B, N*Q, 1, S, S]``, ``query_y [B, N*Q]``, ``info["classes"] [B, N, 2]`` (character, rotation) of
        each label. Deterministic given the generator state (or int seed)."""
        rng = as_rng(rng)
        return self._batch(rng for _ in range(batch_size))

    def fixed(self, n_tasks: int, seed: int = 0) -> FewShotBatch:
        """A fixed evaluation list: task ``i`` from ``fixed_task_rng(seed, split, i)``, so it is the same episode
        whatever the batch size it is evaluated in."""
        return concat_batches([self._batch(iter([fixed_task_rng(seed, self.split.name, i)])) for i in range(n_tasks)])
