"""MAML with a TRPO meta-update (Finn et al. 2017, Sec. 5.3), built from the generic pieces.

One iteration (the training loop and sampler are elsewhere)::

    adapted = algo.adapt(support)               # per-task adapted params, detached, for the sampler
    query = sampler.sample(adapted, tasks, ...)  # episodes of each task's adapted policy
    metrics = algo.meta_update(support, query)   # TRPO step on the pre-update params, through the adaptation

Choices, and why:

- **State**: the policy ``nn.Module`` owns the meta-parameters; the TRPO step writes them in place, so
  ``policy.state_dict()`` (inside :meth:`MAMLTRPO.state_dict`) is the checkpoint. Meta-SGD step sizes, when
  configured, are meta-parameters too: they live in the learner and take the same TRPO step.
- **Flat vector**: the meta-objective is a function of one flat vector ``theta`` (policy params, then step sizes),
  unflattened into views and called through ``functional_call``; TRPO's helpers then stay generic.
- **Second order**: the adapted params are built with ``create_graph=True`` (unless ``first_order``), so the
  surrogate's gradient and the KL's Hessian-vector products both differentiate *through* the inner step.
- **Old policy**: the importance ratio and the KL use the adapted policies at the current params, recomputed (and
  detached) at the start of the update, not the sampler's stored ``log_probs``. Both name the same policy when the
  sampler ran :meth:`adapt`'s output; recomputing makes ratio 1 and KL 0 hold exactly at the start, and uses one
  "old" policy for both terms. The gap to the stored log-probs is reported as ``log_prob_gap`` (should be ~0).
- **Advantages**: a :class:`LinearFeatureBaseline` is fitted per task on the batch it serves (support episodes for
  the inner loss, query episodes for the surrogate), then GAE (``lambda = 1`` as in MAML) and per-task
  normalisation. They are constants: never differentiated.
- **cg_damping = 1e-5**: checked against the MAML code: cbfinn/maml_rl's ``MAMLTRPO`` uses rllab's
  ``ConjugateGradientOptimizer`` defaults (``reg_coeff=1e-5``, 10 CG iterations, backtrack ratio 0.8, 15
  backtracks; its Hessian-vector product there is a finite difference of gradients, ours is exact double backward),
  and pytorch-maml-rl's ``--cg-damping`` defaults to 1e-5. Single-task TRPO codes often use 0.1. The damping only
  regularises the CG solve; the line search enforces the true KL bound either way.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import partial
from typing import Any

import torch
from torch import Tensor, nn

from metarl.advantages import compute_advantages
from metarl.episodes import EpisodeBatch
from metarl.learners import GradientLearner, index_task, map_tasks
from metarl.rl_objectives import Dist, distribution, inner_loss_fn, task_mean, trpo_terms
from metarl.trpo import (
    backtracking_line_search,
    conjugate_gradient,
    flat_grad,
    flatten,
    gauss_newton_hvp,
    hvp_from_grad,
    trust_region_step,
    unflatten,
)

Params = dict[str, Tensor]
BATCHING = ("auto", "stacked", "loop", "vmap")
HVP_FORMS = ("gauss_newton", "double_backward")


def resolve_batching(batching: str, device: torch.device) -> str:
    """The task batching a device runs: ``auto`` picks the form measured fastest there (``benchmarks/learner.py``).

    ``stacked``: every task in one graph, per-task parameters stacked on a leading axis and batched matmuls (the
    operator count does not grow with the meta-batch); ``loop``: one graph per task, the reference form;
    ``vmap``: ``torch.func.vmap`` over tasks.
    """
    if batching not in BATCHING:
        raise ValueError(f"unknown batching {batching!r}; choose one of {', '.join(BATCHING)}")
    if batching != "auto":
        return batching
    # On the CPU the update is compute-bound: per-task matmuls in a loop were as fast as batched ones or faster, and
    # reproduce the reference's rounding; on a GPU the loop is launch-bound and grows with the meta-batch.
    return "stacked" if device.type == "cuda" else "loop"


def stack_params(params: Params, n: int) -> Params:
    """Every parameter repeated along a new leading task axis of size ``n``.

    A view (``expand``): the gradient of a sum of per-task losses with respect to it is the per-task gradient, and
    the gradient flows back to the shared ``params`` as the sum over tasks.
    """
    return {k: v.unsqueeze(0).expand(n, *v.shape) for k, v in params.items()}


@dataclass
class MAMLTRPOConfig:
    """Hyper-parameters; defaults are the MAML paper's / pytorch-maml-rl's for MuJoCo locomotion."""

    fast_lr: float = 0.1
    num_steps: int = 1
    first_order: bool = False
    inner_loss: str = "reinforce"  # "reinforce" (MAML) or "lvc" (ProMP's low-variance curvature)
    gamma: float = 0.99
    gae_lambda: float = 1.0
    normalize_advantages: bool = True
    max_kl: float = 0.01
    cg_iters: int = 10
    cg_damping: float = 1e-5
    ls_max_steps: int = 15
    ls_backtrack_ratio: float = 0.8
    adapt_keys: tuple[str, ...] | None = None  # ANIL-style: adapt only these parameters
    meta_sgd: bool = False  # learn per-parameter inner step sizes, initialised to fast_lr
    batching: str = "auto"  # how tasks share a graph: see resolve_batching
    hvp: str = "gauss_newton"  # KL Hessian-vector products: "gauss_newton" (exact at the current params) or
    # "double_backward" (through the gradient of the KL; the reference)

    def __post_init__(self) -> None:
        inner_loss_fn(self.inner_loss)  # raises on an unknown name
        resolve_batching(self.batching, torch.device("cpu"))  # raises on an unknown name
        if self.hvp not in HVP_FORMS:
            raise ValueError(f"unknown hvp {self.hvp!r}; choose one of {', '.join(HVP_FORMS)}")
        checks = {
            "num_steps >= 0": self.num_steps >= 0,
            "0 <= gamma <= 1": 0.0 <= self.gamma <= 1.0,
            "0 <= gae_lambda <= 1": 0.0 <= self.gae_lambda <= 1.0,
            "max_kl > 0": self.max_kl > 0.0,
            "cg_iters >= 1": self.cg_iters >= 1,
            "cg_damping >= 0": self.cg_damping >= 0.0,
            "ls_max_steps >= 1": self.ls_max_steps >= 1,
            "0 < ls_backtrack_ratio < 1": 0.0 < self.ls_backtrack_ratio < 1.0,
        }
        failed = [name for name, ok in checks.items() if not ok]
        if failed:
            raise ValueError(f"invalid MAMLTRPOConfig: need {', '.join(failed)}")
        if self.adapt_keys is not None:
            self.adapt_keys = tuple(self.adapt_keys)


class MAMLTRPO:
    """MAML-TRPO on a :class:`GaussianMLPPolicy` or :class:`CategoricalMLPPolicy` (anything with the same API)."""

    def __init__(self, policy: nn.Module, config: MAMLTRPOConfig | None = None) -> None:
        self.policy = policy
        self.config = config if config is not None else MAMLTRPOConfig()
        cfg = self.config
        kwargs = dict(num_steps=cfg.num_steps, first_order=cfg.first_order, adapt_keys=cfg.adapt_keys)
        params = dict(policy.named_parameters())
        if cfg.meta_sgd:
            self.learner = GradientLearner.meta_sgd(params, cfg.fast_lr, **kwargs)
        else:
            self.learner = GradientLearner(cfg.fast_lr, **kwargs)
        self.inner_loss = partial(inner_loss_fn(cfg.inner_loss), policy)

    @property
    def batching(self) -> str:
        """The task batching in use: the configured one, or the device's fastest for ``auto``."""
        return resolve_batching(self.config.batching, next(self.policy.parameters()).device)

    def _summed_inner_loss(self, params: Params, batch: dict[str, Tensor]) -> Tensor:
        """The inner loss summed over stacked tasks: its gradient in stacked params is each task's own gradient."""
        return self.inner_loss(params, batch).sum()

    # ----------------------------------------------------------------------------------------------- parameters
    def _meta_tensors(self) -> list[Tensor]:
        """The meta-parameters TRPO moves: the policy's, then the learner's (Meta-SGD step sizes)."""
        return [p for _, p in self.policy.named_parameters()] + self.learner.meta_parameters()

    def _split(self, theta: Tensor) -> tuple[Params, Params | None]:
        """Views of a flat vector as (policy params dict, Meta-SGD step sizes or None)."""
        views = unflatten(theta, self._meta_tensors())
        names = [n for n, _ in self.policy.named_parameters()]
        params = dict(zip(names, views[: len(names)], strict=True))
        lrs = self.learner.inner_lrs
        return params, (dict(zip(lrs, views[len(names) :], strict=True)) if lrs is not None else None)

    def parameters_vector(self) -> Tensor:
        """The current meta-parameters as one detached flat vector."""
        return flatten(self._meta_tensors()).detach()

    # ---------------------------------------------------------------------------------------------------- data
    def prepare(self, batch: EpisodeBatch) -> dict[str, Tensor]:
        """Tensors of an episode batch on the policy's device and dtype, plus its (constant) advantages."""
        ref = next(self.policy.parameters())
        device, dtype = ref.device, ref.dtype

        def cast(x: Any, to: torch.dtype) -> Tensor:
            return torch.as_tensor(x).to(device=device, dtype=to)

        action_dtype = torch.long if getattr(self.policy, "discrete", False) else dtype
        out = {
            "observations": cast(batch.observations, dtype),
            "actions": cast(batch.actions, action_dtype),
            "mask": cast(batch.mask, dtype),
            "rewards": cast(batch.rewards, dtype),
        }
        cfg = self.config
        out["advantages"] = compute_advantages(
            out["observations"], out["rewards"], out["mask"], cfg.gamma, cfg.gae_lambda, cfg.normalize_advantages
        )
        return out

    # ----------------------------------------------------------------------------------------------- adaptation
    def adapt(self, support: EpisodeBatch, params: list[Params] | None = None) -> list[Params]:
        """Per-task adapted params (detached) from the support episodes, for the sampler to collect query episodes.

        ``params``: one starting dict per task (e.g. the previous step's adapted params, when evaluating several
        gradient steps with fresh episodes each); default: the policy's current params for every task.
        """
        s = self.prepare(support)
        n = s["mask"].shape[0]
        if self.batching == "stacked":
            base = {k: p.detach() for k, p in self.policy.named_parameters()}
            start = stack_params(base, n) if params is None else {k: torch.stack([p[k] for p in params]) for k in base}
            stacked = self.learner.adapt(start, self._summed_inner_loss, s, create_graph=False)
            return [{k: v.detach() for k, v in index_task(stacked, i).items()} for i in range(n)]
        if params is None:
            base = {k: p.detach() for k, p in self.policy.named_parameters()}
            vec = self.batching == "vmap"
            adapted = self.learner.adapt_many(base, self.inner_loss, s, create_graph=False, vectorize=vec)
        else:
            adapted = [
                self.learner.adapt(p, self.inner_loss, {k: v[i] for k, v in s.items()}, create_graph=False)
                for i, p in enumerate(params)
            ]
        return [{k: v.detach() for k, v in a.items()} for a in adapted]

    def objective(
        self,
        theta: Tensor,
        support: dict[str, Tensor],
        query: dict[str, Tensor],
        old: tuple[Tensor, ...] | None = None,
        create_graph: bool | None = None,
    ) -> tuple[Tensor, Tensor, tuple[Tensor, ...]]:
        """Mean over tasks of the query surrogate and KL under params adapted from ``theta`` on the support set.

        ``support``/``query`` come from :meth:`prepare`. ``old``: the fixed old distributions (stacked over tasks);
        None takes the current adapted ones (detached) and returns them for later calls (the line search).
        """
        new = self.query_distribution(theta, support, query["observations"], create_graph)
        surrogate, kl, old = trpo_terms(self.policy, new, query, old)
        return surrogate.mean(), kl.mean(), old

    def query_distribution(
        self, theta: Tensor, support: dict[str, Tensor], observations: Tensor, create_graph: bool | None = None
    ) -> Dist:
        """Each task's adapted policy's distribution at its query observations, stacked over tasks.

        The adaptation starts from ``theta`` and runs on the support set, in the configured :attr:`batching`.
        """
        params, lrs = self._split(theta)
        if self.batching == "stacked":
            start = stack_params(params, observations.shape[0])
            adapted = self.learner.adapt(
                start, self._summed_inner_loss, support, create_graph=create_graph, inner_lrs=lrs
            )
            return distribution(self.policy, adapted, observations)
        vec = self.batching == "vmap"

        def task(s: dict[str, Tensor], obs: Tensor) -> Dist:
            adapted = self.learner.adapt(
                params, self.inner_loss, s, create_graph=create_graph, inner_lrs=lrs, functional=vec
            )
            return distribution(self.policy, adapted, obs)

        return map_tasks(task, support, observations, vectorize=vec)

    def meta_gradient(self, support: EpisodeBatch, query: EpisodeBatch) -> Tensor:
        """Flat gradient of the meta-surrogate w.r.t. the meta-parameters (for tests and benchmarks)."""
        theta = self.parameters_vector().requires_grad_(True)
        surrogate, _, _ = self.objective(theta, self.prepare(support), self.prepare(query))
        return flat_grad(surrogate, theta)

    # ------------------------------------------------------------------------------------------------ the update
    def meta_update(self, support: EpisodeBatch, query: EpisodeBatch) -> dict[str, float]:
        """One TRPO step on the meta-parameters; returns metrics (all floats, ``accepted`` is 1.0 or 0.0)."""
        cfg = self.config
        s, q = self.prepare(support), self.prepare(query)
        theta0 = self.parameters_vector()
        theta = theta0.clone().requires_grad_(True)

        new = self.query_distribution(theta, s, q["observations"])
        surrogate, kl, old = trpo_terms(self.policy, new, q)
        surrogate, kl = surrogate.mean(), kl.mean()
        grad = flat_grad(surrogate, theta, retain_graph=True)
        if cfg.hvp == "gauss_newton":
            mask = q["mask"]
            hvp = gauss_newton_hvp(new, theta, lambda d: task_mean(self.policy.kl(old, d), mask).mean(), cfg.cg_damping)
        else:
            hvp = hvp_from_grad(flat_grad(kl, theta, create_graph=True), theta, cfg.cg_damping)
        direction, product = conjugate_gradient(hvp, grad, cfg.cg_iters, return_product=True)
        nonzero = bool(grad.abs().sum() > 0)
        full_step = trust_region_step(direction, None, cfg.max_kl, product=product) if nonzero else None
        surrogate_before = float(surrogate.detach())
        del surrogate, kl, hvp, new  # free the second-order graph before the line search

        def evaluate(x: Tensor) -> tuple[float, float]:
            new_surrogate, new_kl, _ = self.objective(x.detach(), s, q, old=old, create_graph=False)
            return float(new_surrogate), float(new_kl)

        metrics = self._diagnostics(theta0, s, q, query, old)
        if full_step is None:
            accepted, fraction, steps, surrogate_after, kl_after = False, 0.0, 0, surrogate_before, 0.0
        else:
            result = backtracking_line_search(
                evaluate, theta0, full_step, surrogate_before, cfg.max_kl, cfg.ls_max_steps, cfg.ls_backtrack_ratio
            )
            accepted, fraction, steps = result.accepted, result.fraction, result.steps
            surrogate_after, kl_after = result.surrogate, result.kl
            if accepted:
                with torch.no_grad():
                    for p, new in zip(self._meta_tensors(), unflatten(result.x, self._meta_tensors()), strict=True):
                        p.copy_(new)
        step_norm = float(full_step.norm()) * fraction if full_step is not None else 0.0
        metrics.update(
            surrogate_before=surrogate_before,
            surrogate_after=surrogate_after,
            surrogate_improvement=surrogate_after - surrogate_before,
            kl=kl_after,
            line_search_steps=float(steps),
            step_fraction=fraction,
            accepted=float(accepted),
            grad_norm=float(grad.norm()),
            step_norm=step_norm,
            expected_improvement=float(grad @ full_step) * fraction if full_step is not None else 0.0,
        )
        return metrics

    @torch.no_grad()
    def _diagnostics(
        self, theta0: Tensor, s: dict[str, Tensor], q: dict[str, Tensor], query: EpisodeBatch, old: tuple
    ) -> dict[str, float]:
        """Returns of both batches, the pre-update inner loss, and the gap to the sampler's log-probs."""
        params, _ = self._split(theta0)
        if self.batching == "stacked":
            inner = self.inner_loss(stack_params(params, s["mask"].shape[0]), s)
        else:
            inner = map_tasks(lambda b: self.inner_loss(params, b), s, vectorize=self.batching == "vmap")
        mask = q["mask"]
        stored = torch.as_tensor(query.log_probs).to(mask)
        recomputed = self.policy.log_prob(old, q["actions"])
        gap = torch.where(mask > 0, (recomputed - stored).abs(), torch.zeros_like(mask)).amax()
        return {
            "inner_loss": float(inner.mean()),
            "support_return": float((s["rewards"] * s["mask"]).sum(-1).mean()),
            "query_return": float((q["rewards"] * mask).sum(-1).mean()),
            "log_prob_gap": float(gap),
        }

    # ---------------------------------------------------------------------------------------------- checkpoints
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume: policy params, learner state (step sizes), config."""
        return {"policy": self.policy.state_dict(), "learner": self.learner.state_dict(), "config": asdict(self.config)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`'s output in place."""
        self.policy.load_state_dict(state["policy"])
        self.learner.load_state_dict(state["learner"])
