"""Sampling throughput on Meta-World (needs the extra: ``pip install -e ".[metaworld]"``): Ray workers vs one process.

Meta-World's step (MuJoCo plus its Python reward and observation code) costs far more than the half-cheetah's, so
what dominates an iteration changes; this measures it. Rows (ML1 ``--env-name``, default reach-v3, Gaussian MLP
100-100, ``--tasks`` x ``--episodes`` x 500 steps):

- ``env``: the benchmark's own env class stepped in a Python loop with random actions (one core), nothing else:
  the limit every other row is divided by; ``env-2proc``: two such loops in two processes at once, their aggregate
  (the ceiling of a 2-worker sampler on this machine at that moment);
- ``local``: :class:`LocalSampler` (in-process, one torch thread), policy inference included;
- ``ray-1``, ``ray-2``: :class:`RaySampler` with 1 and 2 workers (embedded local Ray).

Sampler rows are the median of ``--repeats`` timed calls after a warm-up call (``benchmarks/sampling.py``'s
``sampler_rate``). ``breakdown``: the share of a local call spent in Meta-World's ``step`` vs everything else
(policy inference, noise, recording), from one call under cProfile.
Run ``python benchmarks/sampling_metaworld.py`` (``--tasks 4 --episodes 1`` for a quick run); prints a table and
writes JSON (``--out``, default ``benchmarks/results/sampling_metaworld.json``).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import sys
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import ray
import torch
from sampling import sampler_rate  # benchmarks/sampling.py, next to this script

from metarl.policies import GaussianMLPPolicy, policy_params
from metarl.sampling import make_sampler

ML1 = "metarl/MetaWorldML1-v0"
RESULTS = Path(__file__).resolve().parent / "results" / "sampling_metaworld.json"


def env_rate(env_name: str, steps: int) -> float:
    """Steps/s of the bare Meta-World env (its own class and task), random actions, resets every 500 steps."""
    import metaworld

    bench = metaworld.ML1(env_name, seed=0)
    env = bench.train_classes[env_name]()
    env.set_task(bench.train_tasks[0])
    actions = np.random.default_rng(0).uniform(-1.0, 1.0, (steps, 4)).astype(np.float32)
    env.reset()
    start = time.perf_counter()
    for i in range(steps):
        if i % env.max_path_length == 0 and i:
            env.reset()
        env.step(actions[i])
    return steps / (time.perf_counter() - start)


def _env_worker(env_name: str, steps: int, barrier, queue) -> None:  # noqa: ANN001 (multiprocessing objects)
    barrier.wait()
    queue.put(env_rate(env_name, steps))


def parallel_env_rate(env_name: str, steps: int, processes: int) -> float:
    """Aggregate bare-env steps/s of ``processes`` processes stepping at the same time."""
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    barrier, queue = ctx.Barrier(processes), ctx.Queue()
    workers = [ctx.Process(target=_env_worker, args=(env_name, steps, barrier, queue)) for _ in range(processes)]
    for w in workers:
        w.start()
    rates = [queue.get() for _ in workers]
    for w in workers:
        w.join()
    return processes / max(1.0 / r for r in rates)


def breakdown(env_name: str, n: int, e: int) -> dict[str, float]:
    """Share of one local sampling call in Meta-World's step vs the rest (cProfile inflates Python a little)."""
    import cProfile
    import pstats

    torch.manual_seed(0)
    policy = GaussianMLPPolicy(39, 4, (100, 100))
    tasks = gym.make(ML1, env_name=env_name).unwrapped.sample_tasks(n, 0)
    with make_sampler(ML1, {"env_name": env_name}, backend="local") as sampler:
        sampler.sample(policy, policy_params(policy), tasks, e, seed=0)
        profiler = cProfile.Profile()
        profiler.enable()
        sampler.sample(policy, policy_params(policy), tasks, e, seed=1)
        profiler.disable()
    total = env_step = 0.0
    for (file, _, name), (_, _, _, cumtime, _) in pstats.Stats(profiler).stats.items():
        if name == "_rollout_chunk":
            total += cumtime
        elif name == "step" and file.endswith("meta_world.py"):
            env_step += cumtime
    return {"metaworld_step": env_step / total, "policy_and_bookkeeping": 1.0 - env_step / total}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env-name", default="reach-v3")
    parser.add_argument("--tasks", type=int, default=20)
    parser.add_argument("--episodes", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--env-steps", type=int, default=10_000)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.tasks < 1 or args.episodes < 1 or args.repeats < 1 or args.env_steps < 1:
        parser.error("--tasks, --episodes, --repeats and --env-steps must be >= 1")
    try:
        import metaworld  # noqa: F401
    except ImportError:
        print('benchmarks/sampling_metaworld.py needs Meta-World: pip install -e ".[metaworld]"', file=sys.stderr)
        return {}
    import mujoco

    n, e, kwargs = args.tasks, args.episodes, {"env_name": args.env_name}
    rows: dict[str, dict] = {}
    rows["env"] = {"steps_per_s": env_rate(args.env_name, args.env_steps)}
    rows["env-2proc"] = {"steps_per_s": parallel_env_rate(args.env_name, args.env_steps, 2)}
    with make_sampler(ML1, kwargs, backend="local") as sampler:
        rows["local"] = sampler_rate(sampler, ML1, 39, 4, n, e, args.repeats)
    for workers in (1, 2):
        with make_sampler(ML1, kwargs, backend="ray", num_workers=workers) as sampler:
            rows[f"ray-{workers}"] = sampler_rate(sampler, ML1, 39, 4, n, e, args.repeats)
    ray.shutdown()
    limit = rows["env"]["steps_per_s"]
    for row in rows.values():
        row["x_env"] = row["steps_per_s"] / limit
    result = {
        "env_name": args.env_name,
        "tasks": n,
        "episodes": e,
        "horizon": 500,
        "rows": rows,
        "breakdown": breakdown(args.env_name, max(1, n // 2), 1),
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "mujoco": mujoco.__version__,
            "metaworld": importlib.metadata.version("metaworld"),
            "load_avg": os.getloadavg(),
        },
    }
    print(f"Meta-World ML1 {args.env_name}: {n} tasks x {e} episodes x 500 steps (median of {args.repeats})")
    print(f"{'row':<10} {'steps/s':>10} {'x env':>7} {'steps/CPU s':>12}")
    for name, row in rows.items():
        cpu = f"{row['steps_per_cpu_s']:>12,.0f}" if "steps_per_cpu_s" in row else f"{'':>12}"
        print(f"{name:<10} {row['steps_per_s']:>10,.0f} {row['x_env']:>7.2f} {cpu}")
    share = result["breakdown"]
    print(f"local call: {share['metaworld_step']:.0%} in the env step, {share['policy_and_bookkeeping']:.0%} other")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
