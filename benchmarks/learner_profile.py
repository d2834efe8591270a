"""Where one stacked / Gauss-Newton MAML-TRPO update spends its GPU time, and what TF32 matmuls change.

Run ``python benchmarks/learner_profile.py`` on a machine with CUDA (``--device cpu`` only checks that it runs). For
point-2d and cheetah-vel (the sizes of ``benchmarks/learner.py``) it prints the best of 3 update times in FP32 and
with TF32 matmuls, the relative difference between the two TRPO steps from the same start, and a ``torch.profiler``
table of one FP32 update: kernel launches and GPU time by operator.
"""

from __future__ import annotations

import argparse
import time

import torch
from learner import SIZES, synthetic_batch
from torch.profiler import ProfilerActivity, profile

from metarl.maml_trpo import MAMLTRPO, MAMLTRPOConfig
from metarl.policies import GaussianMLPPolicy
from metarl.trpo import unflatten


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def update_from(algo: MAMLTRPO, theta0: torch.Tensor, support, query, device: str) -> float:
    """Wall time of one meta-update started from ``theta0``."""
    with torch.no_grad():
        for p, x in zip(algo.policy.parameters(), unflatten(theta0, list(algo.policy.parameters())), strict=True):
            p.copy_(x)
    sync(device)
    start = time.perf_counter()
    algo.meta_update(support, query)
    sync(device)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    args = parser.parse_args()
    dev = args.device
    for size in SIZES:
        n, e, t, obs, act, hidden = SIZES[size]
        support, query = synthetic_batch(n, e, t, obs, act, 1, dev), synthetic_batch(n, e, t, obs, act, 2, dev)
        steps = {}
        for tf32 in (False, True):
            torch.backends.cuda.matmul.allow_tf32 = tf32
            torch.manual_seed(0)
            algo = MAMLTRPO(GaussianMLPPolicy(obs, act, hidden).to(dev), MAMLTRPOConfig(batching="stacked"))
            theta0 = algo.parameters_vector().clone()
            best = min(update_from(algo, theta0, support, query, dev) for _ in range(4))
            steps[tf32] = algo.parameters_vector() - theta0
            print(f"{size}: update {best:.4f} s ({'TF32' if tf32 else 'FP32'} matmuls)", flush=True)
            if not tf32:
                activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if dev == "cuda" else [])
                with profile(activities=activities) as prof:
                    update_from(algo, theta0, support, query, dev)
                events = prof.key_averages()
                gpu_ms = sum(x.self_device_time_total for x in events) / 1e3
                launches = sum(x.count for x in events if "LaunchKernel" in x.key)
                print(f"{size}: {launches} kernel launches, {gpu_ms:.1f} ms of GPU time in one update")
                print(events.table(sort_by="self_device_time_total", row_limit=12, max_name_column_width=60))
        rel = float((steps[True] - steps[False]).norm() / steps[False].norm())
        print(f"{size}: TF32 step vs FP32 step, relative difference {rel:.3g}", flush=True)


if __name__ == "__main__":
    main()
