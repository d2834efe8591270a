"""`metarl train --resume`: a refused or failed resume leaves the run as it was; every resume is recorded; a corrupt
latest checkpoint falls back to the newest one that loads and is kept aside (issue 20, items 2 and 5)."""

import csv
from pathlib import Path

import pytest
import torch
import yaml
from cli_runs import NAV, TINY, sets, train

from metarl.checkpoint import latest_checkpoint, load_checkpoint


def snapshot(run: Path) -> dict[str, bytes]:
    """Every file of a run folder and its bytes."""
    return {str(p.relative_to(run)): p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()}


def rows(run: Path) -> list[dict]:
    with (run / "progress.csv").open(newline="") as handle:
        return [{k: v for k, v in r.items() if not k.startswith("time_")} for r in csv.DictReader(handle)]


def same(a, b) -> bool:
    """Nested dicts/lists of tensors and plain values, equal bit for bit."""
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return isinstance(b, (list, tuple)) and len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if torch.is_tensor(a):
        return torch.is_tensor(b) and torch.equal(a, b)
    return a == b


@pytest.fixture
def nav_run(tmp_path, repo_root, monkeypatch):
    """A finished 2-iteration navigation run (checkpoint at 2), in seconds."""
    monkeypatch.chdir(repo_root)
    run = tmp_path / "run"
    assert train(NAV, "--run-dir", str(run), *sets("iterations=2", *TINY)) == 0
    return run


@pytest.mark.parametrize(
    ("changes", "key"),
    [
        (["policy.hidden_sizes=[32]"], "policy.hidden_sizes"),
        (["env.id=metarl/Bandit-v0", "env.kwargs={}"], "env.id"),
    ],
)
def test_a_refused_resume_names_the_key_and_changes_nothing(nav_run, capsys, changes, key):
    before = snapshot(nav_run)
    capsys.readouterr()
    assert train("--resume", str(nav_run), *sets("iterations=4", *changes)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"'{key}'" in err[0], err
    assert snapshot(nav_run) == before
    assert train("--resume", str(nav_run), *sets("iterations=4")) == 0  # the run still resumes as it was
    assert len(rows(nav_run)) == 4


def test_the_task_family_cannot_change_even_where_shapes_agree(tmp_path, repo_root, monkeypatch, capsys):
    """HalfCheetahVel and HalfCheetahDir have the same spaces: the checkpoint would load, and must still be refused."""
    monkeypatch.chdir(repo_root)
    run = tmp_path / "cheetah"
    tiny = sets("iterations=1", "env.id=metarl/HalfCheetahVel-v0", "env.kwargs.horizon=5", *TINY)
    assert train(NAV, "--run-dir", str(run), *tiny) == 0
    before = snapshot(run)
    capsys.readouterr()
    assert train("--resume", str(run), *sets("iterations=2", "env.id=metarl/HalfCheetahDir-v0")) == 2
    assert "'env.id'" in capsys.readouterr().err
    assert snapshot(run) == before


def test_each_resume_is_recorded_with_what_it_changed(nav_run):
    assert not (nav_run / "resumes.yaml").exists()
    assert train("--resume", str(nav_run), *sets("iterations=4", "maml.fast_lr=0.05")) == 0
    assert train("--resume", str(nav_run), *sets("iterations=6")) == 0
    history = yaml.safe_load((nav_run / "resumes.yaml").read_text())
    assert [h["from_iteration"] for h in history] == [2, 4]
    assert [h["checkpoint"] for h in history] == ["checkpoints/iter_000002.pt", "checkpoints/iter_000004.pt"]
    assert history[0]["changed"] == {"iterations": [2, 4], "maml.fast_lr": [0.1, 0.05]}
    assert history[1]["changed"] == {"iterations": [4, 6]}
    assert yaml.safe_load((nav_run / "config.yaml").read_text())["maml"]["fast_lr"] == 0.05


SINE = {
    "seed": 0,
    "iterations": 2,
    "algorithm": "maml",
    "fewshot": {"problem": "sinusoid", "k_shot": 5, "k_query": 5, "meta_batch_size": 2, "hidden": 8},
    "logging": {"tensorboard": False, "checkpoint_every": 2},
}


def test_a_few_shot_resume_that_changes_shapes_is_refused(tmp_path, capsys):
    (tmp_path / "sine.yaml").write_text(yaml.safe_dump(SINE))
    run = tmp_path / "run"
    assert train(str(tmp_path / "sine.yaml"), "--run-dir", str(run)) == 0
    before = snapshot(run)
    capsys.readouterr()  # the first run's progress lines
    assert train("--resume", str(run), *sets("iterations=4", "fewshot.hidden=16")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "'fewshot.hidden'" in err[0], err
    assert snapshot(run) == before
    assert train("--resume", str(run), *sets("iterations=3")) == 0


def test_a_corrupt_latest_checkpoint_falls_back_and_is_kept_aside(tmp_path, repo_root, monkeypatch, capsys):
    """Checkpoints at 2 and 4, the one at 4 truncated: resume continues from 2, says so in one line, keeps the bad
    file as ``iter_000004.pt.corrupt``, and ends where an uninterrupted run ends."""
    monkeypatch.chdir(repo_root)
    straight, damaged = tmp_path / "straight", tmp_path / "damaged"
    assert train(NAV, "--run-dir", str(straight), *sets("iterations=6", *TINY)) == 0
    assert train(NAV, "--run-dir", str(damaged), *sets("iterations=4", *TINY)) == 0
    bad = damaged / "checkpoints" / "iter_000004.pt"
    truncated = bad.read_bytes()[:200]
    bad.write_bytes(truncated)
    capsys.readouterr()
    assert train("--resume", str(damaged), *sets("iterations=6")) == 0
    err = [line for line in capsys.readouterr().err.splitlines() if "corrupt" in line]
    assert len(err) == 1 and "iter_000004.pt" in err[0] and "iter_000002.pt" in err[0], err
    assert (damaged / "checkpoints" / "iter_000004.pt.corrupt").read_bytes() == truncated
    assert rows(straight) == rows(damaged) and len(rows(damaged)) == 6
    a = load_checkpoint(latest_checkpoint(straight))["algorithm"]["policy"]
    b = load_checkpoint(latest_checkpoint(damaged))["algorithm"]["policy"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_few_shot_resume_falls_back_past_a_corrupt_checkpoint(tmp_path, capsys):
    (tmp_path / "sine.yaml").write_text(yaml.safe_dump({**SINE, "iterations": 6}))
    straight, damaged = tmp_path / "straight", tmp_path / "damaged"
    assert train(str(tmp_path / "sine.yaml"), "--run-dir", str(straight)) == 0
    assert train(str(tmp_path / "sine.yaml"), "--run-dir", str(damaged), *sets("iterations=4")) == 0
    (damaged / "checkpoints" / "iter_000004.pt").write_bytes(b"")
    capsys.readouterr()
    assert train("--resume", str(damaged), *sets("iterations=6")) == 0
    assert "resuming from iter_000002.pt" in capsys.readouterr().err
    assert (damaged / "checkpoints" / "iter_000004.pt.corrupt").read_bytes() == b""
    a, b = (load_checkpoint(latest_checkpoint(run))["method"] for run in (straight, damaged))
    assert rows(straight) == rows(damaged) and len(rows(damaged)) == 6
    assert same(a, b)


def test_no_loadable_checkpoint_is_one_line_and_moves_nothing(nav_run, capsys):
    (nav_run / "checkpoints" / "iter_000002.pt").write_bytes(b"not a checkpoint")
    before = snapshot(nav_run)
    capsys.readouterr()
    assert train("--resume", str(nav_run), *sets("iterations=4")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "iter_000002.pt" in err[0], err
    assert snapshot(nav_run) == before


@pytest.mark.parametrize("iterations", [1, 2])
def test_a_resume_with_nothing_to_run_says_so(nav_run, capsys, iterations):
    before = snapshot(nav_run)
    capsys.readouterr()
    assert train("--resume", str(nav_run), *sets(f"iterations={iterations}")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nothing to run" in err[0] and "2 iterations" in err[0], err
    assert snapshot(nav_run) == before


def test_a_config_file_with_resume_is_refused(nav_run, capsys):
    before = snapshot(nav_run)
    capsys.readouterr()
    assert train(NAV, "--resume", str(nav_run), *sets("iterations=4")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--resume" in err[0] and NAV in err[0], err
    assert snapshot(nav_run) == before


def test_a_metric_that_appears_on_resume_gets_its_column(tmp_path):
    """A resumed run whose changed config logs a new metric keeps it: the column is added, earlier rows empty."""
    from metarl.run_dir import ProgressLog, read_progress

    path = tmp_path / "progress.csv"
    log = ProgressLog(path)
    for it in (1, 2, 3):
        log.append({"iteration": it, "loss": 0.5 * it})
    log = ProgressLog(path, resume_from=2)  # the third row is past the checkpoint and goes
    log.append({"iteration": 3, "loss": 9.0, "updates": 4.0})
    rows = read_progress(tmp_path)
    assert [row["iteration"] for row in rows] == [1.0, 2.0, 3.0]
    assert [row.get("updates") for row in rows] == [None, None, 4.0]
    assert rows[2]["loss"] == 9.0
    with path.open(newline="") as handle:
        assert next(csv.reader(handle)) == ["iteration", "loss", "updates"]
