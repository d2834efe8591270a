"""The SNAIL trial agent (Mishra et al. 2018): a SNAIL policy network and a SNAIL value network over a trial.

A *stateful* policy in the sampler's sense, with :class:`metarl.models.gru.RL2Agent`'s API and input convention
(:mod:`metarl.models.trial_agent`): ``forward(obs, prev_action, prev_reward, prev_done, state) -> (dist, state)``
acts one step; its state is the policy network's incremental cache (:meth:`metarl.models.snail.SNAIL.step`: conv
taps and attention keys/values of the trial so far, fixed size, ``pos`` counting the steps), which the sampler carries
across the episodes of a trial and resets between trials. :meth:`SNAILAgent.unroll` recomputes whole trials with the
full-sequence forward; the value network is only needed there (acting never evaluates it).

Steps that did not happen (``mask`` 0, after an early termination) are not part of the sequence: the sampler keeps
the old cache for them, and :meth:`unroll` moves each trial's real steps to the front (in order) before the forward
and back after it, so both see the same sequence of real steps.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from metarl.models.snail import SNAIL, Block, Cache
from metarl.models.trial_agent import TrialDistributions, step_features, trial_inputs
from metarl.policies import Dist


class SNAILAgent(TrialDistributions, nn.Module):
    """SNAIL trial agent over trials of at most ``max_steps`` steps (episodes per trial x horizon)."""

    is_stateful = True

    def __init__(
        self,
        obs_dim: int,
        action_dim: int,
        discrete: bool,
        max_steps: int,
        policy_blocks: list[Block] | str = "bandit_mdp",
        value_blocks: list[Block] | str = "bandit_mdp_value",
        init_std: float = 1.0,
    ) -> None:
        super().__init__()
        self.obs_dim, self.action_dim, self.discrete, self.max_steps = obs_dim, action_dim, discrete, max_steps
        inputs = obs_dim + action_dim + 2
        self.policy_net = SNAIL(inputs, max_steps, policy_blocks, action_dim)
        self.value_net = SNAIL(inputs, max_steps, value_blocks, 1)
        if not discrete:
            self.log_std = nn.Parameter(torch.full((action_dim,), math.log(init_std)))

    def initial_state(self, batch_size: int) -> Cache:
        """The empty cache of the policy network: the state at the start of every trial."""
        return self.policy_net.initial_cache(batch_size, self.max_steps)

    def head(self, out: Tensor) -> Dist:
        """Action distribution parameters from the policy network's outputs ``[..., A]``."""
        if self.discrete:
            return (out,)
        return out, self.log_std.expand_as(out)

    def forward(
        self, obs: Tensor, prev_action: Tensor, prev_reward: Tensor, prev_done: Tensor, state: Cache
    ) -> tuple[Dist, Cache]:
        """One step for a batch of lanes (the sampler's call): the policy network's incremental step."""
        x = step_features(obs, prev_action, prev_reward, prev_done, self.discrete, self.action_dim)
        out, state = self.policy_net.step(x, state)
        return self.head(out), state

    def unroll(
        self, obs: Tensor, actions: Tensor, rewards: Tensor, mask: Tensor, state: Cache | None = None
    ) -> tuple[Dist, Tensor, None]:
        """Recompute whole trials: ``obs [L, K, T, d]``, ``actions [L, K, T(, A)]``, ``rewards`` / ``mask [L, K, T]``
        -> distributions and values per step (``[L, K, T, ...]``); no final state (``state`` must be None: a trial
        is always recomputed from its start)."""
        if state is not None:
            raise ValueError("SNAILAgent.unroll recomputes whole trials from their start; pass no state")
        lanes, k, horizon = rewards.shape
        steps = k * horizon
        if steps > self.max_steps:
            raise ValueError(f"trials of {steps} steps exceed the agent's {self.max_steps}")
        pa, pr, pd, active = trial_inputs(actions, rewards, mask, self.discrete, self.action_dim)
        dtype = self.policy_net.output.weight.dtype
        x = step_features(obs.reshape(lanes, steps, -1).to(dtype), pa, pr, pd, self.discrete, self.action_dim)
        order = None
        if not bool(active.all()):  # real steps first, in order; outputs put back afterwards
            order = torch.argsort((~active).to(torch.int8), dim=1, stable=True)
            x = x.gather(1, order.unsqueeze(-1).expand_as(x))
        out, values = self.policy_net(x), self.value_net(x).squeeze(-1)
        if order is not None:
            back = torch.argsort(order, dim=1)
            out = out.gather(1, back.unsqueeze(-1).expand_as(out))
            values = values.gather(1, back)
        dist = tuple(p.reshape(lanes, k, horizon, *p.shape[2:]) for p in self.head(out))
        return dist, values.reshape(lanes, k, horizon), None
