"""The meta-RL training loop: sample tasks, let the configured algorithm collect and update, log, checkpoint.

What an iteration collects and how it updates is the algorithm's business (:mod:`metarl.algorithms`); the loop
only knows that protocol. The run folder, checkpoints, resume, progress and SIGINT/SIGTERM handling live here.

Every source of randomness in an iteration is derived from ``(seed, iteration)``, so a run resumed from a checkpoint
continues exactly as if it had never stopped.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch

from .algorithms import MetaAlgorithm, build_algorithm
from .checkpoint import CheckpointError, checkpoint_path, latest_checkpoint, save_checkpoint
from .config import Config, ConfigError, config_to_dict, load_config
from .progress import progress_bar
from .resume import ResumePlan, explain_load_failure, plan_resume, record_resume
from .run_dir import ProgressLog, TensorBoardLog, default_run_dir, new_run_folder
from .sampling import configured_sampler
from .stopping import StopOnSignal

TASK_DISTRIBUTION_METHODS = ("sample_tasks", "set_task")


def derived_seed(*keys: int) -> int:
    """A 32-bit seed derived from integers (run seed, iteration, phase), independent across keys."""
    return int(np.random.SeedSequence([int(k) for k in keys]).generate_state(1)[0])


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when present, else CPU; asking for CUDA without one is a config error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("config key 'device': cuda was asked for but torch sees no CUDA device")
    return torch.device(name)


def make_env(config: Config) -> gym.Env:
    """Build the configured environment once, to read its spaces and task distribution; errors name the key."""
    try:
        gym.spec(config.env.id)
    except gym.error.Error:
        known = ", ".join(sorted(k for k in gym.registry if k.startswith("metarl/")))
        raise ConfigError(f"config key 'env.id': unknown environment '{config.env.id}' (known: {known})") from None
    try:
        env = gym.make(config.env.id, **config.env.kwargs)
    except ImportError as exc:  # an optional extra (Meta-World) is not installed: the message says how to install it
        raise ConfigError(f"config key 'env.id': {config.env.id} cannot be built: {exc}") from None
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"config key 'env.kwargs': {exc}") from None
    missing = [name for name in (*TASK_DISTRIBUTION_METHODS, "horizon") if not hasattr(env.unwrapped, name)]
    if missing:
        env.close()
        raise ConfigError(
            f"config key 'env.id': '{config.env.id}' is not a task distribution (it has no {', '.join(missing)}); "
            "metarl envs lists those that are"
        )
    return env


class MetaRLTrainer:
    """Owns the algorithm (built from the config's ``algorithm`` key) and the sampler for one run."""

    def __init__(self, config: Config, sampler, device: torch.device) -> None:
        """``sampler`` may be None until the first iteration (the trainer is built, and checked, before it)."""
        self.config, self.sampler, self.device = config, sampler, device
        self.env = make_env(config)
        self.task_distribution = self.env.unwrapped
        self.horizon = int(self.task_distribution.horizon)
        torch.manual_seed(config.seed)
        self.algorithm: MetaAlgorithm = build_algorithm(config, self.env, device)
        self.env_steps = 0
        self.completed = 0  # iterations done (by a run this one continues)

    @property
    def policy(self) -> torch.nn.Module:
        return self.algorithm.policy

    def run_iteration(self, iteration: int) -> dict[str, float]:
        """One meta-iteration; returns the row for ``progress.csv``."""
        cfg = self.config
        rng = np.random.default_rng(derived_seed(cfg.seed, iteration, 0))
        tasks = self.task_distribution.sample_tasks(self.algorithm.tasks_per_iteration, rng, split="train")
        result = self.algorithm.collect_and_update(
            self.sampler, tasks, lambda phase: derived_seed(cfg.seed, iteration, phase)
        )
        self.env_steps += result.env_steps
        return {"iteration": iteration + 1, "env_steps": self.env_steps, **result.metrics}

    def state_dict(self, iteration: int) -> dict:
        return {
            "iteration": iteration,
            "env_steps": self.env_steps,
            "algorithm": self.algorithm.state_dict(),
            "config": config_to_dict(self.config),
            "torch_rng": torch.get_rng_state(),
        }

    def load_state_dict(self, state: dict) -> int:
        """Restore from a checkpoint; returns the number of completed iterations."""
        try:
            self.algorithm.load_state_dict(state["algorithm"])
            self.env_steps = int(state["env_steps"])
            torch.set_rng_state(state["torch_rng"])
            self.completed = int(state["iteration"])
            return self.completed
        except (KeyError, RuntimeError, TypeError, ValueError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
            raise CheckpointError(f"checkpoint does not fit this run's config ({first})") from None


def train(
    config: Config,
    run_dir: Path,
    sampler,
    device: torch.device,
    resume_state: dict | None = None,
    progress: bool = True,
    trainer: MetaRLTrainer | None = None,
) -> list[dict]:
    """Run (or continue) meta-training into ``run_dir``; returns the rows logged by this call. ``trainer``: one built
    (and restored from ``resume_state``) beforehand, to check the config before anything is written."""
    if trainer is None:
        trainer = MetaRLTrainer(config, sampler, device)
        if resume_state is not None:
            trainer.load_state_dict(resume_state)
    trainer.sampler, start = sampler, trainer.completed
    log = ProgressLog(run_dir / "progress.csv", resume_from=start if resume_state is not None else None)
    tensorboard = TensorBoardLog(run_dir, config.logging.tensorboard, purge_step=start + 1 if start else None)
    rows = []
    bar = progress_bar(total=config.iterations, initial=start, desc="meta-train", enabled=progress)

    def save(done: int) -> None:
        save_checkpoint(checkpoint_path(run_dir, done), trainer.state_dict(done))

    with StopOnSignal() as stop:
        try:
            for iteration in range(start, config.iterations):
                row = trainer.run_iteration(iteration)
                log.append(row)
                tensorboard.log(row, step=iteration + 1)
                rows.append(row)
                bar.update(row)
                done = iteration + 1
                budget_spent = config.max_env_steps is not None and trainer.env_steps >= config.max_env_steps
                last = done if budget_spent else config.iterations  # the budget ends the run like its last iteration
                stop.end_of_iteration(done, last, config.logging.checkpoint_every, save, run_dir)
                if budget_spent:
                    break
        finally:
            bar.close()
            tensorboard.close()
    return rows


def train_from_cli(
    config_path: str | None,
    run_dir: str | None,
    resume: str | None,
    overrides: list[str],
    ray_address: str | None = None,
    device: str | None = None,
    progress: bool = True,
) -> Path:
    """``metarl train``: check everything (config, model, checkpoint, data, sampler) before writing anything, then
    create the run folder (or record the resume) and train."""
    overrides = list(overrides)
    if ray_address:
        overrides.append(f"sampler.ray_address={ray_address}")
    if device:
        overrides.append(f"device={device}")
    plan = _plan(config_path, run_dir, resume, overrides)
    config = plan.config if plan is not None else load_config(config_path, overrides)
    target = Path(resume) if resume else Path(run_dir) if run_dir else default_run_dir(config_path)
    if plan is None and (target / "config.yaml").exists():
        raise ConfigError(f"run folder '{target}' already holds a run; use --resume {target} or another --run-dir")
    torch_device = resolve_device(config.device)
    if torch_device.type == "cpu":
        # One thread by default: two per process on shared cores collapsed the update 10-100x here (DESIGN.md), and
        # rollout workers take the other cores. ``threads`` raises it where the cores are this run's own.
        torch.set_num_threads(config.threads)
    try:
        if config.fewshot is not None:
            _train_fewshot(config, target, torch_device, plan, progress)
        else:
            _train_meta_rl(config, target, torch_device, plan, progress)
    except KeyboardInterrupt:
        raise KeyboardInterrupt(_interrupted(target)) from None
    print(f"run folder: {target}")
    return target


def _plan(config_path: str | None, run_dir: str | None, resume: str | None, overrides: list[str]) -> ResumePlan | None:
    """The resume to carry out (None for a new run), after refusing argument combinations that cannot work."""
    if not resume:
        if not config_path:
            raise ConfigError("train needs a CONFIG file (or --resume RUN_DIR)")
        return None
    if run_dir:
        raise ConfigError("--run-dir and --resume cannot be combined: --resume continues in its own folder")
    if config_path:
        raise ConfigError(
            f"CONFIG '{config_path}' and --resume cannot be combined: a resumed run keeps its own config.yaml "
            "(change keys with --set KEY=VALUE)"
        )
    return plan_resume(resume, overrides)


@contextlib.contextmanager
def _explained(plan: ResumePlan | None) -> Iterator[None]:
    """Loading the plan's checkpoint: a failure names the keys this resume changed (see ``explain_load_failure``)."""
    try:
        yield
    except CheckpointError as exc:
        if plan is None:
            raise
        raise explain_load_failure(plan, exc) from None


def _train_meta_rl(config: Config, target: Path, device: torch.device, plan: ResumePlan | None, progress: bool) -> None:
    """Meta-RL: build the trainer (env, policy, learner: checks the config) and load the checkpoint, connect the
    sampler, and only then write to the run folder."""
    trainer = MetaRLTrainer(config, None, device)
    if plan is not None:
        with _explained(plan):
            trainer.load_state_dict(plan.state)
    sampler = configured_sampler(config)
    with sampler, _run_folder(target, config, plan):
        train(config, target, sampler, device, plan.state if plan else None, progress, trainer=trainer)


def _train_fewshot(config: Config, target: Path, device: torch.device, plan: ResumePlan | None, progress: bool) -> None:
    """Few-shot: find and check the data, build the method and load the checkpoint, then write to the run folder."""
    from .fewshot.train import prepare_fewshot, prepare_method, train_fewshot

    problem = prepare_fewshot(config)
    with _explained(plan):
        prepared = prepare_method(config, problem, device, plan.state if plan else None)
    with _run_folder(target, config, plan):
        train_fewshot(config, problem, target, device, plan.state if plan else None, progress, prepared=prepared)


def _run_folder(target: Path, config: Config, plan: ResumePlan | None) -> contextlib.AbstractContextManager[Path]:
    """A new run's folder (removed again if the run fails before its first checkpoint), or the resumed run's,
    once the resume is recorded."""
    if plan is None:
        return new_run_folder(target, config)
    record_resume(plan)
    return contextlib.nullcontext(target)


def _interrupted(target: Path) -> str:
    """What a second Ctrl-C (stop at once) leaves behind, for the one line the command prints."""
    latest = latest_checkpoint(target) if target.is_dir() else None
    if latest is None:
        return "before the first checkpoint: nothing was saved; the same command starts the run again"
    later = "later iterations were not saved"
    return f"after checkpoint {latest.name} ({later}); continue with: metarl train --resume {target}"
