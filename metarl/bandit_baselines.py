"""Classic Bernoulli-bandit strategies as reference points for trial-based meta-learners (RL^2's table 1).

Each plays ``trials`` trials of ``pulls`` pulls on every task (``{"means": [p_1, ..., p_K]}``), rewards drawn as
Bernoulli(p_arm) from a generator seeded per task, and returns the mean reward of each pull ``[tasks, pulls]``:

- ``ucb1`` (Auer et al. 2002): every arm once, then ``argmax mean + sqrt(2 ln t / n)``;
- ``thompson``: Beta(1, 1) prior per arm, pull the arm of the largest posterior sample;
- ``gittins``: Beta(1, 1) prior per arm, pull the arm of the largest Gittins index (:mod:`metarl.gittins`) at the
  discount ``1 - 1 / pulls`` (:func:`metarl.gittins.horizon_discount`), deterministic given the counts;
- ``best_arm``: always the best arm (it knows the means): the upper reference.

Ties break to the lowest arm index.
"""

from __future__ import annotations

import numpy as np

from .gittins import gittins_table, horizon_discount

STRATEGIES = ("ucb1", "thompson", "gittins", "best_arm")


def _choose(
    strategy: str, successes: np.ndarray, pulls: np.ndarray, t: int, means: np.ndarray, rng, index: np.ndarray | None
) -> np.ndarray:
    """The arm of each trial ``[trials]`` at pull ``t`` (0-based) from per-arm counts ``[trials, K]``."""
    if strategy == "gittins":
        s = successes.astype(np.int64)
        return np.argmax(index[s, pulls.astype(np.int64) - s], axis=1)
    if strategy == "best_arm":
        return np.full(successes.shape[0], int(np.argmax(means)))
    if strategy == "thompson":
        return np.argmax(rng.beta(successes + 1.0, pulls - successes + 1.0), axis=1)
    untried = pulls == 0
    with np.errstate(divide="ignore", invalid="ignore"):
        score = successes / pulls + np.sqrt(2.0 * np.log(max(t, 1)) / pulls)
    score = np.where(untried, np.inf, score)
    return np.argmax(score, axis=1)


def bandit_returns(strategy: str, tasks: list[dict], pulls: int, trials: int, seeds: list[int]) -> np.ndarray:
    """Mean reward of each pull of a trial, per task: ``[tasks, pulls]`` (``seeds``: one per task)."""
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown bandit strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}")
    out = np.zeros((len(tasks), pulls))
    index = gittins_table(horizon_discount(pulls), pulls) if strategy == "gittins" and tasks else None
    for i, (task, seed) in enumerate(zip(tasks, seeds, strict=True)):
        means = np.asarray(task["means"], dtype=np.float64)
        rng = np.random.default_rng(seed)
        successes = np.zeros((trials, means.size))
        counts = np.zeros((trials, means.size))
        rows = np.arange(trials)
        for t in range(pulls):
            arm = _choose(strategy, successes, counts, t, means, rng, index)
            reward = (rng.random(trials) < means[arm]).astype(np.float64)
            successes[rows, arm] += reward
            counts[rows, arm] += 1.0
            out[i, t] = reward.mean()
    return out


def regret_by_phase(returns: np.ndarray, best_means: np.ndarray, edges: list[int]) -> list[float]:
    """Expected regret summed over each phase of a trial, averaged over tasks.

    ``returns`` is ``[tasks, pulls]`` (mean reward of each pull, as :func:`bandit_returns` or ``metarl evaluate``'s
    adaptation CSV give it), ``best_means`` the best arm's mean per task ``[tasks]``; phase ``j`` covers pulls
    ``edges[j] <= t < edges[j + 1]``. Where the regret falls tells under-exploration (low early, high late) from slow
    identification (high throughout).
    """
    returns = np.asarray(returns, dtype=np.float64)
    best = np.asarray(best_means, dtype=np.float64)[:, None]
    if returns.ndim != 2 or best.shape[0] != returns.shape[0]:
        raise ValueError("returns must be [tasks, pulls] and best_means [tasks]")
    if list(edges) != sorted(set(edges)) or edges[0] < 0 or edges[-1] > returns.shape[1]:
        raise ValueError(f"edges must increase within [0, {returns.shape[1]}], got {edges}")
    per_pull = (best - returns).mean(axis=0)
    return [float(per_pull[lo:hi].sum()) for lo, hi in zip(edges[:-1], edges[1:], strict=True)]
