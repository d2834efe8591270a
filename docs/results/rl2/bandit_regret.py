"""Where in the trial a bandit agent loses reward: expected regret per phase from ``metarl evaluate``'s CSVs.

Each argument is ``LABEL=PATH`` to an adaptation CSV (``adaptation_<method>.csv[.gz]`` in a run's evaluation folder:
one row per task and pull with the mean reward over the evaluation trials and the task's arm means). Prints a Markdown
table of the mean total reward per trial, the regret summed over each phase of pulls
(:func:`metarl.bandit_baselines.regret_by_phase`) and the regret per pull over the last tenth of the trial. Low early
and high late regret is early commitment; high regret throughout is slow identification. Run from the repository
root, e.g.:

    python docs/results/rl2/bandit_regret.py \\
        gittins=docs/results/rl2/bandit_k10_n100/adaptation_gittins.csv.gz \\
        rl2_sv=docs/results/rl2/bandit_k10_n100_separate_value/adaptation_rl2.csv.gz
"""

from __future__ import annotations

import argparse
import csv
import gzip
import sys
from pathlib import Path

import numpy as np

from metarl.bandit_baselines import regret_by_phase


def read_adaptation(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Returns ``[tasks, pulls]`` mean rewards and the best arm's mean per task from one adaptation CSV."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", newline="") as handle:
        rows = list(csv.DictReader(handle))
    if not rows or "means_0" not in rows[0]:
        raise ValueError(f"{path}: not a bandit adaptation CSV (no means_* columns)")
    tasks = sorted({int(r["task"]) for r in rows})
    pulls = max(int(r["step"]) for r in rows) + 1
    position = {task: i for i, task in enumerate(tasks)}
    returns = np.full((len(tasks), pulls), np.nan)
    best = np.zeros(len(tasks))
    for r in rows:
        i = position[int(r["task"])]
        returns[i, int(r["step"])] = float(r["return"])
        best[i] = max(float(v) for k, v in r.items() if k.startswith("means_"))
    if np.isnan(returns).any():
        raise ValueError(f"{path}: some (task, pull) rows are missing")
    return returns, best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("curves", nargs="+", metavar="LABEL=PATH")
    parser.add_argument("--edges", default="0,10,30,60", help="phase starts (the trial's end is added)")
    args = parser.parse_args()
    loaded = []
    for item in args.curves:
        label, sep, path = item.partition("=")
        if not sep or not Path(path).is_file():
            sys.exit(f"error: expected LABEL=PATH to an existing CSV, got {item!r}")
        loaded.append((label, *read_adaptation(Path(path))))
    pulls = {returns.shape[1] for _, returns, _ in loaded}
    if len(pulls) != 1:
        sys.exit(f"error: the CSVs have different trial lengths {sorted(pulls)}")
    n = pulls.pop()
    edges = [int(e) for e in args.edges.split(",")] + [n]
    last = max(n - n // 10, 0)
    header = [f"regret {lo}-{hi - 1}" for lo, hi in zip(edges[:-1], edges[1:], strict=True)]
    print("| agent | tasks | total reward | " + " | ".join(header) + f" | regret per pull {last}-{n - 1} |")
    print("| --- " * (len(header) + 4) + "|")
    for label, returns, best in loaded:
        phases = regret_by_phase(returns, best, edges)
        tail = regret_by_phase(returns, best, [last, n])[0] / (n - last)
        cells = [label, str(returns.shape[0]), f"{returns.sum(1).mean():.2f}"] + [f"{p:.2f}" for p in phases]
        print("| " + " | ".join(cells) + f" | {tail:.4f} |")


if __name__ == "__main__":
    main()
