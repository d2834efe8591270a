"""TRPO pieces: conjugate gradient, Hessian-vector products, trust-region scaling, line search."""

from __future__ import annotations

import math

import torch
from torch.autograd.functional import hessian

from metarl.policies import GaussianMLPPolicy, policy_params
from metarl.rl_objectives import distribution
from metarl.trpo import (
    backtracking_line_search,
    conjugate_gradient,
    flatten,
    hessian_vector_product,
    make_hvp,
    params_to_vector,
    trust_region_step,
    unflatten,
    vector_to_params,
)

F64 = torch.float64


def spd(n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(n, n, generator=g, dtype=F64)
    return a @ a.T + 0.5 * torch.eye(n, dtype=F64)


def test_conjugate_gradient_solves_spd_system() -> None:
    a = spd(8)
    b = torch.randn(8, generator=torch.Generator().manual_seed(1), dtype=F64)
    x = conjugate_gradient(lambda v: a @ v, b, iters=8, residual_tol=1e-20)
    torch.testing.assert_close(x, torch.linalg.solve(a, b), atol=1e-8, rtol=1e-8)
    few = conjugate_gradient(lambda v: a @ v, b, iters=2)
    assert (few - torch.linalg.solve(a, b)).norm() > 1e-6  # it really iterates


def test_flat_helpers_round_trip() -> None:
    params = {"a": torch.randn(2, 3), "b": torch.randn(4)}
    vec = params_to_vector(params)
    assert vec.shape == (10,)
    back = vector_to_params(vec, params)
    for k in params:
        torch.testing.assert_close(back[k], params[k])
    views = unflatten(flatten(params.values()), list(params.values()))
    assert [v.shape for v in views] == [(2, 3), (4,)]


def test_hvp_matches_explicit_hessian_of_a_generic_function() -> None:
    a = torch.randn(5, generator=torch.Generator().manual_seed(2), dtype=F64)

    def fn(x: torch.Tensor) -> torch.Tensor:
        return (torch.sin(x) * x.pow(2)).sum() + (a @ x).pow(3) + x.prod()

    x = torch.randn(5, generator=torch.Generator().manual_seed(3), dtype=F64)
    v = torch.randn(5, generator=torch.Generator().manual_seed(4), dtype=F64)
    h = hessian(fn, x)
    torch.testing.assert_close(hessian_vector_product(fn, x, v), h @ v)
    torch.testing.assert_close(hessian_vector_product(fn, x, v, damping=0.1), h @ v + 0.1 * v)


def test_hvp_matches_explicit_hessian_of_policy_kl() -> None:
    """Fisher-vector products: Hessian of mean KL(old || new(x)) w.r.t. the flat policy params."""
    torch.manual_seed(0)
    policy = GaussianMLPPolicy(2, 2, (4,), activation="tanh").double()
    like = {k: v.detach() for k, v in policy_params(policy).items()}
    obs = torch.randn(7, 2, dtype=F64)
    x0 = params_to_vector(like)
    old = tuple(d.detach() for d in distribution(policy, like, obs))

    def mean_kl(x: torch.Tensor) -> torch.Tensor:
        return policy.kl(old, distribution(policy, vector_to_params(x, like), obs)).mean()

    h = hessian(mean_kl, x0)
    torch.testing.assert_close(h, h.T)
    assert torch.linalg.eigvalsh(h).min() > -1e-10  # PSD at the old params (a Fisher matrix)
    hvp = make_hvp(mean_kl, x0)
    for seed in range(3):
        v = torch.randn(x0.numel(), generator=torch.Generator().manual_seed(seed), dtype=F64)
        torch.testing.assert_close(hvp(v), h @ v)
    x1 = x0 + 0.1 * torch.randn_like(x0)  # away from the old params too
    v = torch.randn_like(x0)
    torch.testing.assert_close(hessian_vector_product(mean_kl, x1, v), hessian(mean_kl, x1) @ v)


def test_trust_region_step_hits_max_kl_in_the_quadratic_model() -> None:
    a = spd(4, seed=5)
    d = torch.randn(4, dtype=F64)
    step = trust_region_step(d, lambda v: a @ v, max_kl=0.01)
    torch.testing.assert_close(0.5 * step @ a @ step, torch.tensor(0.01, dtype=F64))
    assert trust_region_step(d, lambda v: -v, max_kl=0.01) is None


def test_line_search_never_accepts_a_step_beyond_max_kl() -> None:
    """Surrogate improves along the step, but the full step has 4x the allowed KL: must backtrack to <= 0.5."""
    max_kl = 0.01
    x0, full = torch.zeros(3, dtype=F64), torch.ones(3, dtype=F64)
    seen = []

    def evaluate(x: torch.Tensor) -> tuple[float, float]:
        frac = float(x[0])
        seen.append(frac)
        return frac, 4 * max_kl * frac**2

    result = backtracking_line_search(evaluate, x0, full, 0.0, max_kl, max_steps=15, backtrack_ratio=0.8)
    assert result.accepted and result.kl <= max_kl
    assert math.isclose(result.fraction, 0.8**4)  # 0.8^3 = 0.512 still violates, 0.8^4 = 0.4096 does not
    assert result.steps == 5 and len(seen) == 5
    torch.testing.assert_close(result.x, 0.8**4 * full)


def test_line_search_rejects_steps_that_do_not_improve() -> None:
    x0, full = torch.zeros(2, dtype=F64), torch.ones(2, dtype=F64)
    worse = backtracking_line_search(lambda x: (-float(x[0]), 0.0), x0, full, 0.0, 0.01, max_steps=6)
    assert not worse.accepted and worse.fraction == 0.0 and worse.steps == 6
    assert torch.equal(worse.x, x0) and worse.kl == 0.0
    nan = backtracking_line_search(lambda x: (float("nan"), float("nan")), x0, full, 0.0, 0.01, max_steps=3)
    assert not nan.accepted
    # Improves but always violates the KL: rejected as well.
    wide = backtracking_line_search(lambda x: (1.0, 1.0), x0, full, 0.0, 0.01, max_steps=4)
    assert not wide.accepted
