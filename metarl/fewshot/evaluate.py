"""Few-shot evaluation: accuracy (Omniglot) or MSE (sinusoid) after 0..k adaptation steps on held-out test tasks.

Protocol (MAML paper, Finn et al. 2017, sec. 5.2 and its reference code: 600 test episodes, 95% CI): ``tasks``
episodes of the *test* split (Omniglot: the evaluation alphabets only, never seen in training or validation;
sinusoid: the ``test`` task stream), task ``i`` drawn from ``fixed_task_rng(seed, "test", i)``, so a seed names the
same episodes for every run and method. A gradient learner adapts on each task's support set with the trained inner
rule (step size ``inner_lr``, or Meta-SGD's learned step sizes; ANIL: the head only) and is scored on the query set
after 0, 1, ..., ``steps`` steps; the metric baselines give one number per task (``step`` 0).

Writes ``RUN/evaluation/adaptation.csv`` (``task, step, accuracy|mse`` and the task's parameters where it has
scalar ones) and merges ``RUN/evaluation/summary.json``: the same shape as the meta-RL evaluation
(:mod:`metarl.eval_results`: per method and step ``mean, std, ci95, ci95_low, ci95_high, n``; CI = two-sided
Student-t over tasks), plus ``"metric"`` so a plot can label its axis. Files are written atomically.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..checkpoint import CheckpointError, load_checkpoint, resolve_checkpoint
from ..config import Config, ConfigError
from ..errors import UserError
from ..eval_results import CI_METHOD, read_summary, summarize, summary_json, write_atomic
from ..run_dir import read_progress, read_run_config
from .methods import Method, build_method
from .problem import CLASSIFIERS_ONLY, FewShotProblem, build_problem
from .tasks import FewShotBatch
from .train import restore

CSV_NAME = "adaptation.csv"


def best_checkpoint(run: Path, metric: str) -> Path:
    """The checkpoint with the best validation ``metric`` after adaptation (early stopping on the validation split,
    as Snell et al. 2017 did for prototypical networks): the highest ``val_accuracy`` or lowest ``val_mse`` in
    ``progress.csv`` among the checkpoints whose iteration has a validation row; ties go to the earlier one.

    Validation tasks come from the held-out background alphabets (Omniglot) or the ``val`` task stream, so the
    test episodes stay untouched by the choice.
    """
    column = f"val_{metric}"
    if not (run / "progress.csv").is_file():
        raise CheckpointError(f"--checkpoint best needs the validation metric in '{run / 'progress.csv'}', missing")
    scores = {int(r["iteration"]): r[column] for r in read_progress(run) if column in r}
    sign = -1.0 if metric == "mse" else 1.0
    best, best_score = None, -np.inf
    for path in sorted((run / "checkpoints").glob("iter_*.pt")):
        iteration = int(path.stem.split("_")[-1])
        if iteration in scores and sign * scores[iteration] > best_score:
            best, best_score = path, sign * scores[iteration]
    if best is None:
        raise CheckpointError(f"run folder '{run}' has no checkpoint at an iteration with a {column} row")
    return best


def load_trained(run_dir: str | Path, checkpoint: str | None = None, overrides: list[str] | None = None) -> tuple:
    """``(config, problem, method, checkpoint path, iteration)`` of a run, everything checked before any work."""
    run = Path(run_dir)
    if not run.is_dir():
        raise ConfigError(f"run folder '{run}' does not exist")
    config = read_run_config(run, overrides)
    if config.fewshot is None:
        raise ConfigError(f"run folder '{run}' is not a few-shot run (its config has no fewshot section)")
    problem = build_problem(config)
    path = resolve_checkpoint(run, checkpoint, lambda: best_checkpoint(run, problem.metric))
    state = load_checkpoint(path)
    method = build_method(config, problem, torch.device("cpu"))
    iteration = restore(config, problem, method, state)
    return config, problem, method, path, iteration


def csv_text(metric: str, batch: FewShotBatch, values: np.ndarray) -> str:
    """One row per (task, step): ``task, step, <metric>`` plus the task's scalar parameters (sinusoid amplitude,
    phase); floats as their shortest exact decimal (``repr``), so equal results give equal bytes."""
    extra = {k: np.asarray(v) for k, v in batch.info.items() if np.asarray(v).ndim == 1}
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["task", "step", metric, *extra])
    for i in range(values.shape[0]):
        for step in range(values.shape[1]):
            params = [repr(float(v[i])) for v in extra.values()]
            writer.writerow([i, step, repr(float(values[i, step])), *params])
    return out.getvalue()


def adaptation_values(method: Method, problem: FewShotProblem, tasks: int, steps: int, seed: int) -> tuple:
    """``(test batch, [tasks, steps + 1] metric values)`` on ``tasks`` fixed test episodes of ``seed``."""
    batch = problem.test.fixed(tasks, seed)
    return batch, method.adaptation_curve(batch, steps)


def evaluate_fewshot(
    run_dir: str | Path,
    checkpoint: str | None = None,
    tasks: int | None = None,
    steps: int | None = None,
    seed: int = 0,
    overrides: list[str] | None = None,
) -> dict[str, Any]:
    """Evaluate a few-shot run on held-out test episodes; writes ``evaluation/`` and returns the summary.

    tasks: test episodes (default ``fewshot.eval_tasks``, 600). steps: inner steps (default
    ``fewshot.eval_inner_steps``; ignored by the metric baselines). overrides: ``key=value`` config changes for the
    evaluation only, e.g. ``["fewshot.n_way=20"]`` to test a ProtoNet trained 60-way on 20-way episodes.
    """
    config, problem, method, path, iteration = load_trained(run_dir, checkpoint, overrides)
    fs = config.fewshot
    count = fs.eval_tasks if tasks is None else int(tasks)
    steps = fs.eval_inner_steps if steps is None else int(steps)
    if count < 1 or steps < 0:
        raise ConfigError(f"evaluation needs tasks >= 1 and steps >= 0, got {count} and {steps}")
    batch, values = adaptation_values(method, problem, count, steps, seed)
    run = Path(run_dir)
    entry = {
        "seed": seed,
        "tasks": count,
        "split": "test",
        "checkpoint": str(path.relative_to(run) if path.is_relative_to(run) else path),
        "iteration": iteration,
        "inner_lr": None if config.algorithm in (*CLASSIFIERS_ONLY, "metasgd", "meta_lstm") else fs.inner_lr,
        "csv": CSV_NAME,
        "steps": summarize(values),
    }
    extras = getattr(method, "evaluation_extras", None)  # e.g. the MANN's accuracy by instance
    if extras is not None:
        entry.update(extras(count, seed))
    if checkpoint == "best":
        entry["checkpoint_rule"] = f"best val_{problem.metric} after adaptation among the checkpoints"
    folder = run / "evaluation"
    summary = merged_summary(read_summary(folder), config, problem, entry)
    write_atomic(
        {folder / CSV_NAME: csv_text(problem.metric, batch, values), folder / "summary.json": summary_json(summary)}
    )
    return summary


def merged_summary(summary: dict[str, Any], config: Config, problem: FewShotProblem, entry: dict) -> dict[str, Any]:
    """``summary`` with this run's method replaced (other methods kept, e.g. from another evaluation)."""
    methods = {k: v for k, v in summary.get("methods", {}).items() if k != config.algorithm}
    methods = {config.algorithm: entry, **methods}
    return {
        "env_id": f"fewshot/{problem.name}",
        "metric": problem.metric,
        "confidence_interval": CI_METHOD,
        "methods": methods,
    }


def format_summary(summary: dict[str, Any]) -> str:
    """A short text table (step, mean, 95% CI, n) per method."""
    metric = summary.get("metric", "value")
    lines = [f"{'method':<16} {'step':>4} {metric:>10} {'95% CI':>12} {'n':>5}"]
    for method, entry in summary["methods"].items():
        for row in entry["steps"]:
            ci = row["ci95"] if row["ci95"] is not None else float("nan")
            lines.append(
                f"{method:<16} {row['step']:>4} {row['mean']:>10.4f} {'+-' + format(ci, '.4f'):>12} {row['n']:>5}"
            )
        if "instance_accuracy" in entry:
            by_rank = entry["instance_accuracy"]["accuracy"]
            lines.append(f"{method:<16} by instance: " + ", ".join(f"{k}: {v:.4f}" for k, v in by_rank.items()))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """``python -m metarl.fewshot.evaluate RUN [--tasks N] [--steps K] [--seed S] [--set key=value]``.

    The same as ``metarl evaluate RUN`` on a few-shot run; errors on bad input are one line and exit code 2.
    """
    import argparse
    import sys

    parser = argparse.ArgumentParser(prog="python -m metarl.fewshot.evaluate", description=evaluate_fewshot.__doc__)
    parser.add_argument("run_dir", metavar="RUN_DIR")
    parser.add_argument(
        "--checkpoint",
        help="iteration number, checkpoint file, or 'best' (best validation metric; default: the latest)",
    )
    parser.add_argument("--tasks", type=int, help="test episodes (default: fewshot.eval_tasks, 600)")
    parser.add_argument("--steps", type=int, help="inner steps (default: fewshot.eval_inner_steps)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the test episodes (default 0)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="evaluation-only override")
    args = parser.parse_args(argv)
    try:
        summary = evaluate_fewshot(args.run_dir, args.checkpoint, args.tasks, args.steps, args.seed, args.set)
    except UserError as exc:
        print(f"evaluate: error: {exc}", file=sys.stderr)
        return 2
    print(format_summary(summary))
    print(f"results: {Path(args.run_dir) / 'evaluation'}/")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
