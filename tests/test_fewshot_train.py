"""Few-shot meta-training: the meta-gradient, each method learning, exact resume, and bad input stopping early."""

from __future__ import annotations

import csv
import dataclasses
import re
import signal
from pathlib import Path

import pytest
import torch
import yaml

from metarl.checkpoint import latest_checkpoint, load_checkpoint
from metarl.cli import main
from metarl.config import config_from_dict, load_config
from metarl.fewshot import make_synthetic_omniglot
from metarl.fewshot.methods import GradientMethod, build_method
from metarl.fewshot.problem import FewShotProblem, build_problem
from metarl.fewshot.tasks import FewShotBatch
from metarl.fewshot.train import train_fewshot
from metarl.stopping import StopOnSignal

CPU = torch.device("cpu")
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    """A tiny Omniglot-like data set: 3 background alphabets (1 held out for validation), 2 evaluation ones."""
    return make_synthetic_omniglot(tmp_path_factory.mktemp("omniglot"), n_alphabets=(3, 2), n_characters=3)


def sinusoid_config(algorithm: str, **fewshot) -> dict:
    fs = {"problem": "sinusoid", "k_shot": 10, "k_query": 10, "meta_batch_size": 5, "inner_lr": 0.01}
    fs.update(fewshot)
    return {"seed": 0, "iterations": 10, "algorithm": algorithm, "fewshot": fs, "logging": {"tensorboard": False}}


def omniglot_config(algorithm: str, root: Path, **fewshot) -> dict:
    fs = {
        "problem": "omniglot",
        "n_way": 5,
        "k_shot": 1,
        "k_query": 3,
        "meta_batch_size": 4,
        "inner_lr": 0.1,
        "eval_inner_steps": 1,
        "outer_lr": 0.003,
        "hidden": 16,
        "downsample": "stride",
        "val_alphabets": 1,
        "data_dir": str(root),
    }
    fs.update(fewshot)
    return {"seed": 0, "iterations": 30, "algorithm": algorithm, "fewshot": fs, "logging": {"tensorboard": False}}


def as_double(batch: FewShotBatch) -> FewShotBatch:
    return dataclasses.replace(
        batch,
        support_x=batch.support_x.double(),
        support_y=batch.support_y.double(),
        query_x=batch.query_x.double(),
        query_y=batch.query_y.double(),
    )


# ----------------------------------------------------------------------------------------------------------------------
# The meta-gradient of the training objective


def _fd_check(method: GradientMethod, batch: FewShotBatch, tensors: list[torch.Tensor], seed: int) -> float:
    """Relative error between <grad, v> and a central finite difference of the objective along random v."""
    loss, _ = method.objective(batch)
    grads = torch.autograd.grad(loss, tensors)
    g = torch.Generator().manual_seed(seed)
    directions = [torch.randn(t.shape, generator=g, dtype=t.dtype) for t in tensors]
    analytic = sum(float((gr * d).sum()) for gr, d in zip(grads, directions, strict=True))
    eps = 1e-6
    values = []
    for sign in (1.0, -1.0):
        with torch.no_grad():
            for t, d in zip(tensors, directions, strict=True):
                t.add_(sign * eps * d)
        values.append(float(method.objective(batch)[0].detach()))
        with torch.no_grad():
            for t, d in zip(tensors, directions, strict=True):
                t.sub_(sign * eps * d)
    numeric = (values[0] - values[1]) / (2 * eps)
    return abs(analytic - numeric) / max(abs(numeric), 1e-12)


@pytest.mark.parametrize("vectorize", [False, True])
def test_meta_gradient_matches_finite_differences(vectorize):
    """Second-order MAML through two inner steps (float64): the training objective's gradient is exact."""
    config = config_from_dict(sinusoid_config("maml", hidden=8, inner_lr=0.3, inner_steps=2, vectorize=vectorize))
    problem = build_problem(config)
    torch.manual_seed(0)
    method = GradientMethod(config, problem, CPU, dtype=torch.float64)
    batch = as_double(problem.train_batch(0, 0, 3))
    params = list(method.params().values())
    for seed in range(3):
        assert _fd_check(method, batch, params, seed) < 1e-6

    # First-order MAML drops the second-order term: its gradient is measurably off the finite difference.
    fo = GradientMethod(dataclasses.replace(config, algorithm="fomaml"), problem, CPU, dtype=torch.float64)
    fo.model.load_state_dict(method.model.state_dict())
    assert _fd_check(fo, batch, list(fo.params().values()), 0) > 1e-3


def test_meta_sgd_step_size_gradient_matches_finite_differences():
    config = config_from_dict(sinusoid_config("metasgd", hidden=8, inner_lr=0.05, inner_lr_high=0.3, vectorize=False))
    problem = build_problem(config)
    torch.manual_seed(1)
    method = GradientMethod(config, problem, CPU, dtype=torch.float64)
    batch = as_double(problem.train_batch(0, 1, 3))
    step_sizes = method.learner.meta_parameters()
    flat = torch.cat([s.flatten() for s in step_sizes])
    assert ((flat >= 0.05) & (flat <= 0.3)).all() and flat.std() > 0.05  # Li et al.'s random initialisation
    assert _fd_check(method, batch, step_sizes, 0) < 1e-6
    assert _fd_check(method, batch, list(method.params().values()) + step_sizes, 1) < 1e-6


def test_loop_and_vmap_give_the_same_meta_gradient():
    grads = []
    for vectorize in (False, True):
        config = config_from_dict(sinusoid_config("maml", hidden=8, inner_steps=2, vectorize=vectorize))
        problem = build_problem(config)
        torch.manual_seed(0)
        method = GradientMethod(config, problem, CPU, dtype=torch.float64)
        loss, _ = method.objective(as_double(problem.train_batch(0, 0, 4)))
        grads.append(torch.autograd.grad(loss, list(method.params().values())))
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b)


# ----------------------------------------------------------------------------------------------------------------------
# Every method learns on a tiny problem


SINUSOID_SETTINGS = {
    "maml": {"inner_lr": 0.01},
    "fomaml": {"inner_lr": 0.01},
    "metasgd": {"inner_lr": 0.01},
    "anil": {"inner_lr": 0.1},
    "reptile": {"inner_lr": 0.02, "inner_steps": 5, "inner_batch_size": 10, "train_shots": 50, "meta_batch_size": 2},
}


@pytest.mark.parametrize("algorithm", sorted(SINUSOID_SETTINGS))
def test_gradient_learners_improve_on_sinusoid(algorithm, tmp_path):
    config = config_from_dict(sinusoid_config(algorithm, outer_lr=0.01, **SINUSOID_SETTINGS[algorithm]))
    config = dataclasses.replace(config, iterations=150)
    problem = build_problem(config)
    held_out = problem.test.fixed(50, seed=7)
    torch.manual_seed(config.seed)
    steps = 1 if algorithm == "metasgd" else 3  # Meta-SGD learns step sizes for one step: more would overshoot
    before = build_method(config, problem, CPU).adaptation_curve(held_out, steps)[:, -1].mean()
    rows = train_fewshot(config, problem, tmp_path, CPU, progress=False)
    method = build_method(config, problem, CPU)
    method.load_state_dict(load_checkpoint(latest_checkpoint(tmp_path))["method"])
    after = method.adaptation_curve(held_out, steps)[:, -1].mean()
    assert after < 0.8 * before, (before, after)  # MSE after adaptation on 50 held-out tasks
    assert rows[-1]["val_mse"] != "" and len(rows) == 150


OMNIGLOT_SETTINGS = {
    "maml": {},
    "fomaml": {},
    "metasgd": {},
    "anil": {"inner_lr": 1.0},
    "reptile": {"inner_steps": 3, "train_shots": 2, "inner_batch_size": 5},
    "reptile-adam": {"inner_steps": 3, "train_shots": 2, "inner_batch_size": 5, "inner_rule": "adam", "inner_lr": 0.01},
    "reptile-carried": {
        **{"inner_steps": 3, "train_shots": 2, "inner_batch_size": 5, "inner_rule": "adam", "inner_lr": 0.01},
        "inner_adam_state": "carried",
    },
    "protonet": {"train_ways": 8},
    "matchingnet": {"matching_scale": 10.0},
}


@pytest.mark.parametrize("algorithm", sorted(OMNIGLOT_SETTINGS))
def test_classifiers_improve_on_synthetic_omniglot(algorithm, synth):
    """Query loss on held-out (evaluation-alphabet) episodes drops after 30 meta-iterations."""
    config = config_from_dict(omniglot_config(algorithm.split("-")[0], synth, **OMNIGLOT_SETTINGS[algorithm]))
    problem = build_problem(config)
    held_out = problem.test.fixed(30, seed=7)
    torch.manual_seed(0)
    method = build_method(config, problem, CPU)
    loss_before, _ = method.query_loss(held_out)
    for iteration in range(config.iterations):
        method.train_step(problem.train_batch(config.seed, iteration, config.fewshot.meta_batch_size), iteration)
    loss_after, accuracy_after = method.query_loss(held_out)
    assert loss_after < 0.8 * loss_before, (loss_before, loss_after)
    assert accuracy_after > 0.5  # chance is 0.2


# ----------------------------------------------------------------------------------------------------------------------
# Resume: N iterations straight == N/2, resume, N/2 (bit for bit)


def _write_config(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def _rows(run: Path) -> list[dict]:
    with (run / "progress.csv").open(newline="") as handle:
        return [{k: v for k, v in row.items() if k != "time_s"} for row in csv.DictReader(handle)]


def _assert_same_state(a: dict, b: dict) -> None:
    assert a["iteration"] == b["iteration"]
    flat_a, flat_b = _flatten(a["method"]), _flatten(b["method"])
    assert flat_a.keys() == flat_b.keys()
    for key, value in flat_a.items():
        if torch.is_tensor(value):
            assert torch.equal(value, flat_b[key]), key
        else:
            assert value == flat_b[key], key
    assert torch.equal(a["torch_rng"], b["torch_rng"])


def _flatten(tree, prefix: str = "") -> dict:
    if isinstance(tree, dict):
        out = {}
        for key, value in tree.items():
            out.update(_flatten(value, f"{prefix}{key}/"))
        return out
    if isinstance(tree, (list, tuple)):
        return _flatten(dict(enumerate(tree)), prefix)
    return {prefix: tree}


RESUME_CASES = {
    "maml": lambda root: sinusoid_config("maml", eval_every=2),
    "metasgd": lambda root: sinusoid_config("metasgd", inner_lr_high=0.05, eval_every=2),
    "reptile": lambda root: sinusoid_config("reptile", inner_steps=3, inner_batch_size=4, train_shots=12),
    "reptile-carried": lambda root: sinusoid_config(
        "reptile", inner_steps=3, inner_batch_size=4, train_shots=12, inner_rule="adam", inner_adam_state="carried"
    ),
    "protonet": lambda root: omniglot_config("protonet", root, train_ways=4, outer_lr_decay_every=3),
}


@pytest.mark.parametrize("algorithm", sorted(RESUME_CASES))
def test_resume_continues_exactly(algorithm, synth, tmp_path):
    data = RESUME_CASES[algorithm](synth)
    data.update(iterations=6, logging={"checkpoint_every": 3, "tensorboard": True})
    config_file = _write_config(tmp_path / "config.yaml", data)
    straight, interrupted = tmp_path / "straight", tmp_path / "interrupted"
    assert main(["train", str(config_file), "--run-dir", str(straight), "--no-progress"]) == 0
    # A run that stopped after its checkpoint at iteration 3 (what a crash after iteration 3 leaves behind).
    assert main(["train", str(config_file), "--run-dir", str(interrupted), "--no-progress"]) == 0
    (interrupted / "checkpoints" / "iter_000006.pt").unlink()
    assert main(["train", "--resume", str(interrupted), "--no-progress"]) == 0
    _assert_same_state(load_checkpoint(latest_checkpoint(straight)), load_checkpoint(latest_checkpoint(interrupted)))
    assert _rows(straight) == _rows(interrupted) and len(_rows(straight)) == 6


def test_resume_with_more_iterations_equals_a_longer_run(tmp_path):
    """``--resume RUN --set iterations=N`` extends a finished run as if it had been asked for N iterations."""
    data = sinusoid_config("maml", eval_every=2)
    data.update(iterations=6, logging={"checkpoint_every": 3, "tensorboard": False})
    long_file = _write_config(tmp_path / "long.yaml", data)
    short_file = _write_config(tmp_path / "short.yaml", {**data, "iterations": 3})
    assert main(["train", str(long_file), "--run-dir", str(tmp_path / "long"), "--no-progress"]) == 0
    assert main(["train", str(short_file), "--run-dir", str(tmp_path / "short"), "--no-progress"]) == 0
    assert main(["train", "--resume", str(tmp_path / "short"), "--set", "iterations=6", "--no-progress"]) == 0
    a, b = (load_checkpoint(latest_checkpoint(tmp_path / name)) for name in ("long", "short"))
    _assert_same_state(a, b)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_stops_after_the_iteration_with_a_checkpoint_and_resume_is_exact(signum, monkeypatch, tmp_path, capsys):
    """``kill`` / Ctrl-C in the middle of iteration 4 (checkpoints every 3): iteration 4 finishes and is checkpointed,
    the exit code is 128 + signal, and resuming gives the uninterrupted run bit for bit."""
    data = sinusoid_config("maml", eval_every=2)
    data.update(iterations=8, logging={"checkpoint_every": 3, "tensorboard": False})
    config_file = _write_config(tmp_path / "config.yaml", data)
    straight, stopped = tmp_path / "straight", tmp_path / "stopped"
    assert main(["train", str(config_file), "--run-dir", str(straight), "--no-progress"]) == 0

    original = FewShotProblem.train_batch

    def signalled(self, seed, iteration, size):
        if iteration == 3:
            signal.raise_signal(signum)  # lands between bytecodes of iteration 4, before its update
        return original(self, seed, iteration, size)

    monkeypatch.setattr(FewShotProblem, "train_batch", signalled)
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    assert main(["train", str(config_file), "--run-dir", str(stopped), "--no-progress"]) == 128 + signum
    err = capsys.readouterr().err
    assert "after iteration 4" in err and f"metarl train --resume {stopped}" in err
    assert {s: signal.getsignal(s) for s in handlers} == handlers  # the run's handlers are gone again
    assert sorted(p.name for p in (stopped / "checkpoints").iterdir()) == ["iter_000003.pt", "iter_000004.pt"]
    assert len(_rows(stopped)) == 4
    monkeypatch.undo()
    assert main(["train", "--resume", str(stopped), "--no-progress"]) == 0
    _assert_same_state(load_checkpoint(latest_checkpoint(straight)), load_checkpoint(latest_checkpoint(stopped)))
    assert _rows(straight) == _rows(stopped) and len(_rows(stopped)) == 8


def test_second_signal_stops_at_once():
    with StopOnSignal() as stop:
        signal.raise_signal(signal.SIGTERM)
        assert stop.requested and stop.signum == signal.SIGTERM
        with pytest.raises(KeyboardInterrupt):
            signal.raise_signal(signal.SIGTERM)


# ----------------------------------------------------------------------------------------------------------------------
# Bad input stops before a run folder exists


@pytest.mark.parametrize("case", ["unset", "empty", "corrupt"])
def test_missing_or_corrupt_omniglot_stops_before_the_run_folder(case, tmp_path, capsys):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    if case == "corrupt":
        for part in ("images_background", "images_evaluation"):
            (data_dir / f"{part}.zip").write_bytes(b"this is not a zip file")
    setting = "fewshot.data_dir=null" if case == "unset" else f"fewshot.data_dir={data_dir}"
    run = tmp_path / "run"
    config = str(REPO / "experiments" / "fewshot_omniglot_maml_5w1s.yaml")
    code = main(["train", config, "--run-dir", str(run), "--set", setting, "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and not run.exists()
    assert len(err.strip().splitlines()) == 1 and "DataError" not in err
    assert "--set fewshot.data_dir=PATH" in err
    if case == "empty":
        assert str(data_dir) in err and "not found" in err
    if case == "corrupt":
        assert "zip" in err and str(data_dir) in err


def test_config_that_does_not_fit_the_algorithm_stops_early(tmp_path, capsys):
    config_file = _write_config(tmp_path / "bad.yaml", sinusoid_config("protonet"))
    code = main(["train", str(config_file), "--run-dir", str(tmp_path / "run"), "--no-progress"])
    assert code == 2 and not (tmp_path / "run").exists()
    assert "classification" in capsys.readouterr().err


@pytest.fixture(scope="module")
def synth20(tmp_path_factory) -> Path:
    """Like ``synth`` with 20 drawings per character, as in the real set (the configs' episodes need 16)."""
    root = tmp_path_factory.mktemp("omniglot20")
    return make_synthetic_omniglot(root, n_alphabets=(3, 2), n_characters=3, n_drawings=20, image_size=28)


@pytest.mark.parametrize("path", sorted((REPO / "experiments").glob("fewshot_*.yaml")), ids=lambda p: p.stem)
def test_experiment_files_are_valid(path, synth20):
    """Every published-settings file loads, names its algorithm, and builds its problem (on the tiny data set)."""
    text = path.read_text()
    assert text.startswith("# ") and "Published" in text  # each file says where its settings come from
    overrides = [f"fewshot.data_dir={synth20}", "fewshot.val_alphabets=1"] if "omniglot" in path.stem else []
    if "20w1s" in path.stem:
        overrides.append("fewshot.n_way=6")  # the tiny set has 24 classes per split, fewer than 60-way needs
    if "protonet" in path.stem:
        overrides.append("fewshot.train_ways=12")
    config = load_config(path, overrides)
    # fewshot_<problem>_<algorithm>[_<N>w<K>s]; algorithm names may hold underscores (snail_classifier)
    prefix = f"fewshot_{config.fewshot.problem}_{config.algorithm}"
    assert path.stem.startswith(prefix) and re.fullmatch(r"(_\d+w\d+s)?", path.stem[len(prefix) :]), path.stem
    assert config.fewshot.eval_tasks == 600
    build_problem(config)


def test_threads_key_sets_the_training_process_threads(monkeypatch, tmp_path):
    """``threads`` (default 1) is what a CPU run gives torch, new or resumed; it is recorded in the run's config."""
    calls: list[int] = []
    monkeypatch.setattr(torch, "set_num_threads", calls.append)  # the test process keeps its own setting
    data = sinusoid_config("maml")
    data.update(iterations=2, device="cpu")
    config_file = _write_config(tmp_path / "config.yaml", data)
    assert main(["train", str(config_file), "--run-dir", str(tmp_path / "run"), "--no-progress"]) == 0
    assert calls == [1]
    resume = ["train", "--resume", str(tmp_path / "run"), "--set", "iterations=3", "--set", "threads=2"]
    assert main([*resume, "--no-progress"]) == 0
    assert calls == [1, 2]
    assert yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["threads"] == 2
