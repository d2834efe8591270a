"""The run folder: resolved config, per-iteration metrics (CSV + TensorBoard), checkpoints.

Layout::

    RUN/config.yaml        the resolved config (what ran)
    RUN/progress.csv       one row per iteration
    RUN/tb/                TensorBoard events
    RUN/checkpoints/       iter_NNNNNN.pt, written atomically
    RUN/train.log          the command's log, when run in the background
"""

from __future__ import annotations

import csv
import time
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
        with self.path.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=self.fieldnames or [], lineterminator="\n")
            writer.writeheader()
            writer.writerows(rows)

    def append(self, row: dict[str, Any]) -> None:
        if self.fieldnames is None:
            self.fieldnames = list(row)
            self._rewrite([])
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
