"""PPO's math on cases checked by hand: GAE over a trial, the clipped surrogate, masked moments."""

import math

import torch

from metarl.ppo import clipped_surrogate, masked_moments, masked_normalize, trial_gae


def test_trial_gae_by_hand():
    """gamma 0.9, lambda 0.5, V = (0.5, 1.0, 0.2), r = (1, 0, 2):
    A2 = 2 - 0.2 = 1.8; A1 = 0 + 0.9 * 0.2 - 1.0 + 0.45 * 1.8 = -0.01; A0 = 1 + 0.9 - 0.5 + 0.45 * -0.01 = 1.3955.
    With the middle step masked: A0 = 1 + 0.9 * 0.2 - 0.5 + 0.45 * 1.8 = 1.49 (it sees the next real step)."""
    rewards, values = torch.tensor([[1.0, 0.0, 2.0]]), torch.tensor([[0.5, 1.0, 0.2]])
    adv, ret = trial_gae(rewards, values, torch.ones(1, 3), 0.9, 0.5)
    torch.testing.assert_close(adv, torch.tensor([[1.3955, -0.01, 1.8]]))
    torch.testing.assert_close(ret, adv + values)
    adv, ret = trial_gae(rewards, values, torch.tensor([[1.0, 0.0, 1.0]]), 0.9, 0.5)
    torch.testing.assert_close(adv, torch.tensor([[1.49, 0.0, 1.8]]))
    torch.testing.assert_close(ret, torch.tensor([[1.99, 0.0, 2.0]]))


def test_clipped_surrogate_by_hand():
    """eps 0.2; ratios 1.5, 0.5, 1.1, 0.5 with A = 1, 1, -1, -2: min(rho A, clip(rho) A) = 1.2, 0.5, -1.1, -1.6,
    loss = -mean = 0.25; the gradient vanishes where the clipped term is the minimum (1st, 4th) and is -rho A / 4
    elsewhere."""
    new = torch.log(torch.tensor([1.5, 0.5, 1.1, 0.5])).requires_grad_(True)
    old, adv, mask = torch.zeros(4), torch.tensor([1.0, 1.0, -1.0, -2.0]), torch.ones(4)
    loss = clipped_surrogate(new, old, adv, mask, 0.2)
    assert math.isclose(float(loss.detach()), 0.25, rel_tol=1e-6)
    loss.backward()
    torch.testing.assert_close(new.grad, torch.tensor([0.0, -0.125, 0.275, 0.0]))
    masked = clipped_surrogate(new.detach(), old, adv, torch.tensor([1.0, 1.0, 0.0, 0.0]), 0.2)
    assert math.isclose(float(masked), -(1.2 + 0.5) / 2, rel_tol=1e-6)


def test_masked_moments_and_normalize_by_hand():
    """x = (1, 3, 100) with the last step masked: mean 2, variance 1; normalized (-1, 1, 0)."""
    x, mask = torch.tensor([1.0, 3.0, 100.0]), torch.tensor([1.0, 1.0, 0.0])
    mean, var = masked_moments(x, mask)
    assert math.isclose(float(mean), 2.0) and math.isclose(float(var), 1.0)
    torch.testing.assert_close(masked_normalize(x, mask), torch.tensor([-1.0, 1.0, 0.0]))
