"""The shared gradient-based meta-learner: MAML / FOMAML / Meta-SGD / ANIL / Reptile on a supervised toy problem."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.func import functional_call

from metarl.learners import GradientLearner, map_tasks, reptile_update


def tiny_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(2, 4), nn.Tanh(), nn.Linear(4, 2)).double()


NET = tiny_net()


def mse(params: dict, batch: tuple) -> torch.Tensor:
    x, y = batch
    return (functional_call(NET, params, (x,)) - y).pow(2).mean()


def tasks(n: int = 3, k: int = 5, seed: int = 1) -> tuple:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, k, 2, generator=g, dtype=torch.float64)
    y = torch.randn(n, k, 2, generator=g, dtype=torch.float64)
    return x, y


def params_of(net: nn.Module) -> dict:
    return {k: v.detach().clone().requires_grad_(True) for k, v in net.named_parameters()}


def central_fd(fn, params: dict, eps: float = 1e-6) -> dict:
    """Central finite differences of a scalar function of a param dict, entry by entry."""
    out = {}
    with torch.no_grad():
        for name, p in params.items():
            g = torch.zeros_like(p)
            for i in range(p.numel()):
                old = p.view(-1)[i].item()
                p.view(-1)[i] = old + eps
                plus = fn(params).item()
                p.view(-1)[i] = old - eps
                minus = fn(params).item()
                p.view(-1)[i] = old
                g.view(-1)[i] = (plus - minus) / (2 * eps)
            out[name] = g
    return out


@pytest.mark.parametrize("vectorize", [False, True])
@pytest.mark.parametrize("num_steps", [1, 2])
def test_meta_gradient_matches_central_finite_differences(num_steps: int, vectorize: bool) -> None:
    learner = GradientLearner(inner_lr=0.3, num_steps=num_steps, vectorize=vectorize)
    params, support, query = params_of(NET), tasks(seed=1), tasks(seed=2)

    def objective(p: dict) -> torch.Tensor:
        return learner.meta_loss(p, mse, mse, support, query)

    grads = torch.autograd.grad(objective(params), list(params.values()))
    numeric = central_fd(lambda p: objective(p), params)
    for (name, fd), g in zip(numeric.items(), grads, strict=True):
        torch.testing.assert_close(g, fd, atol=1e-7, rtol=1e-6, msg=name)


def test_first_order_differs_from_second_order_when_hessian_is_nonzero() -> None:
    params, support, query = params_of(NET), tasks(seed=1), tasks(seed=2)
    grads = {}
    for first_order in (False, True):
        learner = GradientLearner(inner_lr=0.3, num_steps=1, first_order=first_order)
        loss = learner.meta_loss(params, mse, mse, support, query)
        grads[first_order] = torch.cat([g.flatten() for g in torch.autograd.grad(loss, list(params.values()))])
    assert (grads[True] - grads[False]).abs().max() > 1e-4


def test_first_order_equals_second_order_when_inner_loss_is_linear() -> None:
    """A loss linear in params has zero Hessian, so the second-order term of MAML vanishes."""
    g = torch.Generator().manual_seed(3)
    coef = {k: torch.randn(v.shape, generator=g, dtype=torch.float64) for k, v in NET.named_parameters()}

    def linear(p: dict, batch: tuple) -> torch.Tensor:
        return sum((p[k] * coef[k]).sum() for k in p) * batch[0].mean()

    params, support, query = params_of(NET), tasks(seed=1), tasks(seed=2)
    grads = {}
    for first_order in (False, True):
        learner = GradientLearner(inner_lr=0.3, num_steps=2, first_order=first_order)
        loss = learner.meta_loss(params, linear, mse, support, query)
        grads[first_order] = torch.autograd.grad(loss, list(params.values()))
    for a, b in zip(grads[True], grads[False], strict=True):
        torch.testing.assert_close(a, b)


def test_first_order_keeps_identity_dependence_and_zero_lr_is_identity() -> None:
    params, (x, y) = params_of(NET), tasks(n=1)
    adapted = GradientLearner(inner_lr=0.0, num_steps=3).adapt(params, mse, (x[0], y[0]))
    for k in params:
        torch.testing.assert_close(adapted[k], params[k])
    adapted = GradientLearner(inner_lr=0.5, first_order=True).adapt(params, mse, (x[0], y[0]))
    # d(sum adapted)/d params is exactly 1 everywhere: the detached gradient adds nothing.
    total = sum(v.sum() for v in adapted.values())
    for g in torch.autograd.grad(total, list(params.values())):
        torch.testing.assert_close(g, torch.ones_like(g))


def test_step_sizes_schedule_and_detached_params() -> None:
    x, y = tasks(n=1)
    batch = (x[0], y[0])
    params = {k: v.detach() for k, v in NET.named_parameters()}  # no requires_grad, as at evaluation
    learner = GradientLearner(inner_lr=0.1, num_steps=1)
    with torch.no_grad():
        two = learner.adapt(params, mse, batch, step_sizes=[0.2, 0.05])
    manual = dict(params)
    for lr in (0.2, 0.05):
        leaf = {k: v.detach().requires_grad_(True) for k, v in manual.items()}
        grads = torch.autograd.grad(mse(leaf, batch), list(leaf.values()))
        manual = {k: leaf[k].detach() - lr * g for k, g in zip(leaf, grads, strict=True)}
    for k in params:
        torch.testing.assert_close(two[k], manual[k])


def test_meta_sgd_step_sizes_receive_gradients_and_match_maml_at_init() -> None:
    params, support, query = params_of(NET), tasks(seed=1), tasks(seed=2)
    meta_sgd = GradientLearner.meta_sgd(params, inner_lr=0.3, num_steps=1)
    assert set(meta_sgd.inner_lrs) == set(params)
    maml = GradientLearner(inner_lr=0.3, num_steps=1)
    loss = meta_sgd.meta_loss(params, mse, mse, support, query)
    torch.testing.assert_close(loss, maml.meta_loss(params, mse, mse, support, query))
    grads = torch.autograd.grad(loss, meta_sgd.meta_parameters())
    assert all(g.shape == p.shape for g, p in zip(grads, params.values(), strict=True))
    assert all(g.abs().sum() > 0 for g in grads)
    with pytest.raises(ValueError, match="step_sizes"):
        meta_sgd.adapt(params, mse, (support[0][0], support[1][0]), step_sizes=[0.1])


def test_meta_sgd_state_dict_round_trip() -> None:
    params = params_of(NET)
    a = GradientLearner.meta_sgd(params, inner_lr=0.3)
    with torch.no_grad():
        a.inner_lrs["0.weight"].fill_(0.7)
    b = GradientLearner.meta_sgd(params, inner_lr=0.1)
    b.load_state_dict(a.state_dict())
    torch.testing.assert_close(b.inner_lrs["0.weight"], torch.full_like(params["0.weight"], 0.7))
    assert b.inner_lr == 0.3


@pytest.mark.parametrize("vectorize", [False, True])
def test_anil_adapts_only_the_head(vectorize: bool) -> None:
    params, support = params_of(NET), tasks(seed=1)
    learner = GradientLearner(inner_lr=0.3, num_steps=2, adapt_keys=("2",), vectorize=vectorize)
    assert learner.adapted_names(params) == ["2.weight", "2.bias"]
    for adapted in learner.adapt_many(params, mse, support):
        torch.testing.assert_close(adapted["0.weight"], params["0.weight"], rtol=0, atol=0)
        torch.testing.assert_close(adapted["0.bias"], params["0.bias"], rtol=0, atol=0)
        assert (adapted["2.weight"] - params["2.weight"]).abs().max() > 1e-6
    with pytest.raises(ValueError, match="match no parameter"):
        GradientLearner(adapt_keys=("head",)).adapted_names(params)


def test_adapt_many_loop_equals_vmap() -> None:
    params, support = params_of(NET), tasks(n=4, seed=1)
    learner = GradientLearner(inner_lr=0.3, num_steps=2)
    loop = learner.adapt_many(params, mse, support, vectorize=False)
    vmap = learner.adapt_many(params, mse, support, vectorize=True)
    for a, b in zip(loop, vmap, strict=True):
        for k in params:
            torch.testing.assert_close(a[k], b[k])
    stacked = map_tasks(lambda s: mse(params, s), support)
    assert stacked.shape == (4,)


def test_reptile_rule_by_hand() -> None:
    params = {"w": torch.tensor([0.0, 0.0])}
    adapted = [{"w": torch.tensor([1.0, 2.0])}, {"w": torch.tensor([3.0, 4.0])}]
    torch.testing.assert_close(reptile_update(params, adapted, outer_lr=0.5)["w"], torch.tensor([1.0, 1.5]))


def test_reptile_reuses_first_order_adapt_with_k_sgd_steps() -> None:
    """On 0.5 ||w - c||^2, k SGD steps give w_k = c + (1 - lr)^k (w0 - c) exactly."""

    def quadratic(p: dict, c: torch.Tensor) -> torch.Tensor:
        return 0.5 * (p["w"] - c).pow(2).sum()

    w0 = {"w": torch.tensor([1.0, -1.0], requires_grad=True)}
    centres = torch.tensor([[3.0, 1.0], [-1.0, 5.0]])
    learner = GradientLearner(inner_lr=0.25, num_steps=3, first_order=True)
    adapted = learner.adapt_many(w0, quadratic, centres)
    expected = centres + 0.75**3 * (w0["w"].detach() - centres)
    for a, e in zip(adapted, expected, strict=True):
        torch.testing.assert_close(a["w"].detach(), e)
    new = reptile_update(w0, adapted, outer_lr=1.0)
    torch.testing.assert_close(new["w"], expected.mean(0))


def test_adam_inner_rule_matches_torch_adam_on_minibatches() -> None:
    """k Adam steps (beta1 = 0, Reptile's inner loop) on a different mini-batch each equal torch.optim.Adam's."""
    x, y = tasks(n=1, k=12)
    minibatches = [(x[0, i : i + 4], y[0, i : i + 4]) for i in (0, 4, 8, 2)]
    learner = GradientLearner(inner_lr=0.05, first_order=True, inner_rule="adam", adam_betas=(0.0, 0.999))
    adapted, state = learner.adapt_steps(params_of(NET), mse, minibatches)

    reference = params_of(NET)
    optimizer = torch.optim.Adam(reference.values(), lr=0.05, betas=(0.0, 0.999), eps=1e-8)
    for batch in minibatches:
        optimizer.zero_grad()
        mse(reference, batch).backward()
        optimizer.step()
    for name, value in reference.items():
        torch.testing.assert_close(adapted[name].detach(), value.detach(), rtol=1e-12, atol=1e-12)
    assert state["t"] == 4
    # Adam's steps are not SGD's: the rule is really in use.
    sgd = GradientLearner(inner_lr=0.05, first_order=True).adapt_steps(params_of(NET), mse, minibatches)[0]
    assert not torch.allclose(sgd["0.weight"], adapted["0.weight"])


def test_adam_state_carries_over_between_calls() -> None:
    """Scoring after every step (evaluation) continues one Adam trajectory: 1 + 1 + 1 steps == 3 steps."""
    x, y = tasks(n=1)
    batch = (x[0], y[0])
    learner = GradientLearner(inner_lr=0.1, num_steps=3, first_order=True, inner_rule="adam")
    at_once = learner.adapt(params_of(NET), mse, batch)
    stepwise, state = params_of(NET), None
    for _ in range(3):
        stepwise, state = learner.adapt_steps(stepwise, mse, [batch], state=state, create_graph=False)
    for name in at_once:
        torch.testing.assert_close(stepwise[name], at_once[name].detach(), rtol=1e-12, atol=1e-12)
    restarted = learner.adapt(learner.adapt(params_of(NET), mse, batch, num_steps=2), mse, batch, num_steps=1)
    assert not torch.allclose(restarted["0.weight"], at_once["0.weight"])  # a fresh state is a different step


def test_adam_inner_rule_is_validated() -> None:
    with pytest.raises(ValueError, match="inner_rule"):
        GradientLearner(inner_rule="rmsprop")
    with pytest.raises(ValueError, match="Meta-SGD"):
        GradientLearner.meta_sgd(params_of(NET), 0.1, inner_rule="adam")
    learner = GradientLearner(inner_rule="adam", adam_betas=(0.5, 0.9))
    copy = GradientLearner()
    copy.load_state_dict(learner.state_dict())
    assert (copy.inner_rule, copy.adam_betas) == ("adam", (0.5, 0.9))
