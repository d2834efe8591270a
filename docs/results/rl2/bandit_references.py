"""Classic Bernoulli-bandit references at RL^2's sizes (Duan et al. 2016, table 1), without a trained run.

For each (K arms, N pulls per trial): the held-out tasks and per-task seeds that ``metarl evaluate RUN --tasks 1000
--episodes 20 --baseline METHOD`` uses on a run of ``experiments/rl2_bandit_k5_n10.yaml`` with ``num_arms = K`` and
``episodes_per_trial = N`` (``metarl.evaluate.held_out_tasks``: the ``test`` stream seeded by 0;
``derived_eval_seed(0, BANDIT, i)`` for task ``i``), played by :func:`metarl.bandit_baselines.bandit_returns`.
Prints a Markdown table of the mean total reward per trial with 95% Student-t intervals over the tasks and writes
``bandit_references.json`` beside this file. Run from the repository root:

    python docs/results/rl2/bandit_references.py [--tasks 1000] [--trials 20]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from metarl.bandit_baselines import bandit_returns
from metarl.config import load_config
from metarl.eval_results import summarize
from metarl.evaluate import derived_eval_seed, held_out_tasks
from metarl.evaluate_trials import BANDIT
from metarl.gittins import horizon_discount

SIZES = [(5, 10), (10, 10), (50, 10), (5, 100), (10, 100), (50, 100), (5, 500), (10, 500), (50, 500)]
METHODS = ("gittins", "ucb1", "thompson", "best_arm")
CONFIG = "experiments/rl2_bandit_k5_n10.yaml"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rows = []
    for arms, pulls in SIZES:
        config = load_config(CONFIG, [f"env.kwargs={{num_arms: {arms}}}", f"rl2.episodes_per_trial={pulls}"])
        tasks = held_out_tasks(config, args.tasks, args.seed)
        seeds = [derived_eval_seed(args.seed, BANDIT, i) for i in range(args.tasks)]
        row = {"arms": arms, "pulls": pulls, "gittins_discount": horizon_discount(pulls), "methods": {}}
        for method in METHODS:
            start = time.perf_counter()
            trial = summarize(bandit_returns(method, tasks, pulls, args.trials, seeds).sum(1, keepdims=True))[0]
            trial["seconds"] = round(time.perf_counter() - start, 2)
            row["methods"][method] = trial
        rows.append(row)
        print(f"K={arms} N={pulls}: " + ", ".join(f"{m} {row['methods'][m]['seconds']} s" for m in METHODS), flush=True)
    header = "| K | N | " + " | ".join(METHODS) + " |"
    print("\n" + header + "\n" + "| --- " * (len(METHODS) + 2) + "|")
    for row in rows:
        cells = []
        for method in METHODS:
            t = row["methods"][method]
            cells.append(f"{t['mean']:.2f} +- {(t['ci95_high'] - t['ci95_low']) / 2:.2f}")
        print(f"| {row['arms']} | {row['pulls']} | " + " | ".join(cells) + " |")
    meta = {"tasks": args.tasks, "trials": args.trials, "seed": args.seed, "config": CONFIG, "rows": rows}
    (Path(__file__).parent / "bandit_references.json").write_text(json.dumps(meta, indent=1) + "\n")


if __name__ == "__main__":
    main()
