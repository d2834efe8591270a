"""The stacked (all tasks in one graph) MAML-TRPO learner against the per-task loop, in float64.

The loop with double-backward Hessian-vector products is the reference implementation; the stacked form with
Gauss-Newton products must give the same adaptation, meta-gradient, KL Hessian-vector products and TRPO step, second
and first order, Gaussian and categorical, on episodes that end early (garbage on their padded steps).
"""

from __future__ import annotations

import pytest
import torch
from test_maml_trpo import F64, N, episodes, make, problem
from torch.autograd.functional import hessian

from metarl.maml_trpo import MAMLTRPOConfig, resolve_batching, stack_params
from metarl.policies import GaussianMLPPolicy
from metarl.rl_objectives import distribution, task_mean, trpo_terms
from metarl.trpo import flat_grad, gauss_newton_hvp, hvp_from_grad

EXACT = dict(rtol=1e-8, atol=1e-12)
CASES = [
    dict(),
    dict(first_order=True),
    dict(num_steps=2, fast_lr=0.3),
    dict(inner_loss="lvc"),
    dict(meta_sgd=True, fast_lr=0.3),
    dict(adapt_keys=("mean.2",)),
]
IDS = ["second-order", "first-order", "two-steps", "lvc", "meta-sgd", "anil"]


def kl_hvp(algo, s: dict, q: dict, form: str):
    """The damped KL Hessian-vector product at the current params, in the given form."""
    theta = algo.parameters_vector().requires_grad_(True)
    new = algo.query_distribution(theta, s, q["observations"])
    _, kl, old = trpo_terms(algo.policy, new, q)
    if form == "gauss_newton":
        return gauss_newton_hvp(new, theta, lambda d: task_mean(algo.policy.kl(old, d), q["mask"]).mean(), 1e-3)
    return hvp_from_grad(flat_grad(kl.mean(), theta, create_graph=True), theta, 1e-3)


@pytest.mark.parametrize("discrete", [False, True], ids=["gaussian", "categorical"])
@pytest.mark.parametrize("config", CASES, ids=IDS)
def test_stacked_gauss_newton_equals_the_loop_reference(config: dict, discrete: bool) -> None:
    if discrete and "adapt_keys" in config:
        config = {**config, "adapt_keys": ("logits.2",)}
    act = 3 if discrete else 2
    # cg_damping 1: with the tiny nets here the KL Hessian is ill-conditioned (~1e4; the categorical one is singular,
    # logits being shift-invariant), and ten CG iterations amplify float64 rounding ~1e9 times in *any* two forms:
    # CG on the loop's own products and on the explicit matrix of the same products already differ by 1e-7. The
    # products themselves are compared below to 1e-8; the damping keeps the step comparison well conditioned.
    config = {"cg_damping": 1.0, **config}
    loop = make(discrete, batching="loop", hvp="double_backward", **config)
    fast = make(discrete, batching="stacked", hvp="gauss_newton", **config)
    support, query = episodes(1, discrete, act), episodes(2, discrete, act)
    s, q = problem(loop, discrete)

    for a, b in zip(loop.adapt(support), fast.adapt(support), strict=True):
        for k in a:
            torch.testing.assert_close(b[k], a[k], **EXACT)
    # A second step from given per-task params (evaluation after several steps).
    again = [algo.adapt(support, params=algo.adapt(support)) for algo in (loop, fast)]
    for a, b in zip(*again, strict=True):
        for k in a:
            torch.testing.assert_close(b[k], a[k], **EXACT)

    theta = loop.parameters_vector().requires_grad_(True)
    grads = [flat_grad(algo.objective(theta, s, q)[0], theta) for algo in (loop, fast)]
    assert grads[0].abs().max() > 1e-3
    torch.testing.assert_close(grads[1], grads[0], **EXACT)

    reference, gauss_newton = kl_hvp(loop, s, q, "double_backward"), kl_hvp(fast, s, q, "gauss_newton")
    for seed in range(2):
        v = torch.randn(theta.numel(), generator=torch.Generator().manual_seed(seed), dtype=F64)
        torch.testing.assert_close(gauss_newton(v), reference(v), **EXACT)

    before = loop.parameters_vector()
    metrics = [algo.meta_update(support, query) for algo in (loop, fast)]
    assert metrics[0]["accepted"] == 1.0 and metrics[1]["accepted"] == 1.0
    assert (loop.parameters_vector() - before).abs().max() > 1e-4
    step_loop, step_fast = loop.parameters_vector() - before, fast.parameters_vector() - before
    assert float((step_fast - step_loop).norm()) <= 1e-8 * float(step_loop.norm())
    for key in ("surrogate_before", "surrogate_after", "kl", "inner_loss", "step_norm", "line_search_steps"):
        assert metrics[1][key] == pytest.approx(metrics[0][key], rel=1e-8, abs=1e-12), key


def test_gauss_newton_kl_hvp_matches_the_explicit_hessian_through_the_adaptation() -> None:
    algo = make(fast_lr=0.5, batching="stacked")
    s, q = problem(algo)
    theta0 = algo.parameters_vector()
    _, _, old = algo.objective(theta0, s, q, create_graph=False)
    h = hessian(lambda x: algo.objective(x, s, q, old=old)[1], theta0)
    hvp = kl_hvp(algo, s, q, "gauss_newton")
    for seed in range(3):
        v = torch.randn(theta0.numel(), generator=torch.Generator().manual_seed(seed), dtype=F64)
        torch.testing.assert_close(hvp(v), h @ v + 1e-3 * v, atol=1e-10, rtol=1e-8)


def test_stacked_distribution_equals_each_task_on_its_own() -> None:
    torch.manual_seed(0)
    policy = GaussianMLPPolicy(2, 2, (5, 4), activation="relu", action_scale=0.3).double()
    params = {
        k: v + 0.1 * torch.randn(v.shape, dtype=F64)
        for k, v in stack_params(dict(policy.named_parameters()), N).items()
    }
    obs = torch.randn(N, 4, 6, 2, dtype=F64)
    stacked = distribution(policy, params, obs)
    for i in range(N):
        single = distribution(policy, {k: v[i] for k, v in params.items()}, obs[i])
        for a, b in zip(stacked, single, strict=True):
            torch.testing.assert_close(a[i], b, **EXACT)


def test_batching_names() -> None:
    assert resolve_batching("auto", torch.device("cpu")) in ("stacked", "loop", "vmap")
    assert resolve_batching("loop", torch.device("cpu")) == "loop"
    with pytest.raises(ValueError, match="unknown batching 'fast'"):
        MAMLTRPOConfig(batching="fast")
    with pytest.raises(ValueError, match="unknown hvp 'fisher'"):
        MAMLTRPOConfig(hvp="fisher")
