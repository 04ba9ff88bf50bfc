"""Inner-loop policy-gradient estimators: the per-step surrogate terms whose gradient is the inner step.

Every estimator takes the log-probabilities ``logp`` [T, B] of the sampled actions under the
parameters being adapted, the fixed advantages [T, B] (zero on invalid steps) and the valid mask
[T, B], one episode per column, and returns per-step terms [T, B] whose mean is the inner objective
to *maximise*. All three have the same first derivative, Σ_t ∇log π(a_t|s_t) A_t; they differ in the
second derivative, which is what MAML's meta-gradient differentiates through the inner step:

- ``reinforce``: log π · A (MAML's original surrogate). Its Hessian misses every term that comes from
  the sampling distribution's dependence on θ, so the meta-gradient is biased.
- ``lvc``: the low-variance curvature surrogate of ProMP (Rothfuss et al., ICLR 2019, Sec. 4),
  π_θ / ⊥(π_θ) · A per step (⊥ = stop-gradient). Its Hessian adds ∇log π ∇log π^T A of each step but
  drops the cross terms between steps: biased by design, with lower variance than DiCE.
- ``dice``: DiCE (Foerster et al., ICML 2018), the magic box □(W) = exp(W - ⊥W) of the cumulative
  log-probability W_t = Σ_{t'≤t} log π(a_t'|s_t'), in its baseline form (□(W_t) - □(W_{t-1})) · A_t
  (Farquhar et al. 2019, "Loaded DiCE", λ = 1). With undiscounted reward-to-go minus a state baseline
  it is an unbiased estimator of every derivative order of the expected return (tests/test_estimators.py).
"""

from __future__ import annotations

from typing import Callable, get_args

import torch

from metarl.algos.maml.config import Estimator

#: The names ``maml.estimator`` accepts.
ESTIMATORS = get_args(Estimator)


def magic_box(x: torch.Tensor) -> torch.Tensor:
    """DiCE's □(x) = exp(x - stop_grad(x)): value 1, derivative □(x) ∇x."""
    return torch.exp(x - x.detach())


def reinforce_terms(logp: torch.Tensor, advantages: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """log π(a_t|s_t) · A_t."""
    return logp * advantages


def lvc_terms(logp: torch.Tensor, advantages: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """π(a_t|s_t) / ⊥π(a_t|s_t) · A_t (ProMP's LVC surrogate)."""
    return magic_box(logp) * advantages


def dice_terms(logp: torch.Tensor, advantages: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """(□(W_t) - □(W_{t-1})) · A_t with W_t the episode's cumulative log-probability up to step t."""
    w = torch.cumsum(logp * valid, dim=0)  # a column holds one episode from row 0
    box = magic_box(w)
    prev = torch.cat([torch.ones_like(box[:1]), box[:-1]])  # □(W_{-1}) = □(0) = 1
    return (box - prev) * advantages


_TERMS: dict[str, Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "reinforce": reinforce_terms,
    "lvc": lvc_terms,
    "dice": dice_terms,
}


def surrogate_terms(name: str) -> Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]:
    """The per-step terms function of estimator ``name`` (one of :data:`ESTIMATORS`)."""
    try:
        return _TERMS[name]
    except KeyError:
        raise ValueError(f"unknown inner-loop estimator {name!r}; expected one of {', '.join(ESTIMATORS)}") from None
