"""ProMP (Rothfuss et al., "ProMP: Proximal Meta-Policy Search", ICLR 2019), on the inner loop MAML
uses (metarl.common.adaptation).

Inner step: the LVC objective (Sec. 4), π_θ(a|s) / π_old(a|s) · A on the inner episodes, π_old the
policy that sampled them; at θ = θ_old it is π_θ/⊥π_θ · A, whose Hessian has lower variance than
DiCE's (tests/test_estimators.py measures this on an enumerable MDP).

Outer update (Sec. 5, Algorithm 1): several Adam steps per meta-iteration on
    -E[min(r A, clip(r, 1 - ε, 1 + ε) A)] + Σ_j η_j KL_j,
r = π_θ'(a|s) / π_θ'old(a|s) on the query episodes (θ' re-adapted from the current θ through the
inner steps on the fixed inner episodes), KL_j the mean KL(π_old || π) of the policy before inner
step j on step j's episodes, against the distribution that sampled them. η_j is fixed or halved /
doubled toward a target KL after each meta-iteration, as in the authors' code (their
``adapt_kl_coeff``). Episodes are collected once per meta-iteration, as for MAML.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from metarl.common.adaptation import GradientAdaptation, InnerData, per_task_mean
from metarl.common.policies import Policy, expand_params, policy_forward


def lvc_inner_terms(logp: torch.Tensor, data: InnerData) -> torch.Tensor:
    """π_θ(a_t|s_t) / π_old(a_t|s_t) · A_t, π_old the sampling policy (ProMP's LVC inner objective)."""
    return torch.exp((logp - data.batch.log_probs) * data.batch.valid) * data.advantages


def clipped_surrogate(logp, logp_old, advantages, valid, num_tasks: int, clip_eps: float) -> torch.Tensor:
    """Mean over tasks of each task's mean of min(r A, clip(r, 1 - ε, 1 + ε) A), r = exp(logp - logp_old)."""
    ratio = torch.exp((logp - logp_old) * valid)
    terms = torch.min(ratio * advantages, ratio.clamp(1 - clip_eps, 1 + clip_eps) * advantages)
    return per_task_mean(terms * valid, valid, num_tasks).mean()


def adapt_kl_penalty(penalty: float, kl: float, target: float) -> float:
    """The authors' rule: halve below target / 1.5, double above target * 1.5, else keep."""
    if kl < target / 1.5:
        return penalty / 2
    if kl > target * 1.5:
        return penalty * 2
    return penalty


class ProMP(GradientAdaptation):
    """ProMP for one task distribution. ``cfg``: the ``maml:`` section (inner loop); ``pcfg``: a
    :class:`metarl.algos.promp.ProMPConfig` (outer update)."""

    def __init__(self, policy: Policy, collector, cfg, pcfg, device: str | torch.device = "cpu"):
        if collector.supervised:
            raise ValueError("algo promp needs an RL task distribution (H > 1); this one is supervised: use algo maml")
        if cfg.learn_inner_lr:
            raise ValueError("maml.learn_inner_lr: true is MAML's Meta-SGD; algo promp adapts with maml.inner_lr")
        if cfg.fisher_subsample < 1:
            raise ValueError(f"maml.fisher_subsample = {cfg.fisher_subsample} subsamples MAML's TRPO step; algo promp's "
                             f"outer update (Adam) has no Fisher products: leave it at 1")
        super().__init__(policy, collector, cfg, device, inner_terms=lvc_inner_terms)
        self.pcfg = pcfg
        self.optimizer = torch.optim.Adam(self.meta_parameters(), lr=pcfg.lr)
        #: η_j, the KL weight of inner step j (python floats: part of the checkpoint)
        self.inner_kl_penalty = [float(pcfg.init_inner_kl_penalty)] * cfg.inner_steps

    def train_iteration(self, rng: np.random.Generator) -> dict[str, float]:
        """One meta-iteration; returns the scalars to log."""
        inner, query, M = self.collect_meta_batch(rng)
        stats = self._pre_post_stats(inner, query, M)
        t1 = time.perf_counter()
        stats.update(self._optimize(inner, query, M))
        stats.update(self.iteration_accounting(inner, query, t1))
        return stats

    def _forward(self, inner: list[InnerData], query: InnerData, M: int, first_order: bool):
        """From the current θ: the post-update distribution on the query episodes, and the
        distribution before each inner step j on step j's episodes."""
        params = expand_params(self.policy.params(), M)
        pre = []
        for data in inner:
            pre.append(self.policy.distribution(policy_forward(self.policy, data.batch.obs, params, M)))
            params = self.inner_step(params, data, M, create_graph=not first_order)
        post = self.policy.distribution(policy_forward(self.policy, query.batch.obs, params, M))
        return post, pre

    def _objective(self, inner, query, M, old_pre, first_order: bool):
        post, pre = self._forward(inner, query, M, first_order)
        batch = query.batch
        surrogate = clipped_surrogate(post.log_prob(batch.actions), batch.log_probs, query.advantages,
                                      batch.valid, M, self.pcfg.clip_eps)
        kls = [per_task_mean(old.kl(new) * d.batch.valid, d.batch.valid, M).mean()
               for old, new, d in zip(old_pre, pre, inner)]
        loss = -surrogate
        for eta, kl in zip(self.inner_kl_penalty, kls):
            loss = loss + eta * kl
        return loss, surrogate, kls, post

    def _optimize(self, inner, query, M) -> dict[str, float]:
        p = self.pcfg
        # The sampling distributions (θ_old): the inner steps' and the query's.
        old_post, old_pre = self._forward(inner, query, M, first_order=True)
        old_post, old_pre = old_post.detach(), [d.detach() for d in old_pre]
        before = None
        for _ in range(p.steps):
            self.optimizer.zero_grad()
            loss, surrogate, _, _ = self._objective(inner, query, M, old_pre, self.cfg.first_order)
            before = float(surrogate.detach()) if before is None else before
            loss.backward()
            self.optimizer.step()
        _, surrogate, kls, post = self._objective(inner, query, M, old_pre, first_order=True)
        valid = query.batch.valid
        outer_kl = per_task_mean(old_post.kl(post) * valid, valid, M).mean()
        kls = [float(k.detach()) for k in kls]
        stats = {"surrogate_before": before, "surrogate_after": float(surrogate.detach()), "kl": float(outer_kl.detach())}
        for j, (kl, eta) in enumerate(zip(kls, self.inner_kl_penalty)):
            stats[f"inner_kl/{j}"] = kl
            stats[f"inner_kl_penalty/{j}"] = eta  # the weight this iteration used
        if p.adaptive_inner_kl_penalty:
            self.inner_kl_penalty = [adapt_kl_penalty(eta, kl, p.target_inner_kl) for eta, kl in zip(self.inner_kl_penalty, kls)]
        return stats

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict:
        return {"policy": self.policy.state_dict(), "optimizer": self.optimizer.state_dict(),
                "inner_kl_penalty": list(self.inner_kl_penalty)}

    def load_state_dict(self, state: dict) -> None:
        self.policy.load_state_dict(state["policy"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.inner_kl_penalty = [float(x) for x in state["inner_kl_penalty"]]
