"""Typed experiment configs: YAML in, validated dataclasses out.

Every key is declared (in :mod:`metarl.config_sections`) with its type, default and (where it has one) its range.
Loading checks the whole file before any work starts: an unknown key, a wrong type or an out-of-range value raises
``ConfigError`` naming the key, which the CLI turns into one line and exit code 2. ``--set key.sub=value`` overrides
go through the same checks.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from .config_sections import (  # noqa: F401  (re-exported: the sections belong to this module's API)
    AdvantageConfig,
    EnvConfig,
    FewShotConfig,
    LoggingConfig,
    MAMLConfig,
    PolicyConfig,
    ReptileConfig,
    RL2Config,
    SamplerConfig,
    SNAILConfig,
    TRPOConfig,
    _positive,
    _range,
)
from .errors import UserError


class ConfigError(UserError, ValueError):
    """A config file or override that cannot be used; the message names the key and the problem."""


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
