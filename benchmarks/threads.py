"""Torch threads of the training process: seconds per meta-iteration of MAML on 1 vs 2 (or more) threads.

``metarl train`` runs torch on ``threads`` intra-op threads on the CPU (config key, default 1: two threads per process
on shared cores collapsed throughput, see DESIGN.md). This measures what more threads buy when the cores are the run's
own: MAML on Omniglot 20-way 1-shot by default (``experiments/fewshot_omniglot_maml_20w1s.yaml``: meta-batch 16, 5
inner steps, second order, vmap over tasks), random images, each thread count in its own subprocess
(:func:`benchmarks.fewshot.worker`), thread counts alternating across repeats so that outside load hits all alike.

Run ``python benchmarks/threads.py`` (``--threads 1,2``, ``--iters N``, ``--repeats R``, ``--config FILE``) with
nothing else running; prints a table and writes ``benchmarks/results/threads.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
from pathlib import Path

from fewshot import run_subprocess

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "threads.json"
CONFIG = ROOT / "experiments" / "fewshot_omniglot_maml_20w1s.yaml"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", default="1,2", help="comma-separated thread counts (default 1,2)")
    parser.add_argument("--iters", type=int, default=5, help="timed meta-iterations per subprocess (default 5)")
    parser.add_argument("--repeats", type=int, default=2, help="subprocesses per thread count (default 2)")
    parser.add_argument("--config", type=Path, default=CONFIG, help="a few-shot MAML config (default: 20-way 1-shot)")
    args = parser.parse_args()
    counts = [int(t) for t in args.threads.split(",")]
    runs: dict[int, list[dict]] = {t: [] for t in counts}
    for _ in range(args.repeats):
        for t in counts:
            runs[t].append(run_subprocess("vmap", "stride", args.iters, t, args.config))
    base = statistics.median(r["s_per_iter"] for r in runs[counts[0]])
    rows = []
    print(f"{'threads':>7} {'s/iter':>8} {'repeats':>14} {'speed-up':>9} {'peak RSS MB':>12}")
    for t, results in runs.items():
        median = statistics.median(r["s_per_iter"] for r in results)
        row = {
            "threads": t,
            "s_per_iter": median,
            "s_per_iter_repeats": [r["s_per_iter"] for r in results],
            "speedup_vs_first": base / median,
            "peak_rss_mb": max(r["peak_rss_mb"] for r in results),
        }
        rows.append(row)
        reps = ", ".join(f"{x:.2f}" for x in row["s_per_iter_repeats"])
        print(f"{t:>7} {median:>8.3f} {reps:>14} {row['speedup_vs_first']:>8.2f}x {row['peak_rss_mb']:>12.0f}")
    import torch

    meta = {
        "torch": torch.__version__,
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "config": str(args.config.relative_to(ROOT) if args.config.is_relative_to(ROOT) else args.config),
        "iters": args.iters,
        "repeats": args.repeats,
        "note": "wall seconds per meta-iteration (median over iterations, then over repeats); random images",
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
