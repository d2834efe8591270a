"""Reptile (Nichol et al. 2018) as a meta-RL policy learner.

Per iteration, for each of ``maml.meta_batch_size`` training tasks, ``reptile.inner_steps`` (k) inner steps, each on
*fresh* episodes::

    phi_i <- theta
    repeat k times:  sample maml.episodes_per_task episodes of task i with phi_i   (sampler seed phase j = 1..k)
                     phi_i <- phi_i - maml.fast_lr * grad inner_loss(phi_i; those episodes)
    theta <- theta + eps * mean_i(phi_i - theta)

Why this inner rule: it is MAML's own inner step (the ``maml.inner_loss`` policy gradient with a linear baseline,
GAE and per-task normalized advantages, plain SGD with ``maml.fast_lr``), which is also exactly how
``metarl evaluate`` adapts on held-out tasks. So Reptile is trained for the procedure it is scored with, MAML-TRPO,
first-order MAML and Reptile differ only in their outer step, and a Reptile checkpoint evaluates through the same
code as a MAML one. A PPO inner loop (several epochs per batch, Adam) would adapt faster per batch but would no longer
be what the evaluation runs.

The outer step size ``eps`` decays linearly from ``reptile.outer_lr`` at the first iteration to
``reptile.outer_lr_final`` at the last (``iterations``), as in the Reptile paper; the number of finished iterations is
part of the checkpoint, so a resumed run continues on the same schedule. With ``inner_steps: 1`` the outer step is a
plain policy-gradient step on the joint objective (no meta-learning); Reptile's adaptation-aware term appears from
k = 2 on (Nichol et al. 2018, sec. 5).
"""

from __future__ import annotations

import time
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from metarl.algorithms import IterationResult, SeedFn
from metarl.algorithms.maml_trpo import build_learner, make_mlp_policy
from metarl.config import Config, ConfigError

Params = dict[str, torch.Tensor]


def reptile_outer_step(theta: Params, adapted: list[Params], eps: float) -> Params:
    """``theta + eps * mean_i(phi_i - theta)`` for every parameter (new tensors; nothing is modified)."""
    return {name: v + eps * torch.stack([phi[name] - v for phi in adapted]).mean(0) for name, v in theta.items()}


def outer_lr_at(done: int, iterations: int, start: float, final: float) -> float:
    """The linearly annealed outer step size of iteration ``done`` (0-based) in a run of ``iterations``."""
    frac = done / max(iterations - 1, 1)
    return start + (final - start) * min(frac, 1.0)


class ReptileAlgorithm:
    """k inner policy-gradient steps per task on fresh episodes -> Reptile's interpolation outer step."""

    name = "reptile"

    def __init__(
        self, config: Config, observation_space: gym.Space, action_space: gym.Space, device: torch.device
    ) -> None:
        if config.maml.num_steps != 1:
            raise ConfigError(
                "config key 'maml.num_steps': reptile takes one gradient step per batch of fresh episodes; set the "
                f"number of inner steps with reptile.inner_steps (got maml.num_steps={config.maml.num_steps})"
            )
        self.config, self.device = config, device
        self.learner = build_learner(make_mlp_policy(config, observation_space, action_space).to(device), config)
        self.done = 0  # iterations finished: the position on the outer step-size schedule

    @property
    def policy(self) -> nn.Module:
        return self.learner.policy

    @property
    def tasks_per_iteration(self) -> int:
        return self.config.maml.meta_batch_size

    def outer_lr(self) -> float:
        """This iteration's outer step size."""
        r = self.config.reptile
        return outer_lr_at(self.done, self.config.iterations, r.outer_lr, r.outer_lr_final)

    def collect_and_update(self, sampler: Any, tasks: list[dict], seed: SeedFn) -> IterationResult:
        episodes, k = self.config.maml.episodes_per_task, self.config.reptile.inner_steps
        theta = {name: p.detach().clone() for name, p in self.policy.named_parameters()}
        params: Params | list[Params] = theta
        returns, successes, env_steps, time_sampling, time_update = [], [], 0, 0.0, 0.0
        for step in range(k):
            start = time.perf_counter()
            batch = sampler.sample(self.policy, params, tasks, episodes, seed=seed(1 + step))
            time_sampling += time.perf_counter() - start
            returns.append(float(np.asarray(batch.returns, dtype=np.float64).mean()))
            successes.append(batch.success_rate)
            env_steps += batch.num_steps
            start = time.perf_counter()
            params = self.learner.adapt(batch.to_torch(self.device), None if step == 0 else params)
            time_update += time.perf_counter() - start

        start = time.perf_counter()
        eps = self.outer_lr()
        new = reptile_outer_step(theta, params, eps)
        with torch.no_grad():
            for name, p in self.policy.named_parameters():
                p.copy_(new[name])
        step_norm = float(torch.cat([(new[n] - theta[n]).flatten() for n in theta]).norm())
        self.done += 1
        time_update += time.perf_counter() - start

        row = {"return_pre": returns[0]}
        if k > 1:  # after one inner step: the same quantity as MAML-TRPO's return_post
            row["return_post"] = returns[1]
        row.update({f"return_step{j}": r for j, r in enumerate(returns)})
        if successes[0] is not None:  # Meta-World
            row["success_pre"] = successes[0]
            if k > 1:
                row["success_post"] = successes[1]
        row.update(outer_lr=eps, step_norm=step_norm, time_sampling_s=time_sampling, time_update_s=time_update)
        return IterationResult(env_steps, row)

    def evaluation_returns(self, sampler: Any, tasks: list[dict], episodes: int, seed: int) -> np.ndarray:
        """Mean return per task after 0..3 inner steps of ``fast_lr``: the same protocol as MAML-TRPO."""
        from metarl.evaluate import adaptation_returns, parse_step_sizes

        sizes = parse_step_sizes(None, self.config.maml.fast_lr, None)
        return adaptation_returns(self.learner, sampler, tasks, episodes, sizes, seed)

    def state_dict(self) -> dict[str, Any]:
        """MAML-TRPO's checkpoint layout (policy, learner) plus the schedule position, so ``metarl evaluate`` loads
        it as it loads a MAML run."""
        return {**self.learner.state_dict(), "reptile_iterations_done": self.done}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.learner.load_state_dict(state)
        self.done = int(state["reptile_iterations_done"])
