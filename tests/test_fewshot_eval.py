"""Few-shot evaluation: held-out test episodes, reproducible CSV/summary, the RL evaluation's summary shape."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from metarl import plot
from metarl.checkpoint import CheckpointError
from metarl.config import ConfigError, config_from_dict
from metarl.fewshot import make_synthetic_omniglot
from metarl.fewshot.evaluate import evaluate_fewshot, format_summary, main
from metarl.fewshot.problem import build_problem
from metarl.fewshot.train import train_fewshot
from metarl.run_dir import create_run_dir

CPU = torch.device("cpu")


def trained_run(folder: Path, data: dict) -> Path:
    """A run folder as ``metarl train`` leaves it: config.yaml, progress.csv, checkpoints."""
    config = config_from_dict(data)
    problem = build_problem(config)
    create_run_dir(folder, config)
    train_fewshot(config, problem, folder, CPU, progress=False)
    return folder


@pytest.fixture(scope="module")
def sinusoid_run(tmp_path_factory) -> Path:
    fs = {"problem": "sinusoid", "k_shot": 10, "k_query": 10, "meta_batch_size": 4, "inner_lr": 0.01, "val_tasks": 5}
    data = {"seed": 3, "iterations": 4, "algorithm": "maml", "fewshot": fs, "logging": {"tensorboard": False}}
    return trained_run(tmp_path_factory.mktemp("sinusoid") / "run", data)


@pytest.fixture(scope="module")
def omniglot_root(tmp_path_factory) -> Path:
    return make_synthetic_omniglot(tmp_path_factory.mktemp("omniglot"), n_alphabets=(3, 2), n_characters=3)


def omniglot_run(folder: Path, root: Path, algorithm: str, **fewshot) -> Path:
    fs = {
        "problem": "omniglot",
        "n_way": 3,
        "k_shot": 1,
        "k_query": 2,
        "meta_batch_size": 2,
        "hidden": 8,
        "val_alphabets": 1,
        "val_tasks": 3,
        "data_dir": str(root),
    }
    fs.update(fewshot)
    data = {"seed": 0, "iterations": 2, "algorithm": algorithm, "fewshot": fs, "logging": {"tensorboard": False}}
    return trained_run(folder, data)


def read_csv(path: Path) -> list[dict]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_same_seed_same_episodes_and_files(sinusoid_run, tmp_path):
    first = evaluate_fewshot(sinusoid_run, tasks=30, steps=2, seed=5)
    csv_bytes = (sinusoid_run / "evaluation" / "adaptation.csv").read_bytes()
    json_bytes = (sinusoid_run / "evaluation" / "summary.json").read_bytes()
    second = evaluate_fewshot(sinusoid_run, tasks=30, steps=2, seed=5)
    assert (sinusoid_run / "evaluation" / "adaptation.csv").read_bytes() == csv_bytes
    assert (sinusoid_run / "evaluation" / "summary.json").read_bytes() == json_bytes
    assert first["methods"]["maml"]["steps"] == second["methods"]["maml"]["steps"]
    # Another seed: other episodes, other numbers.
    evaluate_fewshot(sinusoid_run, tasks=30, steps=2, seed=6)
    assert (sinusoid_run / "evaluation" / "adaptation.csv").read_bytes() != csv_bytes
    # The episodes of a seed are fixed whatever their count (task i has its own generator), and they are test tasks.
    problem = build_problem(config_from_dict({"algorithm": "maml", "fewshot": {"problem": "sinusoid", "k_shot": 10}}))
    a, b = problem.test.fixed(30, 5), problem.test.fixed(10, 5)
    assert torch.equal(a.support_x[:10], b.support_x) and torch.equal(a.info["amplitude"][:10], b.info["amplitude"])
    train = problem.train_batch(5, 0, 30)
    assert not np.isin(a.info["amplitude"].numpy(), train.info["amplitude"].numpy()).any()


def test_summary_has_the_rl_evaluation_shape(sinusoid_run):
    summary = evaluate_fewshot(sinusoid_run, tasks=25, steps=3, seed=0)
    assert summary["metric"] == "mse" and summary["env_id"] == "fewshot/sinusoid-10shot"
    entry = summary["methods"]["maml"]
    assert entry["tasks"] == 25 and entry["split"] == "test" and entry["iteration"] == 4
    assert [row["step"] for row in entry["steps"]] == [0, 1, 2, 3]
    rows = read_csv(sinusoid_run / "evaluation" / "adaptation.csv")
    assert list(rows[0]) == ["task", "step", "mse", "amplitude", "phase"] and len(rows) == 25 * 4
    for row in entry["steps"]:
        values = np.array([float(r["mse"]) for r in rows if int(r["step"]) == row["step"]])
        assert row["n"] == 25 and row["mean"] == pytest.approx(values.mean())
        assert row["std"] == pytest.approx(values.std(ddof=1))
        assert row["ci95"] == pytest.approx(2.0639 * values.std(ddof=1) / 5, rel=1e-3)  # t(0.975, 24) = 2.0639
        assert row["ci95_low"] == pytest.approx(row["mean"] - row["ci95"])
    on_disk = json.loads((sinusoid_run / "evaluation" / "summary.json").read_text())
    assert on_disk["methods"]["maml"]["steps"][1]["mean"] == pytest.approx(entry["steps"][1]["mean"])
    assert "maml" in format_summary(summary)


def test_default_protocol_is_600_test_tasks(sinusoid_run):
    summary = evaluate_fewshot(sinusoid_run, steps=1)
    assert [row["n"] for row in summary["methods"]["maml"]["steps"]] == [600, 600]


def test_omniglot_gradient_learner_is_tested_on_evaluation_alphabets(omniglot_root, tmp_path):
    run = omniglot_run(tmp_path / "maml", omniglot_root, "maml", inner_lr=0.4, downsample="stride")
    summary = evaluate_fewshot(run, tasks=12, steps=2, seed=1)
    assert summary["metric"] == "accuracy" and [r["step"] for r in summary["methods"]["maml"]["steps"]] == [0, 1, 2]
    rows = read_csv(run / "evaluation" / "adaptation.csv")
    assert list(rows[0]) == ["task", "step", "accuracy"] and len(rows) == 12 * 3
    assert all(float(r["accuracy"]) * 6 == pytest.approx(round(float(r["accuracy"]) * 6)) for r in rows)  # 6 queries
    problem = build_problem(config_from_dict(_config(run)))
    episodes = problem.test.fixed(12, 1)
    data = problem.test.tasks.split.dataset
    characters = episodes.info["classes"][..., 0].numpy()
    assert set(data.char_part[characters].ravel()) == {"images_evaluation"}


def test_metric_baseline_gives_one_number_and_can_be_tested_at_other_ways(omniglot_root, tmp_path):
    run = omniglot_run(tmp_path / "proto", omniglot_root, "protonet", train_ways=5)
    summary = evaluate_fewshot(run, tasks=10, steps=5, seed=0)
    steps = summary["methods"]["protonet"]["steps"]
    assert len(steps) == 1 and steps[0]["n"] == 10
    wider = evaluate_fewshot(run, tasks=10, seed=0, overrides=["fewshot.n_way=6"])
    assert wider["env_id"] == "fewshot/omniglot-6way-1shot"
    rows = read_csv(run / "evaluation" / "adaptation.csv")
    assert all(float(r["accuracy"]) * 12 == pytest.approx(round(float(r["accuracy"]) * 12)) for r in rows)


def test_bad_input_is_one_clear_error(sinusoid_run, tmp_path, capsys):
    with pytest.raises(ConfigError, match="does not exist"):
        evaluate_fewshot(tmp_path / "nowhere")
    empty = tmp_path / "empty"
    create_run_dir(empty, config_from_dict(_config(sinusoid_run)))
    with pytest.raises(CheckpointError, match="no checkpoint"):
        evaluate_fewshot(empty)
    assert main([str(empty)]) == 2 and "no checkpoint" in capsys.readouterr().err
    assert not (empty / "evaluation").exists()


def test_plot_draws_the_fewshot_summary(sinusoid_run):
    evaluate_fewshot(sinusoid_run, tasks=20, steps=2)
    written = plot.plot_adaptation([sinusoid_run], [sinusoid_run / "evaluation" / "adaptation.png"])
    assert written[0].is_file() and written[0].stat().st_size > 0


def _progress(run: Path, val_pre: list[float], val: list[float]) -> Path:
    run.mkdir()
    with (run / "progress.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["iteration", "loss", "accuracy", "val_accuracy_pre", "val_accuracy", "lr", "time_s"])
        for i, (pre, post) in enumerate(zip(val_pre, val, strict=True), start=1):
            writer.writerow([i, 1.0 / i, 0.5, pre, post, 1e-3, 0.1])
    return run


def test_training_figure_draws_before_only_for_methods_that_adapt(tmp_path):
    from metarl.fewshot.figures import training_figure

    maml = _progress(tmp_path / "maml", [0.2, 0.2, 0.2], [0.8, 0.9, 0.95])
    protonet = _progress(tmp_path / "protonet", [0.8, 0.9, 0.95], [0.8, 0.9, 0.95])  # no gradient steps: pre == post
    right = training_figure([maml, protonet], window=2).axes[1]
    labels = [text.get_text() for text in right.get_legend().get_texts()]
    assert labels == ["maml: after", "maml: before", "protonet"]
    curves = [list(line.get_ydata()) for line in right.get_lines()]
    assert curves == [[0.8, 0.9, 0.95], [0.2, 0.2, 0.2], [0.8, 0.9, 0.95]]
    only_protonet = training_figure([protonet], window=2).axes[1]
    assert "before" not in only_protonet.get_ylabel() and len(only_protonet.get_lines()) == 1


def _config(run: Path) -> dict:
    import yaml

    return yaml.safe_load((run / "config.yaml").read_text())


def test_metarl_evaluate_and_plot_commands_serve_fewshot_runs(sinusoid_run, tmp_path, capsys):
    from metarl.cli import main as metarl

    assert metarl(["evaluate", str(sinusoid_run), "--tasks", "12", "--steps", "2", "--seed", "5"]) == 0
    out = capsys.readouterr().out
    assert "mse" in out and "maml" in out
    summary = json.loads((sinusoid_run / "evaluation" / "summary.json").read_text())
    assert summary["metric"] == "mse"
    assert [row["step"] for row in summary["methods"]["maml"]["steps"]] == [0, 1, 2]
    assert summary["methods"]["maml"]["tasks"] == 12 and summary["methods"]["maml"]["seed"] == 5

    # Options of the meta-RL protocol are refused on a few-shot run, as one line and exit code 2, writing nothing.
    before = (sinusoid_run / "evaluation" / "summary.json").read_bytes()
    assert metarl(["evaluate", str(sinusoid_run), "--episodes", "5", "--baseline", "random"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--episodes, --baseline" in err and "few-shot" in err
    assert (sinusoid_run / "evaluation" / "summary.json").read_bytes() == before

    figure = tmp_path / "adaptation.svg"
    assert metarl(["plot", str(sinusoid_run), "-o", str(figure)]) == 0
    assert "mean squared error" in figure.read_text()
    curves = tmp_path / "training.png"
    assert metarl(["plot", str(sinusoid_run), "--training", "-o", str(curves)]) == 0
    assert curves.is_file() and curves.stat().st_size > 0


def test_data_dir_option_points_the_loader(tmp_path, capsys, repo_root):
    """``--data-dir`` replaces the config's data folder; a missing one is one line naming it, and no run folder."""
    from metarl.cli import main as metarl

    missing, run = tmp_path / "no omniglot here", tmp_path / "run"
    config = str(repo_root / "experiments" / "fewshot_omniglot_maml_5w1s.yaml")
    assert metarl(["train", config, "--run-dir", str(run), "--data-dir", str(missing), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(missing) in err
    assert not run.exists()


def _fake_run(run: Path, column: str, scores: dict[int, float], checkpoints: list[int]) -> Path:
    """A run folder with a ``progress.csv`` holding ``column`` at some iterations and empty checkpoint files."""
    (run / "checkpoints").mkdir(parents=True)
    with (run / "progress.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["iteration", column])
        for i in range(1, max(checkpoints) + 1):
            writer.writerow([i, scores.get(i, "")])
    for i in checkpoints:
        (run / "checkpoints" / f"iter_{i:06d}.pt").write_bytes(b"")
    return run


def test_best_checkpoint_is_chosen_by_the_validation_metric(tmp_path):
    from metarl.fewshot.evaluate import best_checkpoint

    # Accuracy: highest wins; iteration 5 scores best but has no checkpoint; ties go to the earlier checkpoint.
    acc = _fake_run(tmp_path / "acc", "val_accuracy", {2: 0.7, 4: 0.9, 5: 0.99, 6: 0.9, 8: 0.8}, [2, 4, 6, 7, 8])
    assert best_checkpoint(acc, "accuracy").name == "iter_000004.pt"
    # MSE: lowest wins.
    mse = _fake_run(tmp_path / "mse", "val_mse", {2: 0.7, 4: 0.9, 6: 0.3, 8: 0.5}, [2, 4, 6, 8])
    assert best_checkpoint(mse, "mse").name == "iter_000006.pt"
    # No checkpoint at a validated iteration: one clear error.
    none = _fake_run(tmp_path / "none", "val_accuracy", {3: 0.5}, [2, 4])
    with pytest.raises(CheckpointError, match="no checkpoint at an iteration with a val_accuracy row"):
        best_checkpoint(none, "accuracy")


def test_evaluate_best_uses_and_records_the_validation_choice(tmp_path):
    fs = {"problem": "sinusoid", "k_shot": 5, "k_query": 5, "meta_batch_size": 2, "val_tasks": 4, "eval_every": 2}
    data = {
        "seed": 1,
        "iterations": 6,
        "algorithm": "maml",
        "fewshot": fs,
        "logging": {"tensorboard": False, "checkpoint_every": 2},
    }
    run = trained_run(tmp_path / "run", data)
    rows = read_csv(run / "progress.csv")
    val = {int(r["iteration"]): float(r["val_mse"]) for r in rows if r["val_mse"]}
    assert sorted(val) == [2, 4, 6]
    expected = min(sorted(val), key=lambda i: val[i])
    entry = evaluate_fewshot(run, "best", tasks=5, steps=1)["methods"]["maml"]
    assert entry["iteration"] == expected and entry["checkpoint"] == f"checkpoints/iter_{expected:06d}.pt"
    assert "val_mse" in entry["checkpoint_rule"]
    same = evaluate_fewshot(run, str(expected), tasks=5, steps=1)["methods"]["maml"]
    assert same["steps"] == entry["steps"] and "checkpoint_rule" not in same
