"""``metarl evaluate``: fast adaptation on held-out tasks, for a trained run and its baselines.

Protocol (MAML paper, Finn et al. 2017, sec. 5.3 / Fig. 5): draw ``tasks`` tasks from the family's ``test`` stream
(rng seeded by ``seed``). For each task, sample ``episodes`` episodes with the current parameters and record their
mean return; take one gradient step on those episodes with the training inner loss and advantages (the learner's
own :meth:`MAMLTRPO.prepare` and :class:`GradientLearner`); repeat, so returns after 0, 1, ..., k steps are recorded.

Every method sees the same tasks and the same sampling seeds (step ``k`` uses ``derived_seed(seed, EVAL_KEY, 0, k)``),
so differences between methods are not sampling noise in the tasks. Methods:

- ``maml``: the run's checkpoint (default: the latest);
- ``random``: a freshly initialised policy of the same architecture (seeded), same inner loop;
- ``pretrained``: SB3 PPO on the training distribution, converted to the suite policy, same inner loop;
- ``oracle``: SB3 PPO that observes the task, step 0 only (see :mod:`metarl.sb3_baselines`).

Results go to ``RUN/evaluation/`` (see :mod:`metarl.eval_results`), written only once everything has run.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .checkpoint import CheckpointError, load_checkpoint, resolve_checkpoint
from .config import GRADIENT_ADAPTATION, Config, ConfigError
from .errors import UserError
from .eval_results import (
    csv_name,
    csv_text,
    merge_summary,
    read_summary,
    summarize,
    summary_json,
    write_atomic,
)
from .policies import make_policy
from .run_dir import read_progress, read_run_config

METHODS = ("maml", "random", "pretrained", "oracle")
EVAL_KEY = 0xE7A1  # derived-seed namespace of evaluation, apart from training's (seed, iteration, phase) keys
SAMPLE, RANDOM_INIT, ORACLE = 0, 1, 2
DEFAULT_STEPS = 3

Params = dict[str, torch.Tensor]


class EvaluationError(UserError, ValueError):
    """A run folder lacks what a command needs (evaluation results, training progress)."""


def parse_step_sizes(spec: str | None, fast_lr: float, steps: int | None) -> list[float]:
    """The step size of each inner step.

    ``None``: the trained ``fast_lr`` for every step; ``"paper"``: the MAML paper's protocol, ``fast_lr`` for the
    first step and half of it for the later ones; ``"0.1,0.05"``: explicit sizes (their count sets the number of
    steps when ``steps`` is None, else must equal it). ``steps`` defaults to 3.
    """
    if spec is not None and spec.strip() not in ("", "paper"):
        try:
            sizes = [float(x) for x in spec.split(",")]
        except ValueError:
            raise ConfigError(f"--step-sizes: expected 'paper' or comma-separated numbers, got {spec!r}") from None
        if any(not np.isfinite(s) or s < 0 for s in sizes):
            raise ConfigError(f"--step-sizes: step sizes must be finite and >= 0, got {spec!r}")
        if steps is not None and steps != len(sizes):
            raise ConfigError(f"--step-sizes gives {len(sizes)} step sizes but --steps is {steps}")
        return sizes
    count = DEFAULT_STEPS if steps is None else steps
    if count < 0:
        raise ConfigError(f"--steps must be >= 0, got {count}")
    if spec is not None and spec.strip() == "paper":
        return [fast_lr] + [fast_lr / 2.0] * (count - 1) if count else []
    return [fast_lr] * count


# Training columns ``--checkpoint best`` scores, first present wins: the return after adaptation (MAML-TRPO,
# Reptile) or the whole trial's return (RL^2, SNAIL: what they maximise, the trial being their adaptation).
BEST_COLUMNS = ("return_post", "trial_return")


def best_column(run_dir: Path) -> str:
    """The ``progress.csv`` column :func:`best_checkpoint` scores for this run (see ``BEST_COLUMNS``)."""
    progress = run_dir / "progress.csv"
    if not progress.is_file():
        raise EvaluationError(f"--checkpoint best needs the training returns in '{progress}', which is missing")
    rows = read_progress(run_dir)
    for column in BEST_COLUMNS:
        if any(column in r for r in rows):
            return column
    raise EvaluationError(f"--checkpoint best needs a {' or '.join(BEST_COLUMNS)} column in '{progress}'")


def best_checkpoint(run_dir: Path) -> Path:
    """The checkpoint with the best training return after adaptation: the MAML paper's selection rule ("the model
    with the best average return during training was used for evaluation", Finn et al. 2017, appendix A.2).

    Each checkpoint is scored by the mean of :func:`best_column` (``return_post``, or ``trial_return`` for trial
    agents) in ``progress.csv`` over the iterations since the previous checkpoint (training tasks only, so the
    held-out evaluation stays untouched); ties go to the earlier one.
    """
    column = best_column(run_dir)
    returns = {int(r["iteration"]): float(r[column]) for r in read_progress(run_dir) if column in r}
    found = sorted((int(p.stem.split("_")[-1]), p) for p in (run_dir / "checkpoints").glob("iter_*.pt"))
    best, best_score, previous = None, -np.inf, 0
    for iteration, path in found:
        window = [returns[i] for i in range(previous + 1, iteration + 1) if i in returns]
        previous = iteration
        if window and np.mean(window) > best_score:
            best, best_score = path, float(np.mean(window))
    if best is None:
        raise CheckpointError(f"run folder '{run_dir}' has no checkpoint with training returns to choose from")
    return best


def find_checkpoint(run_dir: Path, checkpoint: str | None) -> Path:
    """The checkpoint to evaluate: the latest, ``best`` (:func:`best_checkpoint`), an iteration number, or a path
    (absolute, or relative to the run)."""
    return resolve_checkpoint(run_dir, checkpoint, lambda: best_checkpoint(run_dir))


def make_algorithm(policy: nn.Module, config: Config) -> Any:
    """The run's MAML-TRPO around ``policy`` (on the CPU): its ``prepare`` (advantages) and learner are the inner
    loop, configured exactly as in training (:func:`metarl.algorithms.maml_trpo.build_learner`)."""
    from .algorithms.maml_trpo import build_learner

    return build_learner(policy.to("cpu"), config)


def fresh_policy(config: Config) -> nn.Module:
    """A newly initialised policy of the run's architecture (torch's RNG as the caller seeded it)."""
    from .train import make_env

    env = make_env(config)
    try:
        p = config.policy
        return make_policy(
            env.observation_space, env.action_space, tuple(p.hidden_sizes), p.activation, p.init_std, p.action_scale
        )
    finally:
        env.close()


def load_trained(config: Config, path: Path) -> tuple[Any, dict]:
    """MAML-TRPO restored from a checkpoint; ``CheckpointError`` when it is missing, corrupt or does not fit."""
    state = load_checkpoint(path)
    algorithm = make_algorithm(fresh_policy(config), config)
    try:
        algorithm.load_state_dict(state["algorithm"])
    except (KeyError, RuntimeError, TypeError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
        raise CheckpointError(f"checkpoint '{path}' does not fit this run's config ({first})") from None
    return algorithm, state


def held_out_tasks(config: Config, count: int, seed: int) -> list[dict]:
    """``count`` held-out tasks from the family's ``test`` stream, seeded by ``seed``."""
    from .train import make_env

    env = make_env(config)
    try:
        return env.unwrapped.sample_tasks(count, np.random.default_rng(seed), split="test")
    finally:
        env.close()


def adapt_step(algorithm: Any, batch: Any, params: Sequence[Params], step_size: float) -> list[Params]:
    """One inner step per task from its own params, with the training inner loss and advantages."""
    prepared = algorithm.prepare(batch)
    learner = algorithm.learner
    adapted = []
    for i, start in enumerate(params):
        task_batch = {key: value[i] for key, value in prepared.items()}
        if learner.inner_lrs is not None:  # Meta-SGD: the learned step sizes are the step sizes
            new = learner.adapt(start, algorithm.inner_loss, task_batch, num_steps=1, create_graph=False)
        else:
            new = learner.adapt(start, algorithm.inner_loss, task_batch, step_sizes=[step_size], create_graph=False)
        adapted.append({key: value.detach() for key, value in new.items()})
    return adapted


def adaptation_returns(
    algorithm: Any, sampler: Any, tasks: list[dict], episodes: int, step_sizes: Sequence[float], seed: int
) -> np.ndarray:
    """``[tasks, len(step_sizes) + 1]`` mean returns after 0, 1, ... inner steps, fresh episodes at each step."""
    return adaptation_curves(algorithm, sampler, tasks, episodes, step_sizes, seed)[0]


def adaptation_curves(
    algorithm: Any, sampler: Any, tasks: list[dict], episodes: int, step_sizes: Sequence[float], seed: int
) -> tuple[np.ndarray, np.ndarray | None]:
    """Mean return and success rate per task after 0, 1, ... inner steps (``[tasks, len(step_sizes) + 1]`` each;
    success is None for envs that do not report it), fresh episodes at each step."""
    policy = algorithm.policy
    base = {name: p.detach().clone() for name, p in policy.named_parameters()}
    params: Params | list[Params] = base
    returns = np.zeros((len(tasks), len(step_sizes) + 1))
    success: np.ndarray | None = None
    for step in range(len(step_sizes) + 1):
        batch = sampler.sample(policy, params, tasks, episodes, seed=derived_eval_seed(seed, SAMPLE, step))
        returns[:, step] = np.asarray(batch.returns, dtype=np.float64).mean(axis=1)
        if batch.success is not None:
            success = np.zeros_like(returns) if success is None else success
            success[:, step] = np.asarray(batch.success, dtype=np.float64).mean(axis=1)
        if step < len(step_sizes):
            starts = params if isinstance(params, list) else [base] * len(tasks)
            params = adapt_step(algorithm, batch, starts, step_sizes[step])
    return returns, success


def derived_eval_seed(seed: int, *keys: int) -> int:
    """A seed for one part of an evaluation, the same for every method."""
    from .train import derived_seed

    return derived_seed(seed, EVAL_KEY, *keys)


def evaluate_run(
    run_dir: str | Path,
    *,
    checkpoint: str | None = None,
    tasks: int = 40,
    steps: int | None = None,
    episodes: int = 20,
    seed: int = 0,
    step_sizes: str | None = None,
    backend: str | None = None,
    workers: int | None = None,
    ray_address: str | None = None,
    baseline: str | None = None,
    baseline_run: str | Path | None = None,
) -> dict[str, Any]:
    """Evaluate one method (MAML, or ``baseline``) on a run; writes its CSV, merges ``summary.json``, returns it."""
    run = Path(run_dir)
    if not run.is_dir():
        raise ConfigError(f"run folder '{run}' does not exist")
    config = read_run_config(run)
    if tasks < 1 or episodes < 1 or (workers is not None and workers < 1):
        raise ConfigError(f"--tasks, --episodes and --workers must be >= 1, got {tasks}, {episodes}, {workers}")
    if config.algorithm not in GRADIENT_ADAPTATION:  # trial-based (RL^2): return per episode of a trial, no steps
        from .evaluate_trials import evaluate_trial_run

        if steps is not None or step_sizes is not None:
            raise ConfigError(f"--steps and --step-sizes are MAML's gradient steps; a {config.algorithm} run has none")
        return evaluate_trial_run(
            run,
            config,
            checkpoint=checkpoint,
            tasks=tasks,
            trials=episodes,
            seed=seed,
            backend=backend,
            workers=workers,
            ray_address=ray_address,
            baseline=baseline,
        )
    method = baseline or "maml"
    if method not in METHODS:
        raise ConfigError(f"--baseline must be one of {', '.join(METHODS[1:])}, got {method!r}")
    sizes = parse_step_sizes(step_sizes, config.maml.fast_lr, steps)
    entry: dict[str, Any] = {"seed": seed, "tasks": tasks, "episodes": episodes}
    read_summary(run / "evaluation")  # a corrupt summary is reported now, not after the work

    # Everything that can fail on bad input is loaded before any episode is sampled.
    if method == "maml":
        path = find_checkpoint(run, checkpoint)
        algorithm, state = load_trained(config, path)
        entry.update(checkpoint=str(path.relative_to(run) if path.is_relative_to(run) else path))
        if checkpoint == "best":
            entry.update(checkpoint_rule=f"best mean training {best_column(run)} since the previous checkpoint")
        entry.update(iteration=int(state.get("iteration", -1)), algorithm=config.algorithm)
        if config.algorithm == "maml_trpo":
            entry.update(first_order=config.maml.first_order)
    elif method == "random":
        torch.manual_seed(derived_eval_seed(seed, RANDOM_INIT))
        algorithm = make_algorithm(fresh_policy(config), config)
    else:
        from .sb3_baselines import load_baseline

        folder = Path(baseline_run) if baseline_run else run / "baselines" / method
        policy = load_baseline(folder, method, config)
        entry.update(baseline_run=str(folder))
        algorithm = make_algorithm(policy, config) if method == "pretrained" else None
    held_out = held_out_tasks(config, tasks, seed)

    if method == "oracle":
        from .sb3_baselines import oracle_returns

        sizes = []
        seeds = np.array([[derived_eval_seed(seed, ORACLE, i, j) for j in range(episodes)] for i in range(tasks)])
        returns, success = oracle_returns(policy, config, held_out, episodes, seeds)[:, None], None
    else:
        from .sampling import configured_sampler

        with configured_sampler(config, backend, workers, ray_address) as sampler:
            returns, success = adaptation_curves(algorithm, sampler, held_out, episodes, sizes, seed)

    entry.update(step_sizes=sizes, csv=csv_name(method), steps=summarize(returns))
    if success is not None:
        entry.update(success_steps=summarize(success), success_rule="an episode succeeds if any step has success")
    folder = run / "evaluation"
    summary = merge_summary(read_summary(folder), method, entry, config.env.id)
    text = csv_text(method, held_out, returns, success)
    write_atomic({folder / csv_name(method): text, folder / "summary.json": summary_json(summary)})
    return summary
