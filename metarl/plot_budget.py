"""``metarl plot --budget``: gradient-based and trial-based agents at equal adaptation budget.

MAML is measured after ``k`` gradient steps, each of which spends ``E`` episodes of the held-out task (the evaluation's
``--episodes``); RL^2 and SNAIL are measured on episode ``k + 1`` of a trial, after ``k`` episodes of the task. Plotted
against gradient steps or episodes, the two kinds of agent are not comparable; plotted against the environment steps
spent on the task *before* the measured episode(s), they are:

- gradient step ``k``: ``x = k * E * H`` (``H`` the run's episode horizon),
- episode ``k + 1`` of a trial: ``x = k * H``.

A method evaluated without adaptation (the oracle) is a level line across the plot. ``H`` is read from the run's
environment (``env.unwrapped.horizon``), so the runs' environments must be importable.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .evaluate import EvaluationError
from .plot import LABELS, STYLES, YLABELS, _num, _save, _success_summary, _title, _trained_label, load_evaluations
from .run_dir import read_run_config


def run_horizon(run: Path) -> int:
    """The episode horizon of a run's environment (built once from its saved config)."""
    from .train import make_env

    env = make_env(read_run_config(run))
    try:
        return int(env.unwrapped.horizon)
    finally:
        env.close()


def budget_steps(entry: dict[str, Any], horizon: int) -> list[int]:
    """Environment steps spent on the task before each of ``entry``'s measurements (see the module docstring)."""
    steps = [int(row["step"]) for row in entry["steps"]]
    if entry.get("axis"):  # trial-based: step k is episode k + 1 of the trial
        return [k * horizon for k in steps]
    return [k * int(entry["episodes"]) * horizon for k in steps]


def budget_linthresh(xs_per_curve: Sequence[Sequence[int]], spread: float = 10.0) -> float | None:
    """The linear range of a symlog x axis when the budgets span ``spread`` or more (an RL^2 episode of 100 steps
    beside a MAML step of 2,000): the smallest positive budget, so x = 0 stays on the axis. None: keep it linear."""
    positive = [x for xs in xs_per_curve for x in xs if x > 0]
    if not positive or max(positive) < spread * min(positive):
        return None
    return float(min(positive))


def plot_budget(
    runs: Sequence[str | Path], paths: Sequence[Path], methods: Sequence[str] | None = None, success: bool = False
) -> list[Path]:
    """Return (or success rate) vs environment steps spent adapting, one line per (run, method); writes ``paths``."""
    import matplotlib
    from matplotlib.figure import Figure
    from matplotlib.ticker import EngFormatter

    loaded = load_evaluations(runs)
    for run, summary in loaded:
        if summary.get("metric", "return") != "return":
            raise EvaluationError(f"--budget plots meta-RL evaluations; run folder '{run}' is a few-shot run")
    if success:
        loaded = [(run, _success_summary(run, summary)) for run, summary in loaded]
    horizons = {run: run_horizon(run) for run, _ in loaded}
    curves = []
    for run, summary in loaded:
        for method, entry in summary["methods"].items():
            if methods and method not in methods:
                continue
            xs = budget_steps(entry, horizons[run])
            rows = entry["steps"]
            mean, low, high = ([_num(r[k]) for r in rows] for k in ("mean", "ci95_low", "ci95_high"))
            curves.append((run, method, entry, xs, mean, low, high))
    if not curves:
        raise EvaluationError(f"none of the methods {', '.join(methods or [])} has been evaluated in these runs")
    x_max = max(max(c[3]) for c in curves) or 1
    fig = Figure(figsize=(7.2, 4.6))
    ax = fig.add_subplot()
    colors = itertools.cycle(matplotlib.rcParams["axes.prop_cycle"].by_key()["color"])
    for run, method, entry, xs, mean, low, high in curves:
        if len(xs) == 1:  # evaluated without adaptation: a level line
            xs, mean, low, high = [0, x_max], mean * 2, low * 2, high * 2
        trial_based = bool(entry.get("axis"))
        name = _trained_label(run) if method == "maml" else LABELS.get(method, method)
        if method == "random":
            name = "untrained agent" if trial_based else name
        unit = "per episode of a trial" if trial_based else f"per gradient step ({entry['episodes']} episodes each)"
        label = f"{name}, {unit}" if len(entry["steps"]) > 1 else name
        label = label if len(loaded) == 1 else f"{run.name}: {label}"
        color = next(colors)
        marker = ("s" if trial_based else "o") if len(entry["steps"]) > 1 else None
        ax.plot(xs, mean, STYLES.get(method, "-"), color=color, marker=marker, markersize=4, label=label)
        ax.fill_between(xs, low, high, color=color, alpha=0.2, linewidth=0)
    linthresh = budget_linthresh([c[3] for c in curves])
    if linthresh is not None:  # otherwise the short trial's points crowd into the first few pixels
        ax.set_xscale("symlog", linthresh=linthresh, linscale=0.5)
    ax.xaxis.set_major_formatter(EngFormatter(sep=""))
    scale = f" (log scale above {linthresh:,.0f})" if linthresh is not None else ""
    ax.set_xlabel(f"environment steps spent on the task before the measured episode{scale}")
    metrics = {"success"} if success else {summary.get("metric", "return") for _, summary in loaded}
    metric = metrics.pop() if len(metrics) == 1 else "value"
    ax.set_ylabel(f"{YLABELS.get(metric, metric)} (held-out tasks)")
    ax.set_title(_title([summary.get("env_id", "") for _, summary in loaded], f"{metric} at equal adaptation budget"))
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small")
    fig.text(0.99, -0.01, "shaded: 95% confidence interval over tasks", ha="right", va="top", fontsize="x-small")
    return _save(fig, paths)
