"""The one gradient-based meta-learner: MAML, first-order MAML, Meta-SGD, ANIL and Reptile's inner loop.

A learner knows nothing about RL or supervised learning. It takes a *loss function of (params, batch)* (params: a
dict of tensors, called through ``torch.func.functional_call``) and adapts by plain gradient steps::

    adapted = params - lr * grad(loss_fn)(params, batch)      # repeated num_steps times

with ``create_graph=True`` so that an outer loss on ``adapted`` differentiates *through* the adaptation (MAML,
second order), or with the inner gradient detached (first-order MAML / Reptile: ``adapted`` still depends on
``params`` through the identity). The variants are configurations, not subclasses:

- MAML: ``GradientLearner(inner_lr, num_steps)``; FOMAML: ``first_order=True``;
- ANIL: ``adapt_keys=("head",)`` adapts only the named parameters (or those under a named module), the rest pass
  through unchanged;
- Meta-SGD: ``GradientLearner.meta_sgd(params, inner_lr)`` learns one step size per parameter entry
  (``inner_lrs``, meta-parameters shaped like the params, initialised to ``inner_lr``);
- Reptile: first-order adaptation plus :func:`reptile_update` as the outer rule; ``inner_rule="adam"`` gives its
  published inner loop (Adam with beta1 = 0, Nichol et al. 2018) in place of plain gradient steps;
- learned optimiser: ``inner_rule="learned"`` with ``rule=MetaLearnerLSTM()`` (Ravi & Larochelle 2017,
  :mod:`metarl.learned_optimizer`): the update of each step comes from a coordinate-wise LSTM whose weights are
  meta-parameters; the inner gradients enter it as constants.

Inner rules: ``"sgd"`` (``p - lr * g``) or ``"adam"`` (``p - lr * m_hat / (sqrt(v_hat) + eps)``, with Adam's moment
estimates carried across the steps of one adaptation and reset for every task). :meth:`GradientLearner.adapt_steps`
takes one batch per step (Reptile's mini-batches) and returns the rule's state, so an evaluation that scores after
every step continues the same Adam trajectory instead of restarting it.

Many tasks: :meth:`GradientLearner.adapt_many` and :func:`map_tasks` loop over tasks by default, or batch them with
``torch.func.vmap`` (``vectorize=True``). A third form needs nothing from this module: params stacked along a
leading task axis and a loss summed over tasks give every task's own inner gradient in one graph (MAML-TRPO's
``batching: stacked``, see :mod:`metarl.maml_trpo`). Which is fastest depends on the device, not on taste: measured
in ``benchmarks/learner.py`` (``docs/benchmarks.md``), the loop on a CPU, the stacked form on a GPU.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor
from torch.utils._pytree import tree_flatten, tree_map

Params = dict[str, Tensor]
LossFn = Callable[[Params, Any], Tensor]
InnerState = dict[str, Any]
"""State of an inner rule across steps: ``{"t": steps taken, "m": first moments, "v": second moments}`` (Adam)."""
INNER_RULES = ("sgd", "adam", "learned")


def index_task(batch: Any, i: int) -> Any:
    """Task ``i`` of a pytree (dict / tuple / list) of tensors whose leading axis is the task."""
    return tree_map(lambda x: x[i] if torch.is_tensor(x) else x, batch)


def num_tasks(batch: Any) -> int:
    """Length of the leading (task) axis of the first tensor in a pytree."""
    leaves = [x for x in tree_flatten(batch)[0] if torch.is_tensor(x)]
    if not leaves:
        raise ValueError("batch holds no tensors: cannot tell how many tasks it has")
    return leaves[0].shape[0]


def map_tasks(fn: Callable[..., Any], *batches: Any, vectorize: bool = False) -> Any:
    """``fn(*task_i_args)`` for every task, outputs stacked along a new leading axis.

    ``batches`` are pytrees of tensors with a leading task axis (``None`` entries are passed through). With
    ``vectorize`` the tasks run in one ``torch.func.vmap`` call; then ``fn`` must use ``torch.func`` transforms, not
    ``torch.autograd.grad`` (pass ``functional=True`` to :meth:`GradientLearner.adapt`).
    """
    if vectorize:
        in_dims = tuple(None if b is None else 0 for b in batches)
        return torch.func.vmap(fn, in_dims=in_dims, randomness="error")(*batches)
    n = num_tasks(batches)
    outputs = [fn(*(index_task(b, i) for b in batches)) for i in range(n)]
    return tree_map(lambda *xs: torch.stack(xs), *outputs)


class GradientLearner:
    """Gradient-based fast adaptation of a parameter dict (see the module docstring for the variants).

    inner_lr: step size of each inner step (ignored where ``inner_lrs`` are given: Meta-SGD).
    num_steps: inner gradient steps; 0 returns the params unchanged.
    first_order: detach the inner gradients (FOMAML / Reptile) instead of differentiating through them.
    adapt_keys: names to adapt (ANIL); a key matches a parameter of that name or any parameter under it
        (``"head"`` matches ``"head.weight"``). ``None`` adapts everything.
    inner_lrs: Meta-SGD step sizes, ``{name: tensor shaped like params[name]}`` for every adapted name.
    vectorize: default for :meth:`adapt_many` / :meth:`meta_loss` (False: loop over tasks, measured faster on CPU).
    inner_rule: ``"sgd"`` or ``"adam"`` (see the module docstring); ``adam_betas`` and ``adam_eps`` configure Adam
        (Reptile's published inner loop uses betas (0, 0.999)).
    """

    def __init__(
        self,
        inner_lr: float = 0.1,
        num_steps: int = 1,
        first_order: bool = False,
        adapt_keys: Sequence[str] | None = None,
        inner_lrs: Params | None = None,
        vectorize: bool = False,
        inner_rule: str = "sgd",
        adam_betas: tuple[float, float] = (0.0, 0.999),
        adam_eps: float = 1e-8,
        rule: torch.nn.Module | None = None,
    ) -> None:
        if num_steps < 0:
            raise ValueError(f"num_steps must be >= 0, got {num_steps}")
        if inner_rule not in INNER_RULES:
            raise ValueError(f"inner_rule must be one of {', '.join(INNER_RULES)}, got {inner_rule!r}")
        if (inner_rule == "learned") != (rule is not None):
            raise ValueError("the 'learned' inner rule needs its rule module (and only it takes one)")
        if inner_rule != "sgd" and inner_lrs is not None:
            raise ValueError("learned per-parameter step sizes (Meta-SGD) scale plain gradient steps: use 'sgd'")
        if not (0.0 <= adam_betas[0] < 1.0 and 0.0 <= adam_betas[1] < 1.0) or adam_eps <= 0:
            raise ValueError(f"adam_betas must lie in [0, 1) and adam_eps > 0, got {adam_betas} and {adam_eps}")
        self.inner_rule = inner_rule
        self.adam_betas = (float(adam_betas[0]), float(adam_betas[1]))
        self.adam_eps = float(adam_eps)
        self.inner_lr, self.num_steps, self.first_order = float(inner_lr), int(num_steps), bool(first_order)
        self.adapt_keys = tuple(adapt_keys) if adapt_keys is not None else None
        self.inner_lrs = inner_lrs
        self.vectorize = bool(vectorize)
        self.rule = rule

    @classmethod
    def meta_sgd(cls, params: Params, inner_lr: float = 0.1, **kwargs: Any) -> GradientLearner:
        """A Meta-SGD learner: per-entry step sizes for the adapted params, initialised to ``inner_lr``."""
        learner = cls(inner_lr=inner_lr, **kwargs)
        if learner.inner_rule != "sgd":
            raise ValueError("learned per-parameter step sizes (Meta-SGD) scale plain gradient steps: use 'sgd'")
        learner.inner_lrs = {
            name: torch.full_like(params[name], inner_lr).detach().requires_grad_(True)
            for name in learner.adapted_names(params)
        }
        return learner

    def adapted_names(self, params: Params) -> list[str]:
        """The parameter names this learner adapts, in ``params`` order."""
        if self.adapt_keys is None:
            return list(params)
        names = [n for n in params if any(n == k or n.startswith(k + ".") for k in self.adapt_keys)]
        if not names:
            raise ValueError(f"adapt_keys {self.adapt_keys} match no parameter of {list(params)}")
        return names

    def meta_parameters(self) -> list[Tensor]:
        """Meta-parameters the learner owns besides the model's (Meta-SGD step sizes, a learned rule's weights)."""
        lrs = list(self.inner_lrs.values()) if self.inner_lrs is not None else []
        return lrs + (list(self.rule.parameters()) if self.rule is not None else [])

    def adapt(
        self,
        params: Params,
        loss_fn: LossFn,
        batch: Any,
        step_sizes: Sequence[float] | None = None,
        *,
        num_steps: int | None = None,
        create_graph: bool | None = None,
        inner_lrs: Params | None = None,
        functional: bool = False,
    ) -> Params:
        """Adapted params after gradient steps on ``loss_fn(params, batch)``.

        step_sizes: one step size per inner step (their count sets the number of steps), overriding ``inner_lr``.
        num_steps: override of the configured number of steps (e.g. evaluation with more steps).
        create_graph: override of ``not first_order``; False gives the same values more cheaply when no outer
            gradient is wanted (TRPO line search, sampling).
        inner_lrs: override of the Meta-SGD step sizes (e.g. views into a flat meta-parameter vector).
        functional: take inner gradients with ``torch.func.grad`` (required inside ``torch.func.vmap``).
        """
        count = len(step_sizes) if step_sizes is not None else (self.num_steps if num_steps is None else int(num_steps))
        adapted, _ = self.adapt_steps(
            params,
            loss_fn,
            [batch] * count,
            step_sizes,
            create_graph=create_graph,
            inner_lrs=inner_lrs,
            functional=functional,
        )
        return adapted

    def adapt_steps(
        self,
        params: Params,
        loss_fn: LossFn,
        batches: Sequence[Any],
        step_sizes: Sequence[float] | None = None,
        *,
        state: InnerState | None = None,
        create_graph: bool | None = None,
        inner_lrs: Params | None = None,
        functional: bool = False,
    ) -> tuple[Params, InnerState | None]:
        """One inner step per entry of ``batches``; returns the adapted params and the inner rule's state.

        step_sizes: one per batch (default ``inner_lr`` for every step). state: what an earlier call returned, to
        continue its Adam trajectory (``None``: a fresh start); the SGD rule has no state and returns ``None``.
        Other arguments as in :meth:`adapt`.
        """
        lrs = inner_lrs if inner_lrs is not None else self.inner_lrs
        if (lrs is not None or self.rule is not None) and step_sizes is not None:
            raise ValueError("step_sizes cannot be combined with learned step sizes (Meta-SGD, a learned rule)")
        schedule = [self.inner_lr] * len(batches) if step_sizes is None else [float(s) for s in step_sizes]
        if len(schedule) != len(batches):
            raise ValueError(f"got {len(schedule)} step sizes for {len(batches)} batches")
        graph = (not self.first_order) if create_graph is None else bool(create_graph)
        names = self.adapted_names(params)
        adapted = dict(params)
        for lr, batch in zip(schedule, batches, strict=True):
            grads, loss = _inner_grads(loss_fn, adapted, batch, names, graph, functional)
            if self.rule is not None:  # the learned rule makes the whole step
                new, state = self.rule.step({n: adapted[n] for n in names}, grads, loss, state)
                adapted.update(new)
                continue
            if self.inner_rule == "adam":
                grads, state = self._adam_directions(grads, state)
            for name in names:
                step = lrs[name] if lrs is not None else lr
                adapted[name] = adapted[name] - step * grads[name]
        return adapted, state

    def _adam_directions(self, grads: Params, state: InnerState | None) -> tuple[Params, InnerState]:
        """Adam's bias-corrected step direction ``m_hat / (sqrt(v_hat) + eps)`` per name, and the updated state."""
        beta1, beta2 = self.adam_betas
        t = 1 if state is None else int(state["t"]) + 1
        m_old = state["m"] if state is not None else {n: torch.zeros_like(g) for n, g in grads.items()}
        v_old = state["v"] if state is not None else {n: torch.zeros_like(g) for n, g in grads.items()}
        m = {n: beta1 * m_old[n] + (1.0 - beta1) * g for n, g in grads.items()}
        v = {n: beta2 * v_old[n] + (1.0 - beta2) * g * g for n, g in grads.items()}
        c1, c2 = 1.0 - beta1**t, 1.0 - beta2**t
        directions = {n: (m[n] / c1) / (torch.sqrt(v[n] / c2) + self.adam_eps) for n in grads}
        return directions, {"t": t, "m": m, "v": v}

    def adapt_many(
        self,
        params: Params,
        loss_fn: LossFn,
        batches: Any,
        *,
        vectorize: bool | None = None,
        create_graph: bool | None = None,
        num_steps: int | None = None,
    ) -> list[Params]:
        """Adapt to every task of ``batches`` (a pytree of tensors with a leading task axis); one dict per task."""
        vec = self.vectorize if vectorize is None else vectorize

        def one(batch: Any) -> Params:
            return self.adapt(params, loss_fn, batch, num_steps=num_steps, create_graph=create_graph, functional=vec)

        n = num_tasks(batches)
        if not vec:  # no stacking: each task's dict straight from its own graph
            return [one(index_task(batches, i)) for i in range(n)]
        stacked = map_tasks(one, batches, vectorize=True)
        return [index_task(stacked, i) for i in range(n)]

    def meta_loss(
        self,
        params: Params,
        inner_loss: LossFn,
        outer_loss: LossFn,
        support: Any,
        query: Any,
        *,
        vectorize: bool | None = None,
    ) -> Tensor:
        """The MAML objective ``mean_i outer_loss(adapt(params, support_i), query_i)`` (differentiable in params)."""
        vec = self.vectorize if vectorize is None else vectorize

        def one(s: Any, q: Any) -> Tensor:
            return outer_loss(self.adapt(params, inner_loss, s, functional=vec), q)

        return map_tasks(one, support, query, vectorize=vec).mean()

    def state_dict(self) -> dict[str, Any]:
        """Configuration and Meta-SGD step sizes, for checkpoints."""
        lrs = {k: v.detach().clone() for k, v in self.inner_lrs.items()} if self.inner_lrs is not None else None
        return {
            "inner_lr": self.inner_lr,
            "num_steps": self.num_steps,
            "first_order": self.first_order,
            "adapt_keys": self.adapt_keys,
            "inner_lrs": lrs,
            "inner_rule": self.inner_rule,
            "adam_betas": list(self.adam_betas),
            "adam_eps": self.adam_eps,
            "rule": self.rule.state_dict() if self.rule is not None else None,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` saved (step sizes copied in place when they already exist)."""
        self.inner_lr, self.num_steps = float(state["inner_lr"]), int(state["num_steps"])
        self.first_order, self.adapt_keys = bool(state["first_order"]), state["adapt_keys"]
        self.inner_rule = str(state.get("inner_rule", "sgd"))  # checkpoints written before the rule existed: SGD
        self.adam_betas = tuple(float(b) for b in state.get("adam_betas", self.adam_betas))
        self.adam_eps = float(state.get("adam_eps", self.adam_eps))
        if self.rule is not None:
            self.rule.load_state_dict(state["rule"])
        saved = state["inner_lrs"]
        if saved is None:
            self.inner_lrs = None
        elif self.inner_lrs is not None and set(self.inner_lrs) == set(saved):
            with torch.no_grad():
                for name, value in saved.items():
                    self.inner_lrs[name].copy_(value)
        else:
            self.inner_lrs = {k: v.detach().clone().requires_grad_(True) for k, v in saved.items()}


def _inner_grads(
    loss_fn: LossFn, params: Params, batch: Any, names: list[str], create_graph: bool, functional: bool
) -> tuple[Params, Tensor]:
    """Gradients of ``loss_fn(params, batch)`` w.r.t. ``params[names]`` (detached unless ``create_graph``), and the
    loss (detached)."""
    if functional:

        def loss_of(sub: Params) -> Tensor:
            return loss_fn({**params, **sub}, batch)

        grads, loss = torch.func.grad_and_value(loss_of)({n: params[n] for n in names})
        return (grads if create_graph else {n: g.detach() for n, g in grads.items()}), loss.detach()
    with torch.enable_grad():
        # Leaves that do not require grad (detached params at evaluation) get a fresh leaf to differentiate.
        sub = {n: params[n] if params[n].requires_grad else params[n].detach().requires_grad_(True) for n in names}
        loss = loss_fn({**params, **sub}, batch)
        grads = torch.autograd.grad(loss, list(sub.values()), create_graph=create_graph, allow_unused=True)
    return {n: torch.zeros_like(sub[n]) if g is None else g for n, g in zip(names, grads, strict=True)}, loss.detach()


def reptile_update(params: Params, adapted_list: Sequence[Params], outer_lr: float) -> Params:
    """Reptile's outer rule: ``params + outer_lr * mean_i(adapted_i - params)`` (Nichol et al. 2018), detached.

    The adapted params come from the same :meth:`GradientLearner.adapt_steps` (first order, k steps per task).
    """
    if not adapted_list:
        raise ValueError("reptile_update needs at least one adapted parameter dict")
    with torch.no_grad():
        return {
            name: p.detach() + outer_lr * torch.stack([a[name].detach() - p.detach() for a in adapted_list]).mean(0)
            for name, p in params.items()
        }
