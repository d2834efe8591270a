"""The ``metarl`` command: train, evaluate, plot, envs.

Heavy modules (torch, Ray, MuJoCo) are imported inside each command so ``metarl --help`` answers at once. Every
user error (bad config, missing data or run folder, corrupt checkpoint, unreachable Ray) ends as one line on stderr
and exit code 2, before any work starts.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from .errors import UserError
from .stopping import StopRequested

USER_ERROR_EXIT = 2


def _cmd_envs(args: argparse.Namespace) -> int:
    import metarl_envs as envs

    rows = envs.describe_families()
    for row in rows:
        if "not_installed" in row:
            print(f"{row['id']}  ({row['family']}): not installed; {row['not_installed']}")
            continue
        print(f"{row['id']}  ({row['family']}, horizon {row['horizon']})")
        print(f"    tasks:        {row['task_parameters']}")
        print(f"    observation:  {row['observation_space']}")
        print(f"    action:       {row['action_space']}")
        print(f"    paper:        {row['paper']}")
    return 0


def _data_dir_override(data_dir: str | None) -> list[str]:
    """``--data-dir DIR`` as the override ``fewshot.data_dir=DIR`` (quoted, so any path stays a YAML string)."""
    import json

    return [] if data_dir is None else [f"fewshot.data_dir={json.dumps(data_dir)}"]


def _cmd_train(args: argparse.Namespace) -> int:
    from .train import train_from_cli

    train_from_cli(
        config_path=args.config,
        run_dir=args.run_dir,
        resume=args.resume,
        overrides=args.set + _data_dir_override(args.data_dir),
        ray_address=args.ray_address,
        device=args.device,
        progress=not args.no_progress,
    )
    return 0


def _fewshot_run(run_dir: str) -> bool:
    """Whether ``run_dir`` holds a few-shot run (its config has a ``fewshot`` section); False when unreadable,
    so the meta-RL evaluation reports the problem with its own message."""
    from .config import ConfigError
    from .run_dir import read_run_config

    try:
        return read_run_config(run_dir).fewshot is not None
    except (ConfigError, OSError, ValueError):
        return False


def _cmd_evaluate_fewshot(args: argparse.Namespace) -> int:
    from .config import ConfigError
    from .fewshot.evaluate import evaluate_fewshot, format_summary

    rl_only = {
        "--episodes": args.episodes,
        "--step-sizes": args.step_sizes,
        "--backend": args.backend,
        "--workers": args.workers,
        "--ray-address": args.ray_address,
        "--baseline": args.baseline,
        "--baseline-run": args.baseline_run,
    }
    given = [name for name, value in rl_only.items() if value is not None]
    if given:
        raise ConfigError(f"{', '.join(given)} apply to meta-RL runs only; '{args.run_dir}' is a few-shot run")
    overrides = _data_dir_override(args.data_dir)
    summary = evaluate_fewshot(args.run_dir, args.checkpoint, args.tasks, args.steps, args.seed, overrides)
    print(format_summary(summary))
    print(f"results: {args.run_dir}/evaluation/")
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    if _fewshot_run(args.run_dir):
        return _cmd_evaluate_fewshot(args)
    if args.data_dir is not None:
        from .config import ConfigError

        raise ConfigError(f"--data-dir applies to few-shot runs only; '{args.run_dir}' is a meta-RL run")
    from .eval_results import format_table, mismatched_settings
    from .evaluate import evaluate_run

    summary = evaluate_run(
        args.run_dir,
        checkpoint=args.checkpoint,
        tasks=40 if args.tasks is None else args.tasks,
        steps=args.steps,
        episodes=20 if args.episodes is None else args.episodes,
        seed=args.seed,
        step_sizes=args.step_sizes,
        backend=args.backend,
        workers=args.workers,
        ray_address=args.ray_address,
        baseline=args.baseline,
        baseline_run=args.baseline_run,
    )
    print(format_table(summary))
    if any("trial" in entry for entry in summary.get("methods", {}).values()):
        from .evaluate_trials import format_trial_table

        print(format_trial_table(summary))
    others = mismatched_settings(summary)
    if others:
        print(f"note: {', '.join(others)} used other seed/tasks/episodes than the first method", file=sys.stderr)
    print(f"results: {args.run_dir}/evaluation/")
    return 0


def _cmd_plot(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .config import ConfigError
    from .plot import output_paths, plot_adaptation, plot_training

    name = (
        ("training" if args.training else "budget" if args.budget else "adaptation")
        + ("_success" if args.success else "")
        + ".png"
    )
    output = args.output or str(Path(args.runs[0]) / "evaluation" / name)
    paths = output_paths(output, args.formats)
    if args.training and args.budget:
        raise ConfigError("--training and --budget draw different figures; give one of them")
    if args.training:
        written = plot_training(args.runs, paths, success=args.success)
    elif args.budget:
        from .plot_budget import plot_budget

        methods = [m.strip() for m in args.methods.split(",")] if args.methods else None
        written = plot_budget(args.runs, paths, methods, success=args.success)
    else:
        methods = [m.strip() for m in args.methods.split(",")] if args.methods else None
        written = plot_adaptation(args.runs, paths, methods, success=args.success)
    for path in written:
        print(f"wrote {path}")
    return 0


def _cmd_baseline_train(args: argparse.Namespace) -> int:
    from .sb3_baselines import train_baseline

    folder = train_baseline(
        args.source,
        args.kind,
        args.timesteps,
        args.run_dir,
        seed=args.seed,
        progress=not args.no_progress,
        n_envs=args.n_envs,
    )
    print(f"baseline folder: {folder}")
    return 0


def _add_evaluation_commands(commands: argparse._SubParsersAction) -> None:
    """``evaluate``, ``plot`` and ``baseline train``."""
    ev = commands.add_parser("evaluate", help="measure fast adaptation on held-out tasks (returns after k steps)")
    ev.add_argument("run_dir", metavar="RUN_DIR", help="run folder written by metarl train")
    ev.add_argument(
        "--checkpoint",
        help="iteration number, checkpoint file, or 'best' (meta-RL: best training return after adaptation, the MAML "
        "paper's rule, or the trial return for RL^2/SNAIL; few-shot: best validation metric after adaptation; "
        "default: the latest)",
    )
    ev.add_argument("--tasks", type=int, help="held-out tasks (default 40; few-shot runs: fewshot.eval_tasks, 600)")
    ev.add_argument(
        "--steps", type=int, help="gradient steps (default 3, or the number of --step-sizes; few-shot: the config's)"
    )
    ev.add_argument(
        "--episodes", type=int, help="episodes per task and step (default 20; meta-RL only; RL^2 runs: trials per task)"
    )
    ev.add_argument("--seed", type=int, default=0, help="seed of the tasks and episodes (default 0)")
    ev.add_argument(
        "--step-sizes",
        metavar="SPEC",
        help="'paper' (lr, then lr/2) or comma-separated sizes (default: the trained maml.fast_lr for every step)",
    )
    ev.add_argument("--backend", choices=["ray", "local"], help="sampler backend (default: the run's)")
    ev.add_argument("--workers", type=int, help="rollout workers (default: the run's)")
    ev.add_argument("--ray-address", help="join this Ray cluster instead of starting a local Ray")
    ev.add_argument(
        "--baseline",
        choices=["random", "pretrained", "oracle", "ucb1", "thompson", "gittins", "best_arm", "mdp_optimal", "uniform"],
        help="evaluate a baseline instead (ucb1, thompson, gittins, best_arm: Bernoulli bandits, gittins at discount "
        "1 - 1/N for N pulls per trial; mdp_optimal, uniform: tabular MDPs)",
    )
    ev.add_argument("--baseline-run", metavar="DIR", help="baseline folder (default: RUN_DIR/baselines/<kind>)")
    ev.add_argument("--data-dir", help="few-shot runs: the Omniglot folder, if it moved since training")
    ev.set_defaults(func=_cmd_evaluate)

    pl = commands.add_parser("plot", help="plot returns vs gradient steps (or --training curves) of runs")
    pl.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run folders (evaluated, or with progress.csv)")
    pl.add_argument("-o", "--output", help="figure file, .png or .svg (default: RUN_DIR/evaluation/<plot>.png)")
    pl.add_argument("--formats", help="write several formats, e.g. png,svg (suffix of -o replaced)")
    pl.add_argument("--training", action="store_true", help="training curves from progress.csv instead")
    pl.add_argument("--methods", help="only these methods, e.g. maml,oracle (default: all evaluated)")
    pl.add_argument("--success", action="store_true", help="success rate instead of return (Meta-World runs)")
    pl.add_argument(
        "--budget",
        action="store_true",
        help="x axis: environment steps spent adapting (compares MAML's gradient steps with RL^2/SNAIL's episodes)",
    )
    pl.set_defaults(func=_cmd_plot)

    bl = commands.add_parser("baseline", help="train SB3 PPO baselines (pretrained, oracle)")
    bl_commands = bl.add_subparsers(dest="baseline_command", required=True, metavar="SUBCOMMAND")
    tr = bl_commands.add_parser("train", help="train a PPO baseline into a run folder")
    tr.add_argument("source", metavar="CONFIG_OR_RUN_DIR", help="experiment YAML or meta-training run folder")
    tr.add_argument("--kind", choices=["pretrained", "oracle"], required=True, help="which baseline")
    tr.add_argument("--timesteps", type=int, help="PPO env steps (default: the meta-training run's env steps)")
    tr.add_argument("--run-dir", help="folder to create (default: RUN_DIR/baselines/<kind>)")
    tr.add_argument("--seed", type=int, help="PPO seed (default: the config's seed)")
    tr.add_argument(
        "--n-envs",
        type=int,
        default=1,
        help="envs stepped together; the minibatch grows with them (default 1: SB3's PPO defaults; use 16 or more "
        "for budgets of millions of steps)",
    )
    tr.add_argument("--no-progress", action="store_true", help="no progress bar")
    tr.set_defaults(func=_cmd_baseline_train)


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
    train.add_argument("--data-dir", help="few-shot data folder (same as --set fewshot.data_dir=DIR)")
    train.add_argument("--no-progress", action="store_true", help="no progress bar (logs one line per iteration)")
    train.set_defaults(func=_cmd_train)

    envs_cmd = commands.add_parser("envs", help="list the registered task-distribution environments")
    envs_cmd.set_defaults(func=_cmd_envs)

    _add_evaluation_commands(commands)
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
    except UserError as exc:
        print(f"metarl {args.command}: error: {exc}", file=sys.stderr)
        return USER_ERROR_EXIT
    except StopRequested as exc:
        print(f"metarl {args.command}: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt as exc:  # a second Ctrl-C; the command may say what it left behind
        print(f"metarl {args.command}: interrupted{f' {exc}' if str(exc) else ''}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
