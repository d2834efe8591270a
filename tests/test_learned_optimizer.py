"""The meta-learner LSTM (Ravi & Larochelle 2017) as an inner rule: preprocessing by hand, SGD as a special case,
its meta-gradient against finite differences, and the few-shot method learning, resuming and evaluating."""

from __future__ import annotations

import json
import math

import pytest
import torch
from test_fewshot_train import CPU, _assert_same_state, _rows, _write_config, as_double, sinusoid_config

from metarl.checkpoint import latest_checkpoint, load_checkpoint
from metarl.cli import main
from metarl.config import config_from_dict
from metarl.fewshot.methods import build_method
from metarl.fewshot.problem import build_problem
from metarl.learned_optimizer import MetaLearnerLSTM, preprocess
from metarl.learners import GradientLearner


def test_preprocessing_by_hand():
    x = torch.tensor([1.0, -0.5, 1e-6, 0.0, math.exp(-10.0)], dtype=torch.float64)
    out = preprocess(x)
    expected = [
        [0.0, 1.0],
        [math.log(0.5) / 10, -1.0],
        [-1.0, math.exp(10.0) * 1e-6],  # below e^-10: (-1, e^10 x)
        [-1.0, 0.0],
        [-1.0, 1.0],  # exactly at the threshold: log(e^-10)/10 = -1, sign 1
    ]
    torch.testing.assert_close(out, torch.tensor(expected, dtype=torch.float64), rtol=0, atol=1e-12)


def quadratic_problem():
    """A tiny least-squares learner in float64: params ``w`` [3, 2] and ``b`` [2]."""
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(6, 3, generator=gen, dtype=torch.float64), torch.randn(6, 2, generator=gen, dtype=torch.float64)
    params = {"w": torch.randn(3, 2, generator=gen, dtype=torch.float64), "b": torch.zeros(2, dtype=torch.float64)}

    def loss_fn(p, batch):
        bx, by = batch
        return ((bx @ p["w"] + p["b"] - by) ** 2).mean()

    return params, loss_fn, (x, y)


def test_gates_fixed_at_one_and_lr_make_the_rule_plain_sgd():
    params, loss_fn, batch = quadratic_problem()
    rule = MetaLearnerLSTM(hidden=5).double()
    with torch.no_grad():
        rule.w_forget.zero_()
        rule.w_input.zero_()
        rule.b_forget.fill_(50.0)  # sigmoid(50) == 1.0 in float64
        rule.b_input.fill_(math.log(0.1 / 0.9))  # sigmoid = 0.1
    learned = GradientLearner(num_steps=3, first_order=True, inner_rule="learned", rule=rule)
    sgd = GradientLearner(inner_lr=0.1, num_steps=3, first_order=True)
    a, b = learned.adapt(params, loss_fn, batch), sgd.adapt(params, loss_fn, batch)
    for name in params:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="learned step sizes"):
        learned.adapt(params, loss_fn, batch, step_sizes=[0.1])


def test_untrained_rule_is_a_small_gradient_step():
    """Initialised as in the paper (forget bias in [4, 6], input bias in [-5, -4]): every coordinate moves against its
    gradient by at most sigmoid(-4) of it, and shrinks by at most 1 - sigmoid(4)."""
    params, loss_fn, batch = quadratic_problem()
    torch.manual_seed(0)
    rule = MetaLearnerLSTM().double()
    params = {k: v.requires_grad_(True) for k, v in params.items()}
    grads = torch.autograd.grad(loss_fn(params, batch), list(params.values()))
    new, state = rule.step(params, dict(zip(params, grads, strict=True)), loss_fn(params, batch), None)
    assert state["i"].max() < 1 / (1 + math.exp(4.2)) and state["f"].min() > 1 / (1 + math.exp(-3.8))
    moved = torch.cat([(new[n] - params[n]).detach().flatten() for n in params])
    assert float(torch.cat([g.flatten() for g in grads]) @ moved) < 0


def test_meta_gradient_of_the_rule_matches_finite_differences():
    """One inner step: the inner gradient does not depend on the rule, so the rule's meta-gradient is exact."""
    params, loss_fn, batch = quadratic_problem()
    torch.manual_seed(1)
    rule = MetaLearnerLSTM(hidden=4, input_bias=(-1.0, -0.5)).double()
    learner = GradientLearner(num_steps=1, first_order=True, inner_rule="learned", rule=rule)
    gen = torch.Generator().manual_seed(2)
    qx = torch.randn(5, 3, generator=gen, dtype=torch.float64)
    qy = torch.randn(5, 2, generator=gen, dtype=torch.float64)

    def outer() -> torch.Tensor:
        return loss_fn(learner.adapt(params, loss_fn, batch), (qx, qy))

    tensors = list(rule.parameters())
    grads = torch.autograd.grad(outer(), tensors)
    directions = [torch.randn(t.shape, generator=gen, dtype=t.dtype) for t in tensors]
    analytic = sum(float((g * d).sum()) for g, d in zip(grads, directions, strict=True))
    eps, values = 1e-6, []
    for sign in (1.0, -1.0):
        with torch.no_grad():
            for t, d in zip(tensors, directions, strict=True):
                t.add_(sign * eps * d)
        values.append(float(outer().detach()))
        with torch.no_grad():
            for t, d in zip(tensors, directions, strict=True):
                t.sub_(sign * eps * d)
    numeric = (values[0] - values[1]) / (2 * eps)
    assert abs(analytic) > 1e-6 and abs(analytic - numeric) <= 1e-6 * abs(numeric)


def meta_lstm_config(**fewshot) -> dict:
    return sinusoid_config("meta_lstm", inner_steps=2, eval_inner_steps=3, outer_grad_clip=0.25, **fewshot)


def test_meta_lstm_meta_gradient_reaches_the_rule_and_the_initial_parameters():
    config = config_from_dict(meta_lstm_config())
    problem = build_problem(config)
    method = build_method(config, problem, CPU, dtype=torch.float64)
    loss, _ = method.objective(as_double(problem.train_batch(0, 0, 4)))
    loss.backward()
    rule = method.learner.rule
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in rule.parameters())
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in method.model.parameters())
    trained = {id(p) for group in method.optimizer.param_groups for p in group["params"]}
    assert all(id(p) in trained for p in rule.parameters())


def test_meta_lstm_learns_sinusoid_and_evaluates(tmp_path):
    data = meta_lstm_config(outer_lr=0.01, eval_every=1000)
    data["fewshot"]["outer_grad_clip"] = None  # the paper's 0.25 clip learns too slowly for a 120-iteration test
    data.update(iterations=120, logging={"checkpoint_every": 1000, "tensorboard": False})
    run = tmp_path / "run"
    assert main(["train", str(_write_config(tmp_path / "c.yaml", data)), "--run-dir", str(run), "--no-progress"]) == 0
    config = config_from_dict(data)
    problem = build_problem(config)
    held_out = problem.test.fixed(50, seed=7)
    torch.manual_seed(config.seed)
    before = build_method(config, problem, CPU).adaptation_curve(held_out, 2)[:, -1].mean()
    method = build_method(config, problem, CPU)
    method.load_state_dict(load_checkpoint(latest_checkpoint(run))["method"])
    curve = method.adaptation_curve(held_out, 2).mean(0)
    assert curve[-1] < 0.9 * before and curve[1] < 0.95 * curve[0], (before, curve)  # learning did, adapting helps
    assert main(["evaluate", str(run), "--tasks", "20"]) == 0
    entry = json.loads((run / "evaluation" / "summary.json").read_text())["methods"]
    (only,) = entry.values()
    assert only["inner_lr"] is None and len(only["steps"]) == 4


def test_meta_lstm_resume_continues_exactly(tmp_path):
    data = meta_lstm_config(eval_every=2)
    data.update(iterations=6, logging={"checkpoint_every": 3, "tensorboard": False})
    config_file = _write_config(tmp_path / "config.yaml", data)
    straight, interrupted = tmp_path / "straight", tmp_path / "interrupted"
    assert main(["train", str(config_file), "--run-dir", str(straight), "--no-progress"]) == 0
    assert main(["train", str(config_file), "--run-dir", str(interrupted), "--no-progress"]) == 0
    (interrupted / "checkpoints" / "iter_000006.pt").unlink()
    assert main(["train", "--resume", str(interrupted), "--no-progress"]) == 0
    _assert_same_state(load_checkpoint(latest_checkpoint(straight)), load_checkpoint(latest_checkpoint(interrupted)))
    assert _rows(straight) == _rows(interrupted)
    assert "rule" in load_checkpoint(latest_checkpoint(straight))["method"]["learner"]
