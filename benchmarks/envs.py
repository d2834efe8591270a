"""Env throughput: env steps/s of each family (one env, random actions), of BatchedNavigation2D, and of raw
``mujoco.mj_step`` on the half-cheetah model (5 mj_step = one env step, the physics limit).

    python benchmarks/envs.py [--seconds 5] [--batch 1000] [--out benchmarks/results/envs.json]

Actions are drawn before timing; episodes are reset when they end (resets are inside the timed loop). Each
case runs 5 windows of seconds/5; the table shows the best window (least disturbed by other processes) and
the median.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import mujoco
import numpy as np

import metarl_envs as envs

FAMILIES = ["Navigation2D", "HalfCheetahVel", "HalfCheetahDir", "AntVel", "AntDir", "Bandit", "TabularMDP"]
CHUNK = 256  # steps between clock reads


def timed(step_chunk: Callable[[], int], seconds: float, repeats: int = 5) -> list[float]:
    """Call ``step_chunk`` (returns env steps done) for ``repeats`` windows totalling ``seconds``; return the
    steps/s of each window (the best one is the least disturbed by other processes on shared cores)."""
    step_chunk()  # warm-up
    rates = []
    for _ in range(repeats):
        steps, start = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - start) < seconds / repeats:
            steps += step_chunk()
        rates.append(steps / elapsed)
    return rates


def bench_family(name: str, seconds: float) -> list[float]:
    env = getattr(envs, name)()
    env.action_space.seed(0)
    actions = [env.action_space.sample() for _ in range(4 * CHUNK)]
    env.reset(seed=0)
    cursor = 0

    def chunk() -> int:
        nonlocal cursor
        for i in range(CHUNK):
            _, _, terminated, truncated, _ = env.step(actions[(cursor + i) % len(actions)])
            if terminated or truncated:
                env.reset()
        cursor += CHUNK
        return CHUNK

    return timed(chunk, seconds)


def bench_batched_navigation(num_envs: int, seconds: float) -> list[float]:
    batch = envs.BatchedNavigation2D(num_envs)
    batch.set_tasks(envs.Navigation2D.sample_tasks(num_envs, 0))
    actions = np.random.default_rng(0).uniform(-0.1, 0.1, size=(16, num_envs, 2)).astype(np.float32)
    batch.reset()
    steps_per_chunk = 32

    def chunk() -> int:
        for i in range(steps_per_chunk):
            _, _, _, truncated = batch.step(actions[i % len(actions)])
            if truncated[0]:
                batch.reset()
        return steps_per_chunk * num_envs

    return timed(chunk, seconds)


def bench_raw_mujoco(seconds: float) -> list[float]:
    env = envs.HalfCheetahVel()  # the same gymnasium half_cheetah.xml model
    model, data = env.model, mujoco.MjData(env.model)
    ctrls = np.random.default_rng(0).uniform(-1.0, 1.0, size=(4 * CHUNK, model.nu))
    cursor = 0

    def chunk() -> int:
        nonlocal cursor
        for i in range(CHUNK):
            data.ctrl[:] = ctrls[(cursor + i) % len(ctrls)]
            mujoco.mj_step(model, data, nstep=5)
        cursor += CHUNK
        return CHUNK

    return timed(chunk, seconds)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="timed seconds per case (default 5)")
    parser.add_argument("--batch", type=int, default=1000, help="BatchedNavigation2D agents (default 1000)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/envs.json"))
    args = parser.parse_args(argv)

    rows: list[dict[str, Any]] = []
    single = "single env, random actions"
    cases: list[tuple[str, str, Callable[[], list[float]]]] = [
        (name, single, lambda name=name: bench_family(name, args.seconds)) for name in FAMILIES
    ]
    cases.append(
        (
            f"BatchedNavigation2D(N={args.batch})",
            "one NumPy step for N agents; counts agent steps",
            lambda: bench_batched_navigation(args.batch, args.seconds),
        )
    )
    cases.append(
        (
            "raw mj_step half_cheetah",
            "5 mujoco.mj_step per env step, no Python env",
            lambda: bench_raw_mujoco(args.seconds),
        )
    )
    load_before = os.getloadavg()
    print(f"{'case':<36} {'best steps/s':>14} {'median':>14}  note")
    for name, note, run in cases:
        rates = run()
        row = {"case": name, "steps_per_s": max(rates), "median_steps_per_s": statistics.median(rates)}
        rows.append({**row, "window_steps_per_s": rates, "note": note})
        print(f"{name:<36} {max(rates):>14,.0f} {row['median_steps_per_s']:>14,.0f}  {note}", flush=True)

    result = {
        "benchmark": "envs",
        "seconds_per_case": args.seconds,
        "machine": {
            "platform": platform.platform(),
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "mujoco": mujoco.__version__,
            "numpy": np.__version__,
            "loadavg_1min_before_after": [load_before[0], os.getloadavg()[0]],  # other processes' CPU use
        },
        "results": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
