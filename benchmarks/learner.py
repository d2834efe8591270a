"""The MAML-TRPO update in each task batching and Hessian-vector-product form, on the CPU or a CUDA device.

For each problem size, multiple of its meta-batch and mode (``batching/hvp``: batching ``loop``, ``vmap`` or
``stacked``; hvp ``double_backward`` or ``gauss_newton``), this times in a fresh subprocess (its own peak memory):

- ``meta_grad``: the second-order meta-gradient (adapt every task with ``create_graph``, query surrogate, backward);
- ``hvp``: one KL Hessian-vector product through the adaptation (after its graph is built);
- ``update``: one whole :meth:`MAMLTRPO.meta_update` (10 CG products, step scaling, line search, diagnostics), best
  of ``--repeats`` after a first call, which is reported apart (``first_s``: vmap traces, CUDA warms up there);
- ``peak_mb``: peak memory: RSS growth on the CPU, ``torch.cuda.max_memory_allocated`` on CUDA.

Run ``python benchmarks/learner.py`` (CPU, 1 thread) or ``--device cuda``; ``--quick`` for point-2d at 1x only. Prints
a table and writes ``benchmarks/results/learner_<device>.json``. Episodes are synthetic (random tensors, episodes that
end between half and all of the horizon): the cost is in the network and autograd, not in what the numbers mean.
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
from metarl.rl_objectives import task_mean, trpo_terms
from metarl.trpo import flat_grad, gauss_newton_hvp, hvp_from_grad

SIZES = {
    # name: (tasks, episodes, horizon, obs_dim, act_dim, hidden)
    "point-2d": (20, 20, 100, 2, 2, (100, 100)),
    "cheetah-vel": (40, 20, 200, 20, 6, (100, 100)),
}
MODES = (
    "loop/double_backward",
    "loop/gauss_newton",
    "vmap/double_backward",
    "vmap/gauss_newton",
    "stacked/double_backward",
    "stacked/gauss_newton",
)
RESULTS = Path(__file__).resolve().parent / "results"


def synthetic_batch(n: int, e: int, t: int, obs_dim: int, act_dim: int, seed: int, device: str = "cpu") -> EpisodeBatch:
    """Random episodes; each lasts between half and all of the horizon."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(t // 2, t + 1, (n, e), generator=g)
    mask = (torch.arange(t) < lengths[..., None]).float()
    batch = EpisodeBatch(
        observations=torch.randn(n, e, t, obs_dim, generator=g),
        actions=torch.randn(n, e, t, act_dim, generator=g),
        rewards=torch.randn(n, e, t, generator=g),
        log_probs=torch.zeros(n, e, t),
        mask=mask,
    )
    return batch.to_torch(device)


def timed(fn, repeats: int, device: torch.device) -> tuple[float, float, float]:
    """First call's wall time, then the best wall and the best process CPU time of ``repeats`` further calls.

    CUDA is synchronised around each call. CPU time (this process, all threads) is what other load on a shared
    machine disturbs least.
    """
    walls, cpus = [], []
    for _ in range(repeats + 1):
        if device.type == "cuda":
            torch.cuda.synchronize()
        wall, cpu = time.perf_counter(), time.process_time()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return walls[0], min(walls[1:]), min(cpus[1:])


def memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_one(size: str, scale: int, mode: str, device_name: str, repeats: int) -> dict:
    """Measure one (size, scale, mode) in this process."""
    device = torch.device(device_name)
    n, e, t, obs_dim, act_dim, hidden = SIZES[size]
    n *= scale
    batching, hvp_form = mode.split("/")
    torch.manual_seed(0)
    policy = GaussianMLPPolicy(obs_dim, act_dim, hidden).to(device)
    algo = MAMLTRPO(policy, MAMLTRPOConfig(batching=batching, hvp=hvp_form))
    support = synthetic_batch(n, e, t, obs_dim, act_dim, 1, device_name)
    query = synthetic_batch(n, e, t, obs_dim, act_dim, 2, device_name)
    s, q = algo.prepare(support), algo.prepare(query)
    base = memory_mb(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    def meta_grad() -> None:
        theta = algo.parameters_vector().requires_grad_(True)
        flat_grad(algo.objective(theta, s, q)[0], theta)

    theta = algo.parameters_vector().requires_grad_(True)
    new = algo.query_distribution(theta, s, q["observations"])
    _, kl, old = trpo_terms(policy, new, q)
    if hvp_form == "gauss_newton":
        hvp = gauss_newton_hvp(new, theta, lambda d: task_mean(policy.kl(old, d), q["mask"]).mean(), 1e-5)
    else:
        hvp = hvp_from_grad(flat_grad(kl.mean(), theta, create_graph=True), theta, 1e-5)
    v = torch.randn_like(theta)
    out = {"size": size, "scale": scale, "tasks": n, "mode": mode, "device": device_name}

    out["load_before"] = os.getloadavg()[0]
    _, out["meta_grad_s"], out["meta_grad_cpu_s"] = timed(meta_grad, repeats, device)
    _, out["hvp_s"], out["hvp_cpu_s"] = timed(lambda: hvp(v), repeats, device)
    hvp = new = kl = None  # free the graph before the full updates
    update = timed(lambda: algo.meta_update(support, query), repeats, device)
    out["first_s"], out["update_s"], out["update_cpu_s"] = update
    out["peak_mb"] = memory_mb(device) - (0.0 if device.type == "cuda" else base)
    return out


def fmt(value: float | None, width: int, digits: int) -> str:
    return f"{value:>{width}.{digits}f}" if value is not None else f"{'-':>{width}}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--threads", type=int, default=1, help="torch threads on the CPU")
    parser.add_argument("--sizes", default=",".join(SIZES), help="comma-separated problem sizes")
    parser.add_argument("--scales", default="1,2,4", help="comma-separated multiples of the meta-batch")
    parser.add_argument("--modes", default=",".join(MODES), help="comma-separated batching/hvp modes")
    parser.add_argument("--loop-max-scale", type=int, default=1, help="skip loop modes above this multiple")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls after the first (best is kept)")
    parser.add_argument("--quick", action="store_true", help="point-2d at 1x only")
    parser.add_argument("--out", type=Path, default=None, help="JSON path (default results/learner_<device>.json)")
    parser.add_argument("--worker", nargs=3, metavar=("SIZE", "SCALE", "MODE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.worker:
        size, scale, mode = args.worker
        print(json.dumps(run_one(size, int(scale), mode, args.device, args.repeats)))
        return

    sizes = ["point-2d"] if args.quick else args.sizes.split(",")
    scales = [1] if args.quick else [int(x) for x in args.scales.split(",")]
    rows = []
    for size in sizes:
        for scale in scales:
            for mode in args.modes.split(","):
                if mode.startswith("loop/") and scale > args.loop_max_scale:
                    continue
                cmd = [sys.executable, __file__, "--worker", size, str(scale), mode]
                cmd += ["--device", args.device, "--threads", str(args.threads), "--repeats", str(args.repeats)]
                proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
                if proc.returncode != 0:
                    lines = (proc.stderr.strip() or "no output").splitlines()
                    row = {"size": size, "scale": scale, "mode": mode, "error": lines[-1]}
                else:
                    row = json.loads(proc.stdout.strip().splitlines()[-1])
                rows.append(row)
                print(row, file=sys.stderr, flush=True)

    header = (
        f"{'size':<12} {'tasks':>5} {'mode':<24} {'meta_grad s':>11} {'hvp s':>8} {'update s':>9} {'(cpu s)':>8} "
        f"{'first s':>8} {'peak MB':>8}"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        if "error" in r:
            print(f"{r['size']:<12} {'':>5} {r['mode']:<24} error: {r['error']}")
            continue
        print(
            f"{r['size']:<12} {r['tasks']:>5} {r['mode']:<24} {fmt(r['meta_grad_s'], 11, 3)} {fmt(r['hvp_s'], 8, 3)} "
            f"{fmt(r['update_s'], 9, 3)} {fmt(r['update_cpu_s'], 8, 3)} {fmt(r['first_s'], 8, 2)} "
            f"{fmt(r['peak_mb'], 8, 0)}"
        )
    meta = {
        "torch": torch.__version__,
        "device": torch.cuda.get_device_name(0) if args.device == "cuda" else platform.processor() or "cpu",
        "threads": args.threads,
        "cpus": os.cpu_count(),
        "repeats": args.repeats,
        "note": "best of repeats after a first call (first_s); *_cpu_s: process CPU time (on CUDA: the host's); "
        "the machine may be shared: load_before per row",
        "sizes": {
            k: dict(zip(("tasks", "episodes", "horizon", "obs", "act", "hidden"), v, strict=True))
            for k, v in SIZES.items()
        },
    }
    out = args.out or RESULTS / f"learner_{args.device}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
