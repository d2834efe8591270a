"""Stable-Baselines3 PPO baselines for the adaptation curves: "pretrained" and "oracle".

- pretrained: PPO on the whole training distribution (a new train task per episode, task not observed), with the
  env-step budget of the meta-training run. Its actor is then converted into the suite's MLP policy, so evaluation
  adapts it with exactly the inner loop MAML uses: the question is whether meta-training beats plain pretraining.
- oracle: PPO whose observation includes the task parameters; evaluated without adaptation (step 0), an upper
  reference for what knowing the task is worth.

The SB3 policy is configured so its actor *is* the suite policy: ``net_arch=dict(pi=hidden, vf=hidden)``, the same
activation, ``log_std_init=log(init_std * action_scale)``; :func:`suite_params_from_sb3` maps
``mlp_extractor.policy_net`` and ``action_net`` onto ``mean.*`` / ``logits.*`` and ``log_std`` onto ``log_std``
(the last layer divided by the suite policy's ``action_scale``, its log subtracted from ``log_std``: SB3 acts in
env units). SB3 runs on the CPU with one torch thread (two shared cores: more threads only contend). PPO's
hyper-parameters are SB3's defaults except ``gamma`` (the run's) and ``n_steps``/``batch_size``, shrunk for budgets
below one default rollout (2048 steps) and, with ``n_envs`` envs stepped together, a minibatch ``n_envs`` times
SB3's (see :func:`ppo_settings`): at 64 envs PPO runs ~15k HalfCheetah steps/s on one core instead of ~2k, which
is what makes the matched budgets (tens of millions of steps) affordable.

A baseline run folder holds ``config.yaml`` (the meta-training config it matches), ``baseline.json`` (kind, budget,
seed, PPO settings), ``model.zip`` (the SB3 model) and ``policy.pt`` (the converted suite params).
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from .baseline_envs import TaskObservationWrapper, make_baseline_env
from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from .config import Config, ConfigError, dump_config, load_config
from .eval_results import current_umask
from .policies import make_policy
from .run_dir import read_progress, read_run_config

KINDS = ("pretrained", "oracle")
ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh}
DEFAULT_N_STEPS, DEFAULT_BATCH = 2048, 64

Params = dict[str, torch.Tensor]


def ppo_policy_kwargs(config: Config) -> dict[str, Any]:
    """SB3 ``policy_kwargs`` whose actor has exactly the suite policy's architecture and initial std."""
    hidden = list(config.policy.hidden_sizes)
    return {
        "net_arch": {"pi": hidden, "vf": list(hidden)},
        "activation_fn": ACTIVATIONS[config.policy.activation],
        "log_std_init": math.log(config.policy.init_std * config.policy.action_scale),  # SB3 acts in env units
    }


def ppo_settings(timesteps: int, gamma: float, n_envs: int = 1) -> dict[str, Any]:
    """PPO keyword arguments: SB3 defaults, the run's gamma, rollouts no longer than the budget.

    With ``n_envs`` parallel envs each env collects SB3's default ``n_steps`` and the minibatch grows ``n_envs``-fold,
    so an epoch still takes SB3's default 32 gradient steps, each on ``n_envs`` times the data. This is what makes
    budgets of tens of millions of steps affordable on a CPU (the update cost per env step falls ``n_envs``-fold);
    ``n_envs=1`` is SB3's defaults exactly.
    """
    n_steps = max(8, min(DEFAULT_N_STEPS, int(timesteps) // n_envs))
    rollout = n_steps * n_envs
    batch = min(DEFAULT_BATCH * n_envs, rollout)
    while rollout % batch:
        batch -= 1
    return {"n_steps": n_steps, "batch_size": batch, "gamma": float(gamma)}


def _tqdm_callback() -> Any:
    from stable_baselines3.common.callbacks import BaseCallback
    from tqdm import tqdm

    class TqdmCallback(BaseCallback):
        """A tqdm bar over environment steps (SB3's own ``progress_bar`` needs ``rich``)."""

        def _on_training_start(self) -> None:
            self.bar = tqdm(total=self.locals["total_timesteps"], desc="ppo", unit="step", dynamic_ncols=True)

        def _on_step(self) -> bool:
            self.bar.update(self.training_env.num_envs)
            return True

        def _on_rollout_end(self) -> None:
            episodes = self.model.ep_info_buffer  # the last 100 finished episodes (Monitor)
            if episodes:
                self.bar.set_postfix(episode_return=f"{np.mean([e['r'] for e in episodes]):.1f}")

        def _on_training_end(self) -> None:
            self.bar.close()

    return TqdmCallback()


def make_ppo(config: Config, kind: str, timesteps: int, seed: int, n_envs: int = 1) -> Any:
    """An untrained SB3 PPO for a baseline of ``kind`` on the run's training distribution (CPU, one thread).

    ``n_envs`` envs are stepped in one process (``DummyVecEnv``), env ``i`` drawing its tasks from seed ``seed + i``.
    """
    from stable_baselines3 import PPO
    from stable_baselines3.common.logger import Logger
    from stable_baselines3.common.monitor import Monitor
    from stable_baselines3.common.vec_env import DummyVecEnv

    if kind not in KINDS:
        raise ConfigError(f"baseline kind must be one of {', '.join(KINDS)}, got {kind!r}")
    if n_envs < 1:
        raise ConfigError(f"--n-envs must be positive, got {n_envs}")
    torch.set_num_threads(1)
    env_id, kwargs = config.env.id, config.env.kwargs
    env = DummyVecEnv([lambda i=i: Monitor(make_baseline_env(env_id, kwargs, kind, seed + i)) for i in range(n_envs)])
    model = PPO(
        "MlpPolicy",
        env,
        policy_kwargs=ppo_policy_kwargs(config),
        seed=seed,
        device="cpu",
        verbose=0,
        **ppo_settings(timesteps, config.advantages.gamma, n_envs),
    )
    # SB3's default logger makes an empty tempdir/SB3-<time> folder on every learn(); log nowhere instead.
    model.set_logger(Logger(folder=None, output_formats=[]))
    return model


def train_ppo(config: Config, kind: str, timesteps: int, seed: int, progress: bool = False, n_envs: int = 1) -> Any:
    """Train an SB3 PPO baseline of ``kind`` for ``timesteps`` env steps; returns the model."""
    model = make_ppo(config, kind, timesteps, seed, n_envs)
    if progress and importlib.util.find_spec("rich") is not None:
        model.learn(total_timesteps=int(timesteps), progress_bar=True)
    else:
        model.learn(total_timesteps=int(timesteps), callback=_tqdm_callback() if progress else None)
    model.get_env().close()
    return model


def _linears(module: nn.Module) -> list[nn.Linear]:
    return [m for m in module.modules() if isinstance(m, nn.Linear)]


def suite_params_from_sb3(sb3_policy: nn.Module, suite_policy: nn.Module) -> Params:
    """The suite policy's params (names as in ``named_parameters``) copied from an SB3 ``ActorCriticPolicy``.

    Raises ValueError when the two do not describe the same actor (layer shapes, action distribution).
    """
    from stable_baselines3.common.distributions import CategoricalDistribution, DiagGaussianDistribution

    discrete = bool(getattr(suite_policy, "discrete", False))
    wanted = CategoricalDistribution if discrete else DiagGaussianDistribution
    if type(sb3_policy.action_dist) is not wanted:
        raise ValueError(f"SB3 action distribution {type(sb3_policy.action_dist).__name__} is not {wanted.__name__}")
    if getattr(sb3_policy, "use_sde", False):
        raise ValueError("SB3 policies with state-dependent exploration have no suite equivalent")
    source = _linears(sb3_policy.mlp_extractor.policy_net) + [sb3_policy.action_net]
    prefix = "logits" if discrete else "mean"
    target = [(name, m) for name, m in getattr(suite_policy, prefix).named_children() if isinstance(m, nn.Linear)]
    if len(source) != len(target):
        raise ValueError(f"SB3 actor has {len(source)} linear layers, the suite policy {len(target)}")
    params: Params = {}
    for src, (index, dst) in zip(source, target, strict=True):
        if src.weight.shape != dst.weight.shape:
            raise ValueError(
                f"layer {prefix}.{index}: SB3 {tuple(src.weight.shape)} vs suite {tuple(dst.weight.shape)}"
            )
        params[f"{prefix}.{index}.weight"] = src.weight.detach().clone()
        params[f"{prefix}.{index}.bias"] = src.bias.detach().clone()
    if not discrete:
        # SB3 acts in env units; the suite policy multiplies its mean and std by action_scale.
        scale = float(getattr(suite_policy, "action_scale", 1.0))
        last = f"{prefix}.{target[-1][0]}"
        params[f"{last}.weight"] = params[f"{last}.weight"] / scale
        params[f"{last}.bias"] = params[f"{last}.bias"] / scale
        params["log_std"] = sb3_policy.log_std.detach().clone() - math.log(scale)
    missing = set(dict(suite_policy.named_parameters())) ^ set(params)
    if missing:
        raise ValueError(f"parameters without a counterpart: {sorted(missing)}")
    return params


def baseline_spaces(config: Config, kind: str) -> tuple[gym.Space, gym.Space]:
    """Observation and action spaces of a baseline's policy (the oracle's observation carries the task)."""
    env = gym.make(config.env.id, **config.env.kwargs)
    try:
        obs_space = TaskObservationWrapper(env).observation_space if kind == "oracle" else env.observation_space
        return obs_space, env.action_space
    finally:
        env.close()


def suite_policy_for(config: Config, kind: str) -> nn.Module:
    """A suite policy shaped for a baseline of ``kind`` under ``config``."""
    obs_space, act_space = baseline_spaces(config, kind)
    p = config.policy
    return make_policy(obs_space, act_space, tuple(p.hidden_sizes), p.activation, p.init_std, p.action_scale)


def default_timesteps(source: Path, config: Config) -> int:
    """The meta-training run's env steps (last row of ``progress.csv``), else its nominal budget from the config:
    iterations x meta-batch x episodes x horizon x 2 (support and query episodes)."""
    if source.is_dir() and (source / "progress.csv").is_file():
        rows = read_progress(source)
        if rows and "env_steps" in rows[-1]:
            return int(rows[-1]["env_steps"])
    env = gym.make(config.env.id, **config.env.kwargs)
    horizon = int(env.unwrapped.horizon)
    env.close()
    m = config.maml
    return config.iterations * m.meta_batch_size * m.episodes_per_task * horizon * 2


def train_baseline(
    source: str,
    kind: str,
    timesteps: int | None = None,
    run_dir: str | None = None,
    seed: int | None = None,
    progress: bool = True,
    n_envs: int = 1,
) -> Path:
    """``metarl baseline train``: PPO baseline for a config file or a meta-training run, into a new run folder.

    Default folder: ``RUN/baselines/<kind>`` for a run, ``runs/<config>-<kind>-<time>`` for a config file. The
    folder is assembled under a temporary name and renamed when complete, so no half-written baseline is left.
    """
    from .train import make_env

    path = Path(source)
    if path.is_dir():
        config = read_run_config(path)
        target = Path(run_dir) if run_dir else path / "baselines" / kind
    elif path.is_file():
        config = load_config(path)
        stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
        target = Path(run_dir) if run_dir else Path("runs") / f"{path.stem}-{kind}-{stamp}"
    else:
        raise ConfigError(f"'{source}' is neither a config file nor a run folder")
    if target.exists() and any(target.iterdir()):
        raise ConfigError(f"baseline folder '{target}' already exists and is not empty; choose another --run-dir")
    if timesteps is not None and timesteps < 1:
        raise ConfigError(f"--timesteps must be positive, got {timesteps}")
    if n_envs < 1:
        raise ConfigError(f"--n-envs must be positive, got {n_envs}")
    env = make_env(config)  # env id and kwargs checked before any work
    try:
        task = env.unwrapped.sample_tasks(1, 0, split="train")[0]
    finally:
        env.close()
    if kind == "oracle" and any(isinstance(value, str) for value in task.values()):
        raise ConfigError(
            f"--kind oracle observes the task's numbers, and {config.env.id}'s tasks are named goals "
            f"({', '.join(task)}): no oracle for it"
        )
    steps = int(timesteps) if timesteps is not None else default_timesteps(path, config)
    seed = config.seed if seed is None else int(seed)

    started = time.perf_counter()
    model = train_ppo(config, kind, steps, seed, progress, n_envs)
    wall_s = time.perf_counter() - started
    policy = suite_policy_for(config, kind)
    params = suite_params_from_sb3(model.policy, policy)

    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        os.chmod(staging, 0o777 & ~current_umask())  # mkdtemp makes a private (0700) folder
        (staging / "config.yaml").write_text(dump_config(config), encoding="utf-8")
        model.save(staging / "model.zip")
        save_checkpoint(staging / "policy.pt", {"kind": kind, "params": params, "env_id": config.env.id})
        os.chmod(staging / "policy.pt", 0o666 & ~current_umask())
        info = {"kind": kind, "timesteps": steps, "seed": seed, "source": str(path), "env_id": config.env.id}
        info["ppo"] = {"n_envs": n_envs, **ppo_settings(steps, config.advantages.gamma, n_envs)}
        info["wall_s"] = round(wall_s, 1)
        (staging / "baseline.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
        if target.exists():
            target.rmdir()
        os.replace(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


def load_baseline(folder: str | Path, kind: str, config: Config) -> nn.Module:
    """The converted suite policy of a baseline folder; errors if it is missing or was trained on another env."""
    folder = Path(folder)
    if not (folder / "policy.pt").is_file():
        raise ConfigError(
            f"no {kind} baseline in '{folder}' (no policy.pt); train one with: metarl baseline train RUN --kind {kind}"
        )
    state = load_checkpoint(folder / "policy.pt")
    if state.get("kind") != kind:
        raise CheckpointError(f"'{folder}' holds a {state.get('kind')!r} baseline, not {kind!r}")
    if state.get("env_id") != config.env.id:
        raise CheckpointError(f"baseline '{folder}' was trained on {state.get('env_id')}, the run on {config.env.id}")
    policy = suite_policy_for(config, kind)
    try:
        policy.load_state_dict(state["params"])
    except (KeyError, RuntimeError) as exc:
        first = str(exc).strip().splitlines()[0]
        raise CheckpointError(f"baseline '{folder}' does not fit the run's policy ({first})") from None
    return policy


@torch.no_grad()
def oracle_returns(
    policy: nn.Module, config: Config, tasks: list[dict], episodes: int, seeds: np.ndarray
) -> np.ndarray:
    """Mean return per task of a task-conditioned suite policy, run in the env with stochastic actions.

    ``seeds[i, j]`` seeds episode ``j`` of task ``i``: the env's reset and the NumPy noise the actions are drawn
    from, so the result is reproducible. Box actions are clipped to the action space, as SB3 does.
    """
    env = TaskObservationWrapper(gym.make(config.env.id, **config.env.kwargs))
    box = isinstance(env.action_space, gym.spaces.Box)
    returns = np.zeros((len(tasks), episodes))
    try:
        for i, task in enumerate(tasks):
            for j in range(episodes):
                seed = int(seeds[i, j])
                rng = np.random.default_rng(seed)
                obs, _ = env.reset(seed=seed, options={"task": task})
                done, total = False, 0.0
                while not done:
                    dist = policy(torch.as_tensor(obs, dtype=torch.float32)[None])
                    action = policy.sample(dist, torch.as_tensor(policy.draw_noise(rng, (1,))))[0].numpy()
                    action = np.clip(action, env.action_space.low, env.action_space.high) if box else int(action)
                    obs, reward, terminated, truncated, _ = env.step(action)
                    total += float(reward)
                    done = terminated or truncated
                returns[i, j] = total
    finally:
        env.close()
    return returns.mean(axis=1)
