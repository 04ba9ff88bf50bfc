"""Meta-gradient estimators: the inner step's per-step surrogate terms (whose gradient is the inner
step) and E-MAML's outer exploration term.

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
- ``emaml``: E-MAML (Stadie et al. 2018, "Some considerations on learning to explore via meta-RL"):
  the REINFORCE inner step, and in the outer objective :func:`exploration_terms`, the score function
  of each task's inner episodes weighted by its post-update return. The plain surrogate's gradient
  is the pathwise part of ∇_θ E_τ[J(θ'(τ, θ))] (τ the inner episodes, θ' the adapted parameters);
  the exploration term adds the part that comes from τ's distribution depending on θ. Together they
  are an unbiased estimate of that gradient (tests/test_estimators.py checks both parts exactly).
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


def exploration_terms(logp: torch.Tensor, old_logp: torch.Tensor, valid: torch.Tensor,
                      post_returns: torch.Tensor, num_tasks: int) -> torch.Tensor:
    """E-MAML's exploration term of one inner step, per task [M]: (Σ over the task's inner episodes of
    log π_θ(τ) - log π_old(τ)) · (R'_i - b_i).

    ``logp`` / ``old_logp`` [T, B]: log-probabilities of the inner episodes' actions under the
    parameters being differentiated and under the policy that sampled them (the value is then 0 at
    θ_old and moves with the log-likelihood of the inner batch; its gradient is the score function).
    ``post_returns`` [M]: each task's post-update return R'_i (no gradient). The sum runs over the
    task's episodes, not the mean: the inner batch's density is the product of its episodes'. The
    baseline b_i is the mean R' of the other tasks: independent of task i's inner episodes, so the
    term stays unbiased (0 with one task).
    """
    episode = ((logp - old_logp) * valid).sum(0)  # [B] log-likelihood ratio of each episode (one per column)
    per_task = episode.reshape(num_tasks, -1).sum(1)
    post = post_returns.detach()
    if num_tasks > 1:
        baseline = (post.sum() - post) / (num_tasks - 1)
    else:
        baseline = torch.zeros_like(post)
    return per_task * (post - baseline)


_TERMS: dict[str, Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "reinforce": reinforce_terms,
    "lvc": lvc_terms,
    "dice": dice_terms,
    "emaml": reinforce_terms,  # E-MAML's inner step is REINFORCE's; its difference is the outer exploration term
}


def surrogate_terms(name: str) -> Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]:
    """The per-step inner terms function of estimator ``name`` (one of :data:`ESTIMATORS`)."""
    try:
        return _TERMS[name]
    except KeyError:
        raise ValueError(f"unknown inner-loop estimator {name!r}; expected one of {', '.join(ESTIMATORS)}") from None
