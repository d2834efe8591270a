"""Supervised few-shot problems served by the same learners as meta-RL: sinusoid regression and Omniglot.

- ``tasks``: the batch type (``FewShotBatch``) and the seeded task streams (``split_rng``, ``fixed_task_rng``).
- ``sinusoid``: ``SinusoidTasks`` (MAML paper's regression problem).
- ``omniglot``: ``Omniglot`` data set and splits, ``OmniglotSplit``, ``OmniglotTasks`` episode sampler.
- ``omniglot_files``: the zips or folders on disk, the array cache, the download, ``DataError``.
- ``omniglot_synthetic``: ``make_synthetic_omniglot``, a tiny data set in the official layout (tests, smoke runs).
- ``models``: ``SinusoidMLP``, ``Conv4``; loss functions of ``(params, (x, y))`` for the functional learner.
- ``metric``: prototypical and matching networks (loss/accuracy functions of ``(params, episode)``).
- ``problem``: a config's ``fewshot`` section -> task streams, model factory and scoring (``build_problem``).
- ``methods``: MAML / FOMAML / Meta-SGD / ANIL / Reptile / ProtoNet / MatchingNet on the shared learner.
- ``train``: ``prepare_fewshot`` and ``train_fewshot`` (what ``metarl train`` runs for a few-shot config).
- ``evaluate``: ``evaluate_fewshot`` (600 held-out test episodes, accuracy or MSE after 0..k steps, 95% CI).
"""

from .metric import (
    matching_accuracy,
    matching_log_probs,
    matching_loss,
    prototypes,
    prototypical_accuracy,
    prototypical_logits,
    prototypical_loss,
)
from .models import (
    HEAD_PREFIX,
    Conv4,
    SinusoidMLP,
    accuracy,
    classification_accuracy,
    classification_loss,
    head_names,
    regression_loss,
)
from .omniglot import DataError, Omniglot, OmniglotSplit, OmniglotTasks, make_synthetic_omniglot
from .sinusoid import SinusoidTasks
from .tasks import FewShotBatch, fixed_task_rng, split_rng

__all__ = [
    "HEAD_PREFIX",
    "Conv4",
    "DataError",
    "FewShotBatch",
    "Omniglot",
    "OmniglotSplit",
    "OmniglotTasks",
    "SinusoidMLP",
    "SinusoidTasks",
    "accuracy",
    "classification_accuracy",
    "classification_loss",
    "fixed_task_rng",
    "head_names",
    "make_synthetic_omniglot",
    "matching_accuracy",
    "matching_log_probs",
    "matching_loss",
    "prototypes",
    "prototypical_accuracy",
    "prototypical_logits",
    "prototypical_loss",
    "regression_loss",
    "split_rng",
]
