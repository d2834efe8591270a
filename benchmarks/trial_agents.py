"""Trial agents on Bernoulli bandits (N = 100 pulls, K = 5): one SNAIL and one RL^2 iteration beside one MAML-TRPO
iteration on 2D navigation, and SNAIL's step cost.

1. One training iteration of each agent from its committed config (``experiments/snail_bandit_k5_n100.yaml``,
   ``experiments/rl2_bandit_k5_n100.yaml``: 200 tasks x 1 trial of 100 pulls, PPO 4 epochs x 4 minibatches), and of
   MAML-TRPO from ``experiments/maml_trpo_navigation.yaml`` (its own 20 tasks x 20 episodes, support and query, one
   second-order TRPO meta-update), all through the same algorithm interface, in-process sampler, one torch thread:
   sampling and update seconds, median over ``--iters`` iterations after one warm-up.
2. Acting with the SNAIL policy network over a trial of ``S`` steps for 200 lanes, per step: the incremental step
   from the cache (:meth:`metarl.models.snail.SNAIL.step`) against recomputing the whole prefix at every step (what
   acting costs without the cache; timed on 10 prefix lengths spread over the trial), ``S`` = 100 and 500.

Run ``python benchmarks/trial_agents.py`` (``--iters N``, ``--tasks T``) with nothing else running; prints tables and
writes ``benchmarks/results/trial_agents.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from metarl.algorithms import build_algorithm
from metarl.config import load_config
from metarl.models.snail import SNAIL
from metarl.sampling import make_sampler
from metarl.train import make_env

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "trial_agents.json"
# agent -> (config, problem, whether --tasks sets its tasks per iteration; MAML-TRPO keeps its config's meta-batch)
CONFIGS = {
    "snail": ("experiments/snail_bandit_k5_n100.yaml", "bandit N=100", True),
    "rl2": ("experiments/rl2_bandit_k5_n100.yaml", "bandit N=100", True),
    "maml_trpo": ("experiments/maml_trpo_navigation.yaml", "navigation", False),
}


def iteration_times(name: str, iters: int, tasks: int) -> dict:
    """Median sampling / update seconds of ``iters`` iterations (after one warm-up) of ``name``'s config (``tasks``
    per iteration for the trial agents; MAML-TRPO keeps its config's meta-batch)."""
    path, problem, trial_agent = CONFIGS[name]
    config = load_config(ROOT / path, [f"{name}.tasks_per_iteration={tasks}"] if trial_agent else [])
    tasks = tasks if trial_agent else config.maml.meta_batch_size
    env = make_env(config)
    torch.manual_seed(0)
    algorithm = build_algorithm(config, env, torch.device("cpu"))
    rows = []
    with make_sampler(config.env.id, config.env.kwargs, backend="local") as sampler:
        for i in range(iters + 1):
            rng = np.random.default_rng(i)
            batch = env.unwrapped.sample_tasks(tasks, rng, split="train")
            result = algorithm.collect_and_update(sampler, batch, lambda phase, i=i: 1000 * i + phase)
            rows.append((result.metrics["time_sampling_s"], result.metrics["time_update_s"]))
    env.close()
    sampling, update = (statistics.median(r[k] for r in rows[1:]) for k in (0, 1))
    params = sum(p.numel() for p in algorithm.policy.parameters())
    return {
        "agent": name,
        "problem": problem,
        "tasks": tasks,
        "sampling_s": sampling,
        "update_s": update,
        "total_s": sampling + update,
        "params": params,
    }


def step_times(steps: int, lanes: int, repeats: int) -> dict:
    """Seconds per acting step over a trial of ``steps`` steps: incremental (cache) vs recomputing the prefix."""
    torch.manual_seed(0)
    net = SNAIL(8, steps, "bandit_mdp", 5)
    x = torch.randn(lanes, steps, 8)
    with torch.no_grad():
        incremental = []
        for _ in range(repeats):
            cache = net.initial_cache(lanes)
            start = time.perf_counter()
            for t in range(steps):
                _, cache = net.step(x[:, t], cache)
            incremental.append((time.perf_counter() - start) / steps)
        sampled = range(0, steps, max(1, steps // 10))  # 10 prefix lengths spread over the trial: its mean
        start = time.perf_counter()
        for t in sampled:
            net(x[:, : t + 1])[:, -1]
        recompute = (time.perf_counter() - start) / len(sampled)
    inc = statistics.median(incremental)
    return {"steps": steps, "lanes": lanes, "incremental_ms": 1e3 * inc, "recompute_ms": 1e3 * recompute}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iters", type=int, default=1, help="timed iterations per agent after a warm-up (default 1)")
    parser.add_argument("--tasks", type=int, default=200, help="tasks per iteration (default 200, the configs')")
    args = parser.parse_args()
    torch.set_num_threads(1)
    agents = [iteration_times(name, args.iters, args.tasks) for name in CONFIGS]
    print(f"one iteration (median of {args.iters}, one thread)")
    print(f"{'agent':>9} {'problem':>13} {'tasks':>5} {'params':>8} {'sampling s':>11} {'update s':>9} {'total s':>8}")
    for a in agents:
        print(
            f"{a['agent']:>9} {a['problem']:>13} {a['tasks']:>5} {a['params']:>8} {a['sampling_s']:>11.2f}"
            f" {a['update_s']:>9.2f} {a['total_s']:>8.2f}"
        )
    steps = [step_times(s, 200, 2) for s in (100, 500)]
    print("\nSNAIL acting, 200 lanes, per step (whole trial averaged)")
    print(f"{'steps':>6} {'incremental ms':>15} {'recompute ms':>13} {'ratio':>7}")
    for s in steps:
        ratio = s["recompute_ms"] / s["incremental_ms"]
        print(f"{s['steps']:>6} {s['incremental_ms']:>15.2f} {s['recompute_ms']:>13.2f} {ratio:>6.1f}x")
    meta = {"torch": torch.__version__, "machine": platform.machine(), "processor": platform.processor(), "threads": 1}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"meta": meta, "iteration": agents, "acting_step": steps}, indent=2) + "\n")
    print(f"\nwrote {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
