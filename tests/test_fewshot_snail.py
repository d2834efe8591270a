"""SNAIL as a few-shot classifier: causality over the sequence, no query label in the input, learning, commands."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from metarl.checkpoint import load_checkpoint
from metarl.cli import main
from metarl.config import ConfigError, config_from_dict
from metarl.fewshot import make_synthetic_omniglot
from metarl.fewshot.methods import build_method
from metarl.fewshot.problem import build_problem
from metarl.fewshot.sequence_methods import SnailMethod
from metarl.fewshot.snail_classifier import SnailClassifier, snail_sequences
from metarl.fewshot.tasks import FewShotBatch

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    """3 background alphabets (1 held out for validation), 2 evaluation ones, 3 characters each, 20 drawings."""
    root = tmp_path_factory.mktemp("omniglot")
    return make_synthetic_omniglot(root, n_alphabets=(3, 2), n_characters=3, n_drawings=20, image_size=28)


def config(root: Path, iterations: int = 10, **fewshot) -> dict:
    fs = {"problem": "omniglot", "n_way": 5, "k_shot": 1, "k_query": 2, "meta_batch_size": 2, "hidden": 8}
    fs.update({"val_alphabets": 1, "val_tasks": 4, "eval_every": 5, "data_dir": str(root), **fewshot})
    data = {"seed": 0, "iterations": iterations, "algorithm": "snail_classifier", "fewshot": fs}
    return {**data, "logging": {"tensorboard": False, "checkpoint_every": 5}}


def episode(n_way: int = 4, k_shot: int = 2, n_query: int = 3, seed: int = 0) -> tuple:
    g = torch.Generator().manual_seed(seed)
    support_x = torch.rand(n_way * k_shot, 1, 28, 28, generator=g, dtype=torch.float64)
    support_y = torch.randperm(n_way * k_shot, generator=g) % n_way
    query_x = torch.rand(n_query, 1, 28, 28, generator=g, dtype=torch.float64)
    return support_x, support_y, query_x


def test_sequence_is_support_then_one_query_with_a_zero_label_slot():
    support_emb, query_emb = torch.randn(6, 5), torch.randn(4, 5)
    support_y = torch.tensor([2, 0, 1, 2, 1, 0])
    seqs = snail_sequences(support_emb, support_y, query_emb, 3)
    assert seqs.shape == (4, 7, 8)
    for q in range(4):
        torch.testing.assert_close(seqs[q, :6, :5], support_emb, rtol=0, atol=0)  # support steps, in order
        assert torch.equal(seqs[q, :6, 5:], torch.eye(3)[support_y])  # their one-hot labels
        torch.testing.assert_close(seqs[q, 6, :5], query_emb[q], rtol=0, atol=0)  # then this query only
        assert torch.equal(seqs[q, 6, 5:], torch.zeros(3))  # whose label slot is empty


def test_snail_classifier_is_causal_over_the_sequence():
    torch.manual_seed(0)
    model = SnailClassifier(n_way=4, k_shot=2, hidden=8).double()
    support_x, support_y, query_x = episode()
    seqs = model.sequences(support_x, support_y, query_x)
    out = model.snail(seqs)
    for t in range(seqs.shape[1] - 1):
        changed = seqs.clone()
        changed[:, t + 1 :] = torch.randn_like(changed[:, t + 1 :])
        other = model.snail(changed)
        torch.testing.assert_close(other[:, : t + 1], out[:, : t + 1], rtol=0, atol=0)  # the past is untouched
        assert (other[:, t + 1 :] - out[:, t + 1 :]).abs().amax() > 1e-6  # the future moves (the test can fail)
    # The query step reads every support label: relabelling support example 0 changes the prediction.
    relabelled = support_y.clone()
    relabelled[0] = (relabelled[0] + 1) % 4
    assert (model(support_x, relabelled, query_x) - model(support_x, support_y, query_x)).abs().amax() > 1e-6


def test_batched_episodes_match_one_episode_at_a_time():
    torch.manual_seed(1)
    model = SnailClassifier(n_way=4, k_shot=2, hidden=8).double()
    episodes = [episode(seed=s) for s in range(3)]
    support_x, support_y, query_x = (torch.stack([e[i] for e in episodes]) for i in range(3))
    batched = model.episodes_logits(support_x, support_y, query_x)
    for i, (sx, sy, qx) in enumerate(episodes):
        torch.testing.assert_close(batched[i], model(sx, sy, qx), rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError, match="built for 8 support examples"):
        model(support_x[0, :5], support_y[0, :5], query_x[0])


def test_no_query_label_reaches_the_model(synth):
    cfg = config_from_dict(config(synth))
    problem = build_problem(cfg)
    torch.manual_seed(0)
    method = build_method(cfg, problem, CPU)
    assert isinstance(method, SnailMethod)
    batch = problem.test.fixed(5, seed=3)
    garbage = (batch.query_y + 1 + torch.arange(batch.query_y.shape[1])) % 5
    shuffled = FewShotBatch(batch.support_x, batch.support_y, batch.query_x, garbage, batch.info)
    for i in range(len(batch)):
        with torch.no_grad():
            original = method.class_scores(batch.episode(i), 5)
            other = method.class_scores(shuffled.episode(i), 5)
            seqs = method.model.sequences(*batch.episode(i)[:3])
        assert torch.equal(original, other)
        assert torch.equal(seqs[:, -1, -5:], torch.zeros(seqs.shape[0], 5))  # the query's label slot
        expected = (original.argmax(-1) == garbage[i]).double().mean()
        assert method.adaptation_curve(shuffled[i])[0, 0] == pytest.approx(float(expected))
    # Training uses the query labels for the loss only: the logits it differentiates are the label-free ones.
    with torch.no_grad():
        trained_on = method.model.episodes_logits(batch.support_x, batch.support_y, batch.query_x)
    torch.testing.assert_close(trained_on[0], method.class_scores(batch.episode(0), 5), rtol=1e-5, atol=1e-6)


def test_support_order_is_shuffled_per_episode(synth):
    """A sequence model must not learn a label order: support positions are a fresh permutation in every episode."""
    problem = build_problem(config_from_dict(config(synth, k_shot=2)))
    batch = problem.train_batch(0, 0, 20)
    orders = {tuple(y.tolist()) for y in batch.support_y}
    assert len(orders) > 10  # sorted labels would give one order
    for y in batch.support_y:
        assert sorted(y.tolist()) == [c for c in range(5) for _ in range(2)]  # each class k_shot times


def test_other_training_shots_are_refused(synth):
    with pytest.raises(ConfigError, match="train_shots"):
        build_problem(config_from_dict(config(synth, train_shots=2)))


def test_train_resume_evaluate_and_plot_commands(synth, tmp_path, capsys):
    file = tmp_path / "c.yaml"
    file.write_text(yaml.safe_dump(config(synth)), encoding="utf-8")
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    assert main(["train", str(file), "--run-dir", str(straight), "--no-progress"]) == 0
    assert main(["train", str(file), "--run-dir", str(resumed), "--no-progress"]) == 0
    (resumed / "checkpoints" / "iter_000010.pt").unlink()
    assert main(["train", "--resume", str(resumed), "--no-progress"]) == 0
    a, b = (load_checkpoint(r / "checkpoints" / "iter_000010.pt") for r in (straight, resumed))
    for name, value in a["method"]["model"].items():
        assert torch.equal(value, b["method"]["model"][name]), name
    assert main(["evaluate", str(straight), "--tasks", "12"]) == 0
    entry = json.loads((straight / "evaluation" / "summary.json").read_text())["methods"]["snail_classifier"]
    assert entry["split"] == "test" and entry["tasks"] == 12 and [r["step"] for r in entry["steps"]] == [0]
    capsys.readouterr()
    assert main(["plot", str(straight), "-o", str(tmp_path / "a.svg")]) == 0
    assert main(["plot", str(straight), "--training", "-o", str(tmp_path / "t.png")]) == 0
    assert (tmp_path / "t.png").stat().st_size > 0
