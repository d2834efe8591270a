"""Forms of the ``J v`` inside the Gauss-Newton KL product of a second-order MAML-TRPO update (CPU, loop batching).

:func:`metarl.trpo.gauss_newton_hvp` computes ``J^T H J v`` with ``J v`` by reverse mode over the ``J^T u`` graph.
This measures, per product (10 per TRPO update), that form against two forward-mode ones, each followed by the same
``H`` and ``J^T`` (one backward through the kept query-distribution graph):

- ``reverse``: the shipped form;
- ``jvp``: ``torch.func.jvp`` of each task's adapted distribution (adaptation with ``torch.func.grad``), per product;
- ``linearize``: ``torch.func.linearize`` of each task once per update (``build_s``), then its ``jvp_fn`` per product;
- ``jt_only``: the ``J^T u`` backward alone, the part every form shares.

It also reports each form's relative difference to ``reverse`` (float32). Run ``python benchmarks/jv_forms.py``;
``--sizes point-2d`` for the small problem only. Prints a table and writes ``benchmarks/results/jv_forms.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from learner import SIZES, synthetic_batch

from metarl.learners import index_task
from metarl.maml_trpo import MAMLTRPO, MAMLTRPOConfig
from metarl.policies import GaussianMLPPolicy
from metarl.rl_objectives import distribution, task_mean, trpo_terms
from metarl.trpo import gauss_newton_hvp

RESULTS = Path(__file__).resolve().parent / "results"


def best_cpu(fn: Callable[[], object], repeats: int) -> float:
    """Best process CPU seconds of ``repeats`` calls (after one warm-up call)."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.process_time()
        fn()
        times.append(time.process_time() - start)
    return min(times)


def measure(size: str, repeats: int, with_linearize: bool) -> dict:
    """Per-product CPU seconds of each form at one problem size."""
    n, e, t, obs_dim, act_dim, hidden = SIZES[size]
    torch.manual_seed(0)
    policy = GaussianMLPPolicy(obs_dim, act_dim, hidden)
    algo = MAMLTRPO(policy, MAMLTRPOConfig(batching="loop", hvp="gauss_newton"))
    s = algo.prepare(synthetic_batch(n, e, t, obs_dim, act_dim, 1))
    q = algo.prepare(synthetic_batch(n, e, t, obs_dim, act_dim, 2))
    theta = algo.parameters_vector().requires_grad_(True)
    new = algo.query_distribution(theta, s, q["observations"])
    _, _, old = trpo_terms(policy, new, q)

    def kl_loss(dist: tuple[torch.Tensor, ...]) -> torch.Tensor:
        return task_mean(policy.kl(old, dist), q["mask"]).mean()

    reverse = gauss_newton_hvp(new, theta, kl_loss)
    leaves = tuple(o.detach().requires_grad_(True) for o in new)
    loss_grads = torch.autograd.grad(kl_loss(leaves), leaves, create_graph=True)

    def finish(jv: tuple[torch.Tensor, ...]) -> torch.Tensor:
        hjv = torch.autograd.grad(loss_grads, leaves, grad_outputs=jv, retain_graph=True)
        return torch.autograd.grad(new, theta, grad_outputs=hjv, retain_graph=True)[0]

    def task_dist(x: torch.Tensor, i: int) -> tuple[torch.Tensor, ...]:
        params, lrs = algo._split(x)
        adapted = algo.learner.adapt(params, algo.inner_loss, index_task(s, i), inner_lrs=lrs, functional=True)
        return distribution(policy, adapted, q["observations"][i])

    def stack(per_task: list[tuple[torch.Tensor, ...]]) -> tuple[torch.Tensor, ...]:
        return tuple(torch.stack(z) for z in zip(*per_task, strict=True))

    point = theta.detach()

    def jvp_form(v: torch.Tensor) -> torch.Tensor:
        return finish(stack([torch.func.jvp(lambda x, i=i: task_dist(x, i), (point,), (v,))[1] for i in range(n)]))

    v = torch.randn_like(point)
    ref = reverse(v)
    row = {"size": size, "tasks": n, "params": point.numel(), "load_before": os.getloadavg()[0]}
    row["reverse_s"] = best_cpu(lambda: reverse(v), repeats)
    row["jvp_s"] = best_cpu(lambda: jvp_form(v), repeats)
    row["jt_only_s"] = best_cpu(lambda: finish(tuple(torch.ones_like(o) for o in leaves)), repeats)
    row["jvp_rel_diff"] = float((jvp_form(v) - ref).norm() / ref.norm())
    if with_linearize:
        start = time.process_time()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fns = [torch.func.linearize(lambda x, i=i: task_dist(x, i), point)[1] for i in range(n)]
        row["linearize_build_s"] = time.process_time() - start

        def linearized(u: torch.Tensor) -> torch.Tensor:
            return finish(stack([fn(u) for fn in fns]))

        row["linearize_s"] = best_cpu(lambda: linearized(v), repeats)
        row["linearize_rel_diff"] = float((linearized(v) - ref).norm() / ref.norm())
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default=",".join(SIZES), help="comma-separated problem sizes")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls after a warm-up (best is kept)")
    parser.add_argument("--no-linearize", action="store_true", help="skip torch.func.linearize (slow to build)")
    parser.add_argument("--out", type=Path, default=RESULTS / "jv_forms.json", help="JSON path")
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = [measure(size, args.repeats, not args.no_linearize) for size in args.sizes.split(",")]
    header = f"{'size':<12} {'reverse s':>9} {'jvp s':>7} {'linearize s':>11} {'(build s)':>9} {'J^T only s':>10}"
    print(header)
    print("-" * len(header))
    for r in rows:
        lin, build = r.get("linearize_s"), r.get("linearize_build_s")
        print(
            f"{r['size']:<12} {r['reverse_s']:>9.3f} {r['jvp_s']:>7.3f} "
            f"{(f'{lin:.3f}' if lin is not None else '-'):>11} {(f'{build:.1f}' if build is not None else '-'):>9} "
            f"{r['jt_only_s']:>10.3f}"
        )
    meta = {
        "torch": torch.__version__,
        "device": platform.processor() or "cpu",
        "threads": 1,
        "cpus": os.cpu_count(),
        "note": "process CPU seconds per Gauss-Newton product, best of repeats; the machine may be shared",
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
