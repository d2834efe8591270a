"""Tiny `metarl train` runs through the CLI, shared by the run-folder and resume tests."""

from metarl.cli import main

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
    """``--set`` flags for each assignment."""
    return sum([["--set", a] for a in assignments], [])


def train(*args: str) -> int:
    """``metarl train ARGS --no-progress``; returns the exit code."""
    return main(["train", *args, "--no-progress"])


def interrupted_and_straight(config: str, overrides: list[str], tmp_path, monkeypatch) -> tuple:
    """The same 4-iteration run twice: straight, and stopped by SIGINT during iteration 3 (it finishes and
    checkpoints that iteration, exit 130) then continued with ``--resume``; returns ``(straight, stopped)``."""
    import signal

    from metarl.checkpoint import latest_checkpoint, load_checkpoint
    from metarl.train import MetaRLTrainer

    straight, stopped = tmp_path / "straight", tmp_path / "stopped"
    args = sets("iterations=4", *overrides)
    assert train(config, "--run-dir", str(straight), *args) == 0
    original = MetaRLTrainer.run_iteration

    def interrupted(self, iteration):
        if iteration == 2:
            signal.raise_signal(signal.SIGINT)
        return original(self, iteration)

    monkeypatch.setattr(MetaRLTrainer, "run_iteration", interrupted)
    assert train(config, "--run-dir", str(stopped), *args) == 128 + signal.SIGINT
    assert load_checkpoint(latest_checkpoint(stopped))["iteration"] == 3
    monkeypatch.setattr(MetaRLTrainer, "run_iteration", original)
    assert train("--resume", str(stopped)) == 0
    return straight, stopped
