"""`metarl train` end to end: run folder contents, exact resume, bad input, and a short run that learns."""

import csv
import signal

import pytest
import torch

from metarl.checkpoint import latest_checkpoint, load_checkpoint
from metarl.cli import main

TINY = [
    "sampler.backend=local",
    "sampler.num_workers=1",
    "maml.meta_batch_size=4",
    "maml.episodes_per_task=4",
    "policy.hidden_sizes=[16, 16]",
    "env.kwargs.horizon=20",
    "logging.checkpoint_every=2",
    "logging.tensorboard=false",
]
NAV = "experiments/maml_trpo_navigation.yaml"


def run_train(args):
    return main(["train", *args, "--no-progress"])


def read_rows(run_dir):
    with open(run_dir / "progress.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def test_run_folder_has_config_progress_and_checkpoints(tmp_path, repo_root, monkeypatch):
    monkeypatch.chdir(repo_root)
    run = tmp_path / "run"
    assert run_train([NAV, "--run-dir", str(run), "--set", "iterations=2", *sum([["--set", s] for s in TINY], [])]) == 0
    assert (run / "config.yaml").is_file()
    rows = read_rows(run)
    assert [int(r["iteration"]) for r in rows] == [1, 2]
    for column in (
        "iteration",
        "env_steps",
        "return_pre",
        "return_post",
        "kl",
        "surrogate_improvement",
        "time_sampling_s",
        "time_update_s",
    ):
        assert column in rows[0]
    assert int(rows[1]["env_steps"]) > int(rows[0]["env_steps"]) > 0
    state = load_checkpoint(latest_checkpoint(run))
    assert state["iteration"] == 2


def test_resume_continues_exactly(tmp_path, repo_root, monkeypatch):
    monkeypatch.chdir(repo_root)
    overrides = sum([["--set", s] for s in TINY], [])
    straight, halves = tmp_path / "straight", tmp_path / "halves"
    assert run_train([NAV, "--run-dir", str(straight), "--set", "iterations=4", *overrides]) == 0
    assert run_train([NAV, "--run-dir", str(halves), "--set", "iterations=2", *overrides]) == 0
    assert run_train(["--resume", str(halves), "--set", "iterations=4"]) == 0

    def strip_times(rows):
        return [{k: v for k, v in r.items() if not k.startswith("time_")} for r in rows]

    assert strip_times(read_rows(straight)) == strip_times(read_rows(halves))
    a = load_checkpoint(latest_checkpoint(straight))["algorithm"]
    b = load_checkpoint(latest_checkpoint(halves))["algorithm"]
    flat_a, flat_b = _tensors(a), _tensors(b)
    assert flat_a.keys() == flat_b.keys() and flat_a
    assert all(torch.equal(flat_a[k], flat_b[k]) for k in flat_a)


def test_sigterm_checkpoints_the_finished_iteration_and_resume_is_exact(tmp_path, repo_root, monkeypatch, capsys):
    """``kill`` during iteration 3 (checkpoints every 2): iteration 3 finishes, is checkpointed, exit code 143;
    ``--resume`` then matches the uninterrupted run."""
    from metarl.train import MetaRLTrainer

    monkeypatch.chdir(repo_root)
    overrides = sum([["--set", s] for s in TINY], [])
    straight, stopped = tmp_path / "straight", tmp_path / "stopped"
    assert run_train([NAV, "--run-dir", str(straight), "--set", "iterations=4", *overrides]) == 0
    original = MetaRLTrainer.run_iteration

    def signalled(self, iteration):
        if iteration == 2:
            signal.raise_signal(signal.SIGTERM)
        return original(self, iteration)

    monkeypatch.setattr(MetaRLTrainer, "run_iteration", signalled)
    assert run_train([NAV, "--run-dir", str(stopped), "--set", "iterations=4", *overrides]) == 128 + signal.SIGTERM
    assert "after iteration 3 (checkpointed)" in capsys.readouterr().err
    assert load_checkpoint(latest_checkpoint(stopped))["iteration"] == 3 and len(read_rows(stopped)) == 3
    monkeypatch.setattr(MetaRLTrainer, "run_iteration", original)
    assert run_train(["--resume", str(stopped)]) == 0
    a = _tensors(load_checkpoint(latest_checkpoint(straight))["algorithm"])
    b = _tensors(load_checkpoint(latest_checkpoint(stopped))["algorithm"])
    assert a.keys() == b.keys() and a and all(torch.equal(a[k], b[k]) for k in a)
    assert [r["return_post"] for r in read_rows(straight)] == [r["return_post"] for r in read_rows(stopped)]


def _tensors(tree, prefix=""):
    out = {}
    if isinstance(tree, dict):
        for k, v in tree.items():
            out.update(_tensors(v, f"{prefix}{k}."))
    elif torch.is_tensor(tree):
        out[prefix] = tree
    return out


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--set", "maml.fastlr=0.1"], "unknown config key 'maml.fastlr'"),
        (["--set", "maml.meta_batch_size=many"], "config key 'maml.meta_batch_size': expected an integer"),
        (["--set", "trpo.max_kl=-1"], "config key 'trpo.max_kl'"),
        (["--set", "env.id=metarl/Nope-v0"], "unknown environment 'metarl/Nope-v0'"),
        (["--set", "env.kwargs.nonsense=3"], "config key 'env.kwargs'"),
    ],
)
def test_bad_config_is_one_line_exit_2_and_no_run_folder(tmp_path, repo_root, monkeypatch, capsys, extra, message):
    monkeypatch.chdir(repo_root)
    run = tmp_path / "run"
    assert run_train([NAV, "--run-dir", str(run), *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err
    assert len(err.splitlines()) == 1
    assert not run.exists()


def test_unreachable_ray_address_is_a_clear_error_before_any_folder(tmp_path, repo_root, monkeypatch, capsys):
    monkeypatch.chdir(repo_root)
    run = tmp_path / "run"
    assert run_train([NAV, "--run-dir", str(run), "--ray-address", "127.0.0.1:1"]) == 2
    err = capsys.readouterr().err.strip()
    assert "127.0.0.1:1" in err and len(err.splitlines()) == 1
    assert not run.exists()


def test_resume_needs_a_checkpoint_and_a_run_folder(tmp_path, capsys):
    assert run_train(["--resume", str(tmp_path / "nothing")]) == 2
    assert "not a run folder" in capsys.readouterr().err
    assert run_train([]) == 2


def test_short_navigation_training_improves_post_adaptation_return(tmp_path, repo_root, monkeypatch):
    """A short MAML-TRPO run on Navigation2D (in-process sampler): the adapted return rises."""
    monkeypatch.chdir(repo_root)
    run = tmp_path / "nav"
    args = [NAV, "--run-dir", str(run), "--set", "sampler.backend=local", "--set", "iterations=30"]
    args += ["--set", "maml.meta_batch_size=10", "--set", "maml.episodes_per_task=10", "--set", "seed=3"]
    args += ["--set", "logging.tensorboard=false", "--set", "logging.checkpoint_every=30"]
    assert run_train(args) == 0
    post = [float(r["return_post"]) for r in read_rows(run)]
    first, last = sum(post[:5]) / 5, sum(post[-5:]) / 5
    assert last > first + 5.0, (first, last)
