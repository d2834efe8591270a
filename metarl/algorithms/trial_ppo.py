"""PPO on whole trials, shared by the trial agents (RL^2, SNAIL): collect trials, update, evaluate per episode.

An algorithm built on :class:`TrialPPO` gives it its agent (a stateful policy with ``unroll`` and the distribution
API of :mod:`metarl.models.trial_agent`) and its config section (``tasks_per_iteration``, ``trials_per_task``,
``episodes_per_trial`` and the PPO settings ``lr``, ``clip``, ``epochs``, ``minibatches``, ``value_coef``,
``entropy_coef``, ``max_grad_norm``).

Per iteration: ``tasks_per_iteration`` training tasks, ``trials_per_task`` whole trials each (sampler seed phase 1,
the sampler carries the agent's state), then PPO on those trials: GAE over the whole trial (``advantages.gamma`` and
``gae_lambda``; nothing bootstrapped at episode boundaries inside a trial, nor after its end), advantages normalized
over the batch, ``epochs`` passes in ``minibatches`` minibatches of whole trials (shuffled from seed phase 3), each
recomputed from the start of the trial by the agent's ``unroll``; clipped surrogate + ``value_coef`` * value loss -
``entropy_coef`` * entropy, Adam, gradient norm clipped (per network where the agent's ``parameter_groups`` has a
policy and a value network: RL^2 with ``separate_value``). The old log-probabilities are the ones the sampler recorded;
``log_prob_gap`` reports how far the recomputation at the start of the update is from them.

``target_kl`` (off by default): end the update's epochs at the first minibatch (after at least one step) whose
approximate KL to the sampling policy, measured before its step, exceeds 1.5 x ``target_kl``; that minibatch takes no
step (the early stop of Spinning Up's and Stable-Baselines3's PPO). Why: RL^2 on 2D navigation, after its policy's std
had shrunk to ~0.03, collapsed from -11 to -78 per trial within 15 iterations (iteration ~515-530), with one update's
mean approximate KL at 0.24 where the others sat near 0.01 (``docs/results/rl2.md``). ``updates`` logs how many
minibatch steps each update took.

``outer: trpo`` (RL^2 only, with ``separate_value``): the policy takes one TRPO step instead
(:mod:`metarl.algorithms.trial_trpo`) and the epochs fit only the value network; the logged ``kl``,
``surrogate_before`` / ``surrogate_after``, ``line_search_steps`` and ``accepted`` replace ``approx_kl``,
``clip_fraction`` and ``policy_loss``.

``normalize_value_loss``: divide the value loss by the variance of the batch's returns (fixed for the whole update).
Where the policy and the value head share a network (RL^2's GRU), the value loss's gradient grows with the square of
the reward scale while the clipped surrogate's (normalized advantages) does not, so with returns in the tens or
hundreds the value term dominates the shared gradient and, after norm clipping, leaves the policy a small fraction
of each step. Dividing by the return variance makes the two terms' scales independent of the reward scale. The
logged ``value_loss`` stays the raw mean squared error. Off by default: on 2D navigation (RL^2, returns ~ -2,000 per
trial at the start) it measured worse, not better: the value head, still predicting raw returns, then learns ~Var
times more slowly, and with a poor baseline the policy did not improve in 41 iterations (trial return -2,153, where
the raw loss reached -445; ``docs/results/rl2.md``). Predicting normalized returns (a running scale, as PopArt does)
is the untested alternative.
"""

from __future__ import annotations

import time
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces
from torch.nn.utils import clip_grad_norm_

from metarl.algorithms import IterationResult, SeedFn
from metarl.algorithms.trial_trpo import trpo_update
from metarl.config import Config, ConfigError
from metarl.episodes import EpisodeBatch
from metarl.ppo import clipped_surrogate, masked_moments, masked_normalize, trial_gae


def agent_dims(name: str, observation_space: gym.Space, action_space: gym.Space) -> tuple[int, int, bool]:
    """``(obs_dim, action_dim, discrete)`` of a trial agent for the env's spaces (flat Box observations; Discrete
    or 1-D Box actions); ``ConfigError`` naming ``name`` otherwise."""
    if not isinstance(observation_space, spaces.Box) or len(observation_space.shape) != 1:
        raise ConfigError(f"config key 'env.id': {name} needs a flat Box observation space, got {observation_space}")
    if isinstance(action_space, spaces.Discrete):
        return int(observation_space.shape[0]), int(action_space.n), True
    if isinstance(action_space, spaces.Box) and len(action_space.shape) == 1:
        return int(observation_space.shape[0]), int(action_space.shape[0]), False
    raise ConfigError(f"config key 'env.id': {name} needs Discrete or 1-D Box actions, got {action_space}")


class TrialPPO:
    """Whole trials per task -> PPO on a trial agent; ``section`` is the algorithm's config section."""

    name: str

    def __init__(self, config: Config, section: Any, policy: torch.nn.Module, device: torch.device) -> None:
        self.config, self.device, self.c = config, device, section
        self.policy = policy.to(device)
        self.optimizer = torch.optim.Adam(self.policy.parameters(), lr=self.c.lr, eps=1e-5)

    @property
    def tasks_per_iteration(self) -> int:
        return self.c.tasks_per_iteration

    @property
    def episodes_per_trial(self) -> int:
        return self.c.episodes_per_trial

    def sample_trials(self, sampler: Any, tasks: list[dict], trials: int, seed: int) -> EpisodeBatch:
        """``trials`` trials of every task with the current parameters: arrays ``[tasks, trials * K, T, ...]``."""
        params = {name: p.detach() for name, p in self.policy.named_parameters()}
        k = self.c.episodes_per_trial
        return sampler.sample(self.policy, params, tasks, trials * k, seed=seed, episodes_per_trial=k)

    def collect_and_update(self, sampler: Any, tasks: list[dict], seed: SeedFn) -> IterationResult:
        start = time.perf_counter()
        batch = self.sample_trials(sampler, tasks, self.c.trials_per_task, seed(1))
        time_sampling = time.perf_counter() - start
        start = time.perf_counter()
        metrics = self.update(batch.to_torch(self.device), seed(3))
        time_update = time.perf_counter() - start
        per_episode = trial_returns(batch, self.c.episodes_per_trial)  # [trials, K]
        row = {
            "trial_return": float(per_episode.sum(1).mean()),
            "return_first_episode": float(per_episode[:, 0].mean()),
            "return_last_episode": float(per_episode[:, -1].mean()),
            **metrics,
            "time_sampling_s": time_sampling,
            "time_update_s": time_update,
        }
        if batch.success is not None:  # Meta-World: success of the first and of the last episode of each trial
            success = np.asarray(batch.success).reshape(-1, self.c.episodes_per_trial)
            row["success_first_episode"] = float(success[:, 0].mean())
            row["success_last_episode"] = float(success[:, -1].mean())
        return IterationResult(batch.num_steps, row)

    def lanes(self, batch: EpisodeBatch) -> dict[str, torch.Tensor]:
        """The batch as trials: ``[L, K, T, ...]`` tensors (``L`` = tasks x trials per task)."""
        k, horizon = self.c.episodes_per_trial, batch.horizon
        lanes = batch.num_tasks * batch.episodes_per_task // k

        def view(x: torch.Tensor) -> torch.Tensor:
            return x.reshape(lanes, k, horizon, *x.shape[3:])

        return {
            "obs": view(batch.observations),
            "actions": view(batch.actions),
            "rewards": view(batch.rewards.float()),
            "mask": view(batch.mask.float()),
            "old_log_probs": view(batch.log_probs.float()),
        }

    def recompute(self, trials: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Log-probabilities, entropies and values ``[L, K * T]`` of the stored actions, trials replayed from the
        initial state."""
        dist, values, _ = self.policy.unroll(trials["obs"], trials["actions"], trials["rewards"], trials["mask"])
        log_probs = self.policy.log_prob(dist, trials["actions"])
        flat = trials["rewards"].shape[0], -1
        return log_probs.reshape(flat), self.policy.entropy(dist).reshape(flat), values.reshape(flat)

    def update(self, batch: EpisodeBatch, seed: int) -> dict[str, float]:
        """PPO epochs on a batch of whole trials (tensors on the learner's device)."""
        c, adv_cfg = self.c, self.config.advantages
        trials = self.lanes(batch)
        num = trials["rewards"].shape[0]
        rewards, mask = trials["rewards"].reshape(num, -1), trials["mask"].reshape(num, -1)
        old = trials["old_log_probs"].reshape(num, -1)
        with torch.no_grad():
            log_probs, _, values = self.recompute(trials)
            gap = float(((log_probs - old).abs() * mask).max())
            advantages, returns = trial_gae(rewards, values, mask, adv_cfg.gamma, adv_cfg.gae_lambda)
            if adv_cfg.normalize:
                advantages = masked_normalize(advantages, mask)
            value_scale = 1.0 / return_variance(returns, mask) if c.normalize_value_loss else 1.0
        if getattr(c, "outer", "ppo") == "trpo":  # one trust-region step of the policy, then the value fit alone
            metrics = trpo_update(
                self.policy, self.optimizer, trials, advantages, returns, mask, self.config.trpo, c, value_scale, seed
            )
            return {**metrics, "log_prob_gap": gap}
        generator = torch.Generator().manual_seed(int(seed))
        sizes = [len(part) for part in np.array_split(np.arange(num), min(c.minibatches, num))]
        totals = {"policy_loss": 0.0, "value_loss": 0.0, "entropy": 0.0, "approx_kl": 0.0, "clip_fraction": 0.0}
        updates, norms = 0, [0.0]  # gradient norms before clipping: the policy's (or shared network's), the value's
        stop_kl = 1.5 * c.target_kl if c.target_kl is not None else float("inf")
        stopped = False
        for _ in range(c.epochs):
            if stopped:
                break
            order = torch.randperm(num, generator=generator).to(self.device)
            for part in torch.split(order, sizes):
                sub = {key: value[part] for key, value in trials.items()}
                m, a, r, o = mask[part], advantages[part], returns[part], old[part]
                new_log_probs, entropy, new_values = self.recompute(sub)
                policy_loss = clipped_surrogate(new_log_probs, o, a, m, c.clip)
                count = m.sum().clamp(min=1.0)
                value_loss = 0.5 * ((new_values - r).pow(2) * m).sum() / count
                mean_entropy = (entropy * m).sum() / count
                loss = policy_loss + c.value_coef * value_scale * value_loss - c.entropy_coef * mean_entropy
                with torch.no_grad():
                    log_ratio = new_log_probs - o
                    kl = float(((torch.exp(log_ratio) - 1 - log_ratio) * m).sum() / count)
                    clipped = float((((torch.exp(log_ratio) - 1).abs() > c.clip).float() * m).sum() / count)
                if kl > stop_kl and updates > 0:  # this minibatch's policy is already too far: no step from it
                    stopped = True
                    break
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                norms = [float(clip_grad_norm_(group, c.max_grad_norm)) for group in self.policy.parameter_groups()]
                self.optimizer.step()
                totals["approx_kl"] += kl
                totals["clip_fraction"] += clipped
                totals["policy_loss"] += float(policy_loss.detach())
                totals["value_loss"] += float(value_loss.detach())
                totals["entropy"] += float(mean_entropy.detach())
                updates += 1
        metrics = {key: value / updates for key, value in totals.items()}
        metrics.update(log_prob_gap=gap, grad_norm=norms[0])
        if c.target_kl is not None:
            metrics["updates"] = float(updates)
        if len(norms) > 1:
            metrics["value_grad_norm"] = norms[1]
        return metrics

    def evaluation_returns(self, sampler: Any, tasks: list[dict], episodes: int, seed: int) -> np.ndarray:
        """Per task, the return of episode 1..K of a trial, averaged over ``episodes`` trials: ``[tasks, K]``."""
        return self.evaluation_curves(sampler, tasks, episodes, seed)[0]

    def evaluation_curves(
        self, sampler: Any, tasks: list[dict], episodes: int, seed: int
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Per task and episode 1..K of a trial, the return and the success rate (None for envs that do not report
        success), averaged over ``episodes`` trials: ``[tasks, K]`` each."""
        batch = self.sample_trials(sampler, tasks, episodes, seed)

        def per_episode(values: Any) -> np.ndarray:
            x = np.asarray(values, dtype=np.float64)
            return x.reshape(len(tasks), episodes, self.c.episodes_per_trial).mean(axis=1)

        return per_episode(batch.returns), None if batch.success is None else per_episode(batch.success)

    def state_dict(self) -> dict[str, Any]:
        return {"agent": self.policy.state_dict(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.policy.load_state_dict(state["agent"])
        self.optimizer.load_state_dict(state["optimizer"])


def return_variance(returns: torch.Tensor, mask: torch.Tensor, floor: float = 1e-8) -> float:
    """Variance of the returns over the real steps of the batch (at least ``floor``)."""
    return max(float(masked_moments(returns, mask)[1]), floor)


def trial_returns(batch: EpisodeBatch, episodes_per_trial: int) -> np.ndarray:
    """Return of every episode of every trial, ``[tasks * trials, K]`` (NumPy)."""
    returns = np.asarray(batch.to_numpy().returns, dtype=np.float64)
    return returns.reshape(-1, episodes_per_trial)
