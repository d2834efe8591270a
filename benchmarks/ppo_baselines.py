"""SB3 PPO baseline throughput: env steps/s of ``metarl baseline train`` (collection and updates together) for
1, 16 and 64 envs stepped in one process (``--n-envs``), on navigation and HalfCheetahVel.

    python benchmarks/ppo_baselines.py [--scale 1.0] [--out benchmarks/results/ppo_baselines.json]

Each case trains a fresh "pretrained" PPO for a fixed number of env steps (``--scale`` multiplies them) on one
core and one torch thread; the steps are several whole rollouts, so the update cost is included.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

import torch

from metarl.config import load_config
from metarl.sb3_baselines import train_ppo

CONFIGS = {
    "Navigation2D": "experiments/maml_trpo_navigation.yaml",
    "HalfCheetahVel": "experiments/maml_trpo_halfcheetah_vel.yaml",
}
CASES = [  # (env, n_envs, env steps): at least two rollouts of n_envs x 2048 steps each
    ("Navigation2D", 1, 16_384),
    ("Navigation2D", 16, 131_072),
    ("Navigation2D", 64, 262_144),
    ("HalfCheetahVel", 1, 16_384),
    ("HalfCheetahVel", 16, 65_536),
    ("HalfCheetahVel", 64, 262_144),
]


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every case's env steps")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/ppo_baselines.json"))
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    rows = []
    print(f"{'env':<16}{'n_envs':>8}{'steps':>10}{'seconds':>10}{'steps/s':>10}")
    for env, n_envs, steps in CASES:
        steps = max(2048 * n_envs, int(steps * args.scale))
        config = load_config(CONFIGS[env])
        started = time.perf_counter()
        train_ppo(config, "pretrained", steps, seed=0, n_envs=n_envs)
        seconds = time.perf_counter() - started
        rows.append({"env": env, "n_envs": n_envs, "steps": steps, "seconds": seconds, "steps_per_s": steps / seconds})
        print(f"{env:<16}{n_envs:>8}{steps:>10}{seconds:>10.1f}{steps / seconds:>10.0f}")
    meta = {"torch": torch.__version__, "threads": 1, "machine": platform.machine(), "cpus": os.cpu_count()}
    result = {"meta": meta, "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
