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


def test_envs_lists_all_seven_families_and_the_meta_world_extra(capsys):
    import importlib.util

    assert main(["envs"]) == 0
    out = capsys.readouterr().out
    for family in FAMILIES:
        assert f"metarl/{family}-v0" in out
    extras = ["MetaWorldML1", "MetaWorldML10"]
    for family in extras:
        assert f"metarl/{family}-v0" in out
    installed = importlib.util.find_spec("metaworld") is not None
    assert out.count("tasks:") == len(FAMILIES) + (len(extras) if installed else 0)
    assert out.count('not installed; pip install -e ".[metaworld]"') == (0 if installed else len(extras))


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


def _raise_from_a_command(monkeypatch, exc: BaseException) -> int:
    """Run `metarl boom`, a command registered for this test whose only act is to raise ``exc``."""
    import metarl.cli as cli

    def register(commands):
        boom = commands.add_parser("boom")

        def raise_it(_args):
            raise exc

        boom.set_defaults(func=raise_it)

    monkeypatch.setattr(cli, "_EXTRA_COMMANDS", [*cli._EXTRA_COMMANDS, register])
    return cli.main(["boom"])


@pytest.mark.parametrize(
    "error_type",
    [
        "metarl.config.ConfigError",
        "metarl.checkpoint.CheckpointError",
        "metarl.sampling.base.SamplerError",
        "metarl.fewshot.omniglot.DataError",
        "metarl.evaluate.EvaluationError",
        "metarl.run_dir.RunFolderError",
    ],
)
def test_each_user_error_is_one_line_and_exit_2(monkeypatch, capsys, error_type):
    import importlib

    module_name, class_name = error_type.rsplit(".", 1)
    error_class = getattr(importlib.import_module(module_name), class_name)
    assert _raise_from_a_command(monkeypatch, error_class("the thing to fix")) == 2
    assert capsys.readouterr().err.splitlines() == ["metarl boom: error: the thing to fix"]


def test_an_unexpected_error_keeps_its_traceback(monkeypatch):
    with pytest.raises(ZeroDivisionError):
        _raise_from_a_command(monkeypatch, ZeroDivisionError("a bug"))
