"""RL^2 (Duan et al. 2016, "Fast Reinforcement Learning via Slow Reinforcement Learning").

The agent (:class:`metarl.models.gru.RL2Agent`) is a GRU that sees observation, previous action, previous reward and
a done flag; its hidden state carries over the ``episodes_per_trial`` episodes of one task (a *trial*) and restarts
between trials, so learning *within* a trial happens in the activations. The outer loop is ordinary RL on trials.

Per iteration (:mod:`metarl.algorithms.trial_ppo`, shared with SNAIL): ``tasks_per_iteration`` training tasks,
``trials_per_task`` whole trials each, then PPO on those trials, each recomputed from the initial state (zeros) by
:meth:`RL2Agent.unroll`.

Why PPO and not the paper's TRPO: the paper's TRPO update (256-unit GRU, GAE lambda 0.3) needs conjugate gradient
through a recurrent unroll for every Fisher-vector product, i.e. ~10 extra backward passes through the whole trial
per update plus a line search; PPO reuses each batch for several first-order epochs at the price of one backward per
minibatch, is what later RL^2 implementations commonly use (e.g. garage's RL2PPO), and keeps the recurrent update
simple on a GPU. The trust region is approximated by the ratio clip; ``approx_kl`` is logged. ``rl2.outer: trpo``
trains the policy as the paper does instead (one TRPO step per iteration with the ``trpo`` section's settings, the
value network fitted apart by the epochs; :mod:`metarl.algorithms.trial_trpo`), to test whether the optimiser
explains a gap to the paper's numbers.

The value can run on a GRU of its own (``rl2.separate_value``, like the paper's separate baseline network). The
bandit and tabular-MDP configs turn it on: with one GRU for both, the value loss also trains the policy's memory; the
separate one added 12.5 reward at K = 10, N = 100 bandits and made tabular MDPs learn at all (docs/results/rl2.md).
"""

from __future__ import annotations

import gymnasium as gym
import torch

from metarl.algorithms.trial_ppo import TrialPPO, agent_dims
from metarl.config import Config, ConfigError
from metarl.models.gru import RL2Agent


def make_agent(config: Config, observation_space: gym.Space, action_space: gym.Space) -> RL2Agent:
    """The configured agent for the env's spaces (flat Box observations; Discrete or 1-D Box actions)."""
    obs_dim, action_dim, discrete = agent_dims("rl2", observation_space, action_space)
    c = config.rl2
    return RL2Agent(
        obs_dim,
        action_dim,
        discrete,
        c.hidden_size,
        c.init_std,
        separate_value=c.separate_value,
        head_init_scale=c.head_init_scale,
    )


class RL2(TrialPPO):
    """Whole trials per task -> PPO on the GRU agent (:class:`metarl.algorithms.trial_ppo.TrialPPO`)."""

    name = "rl2"

    def __init__(
        self, config: Config, observation_space: gym.Space, action_space: gym.Space, device: torch.device
    ) -> None:
        if config.rl2.outer == "trpo" and not config.rl2.separate_value:
            raise ConfigError(
                "config key 'rl2.outer': trpo steps the policy alone and fits the value separately, so it needs "
                "rl2.separate_value: true"
            )
        super().__init__(config, config.rl2, make_agent(config, observation_space, action_space), device)
