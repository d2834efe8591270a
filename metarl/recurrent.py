"""A recurrent (GRU) categorical policy for RL^2-style agents, and the replay that matches the sampler.

A *stateful* policy (``is_stateful = True``) carries a hidden state across the steps and the episodes of one trial.
Its forward is ``forward(obs, prev_action, prev_reward, prev_done, state) -> (dist, new_state)`` and it has
``initial_state(batch_size)``. The distribution API (``draw_noise`` / ``sample`` / ``log_prob`` / ``kl`` /
``entropy``) is the one of :class:`metarl.policies.CategoricalMLPPolicy`, so samplers and learners treat both alike.

Input convention (shared by the sampler and :func:`replay`, so log-probabilities recomputed by a learner match the
ones recorded while sampling):

- at the first step of a trial: ``prev_action = -1`` (no action: an all-zero one-hot; a continuous stateful policy
  gets zeros), ``prev_reward = 0``, ``prev_done = 0`` and ``state = initial_state``;
- afterwards they are the action and reward of the lane's last real step, and ``prev_done = 1`` when that step ended
  an episode (terminated, truncated or reached the horizon), so the first step of every later episode sees
  ``prev_done = 1`` and the hidden state carries over;
- steps after an early termination (``mask == 0``) leave state and inputs unchanged.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.utils._pytree import tree_map

from metarl.policies import CategoricalMLPPolicy, Dist, Params

NO_ACTION = -1


class GRUCategoricalPolicy(nn.Module):
    """GRU over ``concat(obs, one_hot(prev_action), prev_reward, prev_done)`` with a linear logits head.

    The GRU cell is written out (PyTorch's gate equations) so that ``torch.func.functional_call`` and ``vmap`` over
    per-task parameters work without special cases.
    """

    is_stateful = True
    discrete = True

    def __init__(self, obs_dim: int, num_actions: int, hidden_size: int = 64) -> None:
        super().__init__()
        self.obs_dim, self.num_actions, self.hidden_size = obs_dim, num_actions, hidden_size
        in_dim = obs_dim + num_actions + 2
        self.input_gates = nn.Linear(in_dim, 3 * hidden_size)
        self.hidden_gates = nn.Linear(hidden_size, 3 * hidden_size)
        self.logits = nn.Linear(hidden_size, num_actions)

    def initial_state(self, batch_size: int) -> Tensor:
        """The hidden state at the start of a trial, ``[batch_size, hidden_size]`` zeros."""
        return torch.zeros(batch_size, self.hidden_size)

    def forward(
        self, obs: Tensor, prev_action: Tensor, prev_reward: Tensor, prev_done: Tensor, state: Tensor
    ) -> tuple[Dist, Tensor]:
        """One step for a batch of lanes: ``obs [B, obs_dim]``, ``prev_action [B]`` (int, -1 = none),
        ``prev_reward [B]``, ``prev_done [B]``, ``state [B, H]`` -> ``((logits [B, A],), new_state [B, H])``."""
        one_hot = (prev_action.unsqueeze(-1) == torch.arange(self.num_actions)).to(obs.dtype)
        x = torch.cat([obs, one_hot, prev_reward.unsqueeze(-1), prev_done.unsqueeze(-1)], dim=-1)
        x_r, x_z, x_n = self.input_gates(x).chunk(3, dim=-1)
        h_r, h_z, h_n = self.hidden_gates(state).chunk(3, dim=-1)
        reset = torch.sigmoid(x_r + h_r)
        update = torch.sigmoid(x_z + h_z)
        candidate = torch.tanh(x_n + reset * h_n)
        new_state = (1.0 - update) * candidate + update * state
        return (self.logits(new_state),), new_state

    draw_noise = CategoricalMLPPolicy.draw_noise
    sample = staticmethod(CategoricalMLPPolicy.sample)
    mode = staticmethod(CategoricalMLPPolicy.mode)
    log_prob = staticmethod(CategoricalMLPPolicy.log_prob)
    kl = staticmethod(CategoricalMLPPolicy.kl)
    entropy = staticmethod(CategoricalMLPPolicy.entropy)


def replay(policy: nn.Module, params: Params | None, batch, episodes_per_trial: int) -> Dist:
    """Distributions of a stateful policy at every step of ``batch``, ``[N, E, T, ...]``, fed as the sampler fed it.

    ``batch`` is an :class:`metarl.episodes.EpisodeBatch` holding tensors; trials are consecutive groups of
    ``episodes_per_trial`` episodes of one task. ``params`` (shared by all tasks) defaults to the module's own. The
    result is differentiable in ``params``: a learner's RL^2 loss is ``policy.log_prob(replay(...), batch.actions)``.
    """
    num_tasks, num_episodes, horizon = batch.rewards.shape
    if num_episodes % episodes_per_trial:
        raise ValueError(f"{num_episodes} episodes per task are not whole trials of {episodes_per_trial}")
    trials = num_episodes // episodes_per_trial
    lanes = num_tasks * trials

    def lane_view(x: Tensor) -> Tensor:  # [N, E, T, ...] -> [lanes, ept, T, ...]
        return x.reshape(lanes, episodes_per_trial, horizon, *x.shape[3:])

    obs, actions = lane_view(batch.observations.float()), lane_view(batch.actions)
    rewards, mask = lane_view(batch.rewards.float()), lane_view(batch.mask.float())
    state = policy.initial_state(lanes).to(obs.device)
    discrete = bool(getattr(policy, "discrete", True))
    if discrete:
        prev_action = torch.full((lanes,), NO_ACTION, dtype=torch.long, device=obs.device)
    else:
        prev_action = torch.zeros(lanes, *actions.shape[3:], device=obs.device)
    prev_reward = torch.zeros(lanes, device=obs.device)
    prev_done = torch.zeros(lanes, device=obs.device)

    def step(*args: Tensor) -> tuple[Dist, Tensor]:
        if params is None:
            return policy(*args)
        return torch.func.functional_call(policy, params, args)

    per_step: list[Dist] = []
    for k in range(episodes_per_trial):
        for t in range(horizon):
            dist, new_state = step(obs[:, k, t], prev_action, prev_reward, prev_done, state)
            per_step.append(dist)
            active = mask[:, k, t] > 0
            # The step ended its episode when the next one did not happen (or it was the last).
            done = (mask[:, k, t + 1] == 0) if t + 1 < horizon else torch.ones_like(active)
            state = tree_map(
                lambda new, old, a=active: torch.where(a.view(-1, *([1] * (new.dim() - 1))), new, old), new_state, state
            )
            taken = actions[:, k, t].long() if discrete else actions[:, k, t].float()
            prev_action = torch.where(active.view(-1, *([1] * (taken.dim() - 1))), taken, prev_action)
            prev_reward = torch.where(active, rewards[:, k, t], prev_reward)
            prev_done = torch.where(active, done.float(), prev_done)
    # per_step is ordered (k, t); stack to [lanes, ept, T, ...] then back to [N, E, T, ...].
    stacked = []
    for i in range(len(per_step[0])):
        x = torch.stack([d[i] for d in per_step], dim=1)
        x = x.reshape(lanes, episodes_per_trial, horizon, *x.shape[2:])
        stacked.append(x.reshape(num_tasks, num_episodes, horizon, *x.shape[3:]))
    return tuple(stacked)
