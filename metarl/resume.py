"""``metarl train --resume RUN``: choose the checkpoint, check the new settings, and record what each resume changed.

A resume is planned (:func:`plan_resume`) without writing anything: the run's config plus the overrides, the newest
checkpoint that loads (newer ones that do not are noted, not touched), and the refusals that need no model (a changed
task family or algorithm, nothing left to run). The caller then builds its model under the new config and loads the
checkpoint into it (:func:`explain_load_failure` names the keys when that fails); only then :func:`record_resume`
moves unreadable checkpoints aside, appends to ``RUN/resumes.yaml`` and rewrites ``RUN/config.yaml``. So a refused or
failed resume leaves the run exactly as it was, and the folder always says which settings produced which iterations.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .checkpoint import CheckpointError, load_checkpoint
from .config import Config, ConfigError, config_to_dict, dump_config
from .errors import UserError
from .run_dir import read_run_config

HISTORY = "resumes.yaml"
# Keys that decide what is being learned: a checkpoint of one task family or algorithm is no start for another, even
# where the shapes agree (HalfCheetahVel and HalfCheetahDir share their spaces).
FIXED_KEYS = ("algorithm", "env.id", "fewshot.problem")
# Keys that cannot change a model's parameters, left out when a checkpoint does not load under the new settings.
RUNTIME_KEYS = ("iterations", "max_env_steps", "seed", "device", "threads", "sampler.", "logging.", "fewshot.data_dir")
HEADER = (
    "# One entry per `metarl train --resume` of this run, appended when it started: the iteration it continued from,\n"
    "# the checkpoint it loaded and the config keys it changed ([old, new]); config.yaml holds the latest settings.\n"
)


@dataclass
class ResumePlan:
    """What a resume will do; nothing of it has been written yet."""

    run_dir: Path
    config: Config
    checkpoint: Path
    state: dict[str, Any]
    changed: dict[str, list[Any]]
    unreadable: list[tuple[Path, str]] = field(default_factory=list)

    @property
    def iteration(self) -> int:
        return int(self.state.get("iteration", 0))


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(tree, dict) and tree:
        out: dict[str, Any] = {}
        for key, value in tree.items():
            out.update(_flatten(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: tree}


def config_changes(old: Config, new: Config) -> dict[str, list[Any]]:
    """``{dotted key: [old, new]}`` for every leaf that differs (a missing leaf reads as None)."""
    a, b = _flatten(config_to_dict(old)), _flatten(config_to_dict(new))
    return {key: [a.get(key), b.get(key)] for key in sorted(a.keys() | b.keys()) if a.get(key) != b.get(key)}


def newest_loadable(run_dir: Path) -> tuple[Path, dict[str, Any], list[tuple[Path, str]]]:
    """The newest ``checkpoints/iter_*.pt`` that loads, its state, and the newer ones that do not (with why)."""
    folder = run_dir / "checkpoints"
    found = sorted((p for p in folder.glob("iter_*.pt") if p.stem[5:].isdigit()), key=lambda p: int(p.stem[5:]))
    if not found:
        raise CheckpointError(f"run folder '{run_dir}' has no checkpoint to resume from")
    unreadable: list[tuple[Path, str]] = []
    for path in reversed(found):
        try:
            return path, load_checkpoint(path), unreadable
        except CheckpointError as exc:
            unreadable.append((path, str(exc)))
    raise CheckpointError(f"no checkpoint of '{run_dir}' loads; the newest: {unreadable[0][1]}")


def plan_resume(run_dir: str | Path, overrides: list[str]) -> ResumePlan:
    """Read the run, apply ``overrides`` and pick the checkpoint; ``UserError`` for what can be refused already."""
    run_dir = Path(run_dir)
    previous = read_run_config(run_dir)
    config = read_run_config(run_dir, overrides)
    changed = config_changes(previous, config)
    for key in FIXED_KEYS:
        if key in changed:
            old, new = changed[key]
            raise ConfigError(
                f"config key '{key}': a resume cannot change it ({old} -> {new}); start a new run for {new}"
            )
    checkpoint, state, unreadable = newest_loadable(run_dir)
    plan = ResumePlan(run_dir, config, checkpoint, state, changed, unreadable)
    if config.iterations <= plan.iteration:
        raise ConfigError(
            f"run folder '{run_dir}' has completed {plan.iteration} iterations and iterations is {config.iterations}: "
            f"nothing to run (raise it with --set iterations=N)"
        )
    spent = int(state.get("env_steps", 0)) if isinstance(state, dict) else 0
    if config.max_env_steps is not None and spent >= config.max_env_steps:
        raise ConfigError(
            f"run folder '{run_dir}' has spent {spent} environment steps and max_env_steps is {config.max_env_steps}: "
            "nothing to run (raise it with --set max_env_steps=N)"
        )
    return plan


def explain_load_failure(plan: ResumePlan, error: UserError) -> UserError:
    """The error to report when the checkpoint does not load under the new settings: name the keys this resume
    changed that can change a model's shapes; the original error when it changed none."""
    keys = [key for key in plan.changed if not key.startswith(RUNTIME_KEYS)]
    if not keys:
        return error
    what = ", ".join(f"'{key}' ({plan.changed[key][0]} -> {plan.changed[key][1]})" for key in keys)
    return ConfigError(
        f"config key {what}: checkpoint '{plan.checkpoint.name}' does not load with this change; "
        "a resume cannot change parameter shapes (start a new run instead)"
    )


def _aside(path: Path) -> Path:
    """``path`` renamed to ``<name>.corrupt`` (``.corrupt.N`` when that is taken); never deleted."""
    target, n = path.with_name(path.name + ".corrupt"), 1
    while target.exists():
        target, n = path.with_name(f"{path.name}.corrupt.{n}"), n + 1
    path.rename(target)
    return target


def record_resume(plan: ResumePlan) -> None:
    """Start the resume in the folder: keep unreadable checkpoints aside (one line on stderr), append the history
    entry and write the new settings to ``config.yaml``."""
    moved = [(_aside(path), why) for path, why in plan.unreadable]
    if moved:
        names = ", ".join(path.name.removesuffix(".corrupt") for path, _ in moved)
        print(
            f"metarl train: checkpoint {names} is corrupt, resuming from {plan.checkpoint.name}; "
            f"kept aside as {', '.join(path.name for path, _ in moved)}",
            file=sys.stderr,
            flush=True,
        )
    entry = {
        "resumed_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "from_iteration": plan.iteration,
        "checkpoint": plan.checkpoint.relative_to(plan.run_dir).as_posix(),
        "changed": plan.changed,
    }
    if moved:
        entry["set_aside"] = [path.relative_to(plan.run_dir).as_posix() for path, _ in moved]
    history = plan.run_dir / HISTORY
    text = ("" if history.exists() else HEADER) + yaml.safe_dump([entry], sort_keys=False, default_flow_style=None)
    with history.open("a", encoding="utf-8") as handle:
        handle.write(text)
    (plan.run_dir / "config.yaml").write_text(dump_config(plan.config), encoding="utf-8")
