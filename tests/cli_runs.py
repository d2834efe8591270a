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
