"""Trust region policy optimisation step (Schulman et al. 2015) on a list of parameter tensors.

The step is written against two closures instead of a policy and a batch, so that MAML can use it
as its outer optimiser: ``loss_fn`` and ``kl_fn`` run the (differentiable) inner adaptation and
evaluate the post-update policies at the current values of ``params``.

Algorithm:

1. ``g = grad(loss)``;
2. ``s = F^-1 (-g)`` by conjugate gradient, with ``F v`` the Hessian-vector product of the mean
   KL at the starting point (its Hessian there is the Fisher information matrix);
3. scale ``s`` so that the quadratic model of the KL, ``1/2 s^T F s``, equals ``max_kl`` (``F s``
   from the CG residual, ``F s = -g - r``, so the step costs exactly ``cg_iters`` products);
4. backtracking line search on the fraction of that step until the surrogate loss improves and
   the measured KL stays within ``max_kl``; if nothing qualifies the parameters are restored.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from torch import Tensor

__all__ = [
    "flatten",
    "unflatten_like",
    "conjugate_gradient",
    "fisher_vector_product_fn",
    "trpo_step",
    "TRPOStepInfo",
]


def flatten(tensors: Sequence[Tensor]) -> Tensor:
    """Concatenate the tensors, each flattened, into one 1-D tensor."""
    if len(tensors) == 0:
        raise ValueError("flatten needs at least one tensor, got an empty sequence")
    return torch.cat([t.reshape(-1) for t in tensors])


def unflatten_like(flat: Tensor, tensors: Sequence[Tensor]) -> list[Tensor]:
    """Split a 1-D tensor into views shaped like ``tensors`` (inverse of :func:`flatten`)."""
    sizes = [t.numel() for t in tensors]
    if flat.dim() != 1 or flat.numel() != sum(sizes):
        raise ValueError(
            f"flat must be 1-D with {sum(sizes)} elements to match the tensors, "
            f"got shape {tuple(flat.shape)}"
        )
    return [chunk.view_as(t) for chunk, t in zip(torch.split(flat, sizes), tensors)]


def conjugate_gradient(
    Avp: Callable[[Tensor], Tensor],
    b: Tensor,
    iters: int = 10,
    residual_tol: float = 1e-10,  # trpo_step uses the same value
) -> Tensor:
    """Approximately solve ``A x = b`` for symmetric positive definite ``A`` given ``v -> A v``.

    Runs exactly ``iters`` iterations without host synchronisation: once the squared residual
    drops below ``residual_tol`` the iterate is frozen with ``torch.where`` (the further products
    are wasted but harmless, and without freezing ``p^T A p = 0`` would produce NaN).
    """
    return _conjugate_gradient(Avp, b, iters, residual_tol)[0]


def _conjugate_gradient(
    Avp: Callable[[Tensor], Tensor], b: Tensor, iters: int, residual_tol: float
) -> tuple[Tensor, Tensor]:
    """:func:`conjugate_gradient`, also returning the final residual ``r = b - A x``."""
    if iters < 1:
        raise ValueError(f"iters must be >= 1, got {iters}")
    b = b.detach()
    x = torch.zeros_like(b)
    r = b.clone()
    p = b.clone()
    rr = r @ r
    one = torch.ones((), dtype=b.dtype, device=b.device)
    zero = torch.zeros((), dtype=b.dtype, device=b.device)
    for _ in range(iters):
        active = rr > residual_tol
        Ap = Avp(p).detach()
        pAp = p @ Ap
        alpha = torch.where(active, rr / torch.where(active, pAp, one), zero)
        x = x + alpha * p
        r = r - alpha * Ap
        rr_new = r @ r
        beta = torch.where(active, rr_new / torch.where(active, rr, one), zero)
        p = torch.where(active, r + beta * p, p)
        rr = torch.where(active, rr_new, rr)
    return x, r


def _grads_or_zeros(
    out: Tensor, params: Sequence[Tensor], create_graph: bool, retain_graph: bool
) -> list[Tensor]:
    """``torch.autograd.grad`` with zeros for parameters the output does not depend on."""
    if not out.requires_grad:
        return [torch.zeros_like(p) for p in params]
    grads = torch.autograd.grad(
        out, params, create_graph=create_graph, retain_graph=retain_graph, allow_unused=True
    )
    return [torch.zeros_like(p) if g is None else g for g, p in zip(grads, params)]


def fisher_vector_product_fn(
    kl: Tensor, params: Sequence[Tensor], damping: float
) -> Callable[[Tensor], Tensor]:
    """Return ``v -> H v + damping * v`` with ``H`` the Hessian of ``kl`` w.r.t. ``params``.

    The first derivative ``g = grad(kl)`` is computed once, with ``create_graph=True``; each
    product is then a single backward pass of ``g . v`` through that graph (kept with
    ``retain_graph=True``), so CG iterations do not repeat the expensive forward/backward through
    the MAML inner loop. At the starting point of a TRPO step ``H`` is the Fisher matrix.
    """
    if kl.dim() != 0:
        raise ValueError(f"kl must be a scalar tensor, got shape {tuple(kl.shape)}")
    if damping < 0:
        raise ValueError(f"damping must be >= 0, got {damping}")
    params = list(params)
    flat_g = flatten(_grads_or_zeros(kl, params, create_graph=True, retain_graph=True))

    def fvp(v: Tensor) -> Tensor:
        v = v.detach()
        gv = flat_g @ v
        hv = flatten(_grads_or_zeros(gv, params, create_graph=False, retain_graph=True))
        return hv.detach() + damping * v

    return fvp


@dataclass
class TRPOStepInfo:
    """What one TRPO step did, as Python numbers for logging."""

    accepted: bool
    step_fraction: float  # fraction of the full (max_kl) step taken; 0.0 if rejected
    loss_before: float
    loss_after: float  # equals loss_before when the step was rejected
    kl_after: float  # 0.0 when the step was rejected (parameters restored)
    backtracks: int  # line-search candidates rejected before the accepted one (all, if none)


def trpo_step(
    params: Sequence[Tensor],
    loss_fn: Callable[[], Tensor],
    kl_fn: Callable[[], Tensor],
    max_kl: float = 0.01,
    cg_iters: int = 10,
    cg_damping: float = 1e-5,
    backtrack_ratio: float = 0.8,
    max_backtracks: int = 15,
    grad: Tensor | None = None,
    fvp: Callable[[Tensor], Tensor] | None = None,
) -> TRPOStepInfo:
    """One TRPO update of ``params`` in place.

    Args:
        params: leaf tensors with ``requires_grad=True`` (e.g. ``list(policy.parameters())``).
        loss_fn: returns the surrogate loss to minimise at the current ``params``, with graph.
        kl_fn: returns the mean KL(old || new) at the current ``params``, with graph; 0 at the
            starting point. Both closures are always called with grad mode enabled (MAML's inner
            adaptation inside them needs autograd); their line-search results are detached here.
        max_kl: trust-region radius on the mean KL.
        cg_iters, cg_damping: conjugate-gradient iterations and Tikhonov damping of ``F``.
        backtrack_ratio, max_backtracks: the line search tries fractions ``ratio**i`` of the full
            step for ``i = 0 .. max_backtracks - 1``.
        grad: the flat gradient of the loss at the starting point, for callers that have it more
            cheaply than by autograd through ``loss_fn()``; ``loss_fn()`` then needs no graph.
        fvp: ``v -> F v`` with ``F`` the Hessian of the KL at the starting point (no damping; it is
            added here), for callers that have a cheaper exact product than the double backward of
            :func:`fisher_vector_product_fn`; ``kl_fn`` is then only called in the line search and
            needs no graph.

    The parameters are left exactly as they were when no candidate improves the loss within the
    KL bound, or when the gradient or the step is not finite.
    """
    params = list(params)
    if not params:
        raise ValueError("trpo_step needs at least one parameter tensor")
    for i, p in enumerate(params):
        if not (p.is_leaf and p.requires_grad):
            raise ValueError(
                f"params[{i}] must be a leaf tensor with requires_grad=True "
                f"(is_leaf={p.is_leaf}, requires_grad={p.requires_grad})"
            )
    if not max_kl > 0:
        raise ValueError(f"max_kl must be positive, got {max_kl}")
    if not 0 < backtrack_ratio < 1:
        raise ValueError(f"backtrack_ratio must be in (0, 1), got {backtrack_ratio}")
    if max_backtracks < 1:
        raise ValueError(f"max_backtracks must be >= 1, got {max_backtracks}")
    if cg_damping < 0:
        raise ValueError(f"damping must be >= 0, got {cg_damping}")

    with torch.enable_grad():
        loss = loss_fn()
        if loss.dim() != 0:
            raise ValueError(f"loss_fn must return a scalar, got shape {tuple(loss.shape)}")
        loss_before_t = loss.detach()
        if grad is None:
            # retain_graph: loss_fn and kl_fn may share one graph (MAML computes the surrogate and
            # the KL from a single adaptation), which the Fisher-vector products below still need.
            g = flatten(_grads_or_zeros(loss, params, create_graph=False, retain_graph=True))
        else:
            g = grad.detach()
            numel = sum(p.numel() for p in params)
            if g.shape != (numel,):
                raise ValueError(f"grad must be flat with {numel} elements, got shape {tuple(g.shape)}")
        del loss
        loss_before = float(loss_before_t)

        def rejected(backtracks: int) -> TRPOStepInfo:
            return TRPOStepInfo(False, 0.0, loss_before, loss_before, 0.0, backtracks)

        if not bool(torch.isfinite(g).all()) or not math.isfinite(loss_before):
            return rejected(0)

        if fvp is None:
            damped_fvp = fisher_vector_product_fn(kl_fn(), params, cg_damping)
        else:

            def damped_fvp(v: Tensor) -> Tensor:
                v = v.detach()
                return fvp(v).detach() + cg_damping * v

        step_dir, residual = _conjugate_gradient(damped_fvp, -g, cg_iters, residual_tol=1e-10)
        del damped_fvp  # frees the double-backward graph before the line search builds new ones
        # s^T F s without another product: CG keeps r = b - F x by the recurrence r -= α F p, so
        # F s = b - r, a combination of the products it already made (equal to F s up to rounding;
        # one Fisher-vector product less, the most expensive operation of the step). s^T r = 0 holds
        # only in exact arithmetic, so b - r is kept rather than b alone.
        shs = 0.5 * (step_dir @ (-g - residual))
    # sHs <= 0 means a zero gradient (nothing to do) or a KL Hessian that is not positive
    # definite along the step; neither gives a usable trust-region step.
    if not (bool(torch.isfinite(step_dir).all()) and bool(torch.isfinite(shs)) and float(shs) > 0):
        return rejected(0)
    full_step = step_dir * torch.sqrt(max_kl / shs)
    steps = unflatten_like(full_step, params)
    old = [p.detach().clone() for p in params]

    for i in range(max_backtracks):
        frac = backtrack_ratio**i
        with torch.no_grad():
            for p, o, s in zip(params, old, steps):
                p.copy_(o + frac * s)
        with torch.enable_grad():
            loss_new = loss_fn().detach()
            kl_new = kl_fn().detach()
        loss_v, kl_v = float(loss_new), float(kl_new)
        if (
            math.isfinite(loss_v)
            and math.isfinite(kl_v)
            and loss_v < loss_before
            and kl_v <= max_kl
        ):
            return TRPOStepInfo(True, frac, loss_before, loss_v, kl_v, i)

    with torch.no_grad():
        for p, o in zip(params, old):
            p.copy_(o)
    return rejected(max_backtracks)
