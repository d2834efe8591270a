"""SNAIL (Mishra et al. 2018, "A Simple Neural Attentive Meta-Learner") as a meta-RL agent over trials.

The agent (:class:`metarl.models.snail_agent.SNAILAgent`) reads RL^2's inputs (observation, previous action,
previous reward, done flag) at every step of a trial of ``episodes_per_trial`` episodes of one task; what it learned
about the task lives in its temporal convolutions and attention over the trial so far instead of a recurrent state.
While sampling it acts step by step from a fixed-size cache (conv taps, attention keys/values), so a step costs one
pass through the blocks and attention over the trial so far, not a recomputation of the trial.

Training is RL^2's, unchanged (:mod:`metarl.algorithms.trial_ppo`): whole trials per task, PPO with GAE over the
trial, old log-probabilities from the sampler and the trials recomputed from their start (the full-sequence forward)
at update time. The paper trains SNAIL with TRPO and GAE; PPO here for the reasons given in
:mod:`metarl.algorithms.rl2`, so SNAIL and RL^2 differ only in the agent.

The networks' sizes are ``snail.policy_blocks`` / ``snail.value_blocks`` (presets of :mod:`metarl.models.snail`;
the paper's bandit/MDP networks by default), their TC blocks sized for ``episodes_per_trial`` x the env's horizon.
"""

from __future__ import annotations

import gymnasium as gym
import torch

from metarl.algorithms.trial_ppo import TrialPPO, agent_dims
from metarl.config import Config, ConfigError
from metarl.models.snail import PRESETS
from metarl.models.snail_agent import SNAILAgent


def env_horizon(config: Config) -> int:
    """Steps per episode of the configured env family."""
    from metarl.train import make_env  # the training loop imports the algorithms; build the env lazily

    env = make_env(config)
    try:
        return int(env.unwrapped.horizon)
    finally:
        env.close()


def make_agent(config: Config, observation_space: gym.Space, action_space: gym.Space) -> SNAILAgent:
    """The configured agent for the env's spaces, sized for trials of ``episodes_per_trial`` x horizon steps."""
    c = config.snail
    for key in ("policy_blocks", "value_blocks"):
        if getattr(c, key) not in PRESETS:
            raise ConfigError(f"config key 'snail.{key}': '{getattr(c, key)}' is not one of {', '.join(PRESETS)}")
    obs_dim, action_dim, discrete = agent_dims("snail", observation_space, action_space)
    max_steps = c.episodes_per_trial * env_horizon(config)
    return SNAILAgent(obs_dim, action_dim, discrete, max_steps, c.policy_blocks, c.value_blocks, c.init_std)


class SNAILAlgorithm(TrialPPO):
    """Whole trials per task -> PPO on the SNAIL agent (:class:`metarl.algorithms.trial_ppo.TrialPPO`)."""

    name = "snail"

    def __init__(
        self, config: Config, observation_space: gym.Space, action_space: gym.Space, device: torch.device
    ) -> None:
        super().__init__(config, config.snail, make_agent(config, observation_space, action_space), device)
