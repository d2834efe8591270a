"""MAML-TRPO on hand-built episodes: meta-gradient vs finite differences, HVP through the adaptation, the update."""

from __future__ import annotations

import math

import pytest
import torch
from torch.autograd.functional import hessian

from metarl.episodes import EpisodeBatch
from metarl.maml_trpo import MAMLTRPO, MAMLTRPOConfig
from metarl.policies import CategoricalMLPPolicy, GaussianMLPPolicy
from metarl.rl_objectives import log_prob, surrogate_and_kl
from metarl.trpo import flat_grad, hvp_from_grad, unflatten

F64 = torch.float64
N, E, T, OBS = 3, 4, 6, 2


def episodes(seed: int, discrete: bool = False, act: int = 2) -> EpisodeBatch:
    """Synthetic episodes ``[N, E, T]`` with early termination and garbage on padded steps."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(2, T + 1, (N, E), generator=g)
    lengths[:, 0] = T
    mask = (torch.arange(T) < lengths[..., None]).to(F64)
    actions = torch.randint(0, act, (N, E, T), generator=g) if discrete else torch.randn(N, E, T, act, generator=g)
    return EpisodeBatch(
        observations=torch.randn(N, E, T, OBS, generator=g, dtype=F64),
        actions=actions,
        rewards=torch.where(mask > 0, torch.randn(N, E, T, generator=g, dtype=F64), torch.full_like(mask, 1e3)),
        log_probs=torch.zeros(N, E, T, dtype=F64),
        mask=mask,
    )


def make(discrete: bool = False, **config) -> MAMLTRPO:
    torch.manual_seed(0)
    if discrete:
        policy = CategoricalMLPPolicy(OBS, 3, (4,), activation="tanh").double()
    else:
        policy = GaussianMLPPolicy(OBS, 2, (4,), activation="tanh").double()
    return MAMLTRPO(policy, MAMLTRPOConfig(**config))


def problem(algo: MAMLTRPO, discrete: bool = False) -> tuple:
    act = 3 if discrete else 2
    return algo.prepare(episodes(1, discrete, act)), algo.prepare(episodes(2, discrete, act))


def gradient_and_fd(algo: MAMLTRPO, discrete: bool = False, eps: float = 1e-6) -> tuple[torch.Tensor, torch.Tensor]:
    """Autograd meta-gradient of the surrogate at theta0, and its central finite-difference estimate."""
    s, q = problem(algo, discrete)
    theta0 = algo.parameters_vector()
    theta = theta0.clone().requires_grad_(True)
    surrogate, _, old = algo.objective(theta, s, q)
    grad = flat_grad(surrogate, theta)
    fd = torch.zeros_like(theta0)
    for i in range(theta0.numel()):
        e = torch.zeros_like(theta0)
        e[i] = eps
        plus = algo.objective(theta0 + e, s, q, old=old, create_graph=False)[0]
        minus = algo.objective(theta0 - e, s, q, old=old, create_graph=False)[0]
        fd[i] = (plus - minus) / (2 * eps)
    return grad, fd


@pytest.mark.parametrize(
    "config",
    [
        dict(num_steps=1),
        dict(num_steps=2, fast_lr=0.3),
        dict(num_steps=1, batching="vmap"),
    ],
    ids=["one-step", "two-steps", "vmap"],
)
def test_meta_gradient_matches_central_finite_differences(config: dict) -> None:
    grad, fd = gradient_and_fd(make(**config))
    assert grad.abs().max() > 1e-3
    torch.testing.assert_close(grad, fd, atol=1e-7, rtol=1e-5)


def test_meta_gradient_categorical_matches_finite_differences() -> None:
    grad, fd = gradient_and_fd(make(discrete=True, fast_lr=0.5), discrete=True)
    torch.testing.assert_close(grad, fd, atol=1e-7, rtol=1e-5)


def test_first_order_differs_from_second_order_and_from_finite_differences() -> None:
    second, fd = gradient_and_fd(make(fast_lr=0.5))
    first, _ = gradient_and_fd(make(fast_lr=0.5, first_order=True))
    assert (first - second).abs().max() > 1e-4
    assert (first - fd).abs().max() > 1e-4
    # With no inner step size the Hessian term is multiplied by 0: both orders agree.
    a, _ = gradient_and_fd(make(fast_lr=0.0))
    b, _ = gradient_and_fd(make(fast_lr=0.0, first_order=True))
    torch.testing.assert_close(a, b)


def test_lvc_adapts_like_reinforce_and_adds_the_score_outer_product_to_the_meta_gradient() -> None:
    """LVC: same inner gradient at the sampling params (ratio = 1); its autodiff Hessian adds
    ``mean(grad log pi grad log pi^T A)``, so the one-step meta-gradients differ by ``lr * mean_i M_i u_i``
    with ``u_i`` the outer gradient at the adapted params. (LVC is deliberately *not* the derivative of its own
    sample-based forward pass, so finite differences only see REINFORCE's: hence this identity instead.)"""
    lr = 0.5
    rein, lvc = make(fast_lr=lr, inner_loss="reinforce"), make(fast_lr=lr, inner_loss="lvc")
    support = episodes(1)
    for a, b in zip(rein.adapt(support), lvc.adapt(support), strict=True):
        for k in a:
            torch.testing.assert_close(a[k], b[k])
    g_rein, fd = gradient_and_fd(rein)
    torch.testing.assert_close(g_rein, fd, atol=1e-7, rtol=1e-5)
    g_lvc, _ = gradient_and_fd(lvc)

    s, q = problem(rein)
    theta0 = rein.parameters_vector()
    names = [n for n, _ in rein.policy.named_parameters()]
    adapted = rein.adapt(support)
    expected = torch.zeros_like(theta0)
    for i in range(N):
        si, qi = {k: v[i] for k, v in s.items()}, {k: v[i] for k, v in q.items()}
        phi = torch.cat([adapted[i][n].flatten() for n in names]).requires_grad_(True)
        params_i = dict(zip(names, unflatten(phi, [adapted[0][n] for n in names]), strict=True))
        u = flat_grad(surrogate_and_kl(rein.policy, params_i, qi)[0], phi)

        def logp(x: torch.Tensor, si: dict = si) -> torch.Tensor:
            params = dict(zip(names, unflatten(x, [adapted[0][n] for n in names]), strict=True))
            return log_prob(rein.policy, params, si).flatten()

        scores = torch.autograd.functional.jacobian(logp, theta0)  # [E*T, P]
        weights = (si["advantages"] * si["mask"]).flatten() / si["mask"].sum()
        outer = (scores * weights[:, None]).T @ scores  # mean over valid steps of A * score score^T
        expected += lr * outer @ u / N
    assert expected.abs().max() > 1e-4
    torch.testing.assert_close(g_lvc - g_rein, expected, atol=1e-9, rtol=1e-6)


def test_kl_hvp_through_the_adaptation_matches_explicit_hessian() -> None:
    algo = make(fast_lr=0.5)
    s, q = problem(algo)
    theta0 = algo.parameters_vector()
    theta = theta0.clone().requires_grad_(True)
    _, kl, old = algo.objective(theta, s, q)
    hvp = hvp_from_grad(flat_grad(kl, theta, create_graph=True), theta, damping=1e-3)
    h = hessian(lambda x: algo.objective(x, s, q, old=old)[1], theta0)
    for seed in range(2):
        v = torch.randn(theta0.numel(), generator=torch.Generator().manual_seed(seed), dtype=F64)
        torch.testing.assert_close(hvp(v), h @ v + 1e-3 * v, atol=1e-9, rtol=1e-7)
    # The adaptation matters: the Fisher at the pre-update params is a different matrix.
    no_adapt = make(fast_lr=0.0)
    h0 = hessian(lambda x: no_adapt.objective(x, s, q, old=no_adapt.objective(theta0, s, q)[2])[1], theta0)
    assert (h - h0).abs().max() > 1e-4


@pytest.mark.parametrize("discrete", [False, True], ids=["gaussian", "categorical"])
@pytest.mark.parametrize("max_kl", [1e-2, 1e-4])
def test_meta_update_keeps_kl_within_bound_and_improves(discrete: bool, max_kl: float) -> None:
    algo = make(discrete=discrete, max_kl=max_kl)
    act = 3 if discrete else 2
    support, query = episodes(1, discrete, act), episodes(2, discrete, act)
    s, q = algo.prepare(support), algo.prepare(query)
    theta0 = algo.parameters_vector()
    _, _, old = algo.objective(theta0, s, q, create_graph=False)
    metrics = algo.meta_update(support, query)
    assert metrics["accepted"] == 1.0
    theta1 = algo.parameters_vector()
    assert (theta1 - theta0).abs().max() > 0
    # Independently re-evaluate the new policy against the old adapted policies.
    surrogate, kl, _ = algo.objective(theta1, s, q, old=old, create_graph=False)
    assert float(kl) <= max_kl
    assert float(surrogate) > metrics["surrogate_before"]
    assert metrics["surrogate_improvement"] > 0 and metrics["kl"] <= max_kl
    torch.testing.assert_close(float(surrogate), metrics["surrogate_after"])
    assert 1 <= metrics["line_search_steps"] <= 15 and metrics["grad_norm"] > 0


def test_meta_update_rejected_when_nothing_improves_leaves_params_alone() -> None:
    algo = make(ls_max_steps=1, max_kl=1e-2)
    support, query = episodes(1), episodes(2)
    query.rewards = torch.zeros_like(query.rewards)  # no advantage signal: the surrogate cannot improve
    before = algo.parameters_vector()
    metrics = algo.meta_update(support, query)
    assert metrics["accepted"] == 0.0 and metrics["kl"] == 0.0 and metrics["surrogate_improvement"] == 0.0
    assert torch.equal(algo.parameters_vector(), before)


def test_adapt_returns_detached_per_task_params_and_log_prob_gap_is_reported() -> None:
    algo = make()
    support = episodes(1)
    adapted = algo.adapt(support)
    assert len(adapted) == N
    base = dict(algo.policy.named_parameters())
    for a in adapted:
        assert set(a) == set(base) and all(not v.requires_grad for v in a.values())
        assert (a["mean.0.weight"] - base["mean.0.weight"]).abs().max() > 0
    # A query batch whose stored log-probs come from the adapted policies gives a zero gap.
    query = episodes(2)
    q = algo.prepare(query)
    query.log_probs = torch.stack(
        [log_prob(algo.policy, adapted[i], {k: v[i] for k, v in q.items()}) for i in range(N)]
    ).detach()
    assert algo.meta_update(support, query)["log_prob_gap"] < 1e-10
    # Continuing from given per-task params (a second gradient step at evaluation).
    again = algo.adapt(support, params=adapted)
    assert (again[0]["mean.0.weight"] - adapted[0]["mean.0.weight"]).abs().max() > 0


def test_meta_sgd_step_sizes_take_the_trpo_step_and_checkpoint() -> None:
    algo = make(meta_sgd=True, fast_lr=0.3)
    lrs_before = [v.detach().clone() for v in algo.learner.meta_parameters()]
    metrics = algo.meta_update(episodes(1), episodes(2))
    assert metrics["accepted"] == 1.0
    moved = [(a - b).abs().max() for a, b in zip(algo.learner.meta_parameters(), lrs_before, strict=True)]
    assert max(moved) > 0
    clone = make(meta_sgd=True, fast_lr=0.1)
    clone.load_state_dict(algo.state_dict())
    torch.testing.assert_close(clone.parameters_vector(), algo.parameters_vector())


def test_config_rejects_bad_values_with_a_clear_message() -> None:
    with pytest.raises(ValueError, match="unknown inner_loss 'dice'"):
        MAMLTRPOConfig(inner_loss="dice")
    with pytest.raises(ValueError, match="max_kl > 0"):
        MAMLTRPOConfig(max_kl=0.0)


def test_action_scale_scales_the_whole_distribution() -> None:
    """A policy with action_scale c is c times the unscaled one with the same params: mean, std, and log-probs of
    correspondingly scaled actions (up to the constant Jacobian term), so its gradients see the same episodes."""
    from metarl.policies import GaussianMLPPolicy

    torch.manual_seed(0)
    plain = GaussianMLPPolicy(3, 2, (8,), init_std=0.7)
    scaled = GaussianMLPPolicy(3, 2, (8,), init_std=0.7, action_scale=0.1)
    scaled.load_state_dict(plain.state_dict())
    obs, noise = torch.randn(5, 3), torch.randn(5, 2)
    (mean, log_std), (smean, slog_std) = plain(obs), scaled(obs)
    torch.testing.assert_close(smean, 0.1 * mean)
    torch.testing.assert_close(slog_std.exp(), 0.1 * log_std.exp())
    actions = plain.sample((mean, log_std), noise)
    torch.testing.assert_close(scaled.sample((smean, slog_std), noise), 0.1 * actions)
    shift = 2 * math.log(0.1)
    torch.testing.assert_close(
        scaled.log_prob((smean, slog_std), 0.1 * actions), plain.log_prob((mean, log_std), actions) - shift
    )
    with pytest.raises(ValueError, match="action_scale"):
        GaussianMLPPolicy(3, 2, action_scale=0.0)
