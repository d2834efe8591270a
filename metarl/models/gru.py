"""The RL^2 agent (Duan et al. 2016): a GRU over a trial, with a categorical or Gaussian action head and a value head.

It is a *stateful* policy in the sampler's sense (:mod:`metarl.recurrent` states the input convention): at every
step it reads ``concat(obs, prev_action, prev_reward, prev_done)`` (the previous action one-hot when discrete, zeros
/ no action at the first step of a trial) and its hidden state, which the sampler carries across the episode
boundaries of a trial and resets between trials. :meth:`RL2Agent.unroll` recomputes a whole batch of trials from the
initial state with exactly that convention, so the log-probabilities a learner recomputes are the sampler's.

The GRU cell is written out (PyTorch's gate equations), as in :class:`metarl.recurrent.GRUCategoricalPolicy`; the
input projection of a whole trial is one matmul in :meth:`unroll`, only the recurrence loops over steps.

``separate_value``: the value head reads a second GRU of its own (same inputs, same size) instead of the policy's.
With one shared GRU the value loss, whose gradient grows with the square of the reward scale, shapes the recurrent
features the policy reads; with two, the policy's GRU is trained by the policy loss alone and the learner can clip
the two networks' gradients separately (:meth:`RL2Agent.parameter_groups`). Acting never evaluates the value GRU, so
the sampler's state is the policy GRU's alone.

``head_init_scale`` multiplies the action head's initial weights and bias (PyTorch's default init at 1). With 256
GRU features in [-1, 1] the default head gives initial Gaussian means of a few tenths, beyond 2D navigation's velocity
bound of 0.1: nearly every action is clipped to the bound, so changing the mean barely changes what the agent does
and the policy gradient has little to follow. A scale of 0.01 starts every mean near 0.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor, nn

from metarl.models.trial_agent import TrialDistributions, step_features, trial_inputs
from metarl.policies import Dist


class RL2Agent(TrialDistributions, nn.Module):
    """GRU trial agent: ``forward(obs, prev_action, prev_reward, prev_done, state) -> (dist, new_state)``."""

    is_stateful = True

    def __init__(
        self,
        obs_dim: int,
        action_dim: int,
        discrete: bool,
        hidden_size: int = 256,
        init_std: float = 1.0,
        separate_value: bool = False,
        head_init_scale: float = 1.0,
    ) -> None:
        super().__init__()
        self.obs_dim, self.action_dim, self.discrete, self.hidden_size = obs_dim, action_dim, discrete, hidden_size
        self.separate_value = separate_value
        self.input_gates = nn.Linear(obs_dim + action_dim + 2, 3 * hidden_size)
        self.hidden_gates = nn.Linear(hidden_size, 3 * hidden_size)
        if separate_value:
            self.value_input_gates = nn.Linear(obs_dim + action_dim + 2, 3 * hidden_size)
            self.value_hidden_gates = nn.Linear(hidden_size, 3 * hidden_size)
        if discrete:
            self.logits = nn.Linear(hidden_size, action_dim)
        else:
            self.mean = nn.Linear(hidden_size, action_dim)
            self.log_std = nn.Parameter(torch.full((action_dim,), math.log(init_std)))
        self.value = nn.Linear(hidden_size, 1)
        with torch.no_grad():  # small initial logits / means: the untrained agent acts near the action space's centre
            for p in (self.logits if discrete else self.mean).parameters():
                p.mul_(head_init_scale)

    # -- the recurrent core ------------------------------------------------------------------------------------
    def initial_state(self, batch_size: int) -> Tensor:
        """Zeros ``[batch_size, hidden_size]``: the state at the start of every trial."""
        return torch.zeros(batch_size, self.hidden_size, device=self.value.weight.device, dtype=self.value.weight.dtype)

    def features(self, obs: Tensor, prev_action: Tensor, prev_reward: Tensor, prev_done: Tensor) -> Tensor:
        """The GRU input ``[..., obs_dim + action_dim + 2]``; a discrete ``prev_action`` of -1: all-zero one-hot."""
        return step_features(obs, prev_action, prev_reward, prev_done, self.discrete, self.action_dim)

    def parameter_groups(self) -> list[list[nn.Parameter]]:
        """The policy's parameters, then (``separate_value``) the value network's: the groups a learner clips
        separately. One group when the GRU is shared."""
        if not self.separate_value:
            return [list(self.parameters())]
        value = {id(p) for m in (self.value_input_gates, self.value_hidden_gates, self.value) for p in m.parameters()}
        return [[p for p in self.parameters() if id(p) not in value], [p for p in self.parameters() if id(p) in value]]

    def _gru(self, x_gates: Tensor, state: Tensor, hidden_gates: nn.Linear | None = None) -> Tensor:
        x_r, x_z, x_n = x_gates.chunk(3, dim=-1)
        h_r, h_z, h_n = (self.hidden_gates if hidden_gates is None else hidden_gates)(state).chunk(3, dim=-1)
        reset = torch.sigmoid(x_r + h_r)
        update = torch.sigmoid(x_z + h_z)
        candidate = torch.tanh(x_n + reset * h_n)
        return (1.0 - update) * candidate + update * state

    def head(self, hidden: Tensor) -> Dist:
        """Action distribution parameters from hidden states ``[..., H]``."""
        if self.discrete:
            return (self.logits(hidden),)
        mean = self.mean(hidden)
        return mean, self.log_std.expand_as(mean)

    def value_of(self, hidden: Tensor) -> Tensor:
        """State values ``[...]`` from hidden states ``[..., H]``."""
        return self.value(hidden).squeeze(-1)

    def forward(
        self, obs: Tensor, prev_action: Tensor, prev_reward: Tensor, prev_done: Tensor, state: Tensor
    ) -> tuple[Dist, Tensor]:
        """One step for a batch of lanes (the sampler's call)."""
        x = self.input_gates(self.features(obs, prev_action, prev_reward, prev_done.to(obs.dtype)))
        new_state = self._gru(x, state)
        return self.head(new_state), new_state

    def unroll(
        self,
        obs: Tensor,
        actions: Tensor,
        rewards: Tensor,
        mask: Tensor,
        state: Tensor | None = None,
        parts: Literal["both", "policy", "value"] = "both",
    ) -> tuple[Dist, Tensor, Tensor]:
        """Recompute whole trials: ``obs [L, K, T, d]``, ``actions [L, K, T(, A)]``, ``rewards`` / ``mask [L, K, T]``
        for ``L`` trials of ``K`` episodes -> distributions and values per step (``[L, K, T, ...]``) and the final
        state. Steps after an early termination (mask 0) leave the state and the inputs unchanged. ``parts``: with a
        separate value GRU, ``"policy"`` skips the value network (values None) and ``"value"`` the policy's GRU
        (distributions None, the state returned unchanged): what TRPO's step and the value fit each need."""
        lanes, k, horizon = rewards.shape
        steps = k * horizon
        pa, pr, pd, active = trial_inputs(actions, rewards, mask, self.discrete, self.action_dim)
        features = self.features(obs.to(self.value.weight.dtype).reshape(lanes, steps, -1), pa, pr, pd)
        h = self.initial_state(lanes) if state is None else state
        skip_policy = parts == "value" and self.separate_value
        stacked = None
        if not skip_policy:
            stacked, h = self._recur(self.input_gates(features), active, h, self.hidden_gates)
        value_hidden = stacked
        if self.separate_value and parts != "policy":  # its own GRU from the initial state (never carried)
            value_hidden, _ = self._recur(
                self.value_input_gates(features), active, self.initial_state(lanes), self.value_hidden_gates
            )
        dist = None if skip_policy else tuple(x.reshape(lanes, k, horizon, *x.shape[2:]) for x in self.head(stacked))
        values = None if parts == "policy" else self.value_of(value_hidden).reshape(lanes, k, horizon)
        return dist, values, h

    def _recur(self, x_gates: Tensor, active: Tensor, h: Tensor, hidden_gates: nn.Linear) -> tuple[Tensor, Tensor]:
        """The GRU over ``x_gates [L, S, 3H]`` from ``h``: hidden states ``[L, S, H]`` and the final state; steps that
        did not happen (``active`` False) leave the state unchanged."""
        hidden = []
        # unbind, not x_gates[:, s]: the backward of each indexing op writes a full-size zero gradient, which made
        # backward quadratic in the trial length (195 s instead of ~2 s for 5 trials of 5,000 steps).
        for x_s, active_s in zip(x_gates.unbind(1), active.unbind(1), strict=True):
            new = self._gru(x_s, h, hidden_gates)
            hidden.append(new)
            h = torch.where(active_s.unsqueeze(-1), new, h)
        return torch.stack(hidden, dim=1), h
