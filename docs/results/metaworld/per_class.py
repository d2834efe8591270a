"""Success rate per Meta-World environment class and inner step, from an evaluation's ``adaptation*.csv``.

ML10's held-out goals belong to five environment classes; ``metarl evaluate`` averages over all of them. This prints
one row per class (mean success over its goals after 0, 1, ... steps, and the number of goals) as a Markdown table.

    python docs/results/metaworld/per_class.py RUN/evaluation/adaptation.csv [more.csv ...]
"""

from __future__ import annotations

import csv
import sys
from collections import defaultdict
from pathlib import Path


def per_class(path: Path) -> dict[str, dict[int, list[float]]]:
    """``env_name -> step -> per-goal success rates`` of one CSV."""
    table: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    with path.open(encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            if "success" not in row or "env_name" not in row:
                print(f"{path}: not a Meta-World evaluation (no success / env_name columns)", file=sys.stderr)
                raise SystemExit(2)
            table[row["env_name"]][int(row["step"])].append(float(row["success"]))
    return table


def main(paths: list[str]) -> int:
    if not paths:
        print(__doc__.strip().splitlines()[-1].strip(), file=sys.stderr)
        return 2
    missing = [name for name in paths if not Path(name).is_file()]
    if missing:
        print(f"per_class.py: no such file: {missing[0]}", file=sys.stderr)
        return 2
    for name in paths:
        table = per_class(Path(name))
        steps = sorted({s for by_step in table.values() for s in by_step})
        print(f"{name}\n")
        print("| class | goals | " + " | ".join(f"{s} steps" for s in steps) + " |")
        print("| --- | --- | " + " | ".join("---" for _ in steps) + " |")
        for env_name in sorted(table):
            by_step = table[env_name]
            cells = [f"{100 * sum(by_step[s]) / len(by_step[s]):.1f}%" for s in steps]
            print(f"| {env_name} | {len(by_step[steps[0]])} | " + " | ".join(cells) + " |")
        print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
