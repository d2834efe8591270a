"""Memory-augmented network: LRU addressing by hand, label shifting, no query label in the input, commands."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import yaml

from metarl.checkpoint import load_checkpoint
from metarl.cli import main
from metarl.config import config_from_dict
from metarl.fewshot import make_synthetic_omniglot
from metarl.fewshot.mann import MANN, MEMORY_INIT, MemoryState, least_used, memory_step, shifted_labels
from metarl.fewshot.methods import build_method
from metarl.fewshot.problem import build_problem
from metarl.fewshot.sequence_methods import MANNMethod, accuracy_by_instance, instance_ranks
from metarl.fewshot.tasks import FewShotBatch

CPU = torch.device("cpu")
F64 = torch.float64


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    """3 background alphabets (1 held out for validation), 2 evaluation ones, 3 characters each, 20 drawings."""
    root = tmp_path_factory.mktemp("omniglot")
    return make_synthetic_omniglot(root, n_alphabets=(3, 2), n_characters=3, n_drawings=20, image_size=28)


def config(root: Path, iterations: int = 10, **fewshot) -> dict:
    fs = {"problem": "omniglot", "n_way": 3, "k_shot": 1, "k_query": 2, "train_shots": 4, "meta_batch_size": 4}
    fs.update({"hidden": 16, "mann_slots": 8, "mann_width": 6, "mann_read_heads": 2})
    fs.update({"val_alphabets": 1, "val_tasks": 4, "eval_every": 5, "data_dir": str(root), **fewshot})
    data = {"seed": 0, "iterations": iterations, "algorithm": "mann", "fewshot": fs}
    return {**data, "logging": {"tensorboard": False, "checkpoint_every": 5}}


# ----------------------------------------------------------------------------------------------------------------------
# LRU write addressing, worked by hand: 3 slots of width 2, one head, gamma = 0.5


def _softmax(values: list[float]) -> list[float]:
    e = [math.exp(v) for v in values]
    return [v / sum(e) for v in e]


def _cos(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True)) / math.hypot(*a) / math.hypot(*b)


def test_lru_write_addressing_on_a_hand_worked_case():
    gamma, eps = 0.5, MEMORY_INIT
    state = MemoryState(torch.full((1, 3, 2), eps, dtype=F64), torch.zeros(1, 3, dtype=F64),
                        torch.zeros(1, 1, 3, dtype=F64), torch.zeros(1, 1, 2, dtype=F64))  # fmt: skip

    # Step 1: key (1, 0), gate logit 0 (sigmoid 1/2). Usage is all zero: the least-used slot is slot 0 (ties go to
    # the lower index); it is erased; write weights = 1/2 * 0 (no previous reads) + 1/2 * (1, 0, 0).
    s1 = memory_step(state, torch.tensor([[[1.0, 0.0]]], dtype=F64), torch.tensor([[0.0]], dtype=F64), gamma)
    # Memory: slot 0 = 0 + 1/2 * (1, 0); slots 1, 2 untouched. Cosines with the key: 1, 1/sqrt(2), 1/sqrt(2).
    m1 = [[0.5, 0.0], [eps, eps], [eps, eps]]
    torch.testing.assert_close(s1.memory[0], torch.tensor(m1, dtype=F64), rtol=1e-12, atol=1e-15)
    r1 = _softmax([1.0, 1 / math.sqrt(2), 1 / math.sqrt(2)])
    torch.testing.assert_close(s1.read_weights[0, 0], torch.tensor(r1, dtype=F64), rtol=1e-9, atol=1e-12)
    u1 = [r1[0] + 0.5, r1[1], r1[2]]  # gamma * 0 + reads + writes
    torch.testing.assert_close(s1.usage[0], torch.tensor(u1, dtype=F64), rtol=1e-9, atol=1e-12)

    # Step 2: key (0, 1), gate logit ln 3 (sigmoid 3/4). Usage (0.5 + r, r', r') with r' < 0.5 + r: slots 1 and 2
    # tie, so slot 1 is the least used; it is erased, and write weights = 3/4 * r1 + 1/4 * (0, 1, 0).
    w_lu, erase = least_used(s1.usage, 1)
    assert w_lu.tolist() == [[0.0, 1.0, 0.0]] and erase.tolist() == [[0.0, 1.0, 0.0]]
    s2 = memory_step(s1, torch.tensor([[[0.0, 1.0]]], dtype=F64), torch.tensor([[math.log(3.0)]], dtype=F64), gamma)
    w2 = [0.75 * r1[0], 0.75 * r1[1] + 0.25, 0.75 * r1[2]]
    m2 = [[0.5, w2[0]], [0.0, w2[1]], [eps, eps + w2[2]]]  # slot 1 was zeroed before the write
    torch.testing.assert_close(s2.memory[0], torch.tensor(m2, dtype=F64), rtol=1e-9, atol=1e-12)
    r2 = _softmax([_cos([0.0, 1.0], row) for row in m2])
    torch.testing.assert_close(s2.read_weights[0, 0], torch.tensor(r2, dtype=F64), rtol=1e-9, atol=1e-12)
    u2 = [gamma * u + r + w for u, r, w in zip(u1, r2, w2, strict=True)]
    torch.testing.assert_close(s2.usage[0], torch.tensor(u2, dtype=F64), rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(s2.reads[0, 0], torch.tensor([sum(r2[i] * m2[i][j] for i in range(3)) for j in
                                                            range(2)], dtype=F64), rtol=1e-9, atol=1e-12)  # fmt: skip

    # Step 3: the least-used slot is now slot 2 (it was never written on purpose), by hand:
    assert min(range(3), key=lambda i: u2[i]) == 2
    w_lu, erase = least_used(s2.usage, 1)
    assert w_lu.tolist() == [[0.0, 0.0, 1.0]] and erase.tolist() == [[0.0, 0.0, 1.0]]
    # Two least-used slots (two heads): slots 2 and then the next smallest usage.
    second = sorted(range(3), key=lambda i: u2[i])[1]
    assert least_used(s2.usage, 2)[0][0].tolist() == [1.0 if i in (2, second) else 0.0 for i in range(3)]


# ----------------------------------------------------------------------------------------------------------------------
# Labels one step late; no query label in the input


def test_labels_are_shown_one_step_after_their_image():
    labels = torch.tensor([[2, 0, 1, 2], [1, 1, 0, 2]])
    shifted = shifted_labels(labels, 3, torch.float32)
    assert torch.equal(shifted[:, 0], torch.zeros(2, 3))
    assert torch.equal(shifted[:, 1:], torch.eye(3)[labels[:, :-1]])
    # In the model: the logits of step t do not move when the labels of steps t, t+1, ... change; step t+1's do.
    torch.manual_seed(0)
    model = MANN(n_way=3, hidden=12, slots=6, width=4, heads=2).double()
    x = torch.rand(2, 4, 1, 28, 28, dtype=F64)
    out = model(x, labels)
    for t in range(3):
        changed = labels.clone()
        changed[:, t:] = (changed[:, t:] + 1) % 3
        other = model(x, changed)
        torch.testing.assert_close(other[:, : t + 1], out[:, : t + 1], rtol=0, atol=0)
        assert (other[:, t + 1] - out[:, t + 1]).abs().amax() > 1e-8


def test_no_query_label_reaches_the_model(synth):
    cfg = config_from_dict(config(synth))
    problem = build_problem(cfg)
    torch.manual_seed(0)
    method = build_method(cfg, problem, CPU)
    assert isinstance(method, MANNMethod)
    batch = problem.test.fixed(5, seed=3)
    garbage = (batch.query_y + 1 + torch.arange(batch.query_y.shape[1])) % 3
    shuffled = FewShotBatch(batch.support_x, batch.support_y, batch.query_x, garbage, batch.info)
    model = method.model
    for i in range(len(batch)):
        sx, sy, qx, qy = batch.episode(i)
        with torch.no_grad():
            original = method.class_scores(batch.episode(i), 3)
            assert torch.equal(original, method.class_scores(shuffled.episode(i), 3))
            # By hand: the query is the step after the support sequence, with the last support label in its slot.
            for q in range(qx.shape[0]):
                seq_x = torch.cat([sx, qx[q : q + 1]])[None]
                seq_y = torch.cat([sy, sy[-1:]])[None]  # the label at the query step is never read (shifted out)
                torch.testing.assert_close(model(seq_x, seq_y)[0, -1], original[q], rtol=1e-5, atol=1e-6)
            # And the query step reads that last support label: changing it moves the prediction.
            relabelled = sy.clone()
            relabelled[-1] = (relabelled[-1] + 1) % 3
            assert (model.query_logits(sx, relabelled, qx) - original).abs().amax() > 1e-7
        expected = (original.argmax(-1) == garbage[i]).double().mean()
        assert method.adaptation_curve(shuffled[i])[0, 0] == pytest.approx(float(expected))


def test_accuracy_by_instance_counts_presentations():
    labels = torch.tensor([[0, 1, 0, 0, 1], [2, 2, 2, 1, 1]])
    assert instance_ranks(labels).tolist() == [[1, 1, 2, 3, 2], [1, 2, 3, 1, 2]]
    logits = torch.nn.functional.one_hot(torch.tensor([[0, 0, 0, 1, 1], [2, 0, 2, 0, 1]]), 3).double()
    correct, totals = accuracy_by_instance(logits, labels)
    assert totals.tolist() == [4, 4, 2] and correct.tolist() == [2.0, 3.0, 1.0]


# ----------------------------------------------------------------------------------------------------------------------
# Commands


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
    assert "by instance" in capsys.readouterr().out
    entry = json.loads((straight / "evaluation" / "summary.json").read_text())["methods"]["mann"]
    assert entry["split"] == "test" and entry["tasks"] == 12 and [r["step"] for r in entry["steps"]] == [0]
    by_instance = entry["instance_accuracy"]
    assert by_instance["classes"] == 3 and by_instance["instances_per_class"] == 4
    assert sorted(by_instance["accuracy"]) == ["1", "2", "3", "4"]
    assert all(0.0 <= v <= 1.0 for v in by_instance["accuracy"].values())
    assert main(["plot", str(straight), "--training", "-o", str(tmp_path / "t.png")]) == 0
