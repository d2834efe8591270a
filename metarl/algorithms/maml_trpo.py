"""MAML-TRPO behind the algorithm interface: the learner itself is :class:`metarl.maml_trpo.MAMLTRPO`.

Per iteration it collects, for each of ``maml.meta_batch_size`` tasks, ``maml.episodes_per_task`` support episodes
with the meta-parameters (seed phase 1), adapts per task, collects as many query episodes with the adapted
parameters (phase 2) and takes the TRPO meta-step. This is the loop body ``metarl/train.py`` held before the
interface, unchanged: same calls, same seeds, same row, so runs and checkpoints are the same bit for bit (the
checkpoint's ``algorithm`` entry is the learner's own ``state_dict``).
"""

from __future__ import annotations

import time
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from metarl.algorithms import IterationResult, SeedFn
from metarl.config import Config
from metarl.maml_trpo import MAMLTRPO, MAMLTRPOConfig
from metarl.policies import make_policy, policy_params


def build_learner(policy: nn.Module, config: Config) -> MAMLTRPO:
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


def make_mlp_policy(config: Config, observation_space: gym.Space, action_space: gym.Space) -> nn.Module:
    """The configured MLP policy for the env's spaces."""
    p = config.policy
    return make_policy(observation_space, action_space, tuple(p.hidden_sizes), p.activation, p.init_std, p.action_scale)


class MAMLTRPOAlgorithm:
    """Support episodes -> inner step -> query episodes -> TRPO meta-update."""

    name = "maml_trpo"

    def __init__(
        self, config: Config, observation_space: gym.Space, action_space: gym.Space, device: torch.device
    ) -> None:
        self.config, self.device = config, device
        self.learner = build_learner(make_mlp_policy(config, observation_space, action_space).to(device), config)

    @property
    def policy(self) -> nn.Module:
        return self.learner.policy

    @property
    def tasks_per_iteration(self) -> int:
        return self.config.maml.meta_batch_size

    def collect_and_update(self, sampler: Any, tasks: list[dict], seed: SeedFn) -> IterationResult:
        episodes = self.config.maml.episodes_per_task
        start = time.perf_counter()
        params = {k: v.detach() for k, v in policy_params(self.policy).items()}
        support = sampler.sample(self.policy, params, tasks, episodes, seed=seed(1))
        time_sampling = time.perf_counter() - start

        start = time.perf_counter()
        support_t = support.to_torch(self.device)
        adapted = self.learner.adapt(support_t)
        time_update = time.perf_counter() - start

        start = time.perf_counter()
        query = sampler.sample(self.policy, adapted, tasks, episodes, seed=seed(2))
        time_sampling += time.perf_counter() - start

        start = time.perf_counter()
        metrics = self.learner.meta_update(support_t, query.to_torch(self.device))
        time_update += time.perf_counter() - start

        row = {
            "return_pre": float(support.returns.mean()),
            "return_post": float(query.returns.mean()),
            "kl": float(metrics.get("kl", float("nan"))),
            "surrogate_improvement": float(metrics.get("surrogate_improvement", float("nan"))),
            "time_sampling_s": time_sampling,
            "time_update_s": time_update,
        }
        if support.success is not None:  # Meta-World: fraction of episodes that succeeded, before and after
            row.update(success_pre=support.success_rate, success_post=query.success_rate)
        row.update({k: float(v) for k, v in metrics.items() if k not in row and isinstance(v, (int, float, bool))})
        return IterationResult(support.num_steps + query.num_steps, row)

    def evaluation_returns(self, sampler: Any, tasks: list[dict], episodes: int, seed: int) -> np.ndarray:
        """Mean return per task after 0..3 inner steps of ``fast_lr`` (``metarl evaluate``'s default protocol)."""
        from metarl.evaluate import adaptation_returns, parse_step_sizes

        sizes = parse_step_sizes(None, self.config.maml.fast_lr, None)
        return adaptation_returns(self.learner, sampler, tasks, episodes, sizes, seed)

    def state_dict(self) -> dict[str, Any]:
        return self.learner.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.learner.load_state_dict(state)
