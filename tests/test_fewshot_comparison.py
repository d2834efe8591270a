"""Relation network and Siamese network: score ranges, symmetries, label hygiene, the pair sampler, learning, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from metarl.checkpoint import load_checkpoint
from metarl.cli import main
from metarl.config import config_from_dict
from metarl.fewshot import make_synthetic_omniglot
from metarl.fewshot.comparison import RelationNet, SiameseNet
from metarl.fewshot.evaluate import main as evaluate_main
from metarl.fewshot.methods import build_method
from metarl.fewshot.omniglot import Omniglot
from metarl.fewshot.pairs import PairBatch, PairSource
from metarl.fewshot.problem import build_problem
from metarl.fewshot.tasks import FewShotBatch

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    """3 background alphabets (1 held out for validation), 2 evaluation ones, 3 characters each, 20 drawings."""
    root = tmp_path_factory.mktemp("omniglot")
    return make_synthetic_omniglot(root, n_alphabets=(3, 2), n_characters=3, n_drawings=20, image_size=28)


def config(algorithm: str, root: Path, iterations: int = 40, **fewshot) -> dict:
    fs = {
        "problem": "omniglot",
        "n_way": 5,
        "k_shot": 1,
        "k_query": 3,
        "meta_batch_size": 2,
        "outer_lr": 0.001,
        "hidden": 16,
        "val_alphabets": 1,
        "val_tasks": 4,
        "eval_every": 5,
        "data_dir": str(root),
    }
    fs.update(fewshot)
    data = {"seed": 0, "iterations": iterations, "algorithm": algorithm, "fewshot": fs}
    return {**data, "logging": {"tensorboard": False, "checkpoint_every": 5}}


def episode(n_way: int = 4, k_shot: int = 3, n_query: int = 6, seed: int = 0, dtype=torch.float64) -> tuple:
    g = torch.Generator().manual_seed(seed)
    support_x = torch.rand(n_way * k_shot, 1, 28, 28, generator=g, dtype=dtype)
    support_y = torch.arange(n_way).repeat_interleave(k_shot)
    query_x = torch.rand(n_query, 1, 28, 28, generator=g, dtype=dtype)
    return support_x, support_y, query_x


# ----------------------------------------------------------------------------------------------------------------------
# The relation network's scores


def test_relation_scores_lie_in_unit_interval_even_when_saturated():
    torch.manual_seed(0)
    model = RelationNet(hidden=8).double()
    support_x, support_y, query_x = episode()
    scores = model(support_x, support_y, query_x, 4)
    assert scores.shape == (6, 4) and bool(((scores >= 0) & (scores <= 1)).all())
    with torch.no_grad():  # push the output layer far into both tails of the sigmoid
        for sign in (50.0, -50.0):
            model.fc2.bias.fill_(sign)
            saturated = model(support_x, support_y, query_x, 4)
            assert bool(((saturated >= 0) & (saturated <= 1)).all())
            assert float((saturated - (1.0 if sign > 0 else 0.0)).abs().max()) < 1e-6


def test_relation_scores_ignore_support_order_within_a_class_and_follow_class_order():
    torch.manual_seed(1)
    model = RelationNet(hidden=8).double()
    support_x, support_y, query_x = episode(n_way=4, k_shot=3)
    scores = model(support_x, support_y, query_x, 4)
    # Shuffle the support positions (classes keep their labels): the K-shot sum and batch norm are order-free.
    perm = torch.randperm(len(support_y), generator=torch.Generator().manual_seed(2))
    shuffled = model(support_x[perm], support_y[perm], query_x, 4)
    torch.testing.assert_close(shuffled, scores, rtol=1e-10, atol=1e-12)
    # Rename the classes (class c becomes pi[c]): score column pi[c] of the renamed episode is column c here.
    pi = torch.tensor([2, 0, 3, 1])
    renamed = model(support_x, pi[support_y], query_x, 4)
    torch.testing.assert_close(renamed[:, pi], scores, rtol=1e-10, atol=1e-12)
    # By hand: the class feature is the *sum* (not the mean) of its K support maps, placed before the query's map.
    s, q = model.embed(support_x), model.embed(query_x)
    classes = torch.stack([s[support_y == c].sum(0) for c in range(4)])
    pairs = torch.cat([classes[None].expand(6, -1, -1, -1, -1), q[:, None].expand(-1, 4, -1, -1, -1)], dim=2)
    torch.testing.assert_close(model.relation(pairs.flatten(0, 1)).view(6, 4), scores, rtol=1e-10, atol=1e-12)


def test_siamese_verification_is_symmetric_and_classifies_by_nearest_match():
    torch.manual_seed(0)
    model = SiameseNet(embed_dim=32).double()
    x1, x2 = torch.rand(7, 1, 28, 28, dtype=torch.float64), torch.rand(7, 1, 28, 28, dtype=torch.float64)
    assert torch.equal(model(x1, x2), model(x2, x1))  # |h1 - h2| and no batch statistics: exactly symmetric
    # Each pair on its own: no batch dependence (up to the rounding of differently sized convolutions).
    torch.testing.assert_close(model(x1[:3], x2[:3]), model(x1, x2)[:3], rtol=1e-12, atol=1e-12)
    support_x, support_y, query_x = episode(n_way=3, k_shot=2, n_query=5)
    logits = model.class_logits(support_x, support_y, query_x, 3)
    pairwise = model(query_x.repeat_interleave(6, 0), support_x.repeat(5, 1, 1, 1)).view(5, 6)
    torch.testing.assert_close(logits, torch.stack([pairwise[:, support_y == c].max(1).values for c in range(3)], 1))


# ----------------------------------------------------------------------------------------------------------------------
# No test-episode label reaches the model


@pytest.mark.parametrize("algorithm", ["relationnet", "siamese"])
def test_predictions_do_not_depend_on_query_labels(algorithm, synth):
    problem = build_problem(config_from_dict(config(algorithm, synth)))
    torch.manual_seed(0)
    method = build_method(config_from_dict(config(algorithm, synth)), problem, CPU)
    batch = problem.test.fixed(6, seed=3)
    g = torch.Generator().manual_seed(0)
    garbage = torch.stack([torch.randperm(batch.query_y.shape[1], generator=g) % 5 for _ in range(len(batch))])
    shuffled = FewShotBatch(batch.support_x, batch.support_y, batch.query_x, garbage, batch.info)
    for i in range(len(batch)):
        with torch.no_grad():
            original = method.class_scores(batch.episode(i), 5)
            other = method.class_scores(shuffled.episode(i), 5)
        assert torch.equal(original, other)
        # The evaluation's accuracy is the share of these label-free predictions that match the labels it was given.
        expected = (original.argmax(-1) == garbage[i]).double().mean()
        assert method.adaptation_curve(shuffled[i])[0, 0] == pytest.approx(float(expected))


# ----------------------------------------------------------------------------------------------------------------------
# The Siamese pair sampler


@pytest.mark.parametrize("fraction", [0.5, 0.25])
def test_pair_sampler_uses_training_alphabets_only_in_the_configured_ratio(fraction, synth):
    data = Omniglot(synth, n_val_alphabets=1)
    source = PairSource(data.split("train"), fraction)
    train_chars = set(data.split("train").characters.tolist())
    held_out = set(data.split("val").characters.tolist()) | set(data.split("test").characters.tolist())
    assert train_chars and not train_chars & held_out
    for seed in range(5):
        pairs = source.sample(40, np.random.default_rng(seed))
        classes = pairs.info["classes"]  # [P, 2, (character, rotation)]
        assert set(classes[:, :, 0].ravel().tolist()) <= train_chars
        same = pairs.same.numpy().astype(bool)
        assert same.sum() == round(40 * fraction)
        assert (classes[same, 0] == classes[same, 1]).all()
        assert (classes[~same, 0] != classes[~same, 1]).any(axis=1).all()
        # A same pair is two different drawings (never one image twice); a different pair two different images.
        assert all(not torch.equal(a, b) for a, b in zip(pairs.x1, pairs.x2, strict=True))
    again = source.sample(40, np.random.default_rng(0))
    assert torch.equal(again.x1, source.sample(40, np.random.default_rng(0)).x1)
    problem = build_problem(config_from_dict(config("siamese", synth, pair_same_fraction=fraction)))
    batch = problem.train_batch(0, 0, 16)
    assert isinstance(batch, PairBatch) and problem.train.split.name == "train"
    assert int(batch.same.sum()) == round(16 * fraction)


# ----------------------------------------------------------------------------------------------------------------------
# Learning on the synthetic set


@pytest.mark.parametrize(
    ("algorithm", "settings", "iterations"),
    [("relationnet", {"meta_batch_size": 1, "k_query": 5}, 40), ("siamese", {"meta_batch_size": 32}, 60)],
)
def test_each_method_improves_on_synthetic_omniglot(algorithm, settings, iterations, synth):
    """Held-out (evaluation-alphabet) loss drops and accuracy beats chance (0.2) after a few dozen updates."""
    cfg = config_from_dict(config(algorithm, synth, iterations, **settings))
    problem = build_problem(cfg)
    held_out = problem.test.fixed(30, seed=7)
    torch.manual_seed(0)
    method = build_method(cfg, problem, CPU)
    loss_before, acc_before = method.query_loss(held_out)
    for iteration in range(iterations):
        method.train_step(problem.train_batch(cfg.seed, iteration, cfg.fewshot.meta_batch_size), iteration)
    loss_after, acc_after = method.query_loss(held_out)
    assert loss_after < 0.8 * loss_before, (loss_before, loss_after)
    assert acc_after > 0.5, (acc_before, acc_after)


# ----------------------------------------------------------------------------------------------------------------------
# Commands: train, resume, evaluate, plot; a bad algorithm name


def _write(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


@pytest.mark.parametrize("algorithm", ["relationnet", "siamese"])
def test_train_resume_evaluate_and_plot_commands(algorithm, synth, tmp_path, capsys):
    extra = {"meta_batch_size": 8} if algorithm == "siamese" else {}
    file = _write(tmp_path / "c.yaml", config(algorithm, synth, iterations=10, **extra))
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    assert main(["train", str(file), "--run-dir", str(straight), "--no-progress"]) == 0
    assert main(["train", str(file), "--run-dir", str(resumed), "--no-progress"]) == 0
    (resumed / "checkpoints" / "iter_000010.pt").unlink()
    assert main(["train", "--resume", str(resumed), "--no-progress"]) == 0
    a, b = (load_checkpoint(r / "checkpoints" / "iter_000010.pt") for r in (straight, resumed))
    for name, value in a["method"]["model"].items():
        assert torch.equal(value, b["method"]["model"][name]), name
    assert main(["evaluate", str(straight), "--tasks", "12"]) == 0
    summary = json.loads((straight / "evaluation" / "summary.json").read_text())
    entry = summary["methods"][algorithm]
    assert summary["metric"] == "accuracy" and entry["split"] == "test" and entry["tasks"] == 12
    assert [row["step"] for row in entry["steps"]] == [0] and entry["inner_lr"] is None
    assert evaluate_main([str(straight), "--tasks", "12", "--set", "fewshot.n_way=3"]) == 0  # other ways
    capsys.readouterr()
    assert main(["plot", str(straight), "-o", str(tmp_path / "a.svg")]) == 0
    assert main(["plot", str(straight), "--training", "-o", str(tmp_path / "t.png")]) == 0
    assert (tmp_path / "t.png").stat().st_size > 0


def test_unknown_algorithm_fails_with_one_line(synth, tmp_path, capsys):
    file = _write(tmp_path / "bad.yaml", config("not_an_algorithm", synth))
    assert main(["train", str(file), "--run-dir", str(tmp_path / "run"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "'algorithm'" in err and "'relationnet'" in err and "'siamese'" in err
    assert not (tmp_path / "run").exists()


def test_pair_fraction_is_refused_for_other_methods(synth, tmp_path, capsys):
    file = _write(tmp_path / "bad.yaml", config("relationnet", synth, pair_same_fraction=0.3))
    assert main(["train", str(file), "--run-dir", str(tmp_path / "run"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "pair_same_fraction" in err
