"""Reptile as a meta-RL learner: the outer step by hand, fresh episodes per inner step, resume, budget, evaluation."""

import json

import numpy as np
import pytest
import torch
from cli_runs import interrupted_and_straight, sets, train
from test_resume import rows, same
from torch.func import functional_call

from metarl.algorithms import build_algorithm
from metarl.algorithms.reptile import outer_lr_at, reptile_outer_step
from metarl.checkpoint import latest_checkpoint, load_checkpoint
from metarl.cli import main
from metarl.config import ConfigError, config_from_dict, load_config
from metarl.sampling import make_sampler
from metarl.train import make_env

REPTILE = "experiments/reptile_navigation.yaml"
TINY = [
    "sampler.backend=local",
    "maml.meta_batch_size=2",
    "maml.episodes_per_task=3",
    "policy.hidden_sizes=[8]",
    "env.kwargs.horizon=6",
    "logging.checkpoint_every=2",
    "logging.tensorboard=false",
    "max_env_steps=null",
]


def test_outer_step_equals_the_formula_in_float64():
    gen = torch.Generator().manual_seed(0)
    theta = {"w": torch.randn(3, 2, generator=gen, dtype=torch.float64), "b": torch.randn(2, generator=gen).double()}
    phis = [{k: v + torch.randn(v.shape, generator=gen, dtype=torch.float64) for k, v in theta.items()} for _ in "abcd"]
    new = reptile_outer_step(theta, phis, 0.3)
    for key in theta:
        by_hand = theta[key].numpy() + 0.3 * (sum(p[key].numpy() for p in phis) / 4 - theta[key].numpy())
        np.testing.assert_allclose(new[key].numpy(), by_hand, rtol=0, atol=1e-14)
    assert torch.equal(reptile_outer_step(theta, phis, 0.0)["w"], theta["w"])  # eps 0: no move
    mean_phi = torch.stack([p["b"] for p in phis]).mean(0)
    assert torch.allclose(reptile_outer_step(theta, phis, 1.0)["b"], mean_phi, atol=1e-15)  # eps 1: the mean


def test_outer_step_size_decays_linearly_over_the_run():
    assert outer_lr_at(0, 5, 1.0, 0.2) == 1.0 and outer_lr_at(4, 5, 1.0, 0.2) == pytest.approx(0.2)
    assert outer_lr_at(2, 5, 1.0, 0.2) == pytest.approx(0.6) and outer_lr_at(9, 5, 1.0, 0.2) == pytest.approx(0.2)


class RecordingSampler:
    """The local sampler, recording every call's parameters, seed and episodes."""

    def __init__(self, sampler):
        self.sampler, self.calls = sampler, []

    def sample(self, policy, params, tasks, episodes, seed):
        batch = self.sampler.sample(policy, params, tasks, episodes, seed=seed)
        self.calls.append((params, seed, batch))
        return batch


def inner_step_by_hand(algorithm, params, batch, lr):
    """One plain gradient step per task on the inner loss, with autograd directly: the reference."""
    prepared = algorithm.learner.prepare(batch)
    out = []
    for i, start in enumerate(params):
        p = {k: v.clone().requires_grad_(True) for k, v in start.items()}
        loss = algorithm.learner.inner_loss(p, {k: v[i] for k, v in prepared.items()})
        grads = torch.autograd.grad(loss, list(p.values()))
        out.append({k: (v - lr * g).detach() for (k, v), g in zip(p.items(), grads, strict=True)})
    return out


def test_inner_steps_sample_fresh_episodes_from_the_adapted_parameters_and_the_outer_step_follows():
    config = config_from_dict(
        {
            "algorithm": "reptile",
            "env": {"id": "metarl/Navigation2D-v0", "kwargs": {"horizon": 5}},
            "policy": {"hidden_sizes": [8], "action_scale": 0.1},
            "maml": {"meta_batch_size": 3, "episodes_per_task": 4, "fast_lr": 0.5},
            "reptile": {"inner_steps": 3, "outer_lr": 0.7},
            "iterations": 10,
        }
    )
    env = make_env(config)
    torch.manual_seed(0)
    algorithm = build_algorithm(config, env, torch.device("cpu"))
    tasks = env.unwrapped.sample_tasks(3, np.random.default_rng(0), split="train")
    theta = {k: v.detach().clone() for k, v in algorithm.policy.named_parameters()}
    with make_sampler(config.env.id, config.env.kwargs, backend="local") as local:
        recorder = RecordingSampler(local)
        result = algorithm.collect_and_update(recorder, tasks, lambda phase: 1000 + phase)
    assert [seed for _, seed, _ in recorder.calls] == [1001, 1002, 1003]  # a new seed phase per inner step
    assert all(torch.equal(recorder.calls[0][0][k], theta[k]) for k in theta)
    expected = [theta] * 3
    for step, (params, _, batch) in enumerate(recorder.calls):
        if step:  # step j's episodes come from the parameters after j steps, computed by hand
            for task in range(3):
                for k in theta:
                    torch.testing.assert_close(params[task][k], expected[task][k], rtol=0, atol=1e-6)
            previous = recorder.calls[step - 1][2]
            assert not np.array_equal(np.asarray(batch.observations), np.asarray(previous.observations))
            # and they really are those parameters' episodes: the recorded log-probs match them
            for task in range(3):
                dist = functional_call(algorithm.policy, params[task], (torch.as_tensor(batch.observations[task]),))
                logp = algorithm.policy.log_prob(dist, torch.as_tensor(batch.actions[task]))
                mask = torch.as_tensor(batch.mask[task]) > 0
                torch.testing.assert_close(logp[mask], torch.as_tensor(batch.log_probs[task])[mask], rtol=0, atol=1e-5)
        expected = inner_step_by_hand(algorithm, expected, batch, 0.5)
    eps = 0.7  # the first iteration's outer step size
    for k, p in algorithm.policy.named_parameters():
        by_hand = theta[k] + eps * (torch.stack([e[k] for e in expected]).mean(0) - theta[k])
        torch.testing.assert_close(p.detach(), by_hand, rtol=0, atol=1e-6)
    assert result.env_steps == sum(b.num_steps for _, _, b in recorder.calls)
    assert result.metrics["outer_lr"] == pytest.approx(0.7) and "return_post" in result.metrics
    assert algorithm.done == 1 and algorithm.outer_lr() == pytest.approx(0.7 * (1 - 1 / 9))
    env.close()


def test_reptile_names_the_meta_rl_learner_without_a_fewshot_section_and_the_supervised_one_with_it():
    assert config_from_dict({"algorithm": "reptile"}).fewshot is None
    assert config_from_dict({"algorithm": "reptile", "fewshot": {"problem": "sinusoid"}}).fewshot is not None
    with pytest.raises(ConfigError, match="needs a fewshot section"):
        config_from_dict({"algorithm": "protonet"})
    with pytest.raises(ConfigError, match="drop the fewshot section"):
        config_from_dict({"algorithm": "rl2", "fewshot": {}})


def test_several_gradient_steps_per_batch_are_refused_with_one_line(tmp_path, repo_root, monkeypatch, capsys):
    monkeypatch.chdir(repo_root)
    run = tmp_path / "run"
    assert train(REPTILE, "--run-dir", str(run), *sets(*TINY, "maml.num_steps=2")) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "maml.num_steps" in err and "reptile.inner_steps" in err
    assert not run.exists()


def test_interrupted_reptile_run_resumes_exactly(tmp_path, repo_root, monkeypatch):
    """SIGINT during iteration 3 (checkpoints every 2): ``--resume`` ends bit for bit where an uninterrupted run ends,
    on the same outer step-size schedule."""
    monkeypatch.chdir(repo_root)
    straight, stopped = interrupted_and_straight(REPTILE, TINY, tmp_path, monkeypatch)
    assert rows(straight) == rows(stopped) and len(rows(stopped)) == 4
    a, b = load_checkpoint(latest_checkpoint(straight)), load_checkpoint(latest_checkpoint(stopped))
    assert same(a["algorithm"], b["algorithm"]) and a["algorithm"]["reptile_iterations_done"] == 4
    assert [float(r["outer_lr"]) for r in rows(stopped)] == pytest.approx([1.0, 2 / 3, 1 / 3, 0.0])


def test_max_env_steps_ends_the_run_with_a_checkpoint_and_a_resume_has_nothing_to_run(
    tmp_path, repo_root, monkeypatch, capsys
):
    monkeypatch.chdir(repo_root)
    run = tmp_path / "run"
    per_iteration = 2 * 3 * 6 * 3  # tasks x episodes x horizon x inner steps (navigation rarely ends this early)
    budget = 2 * per_iteration - 10
    assert (
        train(
            REPTILE,
            "--run-dir",
            str(run),
            *sets("iterations=50", *TINY, f"max_env_steps={budget}", "logging.checkpoint_every=5"),
        )
        == 0
    )
    done = rows(run)
    assert len(done) == 2 and int(done[-1]["env_steps"]) >= budget > int(done[0]["env_steps"])
    assert load_checkpoint(latest_checkpoint(run))["iteration"] == 2  # the budget's end is checkpointed like a last one
    capsys.readouterr()
    assert train("--resume", str(run)) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "max_env_steps" in err and "nothing to run" in err


def test_evaluate_and_plot_a_reptile_run_like_a_maml_run(tmp_path, repo_root, monkeypatch, capsys):
    monkeypatch.chdir(repo_root)
    run = tmp_path / "reptile"
    assert train(REPTILE, "--run-dir", str(run), *sets("iterations=2", *TINY)) == 0
    assert main(["evaluate", str(run), "--tasks", "3", "--episodes", "2", "--backend", "local"]) == 0
    summary = json.loads((run / "evaluation" / "summary.json").read_text())
    entry = summary["methods"]["maml"]  # the run's own trained method, whatever its algorithm
    assert entry["algorithm"] == "reptile" and "reptile " in capsys.readouterr().out
    assert entry["iteration"] == 2 and [r["step"] for r in entry["steps"]] == [0, 1, 2, 3]
    assert entry["step_sizes"] == [0.1, 0.1, 0.1]
    # metarl evaluate's numbers are the algorithm's own evaluation protocol
    from metarl.evaluate import held_out_tasks, load_trained

    config = load_config(run / "config.yaml")
    algorithm = build_algorithm(config, make_env(config), torch.device("cpu"))
    algorithm.load_state_dict(load_checkpoint(latest_checkpoint(run))["algorithm"])
    with make_sampler(config.env.id, config.env.kwargs, backend="local") as sampler:
        own = algorithm.evaluation_returns(sampler, held_out_tasks(config, 3, 0), 2, 0)
    np.testing.assert_allclose(own.mean(0), [r["mean"] for r in entry["steps"]], rtol=1e-9)
    assert load_trained(config, latest_checkpoint(run))[1]["iteration"] == 2
    figure = tmp_path / "adaptation.svg"
    assert main(["plot", str(run), "-o", str(figure)]) == 0
    assert "Reptile (k=3)" in figure.read_text()
    assert main(["plot", str(run), "--training", "-o", str(tmp_path / "training.png")]) == 0
