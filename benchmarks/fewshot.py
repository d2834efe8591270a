"""Loop vs ``torch.func.vmap`` over tasks for MAML on Omniglot 5-way 1-shot, on this machine.

One meta-iteration is the training code's own step (:meth:`metarl.fewshot.methods.GradientMethod.train_step`):
meta-batch 32, one inner step with step size 0.4, second order, Adam, 1 query image per class, as in
``experiments/fewshot_omniglot_maml_5w1s.yaml``. Each (network, mode) runs in a fresh subprocess with one torch
thread, so its peak memory is its own: ``peak_mb`` is the growth of the peak RSS (``resource.getrusage`` maxrss) over
the RSS once the model and data are built; ``cpu_s_per_iter`` is the process's CPU time per iteration, which other
load on the shared cores disturbs much less than wall time. Both Conv4 variants are measured: ``stride`` (MAML's
Omniglot network, the configs' choice) and ``maxpool`` (the ProtoNet/MatchingNet network). Images are random tensors
in [0, 1]: the cost is in the network and autograd, not in what the pixels mean.

Run ``python benchmarks/fewshot.py`` (``--iters N``, ``--repeats R``); prints a table and writes
``benchmarks/results/fewshot.json``. Modes alternate across repeats so that load from other processes on the shared
cores hits both alike; the table reports the median over repeats of each repeat's median seconds per iteration.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "fewshot.json"
CONFIG = Path(__file__).resolve().parents[1] / "experiments" / "fewshot_omniglot_maml_5w1s.yaml"
MODES = ("loop", "vmap")
NETWORKS = ("stride", "maxpool")


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def worker(mode: str, network: str, iters: int, threads: int = 1, config_path: Path = CONFIG) -> dict:
    """Time ``iters`` meta-iterations (after 2 warm-up ones) of ``config_path``'s MAML on ``threads`` torch threads in
    this process; returns one result row."""
    import numpy as np
    import torch

    torch.set_num_threads(threads)
    from metarl.config import load_config
    from metarl.fewshot.methods import GradientMethod
    from metarl.fewshot.models import Conv4
    from metarl.fewshot.problem import FewShotProblem, classification_score
    from metarl.fewshot.tasks import FewShotBatch

    overrides = [f"fewshot.vectorize={mode == 'vmap'}", f"fewshot.downsample={network}", "fewshot.data_dir=null"]
    config = load_config(config_path, overrides)
    fs = config.fewshot

    class RandomEpisodes:
        """N-way K-shot episodes of random images (labels a permutation per task)."""

        def sample(self, n: int, rng: np.random.Generator) -> FewShotBatch:
            g = torch.Generator().manual_seed(int(rng.integers(2**31)))
            ways, shots, queries = fs.n_way, fs.k_shot, fs.k_query

            def labels(k: int) -> torch.Tensor:
                return torch.stack([torch.randperm(ways * k, generator=g) % ways for _ in range(n)])

            return FewShotBatch(
                torch.rand(n, ways * shots, 1, 28, 28, generator=g),
                labels(shots),
                torch.rand(n, ways * queries, 1, 28, 28, generator=g),
                labels(queries),
            )

    source = RandomEpisodes()
    problem = FewShotProblem(
        name=f"omniglot-{fs.n_way}way-{fs.k_shot}shot",
        metric="accuracy",
        train=source,
        val=None,
        test=source,
        score=classification_score,
        make_model=lambda: Conv4(n_way=fs.n_way, downsample=network),
        n_way=fs.n_way,
        train_ways=fs.n_way,
    )
    torch.manual_seed(0)
    method = GradientMethod(config, problem, torch.device("cpu"))
    batches = [problem.train_batch(0, i, fs.meta_batch_size) for i in range(iters + 2)]
    base = rss_mb()
    times, cpu_times = [], []
    for i, batch in enumerate(batches):
        start, cpu_start = time.perf_counter(), time.process_time()
        method.train_step(batch, i)
        if i >= 2:
            times.append(time.perf_counter() - start)
            cpu_times.append(time.process_time() - cpu_start)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "network": network,
        "mode": mode,
        "s_per_iter": statistics.median(times),
        "s_per_iter_min": min(times),
        "cpu_s_per_iter": statistics.median(cpu_times),
        "peak_mb": peak - base,
        "peak_rss_mb": peak,
    }


def run_subprocess(mode: str, network: str, iters: int, threads: int = 1, config_path: Path = CONFIG) -> dict:
    """One :func:`worker` in a fresh process (its own peak memory); returns its row."""
    command = [sys.executable, __file__, "--worker", mode, network, "--iters", str(iters)]
    out = subprocess.run(
        [*command, "--threads", str(threads), "--config", str(config_path)],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iters", type=int, default=6, help="timed meta-iterations per subprocess (default 6)")
    parser.add_argument("--repeats", type=int, default=2, help="subprocesses per (network, mode) (default 2)")
    parser.add_argument("--networks", default=",".join(NETWORKS), help="stride,maxpool (default both)")
    parser.add_argument("--worker", nargs=2, metavar=("MODE", "NETWORK"), help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--config", type=Path, default=CONFIG, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker[0], args.worker[1], args.iters, args.threads, args.config)))
        return
    runs: dict[tuple[str, str], list[dict]] = {}
    for _ in range(args.repeats):
        for network in args.networks.split(","):
            for mode in MODES:
                runs.setdefault((network, mode), []).append(run_subprocess(mode, network, args.iters))
    rows = []
    for (network, mode), results in runs.items():
        rows.append(
            {
                "network": network,
                "mode": mode,
                "s_per_iter": statistics.median(r["s_per_iter"] for r in results),
                "s_per_iter_repeats": [r["s_per_iter"] for r in results],
                "cpu_s_per_iter": statistics.median(r["cpu_s_per_iter"] for r in results),
                "peak_mb": max(r["peak_mb"] for r in results),
                "peak_rss_mb": max(r["peak_rss_mb"] for r in results),
            }
        )
    header = f"{'network':<8} {'mode':<5} {'s/iter':>8} {'CPU s/iter':>10} {'repeats':>18} {'peak MB':>8}"
    print(f"{header} {'peak RSS MB':>12}")
    for r in rows:
        reps = ", ".join(f"{t:.2f}" for t in r["s_per_iter_repeats"])
        print(
            f"{r['network']:<8} {r['mode']:<5} {r['s_per_iter']:>8.3f} {r['cpu_s_per_iter']:>10.3f} {reps:>18} "
            f"{r['peak_mb']:>8.0f} "
            f"{r['peak_rss_mb']:>12.0f}"
        )
    import torch

    meta = {
        "torch": torch.__version__,
        "threads": 1,
        "machine": platform.machine(),
        "cpus": __import__("os").cpu_count(),
        "setting": "MAML Omniglot 5-way 1-shot, meta-batch 32, 1 inner step (lr 0.4), second order, 1 query/class",
        "iters": args.iters,
        "repeats": args.repeats,
        "note": "2 shared cores; other processes were running, so absolute times are noisy; modes alternate",
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
