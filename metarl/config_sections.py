"""The sections of an experiment config: one dataclass per YAML mapping, each key with its type, default and range.

:mod:`metarl.config` assembles them into :class:`metarl.config.Config` and does the parsing and checking; the
``metadata`` of a field is the range that check enforces.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal


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
    separate_value: bool = False  # the value head on a GRU of its own, gradients clipped per network (see gru.py)
    head_init_scale: float = field(default=1.0, **_positive())  # x the action head's initial weights (see gru.py)
    init_std: float = field(default=1.0, **_positive())
    lr: float = field(default=3e-4, **_positive())
    clip: float = field(default=0.2, **_positive())
    epochs: int = field(default=4, metadata=_range(1))
    minibatches: int = field(default=1, metadata=_range(1))
    value_coef: float = field(default=0.5, metadata=_range(0))
    normalize_value_loss: bool = False  # divide the value loss by the batch's return variance (see trial_ppo)
    entropy_coef: float = field(default=0.0, metadata=_range(0))
    max_grad_norm: float = field(default=1.0, **_positive())
    target_kl: float | None = field(default=None, **_positive())  # stop the epochs early past 1.5x (see trial_ppo)
    # the policy's outer update: PPO epochs, or one TRPO step with the ``trpo`` section's settings as in the paper
    # (needs separate_value; the epochs then fit only the value network; see metarl.algorithms.trial_trpo)
    outer: Literal["ppo", "trpo"] = "ppo"
    # trpo only: measure the KL's curvature on every k-th trial (cheaper conjugate gradient; see trial_trpo)
    fisher_stride: int = field(default=1, metadata=_range(1))


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
    normalize_value_loss: bool = False  # divide the value loss by the batch's return variance (see trial_ppo)
    entropy_coef: float = field(default=0.0, metadata=_range(0))
    max_grad_norm: float = field(default=1.0, **_positive())
    target_kl: float | None = field(default=None, **_positive())  # stop the epochs early past 1.5x (see trial_ppo)
