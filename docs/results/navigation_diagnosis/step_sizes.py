"""Navigation diagnosis (issue 24): returns after 0..3 inner steps under several step-size schedules.

    python docs/results/navigation_diagnosis/step_sizes.py RUN CHECKPOINT OUT.json [--split train|test]
    python docs/results/navigation_diagnosis/step_sizes.py RUN pretrained OUT.json ...   # RUN/baselines/pretrained

``--split test`` uses `metarl evaluate`'s 40 held-out tasks and seeds (seed 0); ``--split train`` uses 40 tasks of the
training stream (rng seed 12345) and other episode seeds, for choosing a schedule without looking at the test tasks.
The schedules are a fixed list, the same for every run. Local sampler, one process.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from scipy import stats

from metarl.evaluate import adaptation_returns, held_out_tasks, load_trained, make_algorithm
from metarl.run_dir import read_run_config
from metarl.sampling import configured_sampler
from metarl.sb3_baselines import load_baseline
from metarl.train import make_env

SCHEDULES = [
    [0.1, 0.05, 0.05],  # the MAML paper's evaluation rule (the committed tables)
    [0.1, 0.1, 0.1],  # the training step size throughout
    [0.1, 0.025, 0.025],
    [0.1, 0.01, 0.01],
    [0.1, 0.05, 0.025],
    [0.05, 0.05, 0.05],
    [0.2, 0.05, 0.05],
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("checkpoint", help="a checkpoint file, or 'pretrained' for the run's PPO baseline")
    parser.add_argument("out", type=Path)
    parser.add_argument("--split", choices=["train", "test"], default="test")
    args = parser.parse_args()
    config = read_run_config(args.run)
    if args.checkpoint == "pretrained":
        policy = load_baseline(args.run / "baselines" / "pretrained", "pretrained", config)
        algorithm, state = make_algorithm(policy, config), {"iteration": -1}
    else:
        algorithm, state = load_trained(config, Path(args.checkpoint))
    if args.split == "test":
        tasks, seed = held_out_tasks(config, 40, 0), 0
    else:
        env = make_env(config)
        tasks, seed = env.unwrapped.sample_tasks(40, np.random.default_rng(12345), split="train"), 777
        env.close()
    t = stats.t.ppf(0.975, len(tasks) - 1)
    results = {}
    with configured_sampler(config, "local", 1, None) as sampler:
        for sizes in SCHEDULES:
            returns = adaptation_returns(algorithm, sampler, tasks, 20, sizes, seed)
            ci = t * returns.std(0, ddof=1) / np.sqrt(len(tasks))
            results[",".join(map(str, sizes))] = {"mean": returns.mean(0).tolist(), "ci95": ci.tolist()}
            print(f"{sizes}: {np.round(returns.mean(0), 2)} +- {np.round(ci, 2)}", flush=True)
    summary = {"run": str(args.run), "checkpoint": str(args.checkpoint), "iteration": int(state["iteration"])}
    args.out.write_text(json.dumps({**summary, "split": args.split, "results": results}, indent=1) + "\n")


if __name__ == "__main__":
    main()
