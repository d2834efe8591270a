"""Typed experiment configs: YAML in, validated dataclasses out.

Every key is declared here with its type, default and (where it has one) its range. Loading checks the whole file
before any work starts: an unknown key, a wrong type or an out-of-range value raises ``ConfigError`` naming the key,
which the CLI turns into one line and exit code 2. ``--set key.sub=value`` overrides go through the same checks.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from .errors import UserError


class ConfigError(UserError, ValueError):
    """A config file or override that cannot be used; the message names the key and the problem."""


def _range(
    low: float | None = None, high: float | None = None, *, low_open: bool = False, high_open: bool = False
) -> dict:
    return {"low": low, "high": high, "low_open": low_open, "high_open": high_open}


def _positive() -> dict:
    return {"metadata": _range(0, None, low_open=True)}


@dataclass
class EnvConfig:
    """Which task distribution: a registered gymnasium id and constructor kwargs (e.g. ``horizon``)."""

    id: str = "metarl/Navigation2D-v0"
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass
class SamplerConfig:
    """Where episodes are collected: Ray actors (default) or in-process."""

    backend: Literal["ray", "local"] = "ray"
    num_workers: int = field(default=2, metadata=_range(1))
    ray_address: str | None = None


@dataclass
class PolicyConfig:
    """Policy network: MLP hidden sizes, activation, initial action std and a fixed action scale (Gaussian policies:
    actions are ``action_scale * (mean + std * noise)``, so ``init_std`` is in units of the scale)."""

    hidden_sizes: list[int] = field(default_factory=lambda: [100, 100], metadata=_range(1))
    activation: Literal["relu", "tanh"] = "relu"
    init_std: float = field(default=1.0, **_positive())
    action_scale: float = field(default=1.0, **_positive())


@dataclass
class MAMLConfig:
    """The meta-learning setup: tasks per meta-batch, episodes per task and the inner (adaptation) loop."""

    meta_batch_size: int = field(default=20, metadata=_range(1))
    episodes_per_task: int = field(default=20, metadata=_range(1))
    fast_lr: float = field(default=0.1, metadata=_range(0))
    num_steps: int = field(default=1, metadata=_range(1))
    first_order: bool = False
    inner_loss: Literal["reinforce", "lvc"] = "reinforce"
    # How the meta-batch's tasks share a graph: "auto" (the device's fastest, see maml_trpo.resolve_batching),
    # "stacked" (one graph, batched matmuls), "loop" (one graph per task: the reference) or "vmap".
    batching: Literal["auto", "stacked", "loop", "vmap"] = "auto"


@dataclass
class TRPOConfig:
    """The TRPO meta-update: trust region, conjugate gradient and backtracking line search."""

    max_kl: float = field(default=0.01, **_positive())
    cg_iters: int = field(default=10, metadata=_range(1))
    cg_damping: float = field(default=1e-5, metadata=_range(0))
    ls_max_steps: int = field(default=15, metadata=_range(1))
    ls_backtrack_ratio: float = field(default=0.8, metadata=_range(0, 1, low_open=True))
    # KL Hessian-vector products: "gauss_newton" (J^T H J, exact at the current params, ~1.8x cheaper on the CPU)
    # or "double_backward" (through the KL's gradient: the reference).
    hvp: Literal["gauss_newton", "double_backward"] = "gauss_newton"


@dataclass
class AdvantageConfig:
    """Discounting, GAE and advantage normalization."""

    gamma: float = field(default=0.99, metadata=_range(0, 1))
    gae_lambda: float = field(default=1.0, metadata=_range(0, 1))
    normalize: bool = True


@dataclass
class LoggingConfig:
    """What the run folder records and how often a checkpoint is written."""

    checkpoint_every: int = field(default=10, metadata=_range(1))
    tensorboard: bool = True


@dataclass
class FewShotConfig:
    """Supervised few-shot problems (sinusoid regression, Omniglot N-way K-shot) served by the same learners.

    Episodes: ``n_way`` classes (Omniglot), ``k_shot`` support and ``k_query`` query examples per class (sinusoid:
    points per task). ``train_ways`` / ``train_shots`` change the training episodes only (ProtoNets train 60-way;
    Reptile trains on more shots than it is tested on); ``None`` means the same as at test time. Inner loop:
    ``inner_lr``, ``inner_steps`` (training) and ``eval_inner_steps`` (validation, and the default of evaluation);
    ``inner_batch_size`` splits Reptile's inner steps into mini-batches of the support set. ``inner_rule``: plain
    gradient steps (``sgd``) or Adam (``adam``, with ``inner_adam_beta1``, beta2 0.999; Reptile's published inner
    loop is Adam with beta1 = 0); not with Meta-SGD's learned step sizes. ``inner_adam_state`` (Reptile with Adam):
    Adam's moments restart for every task (``task``) or carry on from task to task and across iterations
    (``carried``: ``supervised-reptile`` resets only the network's variables between tasks, not the optimizer's), in
    which case the state is checkpointed and every evaluation task starts from it. Outer loop: Adam with
    ``outer_lr`` (multiplied by ``outer_lr_decay`` every ``outer_lr_decay_every`` iterations when that is > 0), or
    Reptile's rule with a step size annealed linearly from ``reptile_outer_lr`` to ``reptile_outer_lr_final`` over
    the run's ``iterations``. ``inner_lr_high``: Meta-SGD step sizes start uniform in ``[inner_lr, inner_lr_high]``.
    ``meta_lstm``'s learned inner rule (Ravi & Larochelle 2017) has ``meta_lstm_hidden`` units in its first layer
    (paper: 20); ``outer_grad_clip`` clips the meta-gradient's norm before Adam (their code: 0.25; None: no clip).
    Model: ``hidden`` units/filters (None: the paper's 40 for the sinusoid MLP, 64 for Conv4), Conv4's
    ``downsample`` and ``feature_map`` (``mean`` or ``flatten`` the final map before the head; None: flatten after
    max-pooling, mean after strided convs as in MAML's code; Reptile's code flattens). ``vectorize``: batch tasks
    with ``torch.func.vmap`` (see ``benchmarks/fewshot.py``). ``pair_same_fraction``: the share of *same* pairs
    among the Siamese network's training pairs (Koch et al.: balanced, 0.5); ``hidden`` is its embedding width there.
    Memory-augmented network (``mann``): ``hidden`` LSTM controller units (None: 200), ``mann_slots`` x
    ``mann_width`` memory, ``mann_read_heads`` read heads (also the number of least-used slots written to) and
    ``mann_usage_decay`` (the usage decay gamma of Santoro et al. 2016).
    Data: ``data_dir`` (Omniglot zips or folders; relative paths are relative to the working directory),
    ``download``, ``val_alphabets`` held out of the background set for validation.
    """

    problem: Literal["sinusoid", "omniglot"] = "sinusoid"
    n_way: int = field(default=5, metadata=_range(2))
    k_shot: int = field(default=1, metadata=_range(1))
    k_query: int = field(default=15, metadata=_range(1))
    train_ways: int | None = field(default=None, metadata=_range(2))
    train_shots: int | None = field(default=None, metadata=_range(1))
    meta_batch_size: int = field(default=32, metadata=_range(1))
    inner_lr: float = field(default=0.4, metadata=_range(0))
    inner_lr_high: float | None = field(default=None, metadata=_range(0))
    inner_steps: int = field(default=1, metadata=_range(0))
    inner_batch_size: int | None = field(default=None, metadata=_range(1))
    inner_rule: Literal["sgd", "adam"] = "sgd"
    inner_adam_beta1: float = field(default=0.0, metadata=_range(0, 1, high_open=True))
    inner_adam_state: Literal["task", "carried"] = "task"
    eval_inner_steps: int = field(default=3, metadata=_range(0))
    outer_lr: float = field(default=1e-3, **_positive())
    outer_lr_decay: float = field(default=0.5, metadata=_range(0, 1, low_open=True))
    outer_lr_decay_every: int = field(default=0, metadata=_range(0))
    reptile_outer_lr: float = field(default=1.0, metadata=_range(0))
    reptile_outer_lr_final: float = field(default=0.0, metadata=_range(0))
    matching_scale: float = field(default=1.0, **_positive())
    pair_same_fraction: float = field(default=0.5, metadata=_range(0, 1, low_open=True, high_open=True))
    mann_slots: int = field(default=128, metadata=_range(1))
    mann_width: int = field(default=40, metadata=_range(1))
    mann_read_heads: int = field(default=4, metadata=_range(1))
    mann_usage_decay: float = field(default=0.95, metadata=_range(0, 1))
    hidden: int | None = field(default=None, metadata=_range(1))
    meta_lstm_hidden: int = field(default=20, metadata=_range(1))
    outer_grad_clip: float | None = field(default=None, **_positive())
    downsample: Literal["maxpool", "stride"] = "maxpool"
    feature_map: Literal["mean", "flatten"] | None = None
    vectorize: bool = True
    eval_tasks: int = field(default=600, metadata=_range(1))
    eval_every: int = field(default=1000, metadata=_range(1))
    val_tasks: int = field(default=100, metadata=_range(1))
    val_alphabets: int = field(default=5, metadata=_range(0))
    data_dir: str | None = None
    download: bool = False


@dataclass
class RL2Config:
    """RL^2 (Duan et al. 2016): a GRU agent over trials of ``episodes_per_trial`` episodes of one task, trained with
    PPO (see :mod:`metarl.algorithms.rl2`). Per iteration: ``tasks_per_iteration`` tasks, ``trials_per_task`` trials
    each; then ``epochs`` passes over the trials in ``minibatches`` minibatches (whole trials), Adam with ``lr``.
    Discounting and GAE come from the ``advantages`` section (gamma across the whole trial)."""

    tasks_per_iteration: int = field(default=20, metadata=_range(1))
    trials_per_task: int = field(default=1, metadata=_range(1))
    episodes_per_trial: int = field(default=10, metadata=_range(1))
    hidden_size: int = field(default=256, metadata=_range(1))
    init_std: float = field(default=1.0, **_positive())
    lr: float = field(default=3e-4, **_positive())
    clip: float = field(default=0.2, **_positive())
    epochs: int = field(default=4, metadata=_range(1))
    minibatches: int = field(default=1, metadata=_range(1))
    value_coef: float = field(default=0.5, metadata=_range(0))
    entropy_coef: float = field(default=0.0, metadata=_range(0))
    max_grad_norm: float = field(default=1.0, **_positive())


@dataclass
class ReptileConfig:
    """Reptile as a meta-RL learner (:mod:`metarl.algorithms.reptile`): ``inner_steps`` policy-gradient steps per task,
    each on fresh episodes (tasks, episodes and the inner step size come from the ``maml`` section, whose
    ``num_steps`` must stay 1), then ``theta += eps * mean(phi - theta)`` with ``eps`` annealed linearly from
    ``outer_lr`` to ``outer_lr_final`` over the run's ``iterations``."""

    inner_steps: int = field(default=3, metadata=_range(1))
    outer_lr: float = field(default=1.0, metadata=_range(0))
    outer_lr_final: float = field(default=0.0, metadata=_range(0))


@dataclass
class SNAILConfig:
    """SNAIL (Mishra et al. 2018) as a trial agent, trained with PPO exactly as RL^2 is (the same keys, see
    :class:`RL2Config` and :mod:`metarl.algorithms.snail`). ``policy_blocks`` / ``value_blocks`` name block lists of
    ``metarl.models.snail.PRESETS`` (the paper's bandit/MDP policy and value networks by default); the TC blocks
    cover ``episodes_per_trial`` x the env's horizon steps."""

    tasks_per_iteration: int = field(default=20, metadata=_range(1))
    trials_per_task: int = field(default=1, metadata=_range(1))
    episodes_per_trial: int = field(default=10, metadata=_range(1))
    policy_blocks: str = "bandit_mdp"
    value_blocks: str = "bandit_mdp_value"
    init_std: float = field(default=1.0, **_positive())
    lr: float = field(default=3e-4, **_positive())
    clip: float = field(default=0.2, **_positive())
    epochs: int = field(default=4, metadata=_range(1))
    minibatches: int = field(default=1, metadata=_range(1))
    value_coef: float = field(default=0.5, metadata=_range(0))
    entropy_coef: float = field(default=0.0, metadata=_range(0))
    max_grad_norm: float = field(default=1.0, **_positive())


FEWSHOT_ALGORITHMS = (
    "maml",
    "fomaml",
    "reptile",
    "metasgd",
    "anil",
    "protonet",
    "matchingnet",
    "relationnet",
    "siamese",
    "meta_lstm",
    "snail_classifier",
    "mann",
)
META_RL_ALGORITHMS = ("maml_trpo", "rl2", "snail", "reptile")  # reptile: meta-RL without a fewshot section
GRADIENT_ADAPTATION = ("maml_trpo", "reptile")  # meta-RL algorithms that adapt by inner gradient steps


@dataclass
class Config:
    """One experiment. Common keys: seed, iterations, device, threads, env, sampler.

    ``max_env_steps``: meta-RL runs stop after the iteration that reaches this many environment steps, even before
    ``iterations`` (equal-budget comparisons between algorithms that spend different steps per iteration).

    ``threads``: torch intra-op threads of the training process when it runs on the CPU. 1 by default: with two
    threads per process on shared cores throughput collapsed (DESIGN.md). Raise it where the cores are the run's own
    (few-shot training has no rollout workers; MAML 20-way Omniglot: 1.6x faster on 2 threads, benchmarks/threads.py).
    """

    seed: int = 0
    iterations: int = field(default=500, metadata=_range(1))
    max_env_steps: int | None = field(default=None, metadata=_range(1))
    device: Literal["auto", "cpu", "cuda"] = "auto"
    threads: int = field(default=1, metadata=_range(1))
    algorithm: Literal[tuple(dict.fromkeys(META_RL_ALGORITHMS + FEWSHOT_ALGORITHMS))] = "maml_trpo"  # their names
    env: EnvConfig = field(default_factory=EnvConfig)
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    maml: MAMLConfig = field(default_factory=MAMLConfig)
    trpo: TRPOConfig = field(default_factory=TRPOConfig)
    advantages: AdvantageConfig = field(default_factory=AdvantageConfig)
    rl2: RL2Config = field(default_factory=RL2Config)
    reptile: ReptileConfig = field(default_factory=ReptileConfig)
    snail: SNAILConfig = field(default_factory=SNAILConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    fewshot: FewShotConfig | None = None


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is list:
        return f"a list of {_type_name(typing.get_args(tp)[0])}"
    if origin is dict:
        return "a mapping"
    if tp is type(None):
        return "null"
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false"}.get(tp, str(tp))


def _convert(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``tp``; return it (ints widened to floats where a float is due)."""
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"config key '{key}': expected a mapping, got {value!r}")
        return _build(tp, value, key + ".")
    if origin is Literal:
        if value in typing.get_args(tp) and type(value) is not bool:
            return value
    elif origin in (typing.Union, types.UnionType):
        options = [o for o in typing.get_args(tp) if o is not type(None)]
        if value is None and len(options) < len(typing.get_args(tp)):
            return None
        if len(options) == 1:  # X | None: X's own, precise message (e.g. a nested key out of range)
            return _convert(value, options[0], key)
        for option in options:
            try:
                return _convert(value, option, key)
            except ConfigError:
                continue
    elif origin is list:
        if isinstance(value, list):
            return [_convert(v, typing.get_args(tp)[0], f"{key}[{i}]") for i, v in enumerate(value)]
    elif origin is dict:
        if isinstance(value, dict) and all(isinstance(k, str) for k in value):
            return dict(value)
    elif tp is type(None):
        if value is None:
            return None
    elif tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
    raise ConfigError(f"config key '{key}': expected {_type_name(tp)}, got {value!r}")


def _check_range(value: Any, bounds: dict, key: str) -> None:
    """Raise ``ConfigError`` unless ``value`` (each item, for a list) lies within ``bounds``."""
    if isinstance(value, list):
        for i, item in enumerate(value):
            _check_range(item, bounds, f"{key}[{i}]")
        return
    low, high = bounds.get("low"), bounds.get("high")
    too_low = low is not None and (value <= low if bounds.get("low_open") else value < low)
    too_high = high is not None and (value >= high if bounds.get("high_open") else value > high)
    if too_low or too_high:
        left = "(" if bounds.get("low_open") else "["
        right = ")" if bounds.get("high_open") else "]"
        interval = f"{left}{'-inf' if low is None else low}, {'inf' if high is None else high}{right}"
        raise ConfigError(f"config key '{key}': {value!r} is out of range {interval}")


def _build(cls: type, data: dict, prefix: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in dataclasses.fields(cls)}
    for name in data:
        if name not in known:
            raise ConfigError(f"unknown config key '{prefix}{name}' (known: {', '.join(known)})")
    kwargs = {}
    for name, value in data.items():
        key = prefix + name
        kwargs[name] = _convert(value, hints[name], key)
        if known[name].metadata and kwargs[name] is not None:
            _check_range(kwargs[name], known[name].metadata, key)
    return cls(**kwargs)


def apply_override(data: dict, assignment: str) -> None:
    """Apply one ``key.sub=value`` override (value parsed as YAML) to a raw config mapping, in place."""
    if "=" not in assignment:
        raise ConfigError(f"override '{assignment}' is not of the form key.sub=value")
    path, _, text = assignment.partition("=")
    keys = path.strip().split(".")
    if not all(keys):
        raise ConfigError(f"override '{assignment}' has an empty key")
    try:
        value = yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError as exc:
        raise ConfigError(f"override '{assignment}': value is not valid YAML ({exc.__class__.__name__})") from None
    node = data
    for key in keys[:-1]:
        child = node.setdefault(key, {})
        if not isinstance(child, dict):
            raise ConfigError(f"override '{assignment}': '{key}' is not a mapping")
        node = child
    node[keys[-1]] = value


def config_from_dict(data: dict, overrides: list[str] | None = None) -> Config:
    """Validate a raw mapping (plus overrides) into a ``Config``."""
    if not isinstance(data, dict):
        raise ConfigError("a config file must be a YAML mapping of keys to values")
    data = _deepcopy(data)
    for assignment in overrides or []:
        apply_override(data, assignment)
    config = _build(Config, data)
    supervised_only = config.algorithm not in META_RL_ALGORITHMS  # reptile is both: the fewshot section decides
    if supervised_only and config.fewshot is None:
        raise ConfigError(
            f"config key 'fewshot': algorithm '{config.algorithm}' is supervised and needs a fewshot section"
        )
    if config.algorithm not in FEWSHOT_ALGORITHMS and config.fewshot is not None:
        raise ConfigError(f"config key 'fewshot': algorithm '{config.algorithm}' is meta-RL; drop the fewshot section")
    return config


def load_config(path: str | Path, overrides: list[str] | None = None) -> Config:
    """Read and validate a YAML experiment file; ``ConfigError`` on any problem."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file '{path}' does not exist")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file '{path}' is not valid YAML: {exc}") from None
    if data is None:  # an empty file (or comments only) would silently train on the built-in defaults
        raise ConfigError(f"config file '{path}' is empty; it must set at least the keys that differ from the defaults")
    return config_from_dict(data, overrides)


def config_to_dict(config: Config) -> dict:
    """The resolved config as a plain mapping (what ``config.yaml`` in a run folder holds)."""
    return dataclasses.asdict(config)


def dump_config(config: Config) -> str:
    """The resolved config as YAML text."""
    return yaml.safe_dump(config_to_dict(config), sort_keys=False)


def _deepcopy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _deepcopy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_deepcopy(v) for v in value]
    return value
