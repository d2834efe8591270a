"""`metarl train` and the run folder: no half-made folders, inputs refused before any work, a double Ctrl-C before
the first checkpoint, and ``progress.csv`` line endings (issue 20, items 3, 4, 5 and 7)."""

from pathlib import Path

import pytest

from metarl.cli import main
from metarl.run_dir import read_progress

NAV = "experiments/maml_trpo_navigation.yaml"
TINY = [
    "sampler.backend=local",
    "maml.meta_batch_size=2",
    "maml.episodes_per_task=2",
    "policy.hidden_sizes=[8]",
    "env.kwargs.horizon=10",
    "logging.checkpoint_every=2",
    "logging.tensorboard=false",
]


def sets(*assignments: str) -> list[str]:
    return sum([["--set", a] for a in assignments], [])


def train(*args: str) -> int:
    return main(["train", *args, "--no-progress"])


def one_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


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
