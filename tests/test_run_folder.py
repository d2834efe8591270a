"""`metarl train` and the run folder: no half-made folders, inputs refused before any work, a double Ctrl-C before
the first checkpoint, and ``progress.csv`` line endings (issue 20, items 3, 4, 5 and 7)."""

import signal
from pathlib import Path

import pytest
from cli_runs import NAV, TINY, sets, train

from metarl.run_dir import read_progress


def one_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


@pytest.mark.parametrize(
    ("assignments", "message"),
    [
        # the navigation config scales its actions by 0.1; the bandit's actions are discrete
        (["env.id=metarl/Bandit-v0", "env.kwargs={}"], "'policy.action_scale'"),
        (["policy.hidden_sizes=[0]"], "'policy.hidden_sizes[0]'"),
        (["policy.hidden_sizes=[16, -2]"], "'policy.hidden_sizes[1]'"),
        (["env.id=CartPole-v1", "env.kwargs={}"], "not a task distribution"),
        (["env.id=CartPole-v1", "env.kwargs={}", "sampler.backend=ray"], "not a task distribution"),
    ],
)
def test_bad_input_stops_before_the_run_folder(tmp_path, repo_root, monkeypatch, capsys, assignments, message):
    monkeypatch.chdir(repo_root)
    run = tmp_path / "run"
    tiny = [s for s in TINY if "backend" not in s or not any("backend" in a for a in assignments)]
    assert train(NAV, "--run-dir", str(run), *sets(*tiny, "iterations=1", *assignments)) == 2
    line = one_line(capsys)
    assert message in line and line.startswith("metarl train: error:"), line
    assert not run.exists()


def test_an_empty_config_file_is_refused(tmp_path, capsys):
    empty = tmp_path / "empty.yaml"
    empty.write_text("# only a comment\n")
    quick = sets("iterations=1", *TINY)  # before the fix the defaults trained: keep that short
    assert train(str(empty), "--run-dir", str(tmp_path / "run"), *quick) == 2
    line = one_line(capsys)
    assert "empty" in line and str(empty) in line
    assert not (tmp_path / "run").exists()


def _interrupt_twice_in_the_first_iteration(monkeypatch) -> None:
    """Ctrl-C, then Ctrl-C again, during iteration 1: the second one stops at once (KeyboardInterrupt)."""
    from metarl.train import MetaRLTrainer

    original = MetaRLTrainer.run_iteration

    def interrupted(self, iteration):
        if iteration == 0:
            signal.raise_signal(signal.SIGINT)
            signal.raise_signal(signal.SIGINT)
        return original(self, iteration)

    monkeypatch.setattr(MetaRLTrainer, "run_iteration", interrupted)


def test_a_double_ctrl_c_before_the_first_checkpoint_leaves_no_folder(tmp_path, repo_root, monkeypatch, capsys):
    monkeypatch.chdir(repo_root)
    run = tmp_path / "new" / "run"
    args = [NAV, "--run-dir", str(run), *sets("iterations=2", *TINY)]
    _interrupt_twice_in_the_first_iteration(monkeypatch)
    assert train(*args) == 130
    err = capsys.readouterr().err
    assert "nothing was saved" in err, err
    assert not (tmp_path / "new").exists()  # the folders this run made are gone
    monkeypatch.undo()
    monkeypatch.chdir(repo_root)
    assert train(*args) == 0  # the same command starts the run afresh
    assert (run / "checkpoints" / "iter_000002.pt").is_file()


def test_a_failed_start_in_an_existing_folder_keeps_its_other_files(tmp_path, repo_root, monkeypatch, capsys):
    monkeypatch.chdir(repo_root)
    run = tmp_path / "run"
    (run / "notes").mkdir(parents=True)
    (run / "notes" / "plan.txt").write_text("keep me")
    _interrupt_twice_in_the_first_iteration(monkeypatch)
    assert train(NAV, "--run-dir", str(run), *sets("iterations=2", *TINY)) == 130
    assert "nothing was saved" in capsys.readouterr().err
    assert sorted(str(p.relative_to(run)) for p in run.rglob("*")) == ["notes", "notes/plan.txt"]
    assert (run / "notes" / "plan.txt").read_text() == "keep me"


def test_a_failed_new_folder_removes_only_what_it_made(tmp_path):
    """The folders a failed start made go, but not a sibling another run created meanwhile, nor a folder that
    holds a checkpoint."""
    from metarl.config import config_from_dict
    from metarl.run_dir import new_run_folder

    target, sibling = tmp_path / "runs" / "a", tmp_path / "runs" / "b"
    with pytest.raises(RuntimeError), new_run_folder(target, config_from_dict({})):
        sibling.mkdir(parents=True)
        raise RuntimeError("failed before the first checkpoint")
    assert not target.exists() and sibling.is_dir()
    with pytest.raises(RuntimeError), new_run_folder(target, config_from_dict({})):
        (target / "checkpoints").mkdir()
        (target / "checkpoints" / "iter_000001.pt").write_bytes(b"")
        raise RuntimeError("failed after it")
    assert (target / "config.yaml").is_file()


def test_progress_csv_has_unix_line_endings_and_old_crlf_files_resume(tmp_path, repo_root, monkeypatch):
    monkeypatch.chdir(repo_root)
    run = tmp_path / "run"
    assert train(NAV, "--run-dir", str(run), *sets("iterations=2", *TINY)) == 0
    data = (run / "progress.csv").read_bytes()
    assert b"\r" not in data and data.count(b"\n") == 3
    (run / "progress.csv").write_bytes(data.replace(b"\n", b"\r\n"))  # as written before the fix
    assert [r["iteration"] for r in read_progress(run)] == [1.0, 2.0]
    assert train("--resume", str(run), *sets("iterations=4")) == 0
    data = (run / "progress.csv").read_bytes()
    assert b"\r" not in data and [r["iteration"] for r in read_progress(run)] == [1.0, 2.0, 3.0, 4.0]


def test_read_progress_names_a_non_numeric_value(tmp_path):
    from metarl.errors import UserError

    run = Path(tmp_path)
    (run / "progress.csv").write_text("iteration,return_pre\n1,-3.5\n2,oops\n")
    with pytest.raises(UserError, match=r"progress.csv.*line 3.*'return_pre'.*'oops'"):
        read_progress(run)
