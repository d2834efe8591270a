"""Loop vs ``torch.func.vmap`` over tasks for the MAML-TRPO meta-gradient on this machine.

For each problem size and mode this times, in a fresh subprocess (so peak memory is its own):

- ``meta_grad``: the second-order meta-gradient (adapt every task with ``create_graph``, query surrogate, backward);
- ``hvp``: one KL Hessian-vector product through the adaptation (after the first backward with ``create_graph``);
- ``update``: one whole :meth:`MAMLTRPO.meta_update` (10 CG iterations + line search), first round only;
- ``peak_mb``: peak RSS growth over the process's RSS once the data is built (best over rounds).

Run ``python benchmarks/learner.py`` (``--quick`` for small sizes only); prints a table and writes
``benchmarks/results/learner.json``. Episodes are synthetic (random tensors with early termination): the cost is in
the network and autograd, not in what the numbers mean.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

from metarl.episodes import EpisodeBatch
from metarl.maml_trpo import MAMLTRPO, MAMLTRPOConfig
from metarl.policies import GaussianMLPPolicy
from metarl.trpo import flat_grad, hvp_from_grad

SIZES = {
    # name: (tasks, episodes, horizon, obs_dim, act_dim, hidden)
    "tiny-mlp": (20, 10, 50, 2, 2, (16, 16)),
    "point-2d": (20, 20, 100, 2, 2, (100, 100)),
    "cheetah-vel": (40, 20, 200, 20, 6, (100, 100)),
}
QUICK = ("tiny-mlp", "point-2d")
RESULTS = Path(__file__).resolve().parent / "results" / "learner.json"


def synthetic_batch(n: int, e: int, t: int, obs_dim: int, act_dim: int, seed: int) -> EpisodeBatch:
    """Random episodes; each lasts between half and all of the horizon."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(t // 2, t + 1, (n, e), generator=g)
    mask = (torch.arange(t) < lengths[..., None]).float()
    return EpisodeBatch(
        observations=torch.randn(n, e, t, obs_dim, generator=g),
        actions=torch.randn(n, e, t, act_dim, generator=g),
        rewards=torch.randn(n, e, t, generator=g),
        log_probs=torch.zeros(n, e, t),
        mask=mask,
    )


def current_rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def timed(fn, repeats: int) -> tuple[float, float]:
    """Best wall time and best process CPU time of ``repeats`` calls, after one warm-up call.

    The minimum is the least disturbed by other processes on the shared cores; CPU time (all threads) is reported
    beside wall time because the machine is shared.
    """
    fn()
    walls, cpus = [], []
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        fn()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return min(walls), min(cpus)


def run_one(size: str, mode: str, repeats: int, with_update: bool) -> dict:
    """Measure one (size, mode) in this process."""
    n, e, t, obs_dim, act_dim, hidden = SIZES[size]
    torch.manual_seed(0)
    policy = GaussianMLPPolicy(obs_dim, act_dim, hidden)
    algo = MAMLTRPO(policy, MAMLTRPOConfig(vectorize=(mode == "vmap")))
    support = synthetic_batch(n, e, t, obs_dim, act_dim, 1)
    query = synthetic_batch(n, e, t, obs_dim, act_dim, 2)
    s, q = algo.prepare(support), algo.prepare(query)
    rss0 = current_rss_mb()

    def meta_grad() -> None:
        theta = algo.parameters_vector().requires_grad_(True)
        surrogate, _, _ = algo.objective(theta, s, q)
        flat_grad(surrogate, theta)

    theta = algo.parameters_vector().requires_grad_(True)
    _, kl, _ = algo.objective(theta, s, q)
    hvp = hvp_from_grad(flat_grad(kl, theta, create_graph=True), theta, 1e-5)
    v = torch.randn_like(theta)

    out = {"size": size, "mode": mode, "load_before": os.getloadavg()[0]}
    out["meta_grad_s"], out["meta_grad_cpu_s"] = timed(meta_grad, repeats)
    out["hvp_s"], out["hvp_cpu_s"] = timed(lambda: hvp(v), repeats)
    hvp = kl = None  # free the graph before the full update
    if with_update:
        start = time.perf_counter()
        algo.meta_update(support, query)
        out["update_s"] = time.perf_counter() - start
    out["peak_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - rss0
    return out


def merge(runs: list[dict]) -> dict:
    """Best of several runs of one (size, mode), metric by metric; errors kept if every run failed."""
    ok = [r for r in runs if "error" not in r]
    if not ok:
        return runs[-1]
    out = {k: ok[0][k] for k in ("size", "mode")}
    for key in ok[0]:
        if key not in out:
            values = [r[key] for r in ok if key in r]
            out[key] = max(values) if key == "load_before" else min(values)
    out["runs"] = len(ok)
    return out


def fmt(value: float | None, width: int, digits: int) -> str:
    return f"{value:>{width}.{digits}f}" if value is not None else f"{'-':>{width}}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes only")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per process (best is kept)")
    parser.add_argument("--rounds", type=int, default=2, help="processes per (size, mode), loop and vmap alternating")
    parser.add_argument("--no-update", action="store_true", help="skip timing a whole meta_update")
    parser.add_argument("--worker", nargs=2, metavar=("SIZE", "MODE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(run_one(*args.worker, args.repeats, not args.no_update)))
        return

    rows = []
    for size in QUICK if args.quick else SIZES:
        runs: dict[str, list[dict]] = {"loop": [], "vmap": []}
        for round_ in range(args.rounds):
            for mode in ("loop", "vmap"):
                cmd = [sys.executable, __file__, "--worker", size, mode, "--repeats", str(args.repeats)]
                if args.no_update or round_ > 0:  # one whole update per mode is enough
                    cmd.append("--no-update")
                proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
                if proc.returncode != 0:
                    runs[mode].append({"size": size, "mode": mode, "error": proc.stderr.strip().splitlines()[-1]})
                else:
                    runs[mode].append(json.loads(proc.stdout.strip().splitlines()[-1]))
                print(runs[mode][-1], file=sys.stderr)
        rows += [merge(runs["loop"]), merge(runs["vmap"])]

    header = (
        f"{'size':<12} {'mode':<5} {'meta_grad s':>11} {'(cpu s)':>8} {'hvp s':>8} {'(cpu s)':>8} "
        f"{'update s':>9} {'peak MB':>8} {'load':>5}"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        if "error" in r:
            print(f"{r['size']:<12} {r['mode']:<5} error: {r['error']}")
            continue
        print(
            f"{r['size']:<12} {r['mode']:<5} {fmt(r['meta_grad_s'], 11, 3)} {fmt(r['meta_grad_cpu_s'], 8, 3)} "
            f"{fmt(r['hvp_s'], 8, 3)} {fmt(r['hvp_cpu_s'], 8, 3)} {fmt(r.get('update_s'), 9, 2)} "
            f"{fmt(r['peak_mb'], 8, 0)} {fmt(r['load_before'], 5, 1)}"
        )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpus": os.cpu_count(),
        "machine": platform.processor() or platform.machine(),
        "note": "best of rounds x repeats; 'load' is the worst 1-min load average seen before a run (shared box)",
        "sizes": {
            k: dict(zip(("tasks", "episodes", "horizon", "obs", "act", "hidden"), v, strict=True))
            for k, v in SIZES.items()
        },
    }
    RESULTS.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
