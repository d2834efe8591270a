"""The run folder: resolved config, per-iteration metrics (CSV + TensorBoard), checkpoints.

Layout::

    RUN/config.yaml        the resolved config (the latest settings; a resume may change some)
    RUN/resumes.yaml       one entry per resume: the iteration it continued from and the keys it changed
    RUN/progress.csv       one row per iteration
    RUN/tb/                TensorBoard events
    RUN/checkpoints/       iter_NNNNNN.pt, written atomically (a file that did not load: iter_NNNNNN.pt.corrupt)
    RUN/train.log          the command's log, when run in the background
"""

from __future__ import annotations

import csv
import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from .config import Config, ConfigError, config_from_dict, dump_config
from .errors import UserError


class RunFolderError(UserError, ValueError):
    """A run folder whose files cannot be read as metarl wrote them (e.g. a hand-edited ``progress.csv``)."""


def default_run_dir(config_path: str | Path) -> Path:
    """``runs/<config stem>-<UTC timestamp>`` under the current directory."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    return Path("runs") / f"{Path(config_path).stem}-{stamp}"


def create_run_dir(path: str | Path, config: Config) -> Path:
    """Create a new run folder holding the resolved config; refuses a folder that already has a run."""
    path = Path(path)
    if (path / "config.yaml").exists():
        raise ConfigError(f"run folder '{path}' already holds a run; use --resume {path} or another --run-dir")
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.yaml").write_text(dump_config(config), encoding="utf-8")
    return path


def _checkpoint_files(path: Path) -> set[Path]:
    """The checkpoint files now in a run folder (to tell whether a run wrote one)."""
    return set((path / "checkpoints").glob("iter_*.pt"))


def _first_missing(path: Path) -> Path | None:
    """The outermost folder of ``path`` (itself included) that does not exist yet, or None."""
    missing = None
    for folder in (path, *path.parents):
        if folder.exists():
            break
        missing = folder
    return missing


def _remove(entry: Path) -> None:
    if entry.is_dir() and not entry.is_symlink():
        shutil.rmtree(entry, ignore_errors=True)
    else:
        entry.unlink(missing_ok=True)


def _remove_created(path: Path, created_root: Path) -> None:
    """Remove ``path`` and the folders above it up to ``created_root`` that are empty (another run may have
    created its own folder beside it meanwhile)."""
    shutil.rmtree(path, ignore_errors=True)
    for folder in path.parents:
        if not folder.is_relative_to(created_root):
            break
        try:
            folder.rmdir()
        except OSError:
            break


@contextmanager
def new_run_folder(path: str | Path, config: Config) -> Iterator[Path]:
    """Create a run folder holding ``config.yaml`` for the ``with`` block. If the block fails before it writes a
    checkpoint, remove what this run created (the folders it made, or in a folder that existed before only the new
    entries), so the same command can start again; a folder's earlier contents are never touched."""
    path = Path(path)
    created_root = _first_missing(path)
    before = set(path.iterdir()) if created_root is None else set()
    checkpoints_before = _checkpoint_files(path)
    create_run_dir(path, config)
    try:
        yield path
    except BaseException:
        if not _checkpoint_files(path) - checkpoints_before:
            if created_root is not None:
                _remove_created(path, created_root)
            else:
                for entry in set(path.iterdir()) - before:
                    _remove(entry)
        raise


def read_run_config(path: str | Path, overrides: list[str] | None = None) -> Config:
    """The config a run folder was created with (plus overrides, e.g. a raised ``iterations``)."""
    config_file = Path(path) / "config.yaml"
    if not config_file.is_file():
        raise ConfigError(f"'{path}' is not a run folder (no config.yaml)")
    return config_from_dict(yaml.safe_load(config_file.read_text(encoding="utf-8")) or {}, overrides)


class ProgressLog:
    """Appends one CSV row per iteration; on resume drops rows past the checkpoint so the file stays exact."""

    def __init__(self, path: str | Path, resume_from: int | None = None) -> None:
        self.path = Path(path)
        self.fieldnames: list[str] | None = None
        if resume_from is not None and self.path.exists():
            with self.path.open(newline="") as handle:
                reader = csv.DictReader(handle)
                rows = [row for row in reader if int(row["iteration"]) <= resume_from]
                self.fieldnames = reader.fieldnames
            self._rewrite(rows)
        elif self.path.exists():
            self.path.unlink()

    def _rewrite(self, rows: list[dict]) -> None:
        """Replace the file with ``rows`` atomically: a kill mid-rewrite (on resume) leaves the old file whole."""
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        with tmp.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=self.fieldnames or [], lineterminator="\n")
            writer.writeheader()
            writer.writerows(rows)
        os.replace(tmp, self.path)

    def append(self, row: dict[str, Any]) -> None:
        """Append ``row``; a key the file has no column for yet (a metric a resumed run's changed config turns on,
        e.g. ``updates`` with ``rl2.target_kl``) adds the column, earlier rows left empty in it, not dropped."""
        if self.fieldnames is None:
            self.fieldnames = list(row)
            self._rewrite([])
        new_keys = [key for key in row if key not in self.fieldnames]
        if new_keys:
            with self.path.open(newline="") as handle:
                rows = list(csv.DictReader(handle))
            self.fieldnames = [*self.fieldnames, *new_keys]
            self._rewrite(rows)
        with self.path.open("a", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=self.fieldnames, extrasaction="ignore", lineterminator="\n")
            writer.writerow(row)


def read_progress(path: str | Path) -> list[dict[str, float]]:
    """Rows of a run's ``progress.csv`` as floats (LF line ends, or CRLF as written before); ``RunFolderError``
    naming the line and column of a value that is not a number, so ``metarl plot`` says it in one line."""
    file = Path(path) / "progress.csv"
    with file.open(newline="") as handle:
        reader = csv.DictReader(handle)
        return [_numeric_row(row, file, reader.line_num) for row in reader]


def _numeric_row(row: dict[str, str], file: Path, line: int) -> dict[str, float]:
    """One CSV row as floats (empty cells left out)."""
    out = {}
    for key, value in row.items():
        if value == "" or value is None:
            continue
        try:
            out[key] = float(value)
        except (TypeError, ValueError):
            raise RunFolderError(f"'{file}' line {line}, column '{key}': {value!r} is not a number") from None
    return out


class TensorBoardLog:
    """Scalar metrics to TensorBoard events under ``RUN/tb`` (a no-op when disabled)."""

    def __init__(self, path: str | Path, enabled: bool = True, purge_step: int | None = None) -> None:
        self.writer = None
        if enabled:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(Path(path) / "tb"), purge_step=purge_step)

    def log(self, metrics: dict[str, float], step: int) -> None:
        if self.writer is None:
            return
        for key, value in metrics.items():
            if isinstance(value, (int, float)):
                self.writer.add_scalar(key, value, step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
