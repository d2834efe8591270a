"""The `metarl` command surface: help lists the commands, `envs` lists every family."""

import subprocess
import sys

import pytest

from metarl.cli import main

FAMILIES = ["Navigation2D", "HalfCheetahVel", "HalfCheetahDir", "AntVel", "AntDir", "Bandit", "TabularMDP"]


def test_help_lists_the_commands(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for command in ("train", "evaluate", "plot", "envs"):
        assert command in out


def test_envs_lists_all_seven_families(capsys):
    assert main(["envs"]) == 0
    out = capsys.readouterr().out
    for family in FAMILIES:
        assert f"metarl/{family}-v0" in out
    assert out.count("tasks:") == len(FAMILIES)


def test_console_script_is_installed_and_exits_2_on_a_missing_config(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "metarl.cli", "train", str(tmp_path / "missing.yaml")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"metarl train: error: config file '{tmp_path / 'missing.yaml'}' does not exist"
    ]
