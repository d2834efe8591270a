"""The meta-RL training loop: sample tasks, collect support episodes, adapt, collect query episodes, meta-update.

Every source of randomness in an iteration is derived from ``(seed, iteration)``, so a run resumed from a checkpoint
continues exactly as if it had never stopped.
"""

from __future__ import annotations

import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch

from .checkpoint import checkpoint_path, latest_checkpoint, load_checkpoint, save_checkpoint
from .config import Config, ConfigError, config_to_dict, dump_config, load_config
from .maml_trpo import MAMLTRPO, MAMLTRPOConfig
from .policies import make_policy, policy_params
from .progress import progress_bar
from .run_dir import ProgressLog, TensorBoardLog, create_run_dir, default_run_dir, read_run_config
from .sampling import make_sampler
from .stopping import StopOnSignal

PROGRESS_COLUMNS = (
    "iteration",
    "env_steps",
    "return_pre",
    "return_post",
    "kl",
    "surrogate_improvement",
    "time_sampling_s",
    "time_update_s",
)


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
        return gym.make(config.env.id, **config.env.kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"config key 'env.kwargs': {exc}") from None


def build_algorithm(policy: torch.nn.Module, config: Config) -> MAMLTRPO:
    """MAML-TRPO configured from the experiment's maml, trpo and advantages sections."""
    maml, trpo, adv = config.maml, config.trpo, config.advantages
    return MAMLTRPO(
        policy,
        MAMLTRPOConfig(
            fast_lr=maml.fast_lr,
            num_steps=maml.num_steps,
            first_order=maml.first_order,
            inner_loss=maml.inner_loss,
            gamma=adv.gamma,
            gae_lambda=adv.gae_lambda,
            normalize_advantages=adv.normalize,
            max_kl=trpo.max_kl,
            cg_iters=trpo.cg_iters,
            cg_damping=trpo.cg_damping,
            ls_max_steps=trpo.ls_max_steps,
            ls_backtrack_ratio=trpo.ls_backtrack_ratio,
            batching=maml.batching,
            hvp=trpo.hvp,
        ),
    )


class MetaRLTrainer:
    """Owns the policy, the MAML-TRPO learner and the sampler for one run."""

    def __init__(self, config: Config, sampler, device: torch.device) -> None:
        self.config, self.sampler, self.device = config, sampler, device
        self.env = make_env(config)
        self.task_distribution = self.env.unwrapped
        self.horizon = int(self.task_distribution.horizon)
        torch.manual_seed(config.seed)
        policy = make_policy(
            self.env.observation_space,
            self.env.action_space,
            tuple(config.policy.hidden_sizes),
            config.policy.activation,
            config.policy.init_std,
            config.policy.action_scale,
        )
        self.algorithm = build_algorithm(policy.to(device), config)
        self.env_steps = 0

    @property
    def policy(self) -> torch.nn.Module:
        return self.algorithm.policy

    def run_iteration(self, iteration: int) -> dict[str, float]:
        """One meta-iteration; returns the row for ``progress.csv``."""
        cfg = self.config
        rng = np.random.default_rng(derived_seed(cfg.seed, iteration, 0))
        tasks = self.task_distribution.sample_tasks(cfg.maml.meta_batch_size, rng, split="train")
        episodes = cfg.maml.episodes_per_task

        start = time.perf_counter()
        params = {k: v.detach() for k, v in policy_params(self.policy).items()}
        support = self.sampler.sample(self.policy, params, tasks, episodes, seed=derived_seed(cfg.seed, iteration, 1))
        time_sampling = time.perf_counter() - start

        start = time.perf_counter()
        support_t = support.to_torch(self.device)
        adapted = self.algorithm.adapt(support_t)
        time_update = time.perf_counter() - start

        start = time.perf_counter()
        query = self.sampler.sample(self.policy, adapted, tasks, episodes, seed=derived_seed(cfg.seed, iteration, 2))
        time_sampling += time.perf_counter() - start

        start = time.perf_counter()
        metrics = self.algorithm.meta_update(support_t, query.to_torch(self.device))
        time_update += time.perf_counter() - start

        self.env_steps += support.num_steps + query.num_steps
        row = {
            "iteration": iteration + 1,
            "env_steps": self.env_steps,
            "return_pre": float(support.returns.mean()),
            "return_post": float(query.returns.mean()),
            "kl": float(metrics.get("kl", float("nan"))),
            "surrogate_improvement": float(metrics.get("surrogate_improvement", float("nan"))),
            "time_sampling_s": time_sampling,
            "time_update_s": time_update,
        }
        row.update({k: float(v) for k, v in metrics.items() if k not in row and isinstance(v, (int, float, bool))})
        return row

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
            return int(state["iteration"])
        except (KeyError, RuntimeError, TypeError, ValueError) as exc:
            from .checkpoint import CheckpointError

            raise CheckpointError(f"checkpoint does not fit this run's config ({exc})") from None


def train(
    config: Config,
    run_dir: Path,
    sampler,
    device: torch.device,
    resume_state: dict | None = None,
    progress: bool = True,
) -> list[dict]:
    """Run (or continue) meta-training into ``run_dir``; returns the rows logged by this call."""
    trainer = MetaRLTrainer(config, sampler, device)
    start = trainer.load_state_dict(resume_state) if resume_state is not None else 0
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
                stop.end_of_iteration(done, config.iterations, config.logging.checkpoint_every, save, run_dir)
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
    """``metarl train``: validate everything, connect the sampler, then create the run folder and train."""
    overrides = list(overrides)
    if ray_address:
        overrides.append(f"sampler.ray_address={ray_address}")
    if device:
        overrides.append(f"device={device}")
    resume_state = None
    if resume:
        if run_dir:
            raise ConfigError("--run-dir and --resume cannot be combined: --resume continues in its own folder")
        config = read_run_config(resume, overrides)
        found = latest_checkpoint(resume)
        if found is None:
            raise ConfigError(f"run folder '{resume}' has no checkpoint to resume from")
        resume_state = load_checkpoint(found)
        target = Path(resume)
    else:
        if not config_path:
            raise ConfigError("train needs a CONFIG file (or --resume RUN_DIR)")
        config = load_config(config_path, overrides)
        target = Path(run_dir) if run_dir else default_run_dir(config_path)
        if (target / "config.yaml").exists():
            raise ConfigError(f"run folder '{target}' already holds a run; use --resume {target} or another --run-dir")
    torch_device = resolve_device(config.device)
    if torch_device.type == "cpu":
        # One thread by default: two per process on shared cores collapsed the update 10-100x here (DESIGN.md), and
        # rollout workers take the other cores. ``threads`` raises it where the cores are this run's own.
        torch.set_num_threads(config.threads)
    if config.fewshot is not None:
        from .fewshot.train import prepare_fewshot, train_fewshot

        problem = prepare_fewshot(config)  # data is found and checked before anything is created
        _write_run_config(target, config, resume_state)
        train_fewshot(config, problem, target, torch_device, resume_state, progress)
        print(f"run folder: {target}")
        return target
    make_env(config).close()  # env id and kwargs are checked before anything is created
    with make_sampler(
        config.env.id,
        config.env.kwargs,
        backend=config.sampler.backend,
        num_workers=config.sampler.num_workers,
        ray_address=config.sampler.ray_address,
    ) as sampler:
        _write_run_config(target, config, resume_state)
        train(config, target, sampler, torch_device, resume_state, progress)
    print(f"run folder: {target}")
    return target


def _write_run_config(target: Path, config: Config, resume_state: dict | None) -> None:
    """A new run gets a new folder; a resumed one gets its config.yaml updated (e.g. raised iterations)."""
    if resume_state is None:
        create_run_dir(target, config)
    else:
        (target / "config.yaml").write_text(dump_config(config), encoding="utf-8")
