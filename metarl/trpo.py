"""The pieces of a TRPO step, generic over what the parameters mean (Schulman et al. 2015).

Maximise a surrogate ``L(x)`` subject to ``KL(x) <= max_kl`` around the current flat parameter vector ``x0``:

1. ``g = grad L(x0)``; ``H = hessian KL(x0)`` used only through products ``H v`` (double backward, plus damping);
2. ``s = H^-1 g`` by :func:`conjugate_gradient`;
3. scale ``s`` so the quadratic model of the KL equals ``max_kl``: :func:`trust_region_step`;
4. :func:`backtracking_line_search` shrinks the step until the true surrogate improves *and* the true KL is within
   ``max_kl``, or gives up and keeps ``x0``.

Nothing here knows about MAML: the functions of ``x`` may run an inner adaptation, or not.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

Params = dict[str, Tensor]


def flatten(tensors: Iterable[Tensor]) -> Tensor:
    """One flat vector of the tensors' entries, in order."""
    return torch.cat([t.reshape(-1) for t in tensors])


def unflatten(vector: Tensor, like: Sequence[Tensor]) -> list[Tensor]:
    """Views of ``vector`` shaped like ``like`` (differentiable: gradients flow back into ``vector``)."""
    out, start = [], 0
    for t in like:
        out.append(vector[start : start + t.numel()].view_as(t))
        start += t.numel()
    if start != vector.numel():
        raise ValueError(f"vector has {vector.numel()} entries, the tensors {start}")
    return out


def params_to_vector(params: Params) -> Tensor:
    """A parameter dict as one flat vector (dict order)."""
    return flatten(params.values())


def vector_to_params(vector: Tensor, like: Params) -> Params:
    """A flat vector as a parameter dict with the names and shapes of ``like``."""
    return dict(zip(like, unflatten(vector, list(like.values())), strict=True))


def flat_grad(
    output: Tensor, inputs: Sequence[Tensor] | Tensor, create_graph: bool = False, retain_graph: bool | None = None
) -> Tensor:
    """Gradient of a scalar w.r.t. ``inputs`` as one flat vector (zeros for inputs it does not depend on)."""
    inputs = [inputs] if torch.is_tensor(inputs) else list(inputs)
    grads = torch.autograd.grad(output, inputs, create_graph=create_graph, retain_graph=retain_graph, allow_unused=True)
    return flatten(torch.zeros_like(x) if g is None else g for x, g in zip(inputs, grads, strict=True))


def hvp_from_grad(grad: Tensor, x: Tensor, damping: float = 0.0) -> Callable[[Tensor], Tensor]:
    """``v -> (H + damping I) v`` given ``grad = d f / d x`` built with ``create_graph=True``.

    Each product is one backward pass of ``grad . v`` through the retained graph (Pearlmutter's trick), so the
    forward pass and first backward are paid once however many conjugate-gradient iterations follow.
    """

    def hvp(v: Tensor) -> Tensor:
        hv = flat_grad(torch.dot(grad, v.detach()), x, retain_graph=True)
        return hv + damping * v

    return hvp


def gauss_newton_hvp(
    outputs: Sequence[Tensor],
    x: Tensor | Sequence[Tensor],
    loss_fn: Callable[[tuple[Tensor, ...]], Tensor],
    damping: float = 0.0,
) -> Callable[[Tensor], Tensor]:
    """``v -> (J^T H J + damping I) v`` for ``f(x) = loss_fn(outputs(x))``: the Gauss-Newton form of its Hessian.

    ``outputs``: tensors computed from the flat vector ``x`` with their graph kept (``create_graph`` through any
    inner adaptation); ``J`` is their Jacobian in ``x`` and ``H`` the Hessian of ``loss_fn`` in the outputs. The full
    Hessian adds ``sum_k (d loss / d out_k) d^2 out_k / dx^2``, which vanishes where the loss's gradient in the outputs
    is zero: for a KL to a fixed distribution at the point where the two coincide (TRPO's KL at the current params) the
    two are equal. Each product is ``J v`` (reverse mode over the reusable ``J^T u`` graph, linear in ``u``),
    ``H (J v)`` (elementwise, cheap) and ``J^T (H J v)`` (one backward through the outputs' graph): unlike double
    backward through ``grad f`` it never differentiates the outputs' graph twice, which is where a second-order MAML
    graph is most expensive. ``x`` may also be a list of tensors (e.g. a module's parameters): products then take and
    return one flat vector over all of them, in order.
    """
    outputs = tuple(outputs)
    inputs = [x] if torch.is_tensor(x) else list(x)
    leaves = tuple(o.detach().requires_grad_(True) for o in outputs)
    with torch.enable_grad():
        loss_grads = torch.autograd.grad(loss_fn(leaves), leaves, create_graph=True)
        probes = tuple(torch.zeros_like(o, requires_grad=True) for o in outputs)
        jt_probe = torch.autograd.grad(outputs, inputs, grad_outputs=probes, create_graph=True, allow_unused=True)
    used = [i for i, g in enumerate(jt_probe) if g is not None]  # inputs the outputs do not depend on: zero rows

    def hvp(v: Tensor) -> Tensor:
        parts = unflatten(v.detach(), inputs)
        jv = torch.autograd.grad(
            [jt_probe[i] for i in used],
            probes,
            grad_outputs=[parts[i] for i in used],
            retain_graph=True,
            allow_unused=True,
        )
        jv = tuple(torch.zeros_like(p) if g is None else g for p, g in zip(probes, jv, strict=True))
        hjv = torch.autograd.grad(loss_grads, leaves, grad_outputs=jv, retain_graph=True, allow_unused=True)
        hjv = tuple(torch.zeros_like(p) if g is None else g for p, g in zip(leaves, hjv, strict=True))
        jthjv = torch.autograd.grad(outputs, inputs, grad_outputs=hjv, retain_graph=True, allow_unused=True)
        return (
            flatten(torch.zeros_like(t) if g is None else g for t, g in zip(inputs, jthjv, strict=True)) + damping * v
        )

    return hvp


def make_hvp(fn: Callable[[Tensor], Tensor], x: Tensor, damping: float = 0.0) -> Callable[[Tensor], Tensor]:
    """Hessian-vector products of the scalar ``fn`` of a flat vector at ``x`` (double backward), with damping."""
    x = x.detach().requires_grad_(True)
    grad = flat_grad(fn(x), x, create_graph=True)
    return hvp_from_grad(grad, x, damping)


def hessian_vector_product(fn: Callable[[Tensor], Tensor], x: Tensor, v: Tensor, damping: float = 0.0) -> Tensor:
    """``(hessian(fn)(x) + damping I) v`` in one call (see :func:`make_hvp` to reuse the graph)."""
    return make_hvp(fn, x, damping)(v)


def conjugate_gradient(
    hvp_fn: Callable[[Tensor], Tensor],
    b: Tensor,
    iters: int = 10,
    residual_tol: float = 1e-10,
    return_product: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """Approximately solve ``A x = b`` for symmetric positive definite ``A`` known through ``hvp_fn(v) = A v``.

    Starts at 0 and stops after ``iters`` iterations or once the squared residual drops below ``residual_tol``.
    ``return_product``: also return ``A x``, accumulated from the products the iterations computed anyway
    (``x = sum alpha_k p_k`` so ``A x = sum alpha_k A p_k``), which spares TRPO's step scaling one more product.
    """
    x = torch.zeros_like(b)
    ax = torch.zeros_like(b)
    r = b.clone()
    p = b.clone()
    rdotr = torch.dot(r, r)
    for _ in range(iters):
        if rdotr <= residual_tol:
            break
        z = hvp_fn(p)
        alpha = rdotr / torch.dot(p, z)
        x = x + alpha * p
        ax = ax + alpha * z
        r = r - alpha * z
        new_rdotr = torch.dot(r, r)
        p = r + (new_rdotr / rdotr) * p
        rdotr = new_rdotr
    return (x, ax) if return_product else x


def trust_region_step(
    direction: Tensor, hvp_fn: Callable[[Tensor], Tensor] | None, max_kl: float, product: Tensor | None = None
) -> Tensor | None:
    """``direction`` scaled so that ``0.5 s^T H s = max_kl``; None when the curvature is not positive and finite.

    ``product``: ``H direction`` when already known (from :func:`conjugate_gradient`), else ``hvp_fn`` computes it.
    """
    product = hvp_fn(direction) if product is None else product
    shs = float(torch.dot(direction, product))
    if not math.isfinite(shs) or shs <= 0.0:
        return None
    return direction * math.sqrt(2.0 * max_kl / shs)


@dataclass
class LineSearchResult:
    """Outcome of :func:`backtracking_line_search`.

    accepted: a step was taken; fraction: the accepted fraction of the full step (0 when rejected); steps: how many
    candidates were evaluated; x: the new vector (``x0`` when rejected); surrogate, kl: their values at ``x``.
    """

    accepted: bool
    fraction: float
    steps: int
    x: Tensor
    surrogate: float
    kl: float


def backtracking_line_search(
    evaluate: Callable[[Tensor], tuple[float, float]],
    x0: Tensor,
    full_step: Tensor,
    surrogate_before: float,
    max_kl: float,
    max_steps: int = 15,
    backtrack_ratio: float = 0.8,
) -> LineSearchResult:
    """Try ``x0 + ratio^k * full_step`` for ``k = 0..max_steps-1``; accept the first that improves and keeps the KL.

    ``evaluate(x)`` returns ``(surrogate, kl)`` (surrogate to maximise). A candidate is accepted only if
    ``surrogate > surrogate_before`` and ``kl <= max_kl`` (NaNs fail both tests). If none is, ``x0`` is kept.
    """
    fraction = 1.0
    for k in range(max_steps):
        x = x0 + fraction * full_step
        surrogate, kl = evaluate(x)
        if surrogate > surrogate_before and kl <= max_kl:
            return LineSearchResult(True, fraction, k + 1, x, float(surrogate), float(kl))
        fraction *= backtrack_ratio
    return LineSearchResult(False, 0.0, max_steps, x0, float(surrogate_before), 0.0)
