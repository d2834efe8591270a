"""A few-shot problem as the training loop and the evaluation see it: task streams, a model, and how to score it.

``build_problem(config)`` turns the ``fewshot`` section of a config into a :class:`FewShotProblem`: the training,
validation and test task sources (sinusoid streams, or Omniglot episodes from disjoint alphabet splits), the model
factory, and the scoring function (MSE for regression, cross entropy / accuracy for classification). Everything that
can fail on user input (missing or corrupt Omniglot data, impossible episode sizes, a key that does not fit the
algorithm) fails here, before any run folder exists: ``DataError`` or ``ConfigError``.

Task streams: training batch ``i`` comes from ``fixed_task_rng(seed, "train", i)`` (a generator derived from the run
seed and the iteration, so a resumed run draws the same tasks), validation and test lists from ``fixed(n, seed)`` on
the ``val`` / ``test`` streams (sinusoid) or alphabet splits (Omniglot: test = the evaluation alphabets only).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import Config, ConfigError
from .comparison import RelationNet, SiameseNet
from .mann import MANN
from .models import Conv4, SinusoidMLP
from .omniglot import DataError, Omniglot, OmniglotTasks, user_cache_dir
from .pairs import PairBatch, PairSource
from .sinusoid import SinusoidTasks
from .snail_classifier import SnailClassifier
from .tasks import FewShotBatch, fixed_task_rng

GRADIENT_ALGORITHMS = ("maml", "fomaml", "metasgd", "anil", "meta_lstm")
"""Algorithms that are configurations of the shared ``GradientLearner`` with an Adam outer step."""
METRIC_ALGORITHMS = ("protonet", "matchingnet")
"""Metric baselines: no inner loop, Adam on the episode loss."""
COMPARISON_ALGORITHMS = ("relationnet", "siamese")
"""Learned comparison (:mod:`metarl.fewshot.comparison`): no inner loop; the Siamese network trains on pairs."""
SEQUENCE_ALGORITHMS = ("snail_classifier", "mann")
"""Model-based (:mod:`metarl.fewshot.sequence_methods`): an episode read as a sequence of labelled examples."""
CLASSIFIERS_ONLY = (*METRIC_ALGORITHMS, *COMPARISON_ALGORITHMS, *SEQUENCE_ALGORITHMS)

Score = Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]
"""``(predictions, targets) -> (loss, metric)``: the differentiable loss and the reported metric (0-d tensors)."""

_MISSING_HINT = (
    "Fix: pass --set fewshot.data_dir=PATH (a folder holding images_background.zip and images_evaluation.zip, or "
    "their extracted folders), or --set fewshot.download=true to fetch the official copy."
)
_CORRUPT_HINT = (
    "Fix: replace the damaged file with a good copy, or point --set fewshot.data_dir=PATH at intact data (or delete "
    "it and pass --set fewshot.download=true to fetch the official copy)."
)


def regression_score(pred: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    """MSE as both the loss and the metric (the MAML paper reports the query MSE)."""
    loss = F.mse_loss(pred, target)
    return loss, loss.detach()


def classification_score(logits: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """Cross entropy (loss) and accuracy (metric) of ``[N, n_way]`` logits."""
    return F.cross_entropy(logits, labels), (logits.detach().argmax(-1) == labels).float().mean()


class SinusoidSource:
    """A sinusoid task stream of one split with fixed support/query sizes."""

    def __init__(self, tasks: SinusoidTasks, k_shot: int, k_query: int, split: str) -> None:
        self.tasks, self.k_shot, self.k_query, self.split = tasks, k_shot, k_query, split

    def sample(self, n: int, rng: np.random.Generator) -> FewShotBatch:
        return self.tasks.sample(n, self.k_shot, self.k_query, rng)

    def fixed(self, n: int, seed: int) -> FewShotBatch:
        return self.tasks.fixed(n, self.k_shot, self.k_query, seed, self.split)


class OmniglotSource:
    """Omniglot episodes of one split (wraps :class:`OmniglotTasks`)."""

    def __init__(self, tasks: OmniglotTasks) -> None:
        self.tasks, self.split = tasks, tasks.split.name

    def sample(self, n: int, rng: np.random.Generator) -> FewShotBatch:
        return self.tasks.sample(n, rng)

    def fixed(self, n: int, seed: int) -> FewShotBatch:
        return self.tasks.fixed(n, seed)


TaskSource = SinusoidSource | OmniglotSource | PairSource


@dataclass
class FewShotProblem:
    """Everything problem-specific a few-shot run needs (see the module docstring)."""

    name: str  # e.g. "sinusoid-10shot", "omniglot-5way-1shot"
    metric: str  # "mse" (lower is better) or "accuracy"
    train: TaskSource
    val: TaskSource | None
    test: TaskSource
    score: Score
    make_model: Callable[[], nn.Module]
    n_way: int | None  # test-time ways (None for regression)
    train_ways: int | None

    def train_batch(self, seed: int, iteration: int, size: int) -> FewShotBatch | PairBatch:
        """The tasks (Siamese: pairs) of training iteration ``iteration``: a function of ``(seed, iteration)`` only."""
        return self.train.sample(size, fixed_task_rng(seed, "train", iteration))


def _check_keys(config: Config) -> None:
    fs, algorithm = config.fewshot, config.algorithm
    if algorithm in CLASSIFIERS_ONLY and fs.problem != "omniglot":
        raise ConfigError(f"config key 'fewshot.problem': {algorithm} is a classification method; use omniglot")
    if fs.train_ways is not None and algorithm not in METRIC_ALGORITHMS:
        raise ConfigError(
            "config key 'fewshot.train_ways': only the metric baselines (protonet, matchingnet) can train with other "
            "ways than they are tested on (a gradient learner's head has n_way outputs)"
        )
    if fs.train_shots is not None and algorithm == "snail_classifier":
        raise ConfigError(
            "config key 'fewshot.train_shots': the SNAIL classifier is built for sequences of n_way * k_shot + 1 "
            "steps; train and test on the same shots"
        )
    if fs.inner_batch_size is not None and algorithm != "reptile":
        raise ConfigError("config key 'fewshot.inner_batch_size': mini-batched inner steps are Reptile's; drop it")
    if fs.inner_lr_high is not None and (algorithm != "metasgd" or fs.inner_lr_high < fs.inner_lr):
        raise ConfigError("config key 'fewshot.inner_lr_high': Meta-SGD only, and it must be >= fewshot.inner_lr")
    if fs.inner_rule != "sgd" and algorithm in ("metasgd", "meta_lstm", *CLASSIFIERS_ONLY):
        raise ConfigError(f"config key 'fewshot.inner_rule': {algorithm} takes plain gradient steps (or none); use sgd")
    if fs.pair_same_fraction != 0.5 and algorithm != "siamese":
        raise ConfigError("config key 'fewshot.pair_same_fraction': only the Siamese network trains on pairs; drop it")
    if fs.inner_adam_state != "task" and (algorithm != "reptile" or fs.inner_rule != "adam"):
        raise ConfigError(
            "config key 'fewshot.inner_adam_state': carrying the inner Adam state across tasks is for Reptile with "
            "fewshot.inner_rule: adam; drop it or set it to task"
        )


def load_omniglot(config: Config) -> Omniglot:
    """The Omniglot data of ``fewshot.data_dir``; ``DataError`` (with the ``--set`` fix) when missing or corrupt."""
    fs = config.fewshot
    if fs.data_dir is None and not fs.download:
        raise DataError(f"Omniglot needs a data folder and none is configured. {_MISSING_HINT}")
    root = Path(fs.data_dir).expanduser() if fs.data_dir is not None else user_cache_dir() / "omniglot" / "data"
    try:
        return Omniglot(root, download=fs.download, n_val_alphabets=fs.val_alphabets, split_seed=0)
    except DataError as exc:
        hint = {"missing": _MISSING_HINT, "corrupt": _CORRUPT_HINT}.get(exc.kind, exc.hint)
        raise DataError(f"{exc.problem}. {hint}", problem=exc.problem, hint=hint, kind=exc.kind) from None
    except ValueError as exc:  # e.g. more validation alphabets than the background set has
        raise ConfigError(f"config key 'fewshot.val_alphabets': {exc}") from None


def _omniglot_tasks(data: Omniglot, split: str, n_way: int, k_shot: int, k_query: int) -> OmniglotTasks:
    try:
        return OmniglotTasks(data.split(split), n_way, k_shot, k_query)
    except ValueError as exc:
        raise ConfigError(f"config keys 'fewshot.n_way/k_shot/k_query' ({split} episodes): {exc}") from None


def build_problem(config: Config) -> FewShotProblem:
    """The problem of ``config.fewshot`` with its data loaded and checked (``DataError`` / ``ConfigError``)."""
    if config.fewshot is None:
        raise ConfigError("config key 'fewshot': missing; a supervised run needs a fewshot section")
    _check_keys(config)
    fs = config.fewshot
    shots = fs.train_shots or fs.k_shot
    if fs.problem == "sinusoid":
        tasks = SinusoidTasks()
        hidden = fs.hidden or 40
        return FewShotProblem(
            name=f"sinusoid-{fs.k_shot}shot",
            metric="mse",
            train=SinusoidSource(tasks, shots, fs.k_query, "train"),
            val=SinusoidSource(tasks, fs.k_shot, fs.k_query, "val"),
            test=SinusoidSource(tasks, fs.k_shot, fs.k_query, "test"),
            score=regression_score,
            make_model=lambda: SinusoidMLP(hidden=hidden),
            n_way=None,
            train_ways=None,
        )
    data = load_omniglot(config)
    train_ways = fs.train_ways or fs.n_way
    train: TaskSource = OmniglotSource(_omniglot_tasks(data, "train", train_ways, shots, fs.k_query))
    if config.algorithm == "siamese":  # verification pairs of the training alphabets, not episodes
        train = PairSource(data.split("train"), fs.pair_same_fraction)
    test = OmniglotSource(_omniglot_tasks(data, "test", fs.n_way, fs.k_shot, fs.k_query))
    val = OmniglotSource(_omniglot_tasks(data, "val", fs.n_way, fs.k_shot, fs.k_query)) if fs.val_alphabets else None
    return FewShotProblem(
        name=f"omniglot-{fs.n_way}way-{fs.k_shot}shot",
        metric="accuracy",
        train=train,
        val=val,
        test=test,
        score=classification_score,
        make_model=_omniglot_model(config),
        n_way=fs.n_way,
        train_ways=train_ways,
    )


def _omniglot_model(config: Config) -> Callable[[], nn.Module]:
    """The model factory of an Omniglot run: Conv4 (with an ``n_way`` head unless a metric baseline), the
    relation / Siamese network of :mod:`metarl.fewshot.comparison`, the SNAIL classifier or the MANN."""
    fs, algorithm = config.fewshot, config.algorithm
    if algorithm == "relationnet":
        return lambda: RelationNet(hidden=fs.hidden or 64)
    if algorithm == "siamese":
        return lambda: SiameseNet(embed_dim=fs.hidden or 4096)
    if algorithm == "snail_classifier":
        return lambda: SnailClassifier(fs.n_way, fs.k_shot, hidden=fs.hidden or 64)
    if algorithm == "mann":
        return lambda: MANN(
            fs.n_way,
            hidden=fs.hidden or 200,
            slots=fs.mann_slots,
            width=fs.mann_width,
            heads=fs.mann_read_heads,
            gamma=fs.mann_usage_decay,
        )
    head = None if algorithm in METRIC_ALGORITHMS else fs.n_way
    hidden, downsample, feature_map = fs.hidden or 64, fs.downsample, fs.feature_map
    return lambda: Conv4(n_way=head, hidden=hidden, downsample=downsample, feature_map=feature_map)


def per_task_metric(score: Score, pred: Tensor, target: Tensor) -> float:
    """The metric of one task's predictions as a Python float (no gradient)."""
    with torch.no_grad():
        return float(score(pred, target)[1])
