"""Gittins indices (``metarl/gittins.py``) and the ``gittins`` bandit baseline.

Published values: Gittins' index table for Bernoulli arms with a Beta(1, 1) prior at discount 0.9 and 0.99, as
reproduced in B. Christian and T. Griffiths, *Algorithms to Live By* (2016), chapter 2 ("Explore/Exploit"), tables of
Gittins index values by wins and losses: at 0.9, 0-0 -> 0.7029, 1-1 -> 0.6346, 2-2 -> 0.6010, 9 wins 1 loss ->
0.8695; at 0.99, 0-0 -> 0.8699 (four decimals).
"""

from __future__ import annotations

import json
from functools import cache

import numpy as np
import pytest

from metarl.bandit_baselines import bandit_returns, regret_by_phase
from metarl.gittins import gittins_index, gittins_table, horizon_discount, truncation_depth

PUBLISHED = [(0.9, 0, 0, 0.7029), (0.9, 1, 1, 0.6346), (0.9, 2, 2, 0.6010), (0.9, 9, 1, 0.8695), (0.99, 0, 0, 0.8699)]


@pytest.mark.parametrize("gamma, s, f, value", PUBLISHED)
def test_indices_match_gittins_published_table(gamma, s, f, value):
    assert abs(gittins_index(s, f, gamma) - value) < 6e-5  # the table's four decimals, rounded
    if gamma == 0.9:
        assert abs(gittins_table(gamma, 12)[s, f] - value) < 6e-5


def brute_force_index(s: int, f: int, gamma: float, depth: int) -> float:
    """Calibration by explicit recursion over the whole decision tree to ``depth`` pulls (memoised on the path),
    an independent check of the vectorised backward induction: ``W(lam)`` is the value of the arm with the option
    to retire at ``lam`` per step; beyond ``depth`` the arm is valued at its posterior mean."""

    def value(lam: float) -> float:
        @cache
        def w(a: int, b: int, d: int) -> float:
            p = (a + 1) / (a + b + 2)
            if d == depth:
                return max(lam, p) / (1 - gamma)
            pull = p * (1 + gamma * w(a + 1, b, d + 1)) + (1 - p) * gamma * w(a, b + 1, d + 1)
            return max(lam / (1 - gamma), pull)

        p = (s + 1) / (s + f + 2)
        return p * (1 + gamma * w(s + 1, f, 1)) + (1 - p) * gamma * w(s, f + 1, 1) - lam / (1 - gamma)

    lo, hi = 0.0, 1.0
    for _ in range(40):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if value(mid) > 0 else (lo, mid)
    return (lo + hi) / 2


def test_indices_match_a_brute_force_recursion_at_small_depth(monkeypatch):
    import metarl.gittins as g

    # With the cut forced to 12 pulls, both computations solve the same truncated problem.
    monkeypatch.setattr(g, "truncation_depth", lambda gamma: 12)
    for s, f in [(0, 0), (2, 0), (0, 3), (3, 2)]:
        assert abs(g.gittins_index(s, f, 0.8, tol=1e-9) - brute_force_index(s, f, 0.8, 12)) < 1e-8
    g._table.cache_clear()
    try:
        lower, upper = g.gittins_table(0.8, 6, grid=64, bounds=True)
        for s, f in [(0, 0), (2, 0), (0, 3), (3, 2), (1, 4)]:
            exact = brute_force_index(s, f, 0.8, 5 + 12 - s - f)  # the table cuts every state at s + f = 5 + 12
            assert lower[s, f] - 1e-9 <= exact <= upper[s, f] + 1e-9 and upper[s, f] - lower[s, f] < 1e-3
    finally:
        g._table.cache_clear()


def test_table_agrees_with_bisection_and_truncation_is_negligible():
    gamma = 0.99
    table = gittins_table(gamma, 40)
    for s, f in [(0, 0), (1, 1), (5, 0), (0, 12), (20, 15)]:
        assert abs(table[s, f] - gittins_index(s, f, gamma, tol=1e-8)) < 5e-5
    # Doubling the depth of the cut moves the index by far less than the bisection tolerance.
    exact = gittins_index(3, 2, gamma, tol=1e-10)
    import metarl.gittins as g

    depth = truncation_depth(gamma)
    original = g.truncation_depth
    try:
        g.truncation_depth = lambda gamma: 2 * depth
        deeper = g.gittins_index(3, 2, gamma, tol=1e-10)
    finally:
        g.truncation_depth = original
    assert abs(deeper - exact) < 1e-8


def test_index_properties():
    for gamma, n in [(0.9, 30), (0.97, 30)]:
        table = gittins_table(gamma, n)
        s, f = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
        inside = s + f < n
        mean = (s + 1) / (s + f + 2)
        assert np.all(table[inside] > mean[inside] + 1e-4)  # an exploration bonus in every state
        assert np.all(np.diff(table, axis=0)[inside[1:]] > 0)  # more successes: larger index
        assert np.all(np.diff(table, axis=1)[inside[:, 1:]] < 0)  # more failures: smaller index
        assert np.isnan(table[~inside]).all()
    low, high = gittins_table(0.9, 30), gittins_table(0.97, 30)
    inside = ~np.isnan(low)
    assert np.all(high[inside] > low[inside])  # a longer horizon values information more
    assert gittins_index(0, 0, 0.0) == pytest.approx(0.5, abs=1e-6)  # no future: the posterior mean


def test_discount_rule_and_bad_input():
    assert horizon_discount(10) == pytest.approx(0.9) and horizon_discount(1) == 0.0
    assert truncation_depth(0.9) == 88 and 0.9**88 <= 1e-4 < 0.9**87
    for bad in (lambda: horizon_discount(0), lambda: gittins_index(0, 0, 1.0), lambda: gittins_table(0.9, 0)):
        with pytest.raises(ValueError):
            bad()


def test_gittins_policy_is_deterministic_and_greedy_on_certain_arms():
    tasks = [{"means": [0.0, 0.0, 1.0]}, {"means": [1.0, 0.0, 0.0]}]
    out = bandit_returns("gittins", tasks, 6, 4, [0, 1])
    # All arms start at the same index: the lowest arm first. An arm that pays keeps the largest index.
    np.testing.assert_array_equal(out[1], np.ones(6))
    np.testing.assert_array_equal(out[0, :2], [0, 0])
    assert out[0, 2:].min() == 1.0
    np.testing.assert_array_equal(out, bandit_returns("gittins", tasks, 6, 4, [5, 6]))  # no randomness of its own


def test_gittins_beats_untuned_ucb1_on_short_trials():
    rng = np.random.default_rng(123)
    tasks = [{"means": list(rng.uniform(size=5))} for _ in range(2000)]
    seeds = list(range(2000))
    gittins = bandit_returns("gittins", tasks, 10, 1, seeds).sum(1)
    ucb = bandit_returns("ucb1", tasks, 10, 1, seeds).sum(1)
    difference = gittins - ucb
    half_width = 1.96 * difference.std(ddof=1) / np.sqrt(difference.size)
    assert difference.mean() - half_width > 0.3  # measured: about +0.9 per trial


def test_evaluate_gittins_baseline_through_the_cli(tmp_path, repo_root, monkeypatch, capsys):
    from cli_runs import sets, train

    from metarl.cli import main

    monkeypatch.chdir(repo_root)
    run = tmp_path / "run"
    tiny = ["sampler.backend=local", "rl2.tasks_per_iteration=4", "rl2.trials_per_task=2", "rl2.episodes_per_trial=3"]
    tiny += ["rl2.hidden_size=8", "rl2.minibatches=2", "rl2.epochs=1", "logging.tensorboard=false"]
    assert train("experiments/rl2_bandit_k5_n10.yaml", "--run-dir", str(run), *sets("iterations=1", *tiny)) == 0
    base = ["evaluate", str(run), "--tasks", "6", "--episodes", "4", "--backend", "local"]
    assert main([*base, "--baseline", "gittins"]) == 0 and main([*base, "--baseline", "ucb1"]) == 0
    summary = json.loads((run / "evaluation" / "summary.json").read_text())
    entry = summary["methods"]["gittins"]
    assert entry["episodes_per_trial"] == 3 and len(entry["steps"]) == 3 and entry["trial"]["n"] == 6
    first = (run / "evaluation" / "adaptation_gittins.csv").read_text()
    assert main([*base, "--baseline", "gittins"]) == 0
    assert (run / "evaluation" / "adaptation_gittins.csv").read_text() == first
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:  # argparse: usage, then one line naming the valid choices
        main([*base, "--baseline", "gittin"])
    assert exit_info.value.code == 2
    assert "invalid choice: 'gittin'" in capsys.readouterr().err.strip().splitlines()[-1]


def test_regret_by_phase_on_a_hand_worked_case():
    # Two tasks, four pulls, best arms 0.9 and 0.5: per-pull regret (0.4, 0.2, 0.0, 0.1) averaged over the tasks.
    returns = np.array([[0.5, 0.7, 0.9, 0.9], [0.1, 0.3, 0.5, 0.3]])
    phases = regret_by_phase(returns, np.array([0.9, 0.5]), [0, 1, 4])
    np.testing.assert_allclose(phases, [0.4, 0.2 + 0.0 + 0.1])
    np.testing.assert_allclose(regret_by_phase(returns, np.array([0.9, 0.5]), [0, 4]), [0.7])
    # Best-arm play has no regret in any phase.
    tasks = [{"means": [0.2, 0.8]}, {"means": [0.6, 0.1]}]
    best = bandit_returns("best_arm", tasks, 5, 2000, [0, 1])
    np.testing.assert_allclose(regret_by_phase(best, np.array([0.8, 0.6]), [0, 2, 5]), [0.0, 0.0], atol=0.05)
    with pytest.raises(ValueError, match="edges"):
        regret_by_phase(returns, np.array([0.9, 0.5]), [0, 3, 2])
    with pytest.raises(ValueError, match="edges"):
        regret_by_phase(returns, np.array([0.9, 0.5]), [0, 5])
