"""Supervised few-shot meta-training: ``metarl train`` on a config with a ``fewshot`` section lands here.

``metarl.train.train_from_cli`` calls :func:`prepare_fewshot` and :func:`prepare_method` first (data found and
checked, keys checked, the model built and a resumed checkpoint loaded: a ``DataError``, ``ConfigError`` or
``CheckpointError`` stops the command before anything is written), then :func:`train_fewshot`.

One iteration: draw ``meta_batch_size`` training tasks from ``(seed, iteration)``, one ``train_step`` of the method
(Adam on the MAML objective, Reptile's rule, or Adam on the metric loss), a row in ``progress.csv`` / TensorBoard,
and every ``fewshot.eval_every`` iterations (and at the end) the validation metric before and after
``eval_inner_steps`` inner steps on ``val_tasks`` fixed validation tasks (Omniglot: the held-out background
alphabets). Checkpoints (every ``logging.checkpoint_every`` iterations and at the end) hold the model, the Meta-SGD
step sizes, the optimizer, torch's RNG and the iteration, so ``metarl train --resume RUN`` continues bit for bit.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from ..checkpoint import CheckpointError, checkpoint_path, save_checkpoint
from ..config import Config, config_to_dict
from ..progress import progress_bar
from ..run_dir import ProgressLog, TensorBoardLog
from ..stopping import StopOnSignal
from .methods import Method, build_method
from .problem import FewShotProblem, build_problem


def prepare_fewshot(config: Config) -> FewShotProblem:
    """Build the problem of ``config.fewshot`` (loads Omniglot); raises ``DataError`` / ``ConfigError`` on bad input."""
    return build_problem(config)


def prepare_method(
    config: Config, problem: FewShotProblem, device: torch.device, resume_state: dict | None = None
) -> tuple[Method, int]:
    """The method of ``config`` (seeded), restored from ``resume_state`` when given, and its completed iterations;
    built before the run folder is written so that a checkpoint that does not fit stops the command first."""
    torch.manual_seed(config.seed)  # the model's (and Meta-SGD's step sizes') initialisation
    method = build_method(config, problem, device)
    start = restore(config, problem, method, resume_state) if resume_state is not None else 0
    return method, start


def progress_columns(problem: FewShotProblem) -> tuple[str, ...]:
    """Columns of ``progress.csv``: the training metric is ``accuracy`` (Omniglot) or ``mse`` (sinusoid)."""
    m = problem.metric
    return ("iteration", "loss", m, f"val_{m}_pre", f"val_{m}", "lr", "time_s")


def checkpoint_state(config: Config, problem: FewShotProblem, method: Method, iteration: int) -> dict[str, Any]:
    """What a checkpoint holds: the method (model, step sizes, optimizer), torch's RNG, the iteration, the config."""
    return {
        "iteration": iteration,
        "algorithm": config.algorithm,
        "problem": problem.name,
        "method": method.state_dict(),
        "torch_rng": torch.get_rng_state(),
        "config": config_to_dict(config),
    }


def restore(config: Config, problem: FewShotProblem, method: Method, state: dict[str, Any]) -> int:
    """Load a checkpoint into ``method`` (and torch's RNG); returns the completed iterations."""
    try:
        # Episode sizes may differ (a ProtoNet tested at other ways); parameter shapes are checked on loading.
        kind = str(state.get("problem", "")).split("-")[0]
        if state.get("algorithm") != config.algorithm or kind != problem.name.split("-")[0]:
            raise ValueError(
                f"it was written by {state.get('algorithm')} on {state.get('problem')}, "
                f"this run is {config.algorithm} on {problem.name}"
            )
        method.load_state_dict(state["method"])
        torch.set_rng_state(state["torch_rng"])
        return int(state["iteration"])
    except (KeyError, RuntimeError, TypeError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
        raise CheckpointError(f"checkpoint does not fit this run's config ({first})") from None


def validation_row(method: Method, problem: FewShotProblem, batch: Any, steps: int) -> dict[str, float]:
    """Mean validation metric before (``_pre``) and after ``steps`` inner steps."""
    curve = method.adaptation_curve(batch, steps)
    m = problem.metric
    return {f"val_{m}_pre": float(curve[:, 0].mean()), f"val_{m}": float(curve[:, -1].mean())}


def train_fewshot(
    config: Config,
    problem: FewShotProblem,
    run_dir: str | Path,
    device: torch.device,
    resume_state: dict | None = None,
    progress: bool = True,
    prepared: tuple[Method, int] | None = None,
) -> list[dict]:
    """Run (or continue, from ``resume_state``) few-shot meta-training into ``run_dir``; returns this call's rows.
    ``prepared``: what :func:`prepare_method` returned for the same arguments (built before the folder was)."""
    run_dir, fs = Path(run_dir), config.fewshot
    method, start = prepared if prepared is not None else prepare_method(config, problem, device, resume_state)
    val_batch = problem.val.fixed(fs.val_tasks, config.seed).to(device) if problem.val is not None else None
    columns = progress_columns(problem)

    log = ProgressLog(run_dir / "progress.csv", resume_from=start if resume_state is not None else None)
    tensorboard = TensorBoardLog(run_dir, config.logging.tensorboard, purge_step=start + 1 if start else None)
    bar = progress_bar(
        total=config.iterations, initial=start, desc=f"{config.algorithm} {problem.name}", enabled=progress
    )

    def save(done: int) -> None:
        save_checkpoint(checkpoint_path(run_dir, done), checkpoint_state(config, problem, method, done))

    rows = []
    with StopOnSignal() as stop:
        try:
            for iteration in range(start, config.iterations):
                began = time.perf_counter()
                batch = problem.train_batch(config.seed, iteration, fs.meta_batch_size).to(device)
                out = method.train_step(batch, iteration)
                elapsed = time.perf_counter() - began
                done = iteration + 1
                row: dict[str, Any] = dict.fromkeys(columns, "")
                row.update(iteration=done, loss=out["loss"], lr=out["lr"], time_s=elapsed)
                row[problem.metric] = out["metric"]
                if val_batch is not None and (done % fs.eval_every == 0 or done == config.iterations):
                    row.update(validation_row(method, problem, val_batch, fs.eval_inner_steps))
                log.append(row)
                tensorboard.log({k: v for k, v in row.items() if k != "iteration"}, step=done)
                bar.update(row)
                rows.append(row)
                stop.end_of_iteration(done, config.iterations, config.logging.checkpoint_every, save, run_dir)
        finally:
            bar.close()
            tensorboard.close()
    return rows
