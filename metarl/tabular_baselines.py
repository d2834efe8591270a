"""Exact references for random tabular MDPs (RL^2's table 2): the expected return of one episode, per task.

- ``mdp_optimal``: the optimal policy of the task's MDP, which knows ``P`` and ``mu`` (finite-horizon value
  iteration from the start state 0): an upper bound for any agent that must learn the MDP within a trial;
- ``uniform``: actions uniformly at random.

Both are expectations (no sampling), the same for every episode of a trial: ``[tasks, episodes_per_trial]``.
"""

from __future__ import annotations

import numpy as np

STRATEGIES = ("mdp_optimal", "uniform")
START_STATE = 0  # metarl_envs.tabular_mdp.INITIAL_STATE


def episode_value(task: dict, horizon: int, strategy: str) -> float:
    """Expected undiscounted return of one ``horizon``-step episode from the start state."""
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}")
    transitions = np.asarray(task["transitions"], dtype=np.float64)  # [S, A, S]
    means = np.asarray(task["reward_means"], dtype=np.float64)  # [S, A]
    value = np.zeros(means.shape[0])
    for _ in range(horizon):
        q = means + transitions @ value
        value = q.max(axis=1) if strategy == "mdp_optimal" else q.mean(axis=1)
    return float(value[START_STATE])


def tabular_returns(strategy: str, tasks: list[dict], horizon: int, episodes_per_trial: int) -> np.ndarray:
    """``[tasks, episodes_per_trial]`` expected returns per episode."""
    values = np.array([episode_value(task, horizon, strategy) for task in tasks])
    return np.repeat(values[:, None], episodes_per_trial, axis=1)
