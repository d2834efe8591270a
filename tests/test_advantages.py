"""Returns, GAE, normalisation and the linear feature baseline on padded [N, E, T] tensors."""

from __future__ import annotations

import torch

from metarl.advantages import (
    LinearFeatureBaseline,
    compute_advantages,
    discounted_returns,
    gae,
    masked_mean,
    normalize_advantages,
)

F64 = torch.float64


def padded(n: int = 3, e: int = 4, t: int = 12, obs_dim: int = 2, seed: int = 0) -> tuple:
    """Random obs/rewards, episodes ending early; padded steps hold garbage that must not matter."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(2, t + 1, (n, e), generator=g)
    lengths[0, 0] = t  # at least one full-length episode
    mask = (torch.arange(t) < lengths[..., None]).to(F64)
    obs = torch.randn(n, e, t, obs_dim, generator=g, dtype=F64)
    rewards = torch.randn(n, e, t, generator=g, dtype=F64)
    return obs, rewards, mask


def with_garbage(x: torch.Tensor, mask: torch.Tensor, value: float = 1e3) -> torch.Tensor:
    m = mask if x.dim() == mask.dim() else mask.unsqueeze(-1)
    return torch.where(m > 0, x, torch.full_like(x, value))


def reference_returns(rewards: torch.Tensor, mask: torch.Tensor, gamma: float) -> torch.Tensor:
    out = torch.zeros_like(rewards)
    for idx in torch.cartesian_prod(*(torch.arange(s) for s in rewards.shape[:-1])):
        i, j = idx.tolist()
        length = int(mask[i, j].sum())
        for t in range(length):
            out[i, j, t] = sum(gamma ** (k - t) * rewards[i, j, k] for k in range(t, length))
    return out


def test_discounted_returns_by_hand_and_padded_steps_ignored() -> None:
    _, rewards, mask = padded()
    expected = reference_returns(rewards, mask, 0.9)
    torch.testing.assert_close(discounted_returns(rewards, mask, 0.9), expected)
    torch.testing.assert_close(discounted_returns(with_garbage(rewards, mask), mask, 0.9), expected)


def test_gae_lambda_one_is_returns_minus_values_and_lambda_zero_is_td_error() -> None:
    _, rewards, mask = padded(seed=1)
    values = with_garbage(torch.randn_like(rewards), mask)
    returns = discounted_returns(rewards, mask, 0.95)
    torch.testing.assert_close(gae(rewards, values, mask, 0.95, 1.0), (returns - values) * mask)
    next_values = torch.cat([values[..., 1:] * mask[..., 1:], torch.zeros_like(values[..., :1])], -1)
    td = (rewards + 0.95 * next_values - values) * mask
    torch.testing.assert_close(gae(rewards, values, mask, 0.95, 0.0), td)
    assert (gae(with_garbage(rewards, mask), values, mask, 0.95, 0.7) * (1 - mask)).abs().max() == 0


def test_normalize_is_per_task_over_valid_steps() -> None:
    _, rewards, mask = padded(seed=2)
    adv = normalize_advantages(with_garbage(rewards * 5 + 3, mask), mask)
    for i in range(adv.shape[0]):
        valid = adv[i][mask[i] > 0]
        torch.testing.assert_close(valid.mean(), torch.zeros((), dtype=F64), atol=1e-10, rtol=0)
        torch.testing.assert_close(valid.std(unbiased=False), torch.ones((), dtype=F64), atol=1e-6, rtol=0)
    assert (adv * (1 - mask)).abs().max() == 0
    torch.testing.assert_close(masked_mean(adv, mask), torch.zeros((), dtype=F64), atol=1e-10, rtol=0)


def test_linear_baseline_recovers_a_linear_value_function_per_task() -> None:
    obs, _, mask = padded(n=3, e=6, t=20, seed=3)
    feats = LinearFeatureBaseline().features(obs, mask)
    assert feats.shape == (3, 6, 20, 2 * 2 + 4)
    g = torch.Generator().manual_seed(4)
    w_true = torch.randn(3, feats.shape[-1], generator=g, dtype=F64)  # a different value function per task
    targets = torch.einsum("netf,nf->net", feats, w_true)
    # rllab's default ridge (1e-5) shrinks the barely-excited t^3 coefficient but predicts the values well ...
    baseline = LinearFeatureBaseline()
    baseline.fit(with_garbage(obs, mask), with_garbage(targets, mask), mask)
    torch.testing.assert_close(baseline.predict(obs, mask), targets * mask, atol=1e-3, rtol=0)
    assert (baseline.predict(with_garbage(obs, mask), mask) * (1 - mask)).abs().max() == 0
    # ... and with a negligible regulariser the exact coefficients come back.
    exact = LinearFeatureBaseline(reg_coeff=1e-10)
    exact.fit(with_garbage(obs, mask), with_garbage(targets, mask), mask)
    torch.testing.assert_close(exact.coeffs, w_true, atol=1e-3, rtol=1e-3)
    torch.testing.assert_close(exact.predict(obs, mask), targets * mask, atol=1e-6, rtol=1e-6)


def test_linear_baseline_features_use_rllab_time_scaling_and_clipping() -> None:
    obs = torch.full((1, 1, 3, 1), 50.0, dtype=F64)
    feats = LinearFeatureBaseline().features(obs, torch.ones(1, 1, 3, dtype=F64))
    torch.testing.assert_close(feats[0, 0, 2], torch.tensor([10.0, 100.0, 0.02, 0.0004, 0.000008, 1.0], dtype=F64))


def test_linear_baseline_survives_singular_features() -> None:
    """Zero observations make X^T X singular; with no regulariser the pseudo-inverse fallback still fits."""
    obs, rewards, mask = padded(seed=5)
    baseline = LinearFeatureBaseline(reg_coeff=0.0)
    baseline.fit(torch.zeros_like(obs), rewards, mask)
    values = baseline.predict(torch.zeros_like(obs), mask)
    assert torch.isfinite(values).all()
    assert masked_mean((values - rewards).pow(2), mask) < masked_mean(rewards.pow(2), mask)


def test_compute_advantages_ignores_padded_steps_and_float32_works() -> None:
    obs, rewards, mask = padded(seed=6)
    clean = compute_advantages(obs, rewards, mask, gamma=0.99, gae_lambda=1.0, normalize=True)
    dirty = compute_advantages(with_garbage(obs, mask), with_garbage(rewards, mask), mask, 0.99, 1.0, True)
    torch.testing.assert_close(clean, dirty)
    # lambda = 1, no normalisation: exactly discounted returns minus the fitted baseline's values.
    baseline = LinearFeatureBaseline()
    raw = compute_advantages(obs, rewards, mask, 0.99, 1.0, normalize=False, baseline=baseline)
    returns = discounted_returns(rewards, mask, 0.99)
    torch.testing.assert_close(raw, returns - baseline.predict(obs, mask))
    assert masked_mean((raw - returns).pow(2), mask) > 1e-3  # the baseline is not zero
    f32 = compute_advantages(obs.float(), rewards.float(), mask.float())
    assert f32.dtype == torch.float32
    torch.testing.assert_close(f32.double(), clean, atol=1e-4, rtol=1e-4)
