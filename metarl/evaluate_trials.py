"""``metarl evaluate`` for trial-based algorithms (RL^2): return per episode of a trial on held-out tasks.

Protocol (Duan et al. 2016): for each of ``tasks`` held-out tasks (the family's ``test`` stream, seeded by
``seed``, the same tasks as a MAML evaluation with that seed), run ``trials`` trials of ``episodes_per_trial``
episodes with the agent's hidden state carried across the episodes of a trial; record each episode's return,
averaged over the trials. ``summary.json`` gets, per method, the statistics per episode of the trial (``steps``: step
``k`` is episode ``k + 1``) and of the total return of a trial (``trial``), each with a 95% Student-t interval over
the tasks. Methods: the run's agent (named after the algorithm), ``random`` (a freshly initialised agent of the same
architecture, seeded), on Bernoulli bandits the classic strategies of :mod:`metarl.bandit_baselines`, on tabular
MDPs the exact references of :mod:`metarl.tabular_baselines`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from .bandit_baselines import STRATEGIES, bandit_returns
from .checkpoint import CheckpointError, load_checkpoint, resolve_checkpoint
from .config import Config, ConfigError
from .eval_results import csv_name, csv_text, merge_summary, read_summary, summarize, summary_json, write_atomic
from .tabular_baselines import STRATEGIES as MDP_STRATEGIES
from .tabular_baselines import tabular_returns

BANDIT_ID = "metarl/Bandit-v0"
MDP_ID = "metarl/TabularMDP-v0"
BASELINES = ("random", *STRATEGIES, *MDP_STRATEGIES)
SAMPLE, RANDOM_INIT, BANDIT = 0, 1, 3


def _algorithm(config: Config) -> Any:
    from .algorithms import build_algorithm
    from .train import make_env

    env = make_env(config)
    try:
        return build_algorithm(config, env, torch.device("cpu"))
    finally:
        env.close()


def evaluate_trial_run(
    run: Path,
    config: Config,
    *,
    checkpoint: str | None,
    tasks: int,
    trials: int,
    seed: int,
    backend: str | None,
    workers: int | None,
    ray_address: str | None,
    baseline: str | None,
) -> dict[str, Any]:
    """Evaluate one method on a trial-based run; writes its CSV, merges ``summary.json``, returns the summary."""
    from .evaluate import derived_eval_seed, held_out_tasks

    method = baseline or config.algorithm
    if baseline is not None and baseline not in BASELINES:
        raise ConfigError(f"--baseline for a {config.algorithm} run must be one of {', '.join(BASELINES)}")
    if method in STRATEGIES and config.env.id != BANDIT_ID:
        raise ConfigError(f"--baseline {method} plays Bernoulli bandits ({BANDIT_ID}), not {config.env.id}")
    if method in MDP_STRATEGIES and config.env.id != MDP_ID:
        raise ConfigError(f"--baseline {method} solves tabular MDPs ({MDP_ID}), not {config.env.id}")
    k = getattr(config, config.algorithm).episodes_per_trial  # the trial algorithm's section (rl2, snail)
    entry: dict[str, Any] = {"seed": seed, "tasks": tasks, "episodes": trials, "episodes_per_trial": k}
    entry["axis"] = "episode of the trial (step k = episode k + 1)"
    read_summary(run / "evaluation")
    algorithm = None
    if method == config.algorithm:
        from .evaluate import best_checkpoint, best_column

        path = resolve_checkpoint(run, checkpoint, lambda: best_checkpoint(run))
        state = load_checkpoint(path)
        algorithm = _algorithm(config)
        try:
            algorithm.load_state_dict(state["algorithm"])
        except (KeyError, RuntimeError, TypeError, ValueError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
            raise CheckpointError(f"checkpoint '{path}' does not fit this run's config ({first})") from None
        entry.update(checkpoint=str(path.relative_to(run) if path.is_relative_to(run) else path))
        if checkpoint == "best":
            entry.update(checkpoint_rule=f"best mean training {best_column(run)} since the previous checkpoint")
        entry.update(iteration=int(state.get("iteration", -1)))
    elif method == "random":
        torch.manual_seed(derived_eval_seed(seed, RANDOM_INIT))
        algorithm = _algorithm(config)
    held_out = held_out_tasks(config, tasks, seed)

    if algorithm is not None:
        from .sampling import configured_sampler

        with configured_sampler(config, backend, workers, ray_address) as sampler:
            curves = algorithm.evaluation_curves(sampler, held_out, trials, derived_eval_seed(seed, SAMPLE))
        returns, success = curves
    elif method in MDP_STRATEGIES:
        from .train import make_env

        env = make_env(config)
        horizon = int(env.unwrapped.horizon)
        env.close()
        returns, success = tabular_returns(method, held_out, horizon, k), None
    else:
        seeds = [derived_eval_seed(seed, BANDIT, i) for i in range(tasks)]
        returns, success = bandit_returns(method, held_out, k, trials, seeds), None

    entry.update(csv=csv_name(method), steps=summarize(returns), trial=summarize(returns.sum(1, keepdims=True))[0])
    if success is not None:  # Meta-World: success rate of episode 1..K of a trial
        entry.update(success_steps=summarize(success), success_rule="an episode succeeds if any step has success")
    folder = run / "evaluation"
    summary = merge_summary(read_summary(folder), method, entry, config.env.id)
    text = csv_text(method, held_out, returns, success)
    write_atomic({folder / csv_name(method): text, folder / "summary.json": summary_json(summary)})
    return summary


def format_trial_table(summary: dict[str, Any]) -> str:
    """Mean total return per trial and first / last episode, per method, with 95% intervals."""
    header = f"{'method':<10} {'trial return':>13} {'95% CI':>20} {'episode 1':>10} {'last episode':>13} {'n':>4}"
    lines = [header, "-" * len(header)]
    for method, entry in summary.get("methods", {}).items():
        if "trial" not in entry:
            continue
        t, first, last = entry["trial"], entry["steps"][0], entry["steps"][-1]
        ci = f"[{_num(t['ci95_low']):.4g}, {_num(t['ci95_high']):.4g}]"
        lines.append(
            f"{method:<10} {_num(t['mean']):>13.4g} {ci:>20} {_num(first['mean']):>10.4g} "
            f"{_num(last['mean']):>13.4g} {t['n']:>4}"
        )
    return "\n".join(lines)


def _num(value: Any) -> float:
    return float("nan") if value is None else float(value)


__all__ = ["BASELINES", "evaluate_trial_run", "format_trial_table"]
