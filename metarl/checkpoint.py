"""Checkpoints: written atomically, read back with ``weights_only=True``.

A checkpoint is a dict of tensors and plain Python values (numbers, strings, lists, dicts). It is written to a
temporary file in the same folder, flushed to disk, then renamed over the target, so a crash never leaves a torn
file. Reading uses torch's restricted unpickler; a corrupt or foreign file is one ``CheckpointError``.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from .errors import UserError

FORMAT = "metarl-checkpoint-v1"


class CheckpointError(UserError, ValueError):
    """A checkpoint that is missing, corrupt, or not written by metarl."""


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> Path:
    """Write ``state`` to ``path`` atomically; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save({"format": FORMAT, **state}, handle)
            handle.flush()
            os.fsync(handle.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes owner-only files; a checkpoint is an ordinary file
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by ``save_checkpoint``; ``CheckpointError`` if it is not one."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint '{path}' does not exist")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises many types for truncated, foreign or malicious files
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
        raise CheckpointError(f"checkpoint '{path}' is corrupt or not a metarl checkpoint ({first_line})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"checkpoint '{path}' is not a metarl checkpoint (no '{FORMAT}' marker)")
    return state


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The newest ``checkpoints/iter_*.pt`` of a run folder, or None."""
    folder = Path(run_dir) / "checkpoints"
    candidates = sorted(
        folder.glob("iter_*.pt"), key=lambda p: int(p.stem.split("_")[1]) if p.stem[5:].isdigit() else -1
    )
    return candidates[-1] if candidates else None


def checkpoint_path(run_dir: str | Path, iteration: int) -> Path:
    """Where the checkpoint after ``iteration`` completed iterations lives."""
    return Path(run_dir) / "checkpoints" / f"iter_{iteration:06d}.pt"


def resolve_checkpoint(run_dir: str | Path, checkpoint: str | None, best: Callable[[], Path]) -> Path:
    """The checkpoint a command names: ``None`` the latest, ``"best"`` whatever ``best()`` picks (each kind of run has
    its own selection rule), an iteration number, or a path (absolute, or relative to the run folder)."""
    run_dir = Path(run_dir)
    if checkpoint == "best":
        return best()
    if checkpoint is None:
        found = latest_checkpoint(run_dir)
        if found is None:
            raise CheckpointError(f"run folder '{run_dir}' has no checkpoint (checkpoints/iter_*.pt)")
        return found
    if checkpoint.isdigit():
        return checkpoint_path(run_dir, int(checkpoint))
    path = Path(checkpoint)
    return path if path.exists() or path.is_absolute() else run_dir / path
