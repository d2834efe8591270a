"""Reptile's inner Adam state carried across tasks and iterations (as supervised-reptile does), and its checks."""

from __future__ import annotations

import pytest
import torch
from test_fewshot_train import CPU, _write_config, sinusoid_config

from metarl.cli import main
from metarl.config import config_from_dict
from metarl.fewshot.methods import build_method
from metarl.fewshot.problem import build_problem


def _carried_reptile(**fewshot):
    settings = {"inner_steps": 3, "inner_batch_size": 4, "train_shots": 12, "inner_rule": "adam", **fewshot}
    config = config_from_dict(sinusoid_config("reptile", **settings))
    problem = build_problem(config)
    torch.manual_seed(0)
    return config, problem, build_method(config, problem, CPU)


def test_reptile_carries_the_inner_adam_state_from_task_to_task():
    """Each task's inner loop starts from the Adam state the previous task left (also across iterations), while the
    parameters restart from the meta-parameters: the same as adapting task by task by hand with that state."""
    config, problem, method = _carried_reptile(inner_adam_state="carried")
    batches = [problem.train_batch(config.seed, it, config.fewshot.meta_batch_size) for it in range(2)]
    params = {n: p.detach().clone() for n, p in method.params().items()}
    state, final = None, []
    for iteration, batch in enumerate(batches):
        adapted_list = []
        for i in range(len(batch)):
            x, y = batch.support(i)
            steps = [(x[idx], y[idx]) for idx in method._minibatches(x.shape[0], iteration, i)]
            adapted, state = method.learner.adapt_steps(params, method.inner_loss, steps, state=state)
            adapted_list.append(adapted)
        lr = method.current_lr(iteration)
        params = {n: p + lr * (torch.stack([a[n] for a in adapted_list]).mean(0) - p) for n, p in params.items()}
        method.train_step(batch, iteration)
        final.append(state)
    assert method.inner_state["t"] == 2 * config.fewshot.meta_batch_size * 3
    for name, value in method.params().items():
        torch.testing.assert_close(value.detach(), params[name], rtol=1e-5, atol=1e-6)
    for key in ("m", "v"):
        for name, value in method.inner_state[key].items():
            torch.testing.assert_close(value, final[-1][key][name])
    # The default restarts Adam for every task: no state is kept, and the same batches give other parameters.
    _, _, fresh = _carried_reptile()
    for iteration, batch in enumerate(batches):
        fresh.train_step(batch, iteration)
    assert fresh.inner_state is None
    assert not torch.allclose(fresh.params()["body.0.weight"], method.params()["body.0.weight"])


def test_reptile_evaluation_starts_every_task_from_the_carried_state():
    config, problem, method = _carried_reptile(inner_adam_state="carried")
    for iteration in range(3):
        method.train_step(problem.train_batch(config.seed, iteration, config.fewshot.meta_batch_size), iteration)
    held_out = problem.test.fixed(4, seed=3)
    curve = method.adaptation_curve(held_out, 2)
    params = {n: p.detach() for n, p in method.params().items()}
    for i in range(len(held_out)):
        adapted, state = params, method.inner_state
        for step in range(1, 3):
            adapted, state = method.learner.adapt_steps(adapted, method.inner_loss, [held_out.support(i)], state=state)
            qx, qy = held_out.query(i)
            expected = method.score(torch.func.functional_call(method.model, adapted, (qx,)), qy)[1]
            assert float(curve[i, step]) == pytest.approx(float(expected), rel=1e-5)
    saved = method.inner_state
    method.inner_state = None  # the same network adapted with a fresh Adam per task scores differently
    assert not (method.adaptation_curve(held_out, 2)[:, 1:] == curve[:, 1:]).all()
    assert method.inner_state is None and saved["t"] == 3 * config.fewshot.meta_batch_size * 3


@pytest.mark.parametrize(
    ("algorithm", "fewshot"),
    [("maml", {"inner_rule": "adam"}), ("reptile", {"inner_rule": "sgd"}), ("fomaml", {"inner_rule": "adam"})],
)
def test_carried_adam_state_is_only_for_reptile_with_adam(algorithm, fewshot, tmp_path, capsys):
    data = sinusoid_config(algorithm, inner_adam_state="carried", **fewshot)
    config_file = _write_config(tmp_path / "bad.yaml", data)
    code = main(["train", str(config_file), "--run-dir", str(tmp_path / "run"), "--no-progress"])
    assert code == 2 and not (tmp_path / "run").exists()
    assert "fewshot.inner_adam_state" in capsys.readouterr().err
