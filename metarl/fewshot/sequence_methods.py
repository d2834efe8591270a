"""The model-based few-shot methods: SNAIL as a classifier and the memory-augmented network, as methods of the suite.

Both read an episode as a sequence and learn nothing at test time (``adaptation_curve`` gives ``[tasks, 1]``), so
they share :class:`ComparisonMethod`'s episode loop, scoring and Adam state; each has its own training step.

- ``snail_classifier`` (:class:`SnailMethod`, Mishra et al. 2018): cross entropy of the query predictions (one
  sequence per query, :mod:`metarl.fewshot.snail_classifier`), Adam; all queries of the ``meta_batch_size``
  episodes in one SNAIL batch.
- ``mann`` (:class:`MANNMethod`, Santoro et al. 2016): trained on the support *sequences* of training episodes
  (``train_shots`` instances of each of ``n_way`` classes, shuffled; labels fed one step late), cross entropy at
  every step, Adam. Tested in the suite's protocol (support sequence, then each query as the next step), and by
  instance as in the paper: :meth:`MANNMethod.evaluation_extras` scores test sequences of ``n_way`` classes x
  ``train_shots`` instances and reports the accuracy at the 1st, 2nd, ... presentation of a class.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..config import Config
from .comparison_methods import ComparisonMethod, Episode
from .mann import MANN
from .omniglot import OmniglotTasks
from .problem import FewShotProblem
from .snail_classifier import SnailClassifier
from .tasks import FewShotBatch

INSTANCE_CHUNK = 100
"""Test sequences scored together by the instance-accuracy evaluation (bounds memory)."""


def _check_ways(model_ways: int, n_way: int) -> None:
    if n_way != model_ways:
        raise ValueError(f"this model has {model_ways} label slots and outputs; got {n_way}-way episodes")


class SnailMethod(ComparisonMethod):
    """SNAIL over (support..., query) sequences, cross entropy on the query predictions, Adam."""

    model: SnailClassifier

    def class_scores(self, episode: Episode, n_way: int) -> Tensor:
        _check_ways(self.model.n_way, n_way)
        support_x, support_y, query_x, _ = episode  # the query labels are not an input
        return self.model(support_x, support_y, query_x)

    def episode_loss(self, scores: Tensor, query_y: Tensor, n_way: int) -> Tensor:
        return F.cross_entropy(scores, query_y)

    def train_step(self, batch: FewShotBatch, iteration: int) -> dict[str, float]:
        """One Adam step on the mean query cross entropy of the batch's episodes."""
        lr = self.set_lr(iteration)
        logits = self.model.episodes_logits(batch.support_x, batch.support_y, batch.query_x).flatten(0, 1)
        labels = batch.query_y.flatten()
        loss = F.cross_entropy(logits, labels)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        accuracy = (logits.detach().argmax(-1) == labels).float().mean()
        return {"loss": float(loss.detach()), "metric": float(accuracy), "lr": lr}


def instance_ranks(labels: Tensor) -> Tensor:
    """``[B, T]`` -> ``[B, T]``: how many times step ``t``'s class was shown before, plus one (1 = first
    presentation)."""
    same = labels[:, :, None] == labels[:, None, :]  # [B, t, s]
    earlier = torch.ones(labels.shape[1], labels.shape[1], dtype=torch.bool, device=labels.device).tril()
    return (same & earlier).sum(-1)


def accuracy_by_instance(logits: Tensor, labels: Tensor) -> tuple[np.ndarray, np.ndarray]:
    """``(correct counts, totals)`` per instance rank ``1..max`` (index 0 = rank 1) of per-step predictions."""
    ranks = instance_ranks(labels).flatten().cpu().numpy()
    correct = (logits.argmax(-1) == labels).flatten().cpu().numpy()
    size = int(ranks.max())
    return np.bincount(ranks - 1, weights=correct, minlength=size), np.bincount(ranks - 1, minlength=size)


class MANNMethod(ComparisonMethod):
    """The memory-augmented network: per-step cross entropy on training sequences, Adam (module docstring)."""

    model: MANN

    def class_scores(self, episode: Episode, n_way: int) -> Tensor:
        _check_ways(self.model.n_way, n_way)
        support_x, support_y, query_x, _ = episode  # the query labels are not an input
        return self.model.query_logits(support_x, support_y, query_x)

    def episode_loss(self, scores: Tensor, query_y: Tensor, n_way: int) -> Tensor:
        return F.cross_entropy(scores, query_y)

    def train_step(self, batch: FewShotBatch, iteration: int) -> dict[str, float]:
        """One Adam step on the per-step cross entropy of the support sequences (the training queries are unused)."""
        lr = self.set_lr(iteration)
        logits = self.model(batch.support_x, batch.support_y)
        loss = F.cross_entropy(logits.flatten(0, 1), batch.support_y.flatten())
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        accuracy = (logits.detach().argmax(-1) == batch.support_y).float().mean()
        return {"loss": float(loss.detach()), "metric": float(accuracy), "lr": lr}

    def instance_tasks(self) -> OmniglotTasks:
        """Test sequences for the by-instance evaluation: ``n_way`` classes of the test split, ``train_shots``
        (default 10) shuffled instances each."""
        fs = self.config.fewshot
        return OmniglotTasks(self.problem.test.tasks.split, fs.n_way, fs.train_shots or 10, 0)

    def instance_accuracy(self, batch: FewShotBatch) -> tuple[np.ndarray, np.ndarray]:
        """``(correct, totals)`` per instance rank over the support sequences of ``batch``."""
        correct, totals = 0.0, 0
        with torch.no_grad():
            for start in range(0, len(batch), INSTANCE_CHUNK):
                part = batch[start : start + INSTANCE_CHUNK]
                c, n = accuracy_by_instance(self.model(part.support_x, part.support_y), part.support_y)
                correct, totals = correct + c, totals + n
        return np.asarray(correct), np.asarray(totals)

    def evaluation_extras(self, tasks: int, seed: int) -> dict[str, Any]:
        """Accuracy by instance (the paper's Table 1 columns) on ``tasks`` test sequences of ``seed``."""
        source = self.instance_tasks()
        correct, totals = self.instance_accuracy(source.fixed(tasks, seed))
        return {
            "instance_accuracy": {
                "sequences": tasks,
                "classes": source.n_way,
                "instances_per_class": source.k_shot,
                "accuracy": {str(rank + 1): float(correct[rank] / totals[rank]) for rank in range(len(totals))},
            }
        }


def build_sequence_method(
    config: Config, problem: FewShotProblem, device: torch.device, dtype: torch.dtype = torch.float32
) -> ComparisonMethod:
    """``snail_classifier`` or ``mann`` with a freshly initialised model."""
    if config.algorithm == "snail_classifier":
        return SnailMethod(config, problem, device, dtype)
    if config.algorithm == "mann":
        return MANNMethod(config, problem, device, dtype)
    raise ValueError(f"not a sequence method: {config.algorithm!r}")
