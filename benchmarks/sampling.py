"""Sampling throughput on this machine: env steps per second, end to end, against the one-core physics limit.

Rows (HalfCheetahVel, Gaussian MLP 100-100, ``--tasks`` x ``--episodes`` x 200 steps, default 40 x 20 as in MAML):

- ``physics``: raw ``mujoco.mj_step`` with frame skip 5 on the half-cheetah model in a Python loop (one core); the
  limit every other row is divided by; ``physics-2proc``: two such loops in two processes at once, their aggregate
  (the ceiling of any 2-worker sampler on this machine at that moment);
- ``local``: :class:`LocalSampler` (in-process, one torch thread), policy inference included;
- ``ray-1``, ``ray-2``: :class:`RaySampler` with 1 and 2 workers (embedded local Ray), including the object-store
  round trip and the driver's concatenation;
- ``nav-batched``: Navigation2D through the local sampler (one NumPy op per step for all lanes), and
  ``nav-env-only`` the bare ``BatchedNavigation2D.step`` on as many agents.

Each sampler row is the median of ``--repeats`` timed calls after one untimed warm-up call (env pools, actors).
Besides wall-clock steps/s, rows report steps per CPU second (this process plus the Ray workers; Ray's own daemons
not counted), which other load on the machine disturbs much less: on an idle machine, N workers approach N times
a worker's steps per CPU second.
Run ``python benchmarks/sampling.py`` (``--tasks 8 --episodes 4`` for a quick run); prints a table and writes JSON
(``--out``, default ``benchmarks/results/sampling.json``). The machine is shared: load averages are recorded.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import gymnasium as gym
import mujoco
import numpy as np
import ray
import torch

from metarl.policies import GaussianMLPPolicy, policy_params
from metarl.sampling import Sampler, make_sampler

CHEETAH = "metarl/HalfCheetahVel-v0"
NAV = "metarl/Navigation2D-v0"
RESULTS = Path(__file__).resolve().parent / "results" / "sampling.json"


def physics_limit(steps: int) -> tuple[float, float]:
    """Raw half-cheetah physics: set ctrl, ``mj_step(nstep=5)``, nothing else; steps per second and per CPU second."""
    env = gym.make(CHEETAH).unwrapped
    env.reset(seed=0)
    model, data = env.model, env.data
    controls = np.random.default_rng(0).uniform(-1.0, 1.0, (steps, model.nu))
    start, cpu = time.perf_counter(), time.process_time()
    for i in range(steps):
        data.ctrl[:] = controls[i]
        mujoco.mj_step(model, data, nstep=5)
    return steps / (time.perf_counter() - start), steps / (time.process_time() - cpu)


def _physics_worker(steps: int, barrier, queue) -> None:  # noqa: ANN001 (multiprocessing objects)
    env = gym.make(CHEETAH).unwrapped
    env.reset(seed=0)
    model, data = env.model, env.data
    controls = np.random.default_rng(0).uniform(-1.0, 1.0, (steps, model.nu))
    barrier.wait()
    start = time.perf_counter()
    for i in range(steps):
        data.ctrl[:] = controls[i]
        mujoco.mj_step(model, data, nstep=5)
    queue.put(time.perf_counter() - start)


def parallel_physics(steps: int, processes: int) -> float:
    """Aggregate raw physics steps/s of ``processes`` processes stepping at the same time: what the machine gives
    a multi-worker sampler at best, right now."""
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    barrier, queue = ctx.Barrier(processes), ctx.Queue()
    workers = [ctx.Process(target=_physics_worker, args=(steps, barrier, queue)) for _ in range(processes)]
    for w in workers:
        w.start()
    seconds = [queue.get() for _ in workers]
    for w in workers:
        w.join()
    return processes * steps / max(seconds)


def cpu_seconds(sampler: Sampler) -> float:
    """CPU seconds used so far by this process and the sampler's worker processes."""
    workers = getattr(sampler, "worker_cpu_seconds", None)
    return time.process_time() + (sum(workers()) if workers else 0.0)


def sampler_rate(sampler: Sampler, env_id: str, obs_dim: int, act_dim: int, n: int, e: int, repeats: int) -> dict:
    """Median steps/s of ``repeats`` timed calls (after one warm-up call), policy inference included."""
    torch.manual_seed(0)
    policy = GaussianMLPPolicy(obs_dim, act_dim, (100, 100))
    params = policy_params(policy)
    tasks = gym.make(env_id).unwrapped.sample_tasks(n, 0)
    sampler.sample(policy, params, tasks, e, seed=0)
    rates, seconds, cpu_rates = [], [], []
    for rep in range(repeats):
        start, cpu = time.perf_counter(), cpu_seconds(sampler)
        batch = sampler.sample(policy, params, tasks, e, seed=rep + 1)
        elapsed, cpu_used = time.perf_counter() - start, cpu_seconds(sampler) - cpu
        rates.append(batch.num_steps / elapsed)
        cpu_rates.append(batch.num_steps / cpu_used)
        seconds.append(elapsed)
    return {
        "steps_per_s": statistics.median(rates),
        "steps_per_cpu_s": statistics.median(cpu_rates),
        "runs_steps_per_s": rates,
        "seconds": seconds,
        "steps": batch.num_steps,
    }


def worker_breakdown(n: int, e: int) -> dict:
    """Where a worker's time goes (one local call under cProfile, which inflates the Python parts somewhat):
    MuJoCo physics, the rest of the env step (Python), and everything else (policy inference, noise, recording)."""
    import cProfile
    import pstats

    torch.manual_seed(0)
    policy = GaussianMLPPolicy(17, 6, (100, 100))
    tasks = gym.make(CHEETAH).unwrapped.sample_tasks(n, 0)
    with make_sampler(CHEETAH, {}, backend="local") as sampler:
        sampler.sample(policy, policy_params(policy), tasks, e, seed=0)
        profiler = cProfile.Profile()
        profiler.enable()
        sampler.sample(policy, policy_params(policy), tasks, e, seed=1)
        profiler.disable()
    stats = pstats.Stats(profiler).stats  # (file, line, name) -> (cc, nc, tottime, cumtime, callers)
    total = physics = env_step = 0.0
    for (file, _, name), (_, _, tottime, cumtime, _) in stats.items():
        if name == "_rollout_chunk":
            total += cumtime
        elif "mj_step" in name:
            physics += tottime
        elif name == "step" and file.endswith("lanes.py"):
            env_step += cumtime
    return {
        "physics": physics / total,
        "env_python": (env_step - physics) / total,
        "policy_and_bookkeeping": (total - env_step) / total,
    }


def nav_env_only(num_envs: int, horizon: int, repeats: int) -> float:
    from metarl_envs.navigation import BatchedNavigation2D

    env = BatchedNavigation2D(num_envs, horizon)
    env.set_tasks(env.sample_tasks(num_envs, 0))
    actions = np.random.default_rng(0).uniform(-0.1, 0.1, (horizon, num_envs, 2)).astype(np.float32)
    best = 0.0
    for _ in range(repeats):
        env.reset()
        start = time.perf_counter()
        for t in range(horizon):
            env.step(actions[t])
        best = max(best, num_envs * horizon / (time.perf_counter() - start))
    return best


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=40)
    parser.add_argument("--episodes", type=int, default=20)
    parser.add_argument("--nav-tasks", type=int, default=40)
    parser.add_argument("--nav-episodes", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--physics-steps", type=int, default=40_000)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    load_before = os.getloadavg()
    rows: dict[str, dict] = {}
    n, e, r = args.tasks, args.episodes, args.repeats

    wall, per_cpu = physics_limit(args.physics_steps)
    rows["physics"] = {"steps_per_s": wall, "steps_per_cpu_s": per_cpu}
    rows["physics-2proc"] = {"steps_per_s": parallel_physics(args.physics_steps, 2)}
    with make_sampler(CHEETAH, {}, backend="local") as local:
        rows["local"] = sampler_rate(local, CHEETAH, 17, 6, n, e, r)
    with make_sampler(CHEETAH, {}, backend="ray", num_workers=2) as ray2:
        rows["ray-2"] = sampler_rate(ray2, CHEETAH, 17, 6, n, e, r)
        with make_sampler(CHEETAH, {}, backend="ray", num_workers=1) as ray1:  # same Ray session
            rows["ray-1"] = sampler_rate(ray1, CHEETAH, 17, 6, n, e, r)
        cpu_info = {"ray_cluster_cpus": ray.cluster_resources().get("CPU")}
    # The physics limit again at the end: the machine is shared, so report how much it moved.
    physics_after = physics_limit(args.physics_steps)[0]
    rows["physics"]["after_steps_per_s"] = physics_after
    with make_sampler(NAV, {}, backend="local") as nav:
        rows["nav-batched"] = sampler_rate(nav, NAV, 2, 2, args.nav_tasks, args.nav_episodes, r)
    rows["nav-env-only"] = {"steps_per_s": nav_env_only(args.nav_tasks * args.nav_episodes, 100, r)}
    breakdown = worker_breakdown(min(n, 12), e)

    limit, cpu_limit = rows["physics"]["steps_per_s"], rows["physics"]["steps_per_cpu_s"]
    for row in rows.values():
        row["ratio_to_physics"] = row["steps_per_s"] / limit
        if "steps_per_cpu_s" in row:
            row["cpu_ratio_to_physics"] = row["steps_per_cpu_s"] / cpu_limit
    result = {
        "benchmark": "sampling",
        "command": "python benchmarks/sampling.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "machine": {
            "cpus": os.cpu_count(),
            "gpu": torch.cuda.is_available(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "mujoco": mujoco.__version__,
            "ray": ray.__version__,
            "load_avg_before": load_before,
            "load_avg_after": os.getloadavg(),
            **cpu_info,
        },
        "sizes": {"cheetah": [n, e, 200], "navigation": [args.nav_tasks, args.nav_episodes, 100]},
        "rows": rows,
        "worker_time_shares": breakdown,
    }
    print(f"{'row':<14}{'steps/s':>12}{'x physics':>11}{'steps/cpu-s':>13}{'x physics':>11}")
    for name, row in rows.items():
        cpu = ""
        if "steps_per_cpu_s" in row:
            cpu = f"{row['steps_per_cpu_s']:>13,.0f}{row['cpu_ratio_to_physics']:>11.2f}"
        print(f"{name:<14}{row['steps_per_s']:>12,.0f}{row['ratio_to_physics']:>11.2f}{cpu}")
    print("worker time shares (cProfile):", ", ".join(f"{k} {v:.0%}" for k, v in breakdown.items()))
    print(
        f"physics limit re-measured at the end: {physics_after:,.0f} steps/s; load {load_before} -> {os.getloadavg()}"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return result


if __name__ == "__main__":
    main()
