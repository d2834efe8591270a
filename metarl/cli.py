"""The ``metarl`` command: train, evaluate, plot, envs.

Heavy modules (torch, Ray, MuJoCo) are imported inside each command so ``metarl --help`` answers at once. Every
user error (bad config, missing data or run folder, corrupt checkpoint, unreachable Ray) ends as one line on stderr
and exit code 2, before any work starts.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

USER_ERROR_EXIT = 2


def _user_errors() -> tuple[type[BaseException], ...]:
    """Exception types that mean 'the user asked for something unusable', not a bug."""
    from .checkpoint import CheckpointError
    from .config import ConfigError

    errors: list[type[BaseException]] = [ConfigError, CheckpointError]
    try:
        from .sampling import SamplerError

        errors.append(SamplerError)
    except ImportError:
        pass
    try:
        from .fewshot.omniglot import DataError

        errors.append(DataError)
    except ImportError:
        pass
    return tuple(errors)


def _cmd_envs(args: argparse.Namespace) -> int:
    import envs

    rows = envs.describe_families()
    for row in rows:
        print(f"{row['id']}  ({row['family']}, horizon {row['horizon']})")
        print(f"    tasks:        {row['task_parameters']}")
        print(f"    observation:  {row['observation_space']}")
        print(f"    action:       {row['action_space']}")
        print(f"    paper:        {row['paper']}")
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from .train import train_from_cli

    train_from_cli(
        config_path=args.config,
        run_dir=args.run_dir,
        resume=args.resume,
        overrides=args.set,
        ray_address=args.ray_address,
        device=args.device,
        progress=not args.no_progress,
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="metarl", description="Meta-train agents and measure fast adaptation on held-out tasks."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    train = commands.add_parser("train", help="meta-train from a YAML experiment file into a run folder")
    train.add_argument("config", nargs="?", help="experiment YAML (e.g. experiments/maml_trpo_navigation.yaml)")
    train.add_argument("--run-dir", help="run folder to create (default: runs/<config>-<time>)")
    train.add_argument("--resume", metavar="RUN_DIR", help="continue a run from its latest checkpoint")
    train.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    train.add_argument("--ray-address", help="join this Ray cluster instead of starting a local Ray")
    train.add_argument("--device", choices=["auto", "cpu", "cuda"], help="learner device (overrides config)")
    train.add_argument("--no-progress", action="store_true", help="no progress bar (logs one line per iteration)")
    train.set_defaults(func=_cmd_train)

    envs_cmd = commands.add_parser("envs", help="list the registered task-distribution environments")
    envs_cmd.set_defaults(func=_cmd_envs)

    for register in _EXTRA_COMMANDS:
        register(commands)
    return parser


# Commands defined in their own modules add themselves here (evaluate, plot, baseline).
_EXTRA_COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = []


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except _user_errors() as exc:
        print(f"metarl {args.command}: error: {exc}", file=sys.stderr)
        return USER_ERROR_EXIT
    except KeyboardInterrupt:
        print(f"metarl {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
