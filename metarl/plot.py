"""``metarl plot``: adaptation curves (MAML paper, Fig. 5) and training curves, as PNG / SVG, headless.

- Adaptation: average return vs number of gradient steps on held-out tasks, one line per run and method, with the
  95% confidence band of ``summary.json``; a baseline evaluated at step 0 only (the oracle) is a flat dashed line.
- Training (``--training``): average return before and after adaptation vs meta-iteration, and vs env steps, from
  ``progress.csv``.
- ``success=True`` (``--success``): the same figures for the success rate (Meta-World runs, which record it).

Figures are drawn on a bare :class:`matplotlib.figure.Figure` (Agg canvas): no display, no pyplot global state.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .config import ConfigError
from .eval_results import read_summary
from .evaluate import EvaluationError
from .run_dir import read_progress, read_run_config

FORMATS = ("png", "svg", "pdf")
LABELS = {
    "maml": "MAML",
    "rl2": "RL^2",
    "snail": "SNAIL",
    "ucb1": "UCB1",
    "thompson": "Thompson sampling",
    "gittins": "Gittins index (discount 1 - 1/N)",
    "best_arm": "best arm (knows the means)",
    "mdp_optimal": "optimal policy (knows the MDP)",
    "uniform": "uniformly random actions",
    "random": "random init + adaptation",
    "pretrained": "pretrained (PPO) + adaptation",
    "oracle": "oracle (PPO, observes the task)",
}
STYLES = {"maml": "-", "random": ":", "pretrained": "--", "oracle": "-."}
YLABELS = {"return": "average return", "accuracy": "accuracy", "mse": "mean squared error", "success": "success rate"}


def output_paths(output: str | Path, formats: str | None) -> list[Path]:
    """Files to write: ``output`` itself (format from its suffix), or one per entry of ``formats`` ("png,svg")."""
    output = Path(output)
    if formats:
        wanted = [f.strip().lower().lstrip(".") for f in formats.split(",") if f.strip()]
    else:
        wanted = [output.suffix.lower().lstrip(".")]
    unknown = [f for f in wanted if f not in FORMATS]
    if not wanted or unknown:
        raise ConfigError(
            f"plot format must be one of {', '.join(FORMATS)} (from -o's suffix or --formats), got "
            f"{', '.join(unknown) or repr(output.suffix)}"
        )
    return [output.with_suffix(f".{fmt}") for fmt in wanted]


def _env_id(run: Path) -> str:
    try:
        return read_run_config(run).env.id
    except ConfigError:
        return ""


def _trained_label(run: Path) -> str:
    """The label of a run's own trained method: MAML, first-order MAML or Reptile (all evaluated as ``maml``)."""
    try:
        config = read_run_config(run)
    except ConfigError:
        return LABELS["maml"]
    if config.algorithm == "reptile":
        return f"Reptile (k={config.reptile.inner_steps})"
    return "FOMAML" if config.maml.first_order else LABELS["maml"]


def _title(envs: Sequence[str], what: str) -> str:
    names = sorted({e.split("/")[-1] for e in envs if e})
    return f"{', '.join(names)}: {what}" if names else what


def _check_run(run: Path) -> None:
    if not run.is_dir():
        raise ConfigError(f"run folder '{run}' does not exist")


def load_evaluations(runs: Sequence[str | Path]) -> list[tuple[Path, dict[str, Any]]]:
    """``(run, summary)`` for each run; ``EvaluationError`` naming a run without evaluation results."""
    loaded = []
    for run in map(Path, runs):
        _check_run(run)
        summary = read_summary(run / "evaluation")
        if not summary["methods"]:
            raise EvaluationError(f"run folder '{run}' has no evaluation results; run: metarl evaluate {run}")
        loaded.append((run, summary))
    return loaded


def _save(fig: Any, paths: Sequence[Path]) -> list[Path]:
    for path in paths:
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=150, bbox_inches="tight", metadata={"Date": None} if path.suffix == ".svg" else None)
    return list(paths)


def plot_adaptation(
    runs: Sequence[str | Path], paths: Sequence[Path], methods: Sequence[str] | None = None, success: bool = False
) -> list[Path]:
    """Return (or, with ``success``, success rate) vs gradient steps with 95% confidence bands, one line per
    (run, method); writes ``paths``."""
    import matplotlib
    from matplotlib.figure import Figure

    loaded = load_evaluations(runs)
    if success:  # the success-rate statistics in place of the returns; methods without them are left out
        loaded = [(run, _success_summary(run, summary)) for run, summary in loaded]
    fig = Figure(figsize=(6.4, 4.4))
    ax = fig.add_subplot()
    max_step = max(max(r["step"] for e in s["methods"].values() for r in e["steps"]) for _, s in loaded)
    max_step = max(max_step, 1)
    colors = itertools.cycle(matplotlib.rcParams["axes.prop_cycle"].by_key()["color"])
    envs = []
    for run, summary in loaded:
        envs.append(summary.get("env_id") or _env_id(run))
        for method, entry in summary["methods"].items():
            if methods and method not in methods:
                continue
            rows = entry["steps"]
            steps = [r["step"] for r in rows]
            mean = [_num(r["mean"]) for r in rows]
            low = [_num(r["ci95_low"]) for r in rows]
            high = [_num(r["ci95_high"]) for r in rows]
            if len(rows) == 1:  # evaluated without adaptation (oracle): a level line across the plot
                steps, mean, low, high = [0, max_step], mean * 2, low * 2, high * 2
            name = "untrained agent (random init)" if method == "random" and entry.get("axis") else None
            name = name or (_trained_label(run) if method == "maml" else LABELS.get(method, method))
            label = name if len(loaded) == 1 else f"{run.name}: {name}"
            color = next(colors)
            ax.plot(
                steps, mean, STYLES.get(method, "-"), color=color, marker="o" if len(rows) > 1 else None, label=label
            )
            ax.fill_between(steps, low, high, color=color, alpha=0.2, linewidth=0)
    if not ax.lines:
        raise EvaluationError(f"none of the methods {', '.join(methods or [])} has been evaluated in these runs")
    axes = {entry.get("axis") for _, s in loaded for entry in s["methods"].values()}
    trial_based = axes != {None}
    ax.set_xlabel("episode of the trial (0 = first)" if trial_based else "number of gradient steps")
    metrics = {"success"} if success else {summary.get("metric", "return") for _, summary in loaded}
    metric = metrics.pop() if len(metrics) == 1 else "value"
    ax.set_ylabel(f"{YLABELS.get(metric, metric)} (held-out tasks)")
    if max_step <= 20:
        ax.set_xticks(range(max_step + 1))
    what = "per episode within a trial" if trial_based else "after fast adaptation"
    ax.set_title(_title(envs, f"{metric} {what}"))
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small")
    fig.text(0.99, 0.005, "shaded: 95% confidence interval over tasks", ha="right", va="bottom", fontsize="x-small")
    return _save(fig, paths)


def _success_summary(run: Path, summary: dict[str, Any]) -> dict[str, Any]:
    """``summary`` with each method's success-rate statistics as its ``steps``; one line when there are none."""
    methods = {
        name: {**entry, "steps": entry["success_steps"]}
        for name, entry in summary["methods"].items()
        if "success_steps" in entry
    }
    if not methods:
        raise EvaluationError(f"run folder '{run}' has no success rates (only Meta-World runs record them)")
    return {**summary, "methods": methods}


def plot_training(runs: Sequence[str | Path], paths: Sequence[Path], success: bool = False) -> list[Path]:
    """Return (or, with ``success``, success rate) before/after adaptation vs iteration (left) and vs env steps
    (right), from ``progress.csv``."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 4.2))
    left, right = fig.subplots(1, 2, sharey=True)
    envs = []
    for run in map(Path, runs):
        _check_run(run)
        if not (run / "progress.csv").is_file():
            raise EvaluationError(f"run folder '{run}' has no training progress (progress.csv)")
        rows = read_progress(run)
        if not rows:
            raise EvaluationError(f"run folder '{run}' has an empty progress.csv")
        if "return_pre" not in rows[0] and "loss" in rows[0]:  # a few-shot run: loss and validation metric
            return _plot_fewshot_training(runs, paths)
        envs.append(_env_id(run))
        prefix = "" if len(runs) == 1 else f"{run.name}: "
        color = None
        curves = (("return_pre", "--", "before adaptation"), ("return_post", "-", "after adaptation"))
        if "trial_return" in rows[0]:  # trial-based (RL^2): first and last episode of a trial, and the whole trial
            curves = (
                ("return_first_episode", "--", "first episode of a trial"),
                ("return_last_episode", "-", "last episode of a trial"),
                ("trial_return", ":", "whole trial (sum)"),
            )
        if success:
            curves = tuple((k.replace("return", "success"), st, n) for k, st, n in curves if k != "trial_return")
            if curves[0][0] not in rows[0]:
                raise EvaluationError(f"run folder '{run}' has no success rates (only Meta-World runs record them)")
        for key, style, name in curves:
            xs = [r["iteration"] for r in rows if key in r]
            ys = [r[key] for r in rows if key in r]
            steps = [r.get("env_steps", float("nan")) for r in rows if key in r]
            (line,) = left.plot(xs, ys, style, color=color, label=prefix + name)
            color = line.get_color()
            right.plot(steps, ys, style, color=color, label=prefix + name)
    from matplotlib.ticker import EngFormatter, MaxNLocator

    left.xaxis.set_major_locator(MaxNLocator(integer=True))
    right.xaxis.set_major_formatter(EngFormatter(sep=""))
    left.set_xlabel("meta-iteration")
    right.set_xlabel("environment steps")
    left.set_ylabel(f"{'success rate' if success else 'average return'} (training tasks)")
    for ax in (left, right):
        ax.grid(True, alpha=0.3)
    left.legend(fontsize="small")
    fig.suptitle(_title(envs, "meta-training"))
    return _save(fig, paths)


def _plot_fewshot_training(runs: Sequence[str | Path], paths: Sequence[Path]) -> list[Path]:
    """Training curves of few-shot runs (loss, validation metric); every run must be a few-shot one."""
    from .fewshot.figures import plot_training as plot_fewshot

    for run in map(Path, runs):
        rows = read_progress(run)
        if not rows or "loss" not in rows[0] or "return_pre" in rows[0]:
            raise EvaluationError(f"run folder '{run}' is not a few-shot run; plot few-shot and meta-RL runs apart")
    return [plot_fewshot(runs, path) for path in paths]


def _num(value: Any) -> float:
    return float("nan") if value is None else float(value)
