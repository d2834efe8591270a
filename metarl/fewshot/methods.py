"""The few-shot methods: configurations of one learner (or, for the metric and comparison methods, of none).

- ``maml`` / ``fomaml`` / ``metasgd`` / ``anil`` / ``meta_lstm``: :class:`GradientMethod`, the shared
  :class:`metarl.learners.GradientLearner` (second order; ``first_order``; learned per-parameter step sizes;
  ``adapt_keys=("head",)``; the meta-learner LSTM's learned rule, its inner gradients constants as in Ravi &
  Larochelle 2017) inside the MAML objective, minimised by Adam.
- ``reptile``: :class:`ReptileMethod`, the same learner's first-order ``adapt`` over mini-batches of the support set,
  then :func:`metarl.learners.reptile_update` with a linearly annealed outer step size (Nichol et al. 2018).
- ``protonet`` / ``matchingnet``: :class:`MetricMethod`, Adam on the episode loss of :mod:`metarl.fewshot.metric`.
- ``relationnet`` / ``siamese``: :mod:`metarl.fewshot.comparison_methods` (learned comparison; Siamese on pairs).
- ``snail_classifier`` / ``mann``: :mod:`metarl.fewshot.sequence_methods` (an episode read as a sequence).

Every method has the same surface for the training loop and the evaluation: ``train_step(batch, iteration)`` (one
meta-iteration, returns ``{"loss", "metric", "lr"}``), ``adaptation_curve(batch, steps)`` (per-task metric after
0..steps inner steps, ``[tasks, steps + 1]``; metric baselines ``[tasks, 1]``) and ``state_dict`` /
``load_state_dict`` (model, Meta-SGD step sizes, optimizer); ``query_loss(batch)`` scores without updating.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.func import functional_call

from ..config import Config
from ..learners import GradientLearner, InnerState, map_tasks, reptile_update
from .comparison_methods import ComparisonMethod, build_comparison_method
from .episodic import AdamTrainedMethod, step_lr
from .metric import episode_logits
from .models import classification_loss, regression_loss
from .problem import COMPARISON_ALGORITHMS, METRIC_ALGORITHMS, SEQUENCE_ALGORITHMS, FewShotProblem
from .sequence_methods import build_sequence_method
from .tasks import FewShotBatch

EVAL_CHUNK = 50
"""Tasks adapted together in ``adaptation_curve`` (bounds memory with ``vmap``)."""


class GradientMethod:
    """MAML (second order), FOMAML, Meta-SGD or ANIL: the shared learner in the MAML objective, Adam outside."""

    def __init__(
        self, config: Config, problem: FewShotProblem, device: torch.device, dtype: torch.dtype = torch.float32
    ) -> None:
        fs, algorithm = config.fewshot, config.algorithm
        self.config, self.problem, self.score = config, problem, problem.score
        self.model: nn.Module = problem.make_model().to(device=device, dtype=dtype)
        params = dict(self.model.named_parameters())
        self.vectorize = fs.vectorize
        if algorithm == "metasgd":
            self.learner = GradientLearner.meta_sgd(params, fs.inner_lr, num_steps=fs.inner_steps)
            if fs.inner_lr_high is not None:  # Li et al. 2017: step sizes start at random in [0.005, 0.1]
                with torch.no_grad():
                    for lrs in self.learner.meta_parameters():
                        lrs.uniform_(fs.inner_lr, fs.inner_lr_high)
        elif algorithm == "meta_lstm":
            from ..learned_optimizer import MetaLearnerLSTM

            rule = MetaLearnerLSTM(fs.meta_lstm_hidden).to(device=device, dtype=dtype)
            self.learner = GradientLearner(num_steps=fs.inner_steps, first_order=True, inner_rule="learned", rule=rule)
        else:
            self.learner = GradientLearner(
                inner_lr=fs.inner_lr,
                num_steps=fs.inner_steps,
                first_order=algorithm in ("fomaml", "reptile"),
                adapt_keys=("head",) if algorithm == "anil" else None,
                inner_rule=fs.inner_rule,
                adam_betas=(fs.inner_adam_beta1, 0.999),
            )
        self.inner_loss = regression_loss(self.model) if problem.metric == "mse" else classification_loss(self.model)
        self.optimizer: torch.optim.Optimizer | None = self._make_optimizer(params)
        self.inner_state: InnerState | None = None
        """The inner rule's state every adaptation starts from: ``None`` (a fresh start) unless Reptile carries its
        Adam state across tasks (``fewshot.inner_adam_state: carried``)."""

    def _make_optimizer(self, params: dict[str, Tensor]) -> torch.optim.Optimizer | None:
        trainable = list(params.values()) + self.learner.meta_parameters()
        return torch.optim.Adam(trainable, lr=self.config.fewshot.outer_lr)

    def params(self) -> dict[str, Tensor]:
        """The model's parameters (the tensors the optimizer steps)."""
        return dict(self.model.named_parameters())

    def objective(self, batch: FewShotBatch) -> tuple[Tensor, Tensor]:
        """``(loss, metric)``: mean over tasks of the query loss/metric after adapting on the support set.

        The loss is differentiable in the model parameters (through the inner steps unless first order) and in the
        Meta-SGD step sizes; this is what the meta-gradient tests check against finite differences.
        """
        params, model, score, learner, inner = self.params(), self.model, self.score, self.learner, self.inner_loss
        vec = self.vectorize

        def one(support: tuple[Tensor, Tensor], query: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
            adapted = learner.adapt(params, inner, support, functional=vec)
            return score(functional_call(model, adapted, (query[0],)), query[1])

        loss, metric = map_tasks(one, batch.support(), batch.query(), vectorize=vec)
        return loss.mean(), metric.mean()

    def query_loss(self, batch: FewShotBatch) -> tuple[float, float]:
        """``(loss, metric)`` on the query sets after the training inner loop, without updating anything."""
        loss, metric = self.objective(batch)
        return float(loss.detach()), float(metric)

    def current_lr(self, iteration: int) -> float:
        fs = self.config.fewshot
        return step_lr(fs.outer_lr, fs.outer_lr_decay, fs.outer_lr_decay_every, iteration)

    def train_step(self, batch: FewShotBatch, iteration: int) -> dict[str, float]:
        """One Adam step on the meta-objective of ``batch``."""
        lr = self.current_lr(iteration)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        loss, metric = self.objective(batch)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.config.fewshot.outer_grad_clip is not None:
            trainable = [p for group in self.optimizer.param_groups for p in group["params"]]
            torch.nn.utils.clip_grad_norm_(trainable, self.config.fewshot.outer_grad_clip)
        self.optimizer.step()
        return {"loss": float(loss.detach()), "metric": float(metric), "lr": lr}

    def adaptation_curve(self, batch: FewShotBatch, steps: int) -> np.ndarray:
        """Per-task query metric after 0, 1, ..., ``steps`` inner steps on the support set (no meta-gradient)."""
        params = {n: p.detach() for n, p in self.params().items()}
        model, score, learner, inner, vec = self.model, self.score, self.learner, self.inner_loss, self.vectorize
        start_state = self.inner_state

        def one(support: tuple[Tensor, Tensor], query: tuple[Tensor, Tensor]) -> Tensor:
            adapted, state, values = params, start_state, []
            for step in range(steps + 1):
                values.append(score(functional_call(model, adapted, (query[0],)), query[1])[1])
                if step < steps:  # one step at a time, the inner rule's state (Adam) carried on
                    adapted, state = learner.adapt_steps(
                        adapted, inner, [support], state=state, create_graph=False, functional=vec
                    )
            return torch.stack(values)

        chunks = []
        with torch.no_grad():
            for start in range(0, len(batch), EVAL_CHUNK):
                part = batch[start : start + EVAL_CHUNK]
                chunks.append(map_tasks(one, part.support(), part.query(), vectorize=vec).double().cpu().numpy())
        return np.concatenate(chunks)

    def state_dict(self) -> dict[str, Any]:
        return {
            "model": {n: p.detach().clone() for n, p in self.params().items()},
            "learner": self.learner.state_dict(),
            "optimizer": self.optimizer.state_dict() if self.optimizer is not None else None,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.learner.load_state_dict(state["learner"])
        if self.optimizer is not None:
            self.optimizer.load_state_dict(state["optimizer"])


class ReptileMethod(GradientMethod):
    """Reptile: first-order adaptation with the shared learner, then ``reptile_update`` (no Adam outside).

    Inner loop (Nichol et al. 2018, ``supervised-reptile``): ``inner_steps`` steps, each on the next
    ``inner_batch_size`` examples of the task's support set, reshuffled every pass (with ``train_shots`` examples per
    class, more than at test time), with the learner's inner rule (``fewshot.inner_rule``: the paper's is Adam with
    beta1 = 0). With ``fewshot.inner_adam_state: carried`` the tasks of a meta-batch are adapted one after the other
    and each continues the Adam state (moments and step count) the previous one left, across iterations too, as
    ``supervised-reptile`` does; the parameters still restart from the meta-parameters for every task. Outer step
    size: linear from ``reptile_outer_lr`` at iteration 0 to ``reptile_outer_lr_final`` at the last iteration.
    """

    def _make_optimizer(self, params: dict[str, Tensor]) -> None:
        return None

    def current_lr(self, iteration: int) -> float:
        fs, total = self.config.fewshot, max(self.config.iterations, 1)
        frac = iteration / total
        return (1.0 - frac) * fs.reptile_outer_lr + frac * fs.reptile_outer_lr_final

    def _minibatches(self, n: int, iteration: int, task: int) -> list[np.ndarray]:
        """Indices of each inner step's mini-batch: consecutive slices of reshuffled passes over ``n`` examples."""
        from ..train import derived_seed

        size = self.config.fewshot.inner_batch_size or n
        steps = self.learner.num_steps
        rng = np.random.default_rng(derived_seed(self.config.seed, iteration, 1, task))
        passes = -(-steps * size // n)
        order = np.concatenate([rng.permutation(n) for _ in range(passes)])
        return [order[i * size : (i + 1) * size] for i in range(steps)]

    def train_step(self, batch: FewShotBatch, iteration: int) -> dict[str, float]:
        params = {n: p.detach() for n, p in self.params().items()}
        carried = self.config.fewshot.inner_adam_state == "carried"
        adapted_list, losses, metrics = [], [], []
        for i in range(len(batch)):
            x, y = batch.support(i)
            minibatches = [
                torch.as_tensor(index, device=x.device) for index in self._minibatches(x.shape[0], iteration, i)
            ]
            adapted, state = self.learner.adapt_steps(
                params,
                self.inner_loss,
                [(x[idx], y[idx]) for idx in minibatches],
                state=self.inner_state if carried else None,
            )
            if carried:  # first-order steps: the state holds no autograd graph
                self.inner_state = state
            adapted_list.append({n: v.detach() for n, v in adapted.items()})
            with torch.no_grad():
                qx, qy = batch.query(i)
                loss, metric = self.score(functional_call(self.model, adapted, (qx,)), qy)
            losses.append(float(loss))
            metrics.append(float(metric))
        lr = self.current_lr(iteration)
        new = reptile_update(params, adapted_list, lr)
        with torch.no_grad():
            for name, p in self.params().items():
                p.copy_(new[name])
        return {"loss": float(np.mean(losses)), "metric": float(np.mean(metrics)), "lr": lr}

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "inner_state": self.inner_state}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.inner_state = state.get("inner_state")  # checkpoints written before the carried state existed: None


class MetricMethod(AdamTrainedMethod):
    """Prototypical or matching networks: Adam on the query cross entropy of whole episodes (no inner loop)."""

    def __init__(
        self, config: Config, problem: FewShotProblem, device: torch.device, dtype: torch.dtype = torch.float32
    ) -> None:
        super().__init__(config, problem, device, dtype)
        self.kind = "proto" if config.algorithm == "protonet" else "matching"
        self.scale = config.fewshot.matching_scale

    def _logits(self, episode: tuple[Tensor, ...], n_way: int) -> tuple[Tensor, Tensor]:
        params = dict(self.model.named_parameters())
        logits, labels = episode_logits(self.model, params, episode, n_way, self.kind, self.scale)
        return logits.reshape(-1, n_way), labels.reshape(-1)

    def train_step(self, batch: FewShotBatch, iteration: int) -> dict[str, float]:
        lr = self.set_lr(iteration)
        logits, labels = self._logits(batch.episode(), self.problem.train_ways)
        loss, metric = self.problem.score(logits, labels)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return {"loss": float(loss.detach()), "metric": float(metric), "lr": lr}

    def query_loss(self, batch: FewShotBatch) -> tuple[float, float]:
        """``(loss, accuracy)`` of test-way episodes (``n_way``), without updating anything."""
        with torch.no_grad():
            loss, metric = self.problem.score(*self._logits(batch.episode(), self.problem.n_way))
        return float(loss), float(metric)

    def adaptation_curve(self, batch: FewShotBatch, steps: int = 0) -> np.ndarray:
        """Per-task query accuracy ``[tasks, 1]`` (nothing adapts: ``steps`` is ignored)."""
        out = np.zeros((len(batch), 1))
        with torch.no_grad():
            for i in range(len(batch)):
                logits, labels = self._logits(batch.episode(i), self.problem.n_way)
                out[i, 0] = float(self.problem.score(logits, labels)[1])
        return out


Method = GradientMethod | ReptileMethod | MetricMethod | ComparisonMethod


def build_method(
    config: Config, problem: FewShotProblem, device: torch.device, dtype: torch.dtype = torch.float32
) -> Method:
    """The method of ``config.algorithm`` with a freshly initialised model (seed torch first for a fixed init)."""
    if config.algorithm in METRIC_ALGORITHMS:
        return MetricMethod(config, problem, device, dtype)
    if config.algorithm in COMPARISON_ALGORITHMS:
        return build_comparison_method(config, problem, device, dtype)
    if config.algorithm in SEQUENCE_ALGORITHMS:
        return build_sequence_method(config, problem, device, dtype)
    if config.algorithm == "reptile":
        return ReptileMethod(config, problem, device, dtype)
    return GradientMethod(config, problem, device, dtype)
