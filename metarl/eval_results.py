"""Evaluation results: per-task returns -> statistics, CSV rows, ``summary.json``, a printed table.

Files in ``RUN/evaluation/`` (all written atomically: a temporary file in the same folder, then a rename):

- ``adaptation.csv`` (MAML) and ``adaptation_<method>.csv`` (baselines): columns ``method, task, step, return``
  and the task parameters (``velocity``, ``goal_x, goal_y``, ...), one row per task and gradient step. ``return``
  is the task's mean undiscounted return over the episodes sampled at that step.
- ``summary.json``: per method and step the mean, std, 95% confidence interval and number of tasks (``steps``; for
  envs that report success, such as Meta-World, the same for the per-task success rate in ``success_steps``), plus the
  settings (seed, tasks, episodes, step sizes, checkpoint) that produced them. Evaluating another method merges
  into the file; the other methods' entries are kept.

Confidence interval: two-sided 95% Student-t over the per-task returns,
``mean +- t_{0.975, n-1} * std / sqrt(n)`` with ``std`` the sample standard deviation (``ddof=1``). The tasks are
the independent units (the episodes within a task share its parameters); with 40 tasks t is 2.02, a little wider
than the normal 1.96 it tends to with many tasks.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from .baseline_envs import task_columns
from .config import ConfigError

CI_METHOD = "95% two-sided Student-t over tasks: mean +- t(0.975, n-1) * std(ddof=1) / sqrt(n)"
METHOD_ORDER = ("maml", "random", "pretrained", "oracle")


def csv_name(method: str) -> str:
    """``adaptation.csv`` for MAML, ``adaptation_<method>.csv`` for a baseline."""
    return "adaptation.csv" if method == "maml" else f"adaptation_{method}.csv"


def confidence_interval(values: Sequence[float], level: float = 0.95) -> tuple[float, float, float]:
    """``(mean, std, half_width)`` of the two-sided Student-t interval; half-width NaN for fewer than 2 values."""
    x = np.asarray(values, dtype=np.float64)
    if x.size == 0:
        raise ValueError("no values to summarise")
    mean = float(x.mean())
    if x.size < 2:
        return mean, float("nan"), float("nan")
    std = float(x.std(ddof=1))
    t = float(stats.t.ppf(0.5 + level / 2.0, df=x.size - 1))
    return mean, std, t * std / math.sqrt(x.size)


def summarize(returns: np.ndarray) -> list[dict[str, float]]:
    """One statistics row per gradient step of a ``[tasks, steps + 1]`` array of per-task returns."""
    rows = []
    for step in range(returns.shape[1]):
        mean, std, half = confidence_interval(returns[:, step])
        rows.append(
            {
                "step": step,
                "mean": mean,
                "std": std,
                "ci95": half,
                "ci95_low": mean - half,
                "ci95_high": mean + half,
                "n": int(returns.shape[0]),
            }
        )
    return rows


def csv_text(
    method: str, tasks: Sequence[Mapping[str, Any]], returns: np.ndarray, success: np.ndarray | None = None
) -> str:
    """The CSV of one method: a row per (task, step), floats written as their shortest exact decimal (``repr``).

    ``success`` (same shape as ``returns``, envs that report it): the fraction of the task's episodes that succeeded
    at that step, in a ``success`` column after ``return``."""
    params = [task_columns(task) for task in tasks]
    extra = list(params[0]) if params else []
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["method", "task", "step", "return", *(["success"] if success is not None else []), *extra])
    for i, columns in enumerate(params):
        for step in range(returns.shape[1]):
            rates = [repr(float(success[i, step]))] if success is not None else []
            cells = [columns[k] if isinstance(columns[k], str) else repr(columns[k]) for k in extra]
            writer.writerow([method, i, step, repr(float(returns[i, step])), *rates, *cells])
    return out.getvalue()


def read_summary(folder: str | Path) -> dict[str, Any]:
    """``summary.json`` of an evaluation folder, or an empty summary when there is none yet."""
    path = Path(folder) / "summary.json"
    if not path.is_file():
        return {"confidence_interval": CI_METHOD, "methods": {}}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"'{path}' is not valid JSON ({exc}); delete it to start a fresh evaluation") from None
    if not isinstance(data, dict) or not isinstance(data.get("methods", {}), dict):
        raise ConfigError(f"'{path}' is not an evaluation summary; delete it to start a fresh evaluation")
    data.setdefault("methods", {})
    return data


def merge_summary(summary: dict[str, Any], method: str, entry: dict[str, Any], env_id: str) -> dict[str, Any]:
    """A copy of ``summary`` with ``method``'s entry replaced and methods in a fixed order."""
    methods = dict(summary.get("methods", {}))
    methods[method] = entry
    ordered = {m: methods[m] for m in METHOD_ORDER if m in methods}
    ordered.update({m: v for m, v in methods.items() if m not in ordered})
    return {"env_id": env_id, "confidence_interval": CI_METHOD, "methods": ordered}


def mismatched_settings(summary: Mapping[str, Any], keys: Sequence[str] = ("seed", "tasks", "episodes")) -> list[str]:
    """Methods of a summary evaluated with other settings than the first one (their numbers do not compare)."""
    methods = list(summary.get("methods", {}).items())
    if not methods:
        return []
    reference = {k: methods[0][1].get(k) for k in keys}
    return [name for name, entry in methods[1:] if {k: entry.get(k) for k in keys} != reference]


def write_atomic(files: Mapping[Path, str]) -> None:
    """Write several text files so that each is either complete or absent: temporary file, fsync, rename.

    Every temporary file is written before the first rename, so a failure while writing leaves no file changed.
    """
    staged: list[tuple[str, Path]] = []
    try:
        for path, text in files.items():
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
            staged.append((tmp, path))
            os.chmod(tmp, 0o666 & ~current_umask())  # mkstemp makes 0600 files; results are for everyone to read
            with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
                handle.write(text)
                handle.flush()
                os.fsync(handle.fileno())
        for tmp, path in staged:
            os.replace(tmp, path)
    finally:
        for tmp, _ in staged:
            Path(tmp).unlink(missing_ok=True)


def current_umask() -> int:
    """The process umask (read by setting and restoring it)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def format_table(summary: Mapping[str, Any]) -> str:
    """The summary as an aligned text table: one line per method and gradient step."""
    header = f"{'method':<11} {'step':>4} {'mean':>11} {'std':>10} {'95% CI':>25} {'n':>4}"
    lines = [header, "-" * len(header)]
    for method, entry in summary.get("methods", {}).items():
        name = entry.get("algorithm", method) if method == "maml" else method  # the run's own: maml_trpo, reptile
        success = entry.get("success_steps")
        for i, row in enumerate(entry["steps"]):
            mean, std, low, high = (_num(row[k]) for k in ("mean", "std", "ci95_low", "ci95_high"))
            ci = f"[{low:.4g}, {high:.4g}]"
            line = f"{name:<11} {row['step']:>4} {mean:>11.4g} {std:>10.4g} {ci:>25} {row['n']:>4}"
            if success is not None:  # Meta-World: success rate over tasks with its 95% interval
                rate, half = _num(success[i]["mean"]), _num(success[i]["ci95"])
                line += f"   success {100 * rate:5.1f}% +- {100 * half:.1f}"
            lines.append(line)
    return "\n".join(lines)


def _num(value: Any) -> float:
    """A summary number (``None`` in JSON stands for NaN)."""
    return float("nan") if value is None else float(value)


def summary_json(summary: Mapping[str, Any]) -> str:
    """Deterministic JSON text (NaN written as null so other tools can read it)."""

    def clean(value: Any) -> Any:
        if isinstance(value, float) and not math.isfinite(value):
            return None
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items()}
        if isinstance(value, list):
            return [clean(v) for v in value]
        return value

    return json.dumps(clean(summary), indent=2) + "\n"
