"""MAML: the outer (meta) update on top of the shared inner loop (metarl.common.adaptation).

Inner loop (:class:`metarl.common.adaptation.GradientAdaptation`): k differentiable gradient steps
per task, all tasks at once; the inner surrogate is ``maml.estimator`` (metarl.algos.maml.estimators:
REINFORCE, LVC, DiCE, or E-MAML's REINFORCE with an exploration term in the outer objective) with the
linear feature baseline (RL tasks), or the task's differentiable loss on the K support samples (H = 1).
The graph through the inner steps is kept (second order) unless ``first_order``.

Outer update: TRPO on the post-update policies for RL (surrogate and KL computed through the
adaptation, conjugate gradient on Fisher-vector products, line search under the KL bound), Adam for
supervised tasks (and optionally for RL). For Gaussian and categorical MLP policies with the
REINFORCE inner surrogate (estimator reinforce or emaml) the gradient and the Fisher-vector products
come from :class:`metarl.algos.maml.fisher.OuterLinearization`: the exact KL Hessian at θ_old in Gauss-Newton
form, with the MLP's derivatives through the adaptation written out by hand and linearised once per
update; any other case uses autograd (double backward of the KL through the adaptation). The two
give the same step up to rounding (tests/test_fvp.py).
"""

from __future__ import annotations

import math
import time

import numpy as np
import torch

from metarl.sampling.collector import Collector
from metarl.common.adaptation import (  # noqa: F401  (EVAL_QUERY_POINTS, test_time_inner_lrs: re-exported)
    EVAL_QUERY_POINTS,
    GradientAdaptation,
    InnerData,
    per_task_mean,
    test_time_inner_lrs,
)
from metarl.common.policies import Policy, expand_params, policy_forward
from metarl.common.returns import discounted_returns
from metarl.algos.maml.estimators import exploration_terms, surrogate_terms
from metarl.algos.maml.fisher import OuterLinearization, mlp_spec
from metarl.common.trpo import _grads_or_zeros, fisher_vector_product_fn, flatten, trpo_step


class MAML(GradientAdaptation):
    """Model-agnostic meta-learning for one task distribution.

    ``cfg`` is a :class:`metarl.algos.maml.MAMLConfig`. With ``inner_steps = 0`` it is plain multi-task
    pretraining (``algo: pretrain``): the outer update then optimises θ itself on the task mixture.
    """

    #: How the outer TRPO step gets its Fisher-vector products: "gauss_newton" (exact Gauss-Newton
    #: form with hand-derived MLP derivatives, see metarl.algos.maml.fisher.OuterLinearization; used when the policy is a
    #: plain Gaussian or categorical MLP) or "autograd" (double backward of the KL through the
    #: adaptation, any policy). Both give the same step up to floating-point rounding.
    fisher = "gauss_newton"

    def __init__(self, policy: Policy, collector: Collector, cfg, device: str | torch.device = "cpu"):
        self.surrogate_terms = surrogate_terms(cfg.estimator)
        super().__init__(policy, collector, cfg, device, inner_terms=self._inner_terms)
        if cfg.fisher_subsample < 1 and (self.supervised or cfg.outer != "trpo"):
            raise ValueError(f"maml.fisher_subsample = {cfg.fisher_subsample} subsamples the outer TRPO step's Fisher "
                             f"products; this run's outer update is Adam (maml.outer: adam, or a supervised task): "
                             f"leave it at 1")
        self.optimizer = None
        if self.supervised or cfg.outer == "adam":
            # fused: one kernel for every parameter (0.3 -> 0.08 ms a step for the sinusoid's 2x40 on one core)
            self.optimizer = torch.optim.Adam(self.meta_parameters(), lr=cfg.outer_lr,
                                              fused=self.device.type in ("cpu", "cuda"))

    def _inner_terms(self, logp: torch.Tensor, data: InnerData) -> torch.Tensor:
        return self.surrogate_terms(logp, data.advantages, data.batch.valid)

    # ------------------------------------------------------------------ outer update
    def train_iteration(self, rng: np.random.Generator) -> dict[str, float]:
        """One meta-iteration; returns the scalars to log."""
        inner, query, M = self.collect_meta_batch(rng)
        stats = self._pre_post_stats(inner, query, M)
        t1 = time.perf_counter()
        if self.supervised:
            stats.update(self._adam_supervised(inner, query, M))
        elif self.cfg.outer == "adam":
            stats.update(self._adam_rl(inner, query, M))
        else:
            stats.update(self._trpo(inner, query, M, fisher_tasks=self.fisher_tasks(M, rng)))
        stats.update(self.iteration_accounting(inner, query, t1))
        return stats

    def fisher_tasks(self, M: int, rng: np.random.Generator) -> list[int] | None:
        """The tasks whose samples make this iteration's Fisher-vector products (``maml.fisher_subsample``),
        drawn from ``rng`` (the run's task stream, so a resumed run draws the same ones); None: every task
        (nothing is drawn, so runs with the default fraction of 1 see the same task stream as before)."""
        k = math.ceil(self.cfg.fisher_subsample * M)
        if k >= M:
            return None
        return sorted(int(m) for m in rng.choice(M, size=k, replace=False))

    def _adam_supervised(self, inner, query, M) -> dict[str, float]:
        self.optimizer.zero_grad()
        params = self.adapt(inner, M)
        loss = self.inner_loss(params, query, M).mean()
        loss.backward()
        self.optimizer.step()
        return {"post_update/loss": float(loss.detach())}

    def _surrogate_and_kl(self, inner, query: InnerData, M: int, old_dist, first_order: bool | None = None):
        params = self.adapt(inner, M, first_order=first_order)
        batch = query.batch
        dist = self.policy.distribution(policy_forward(self.policy, batch.obs, params, M))
        ratio = torch.exp(dist.log_prob(batch.actions) - batch.log_probs)
        loss = -per_task_mean(ratio * query.advantages, batch.valid, M).mean()
        if self.cfg.estimator == "emaml":
            loss = loss + self._exploration_loss(inner, query, M, first_order)
        kl = None
        if old_dist is not None:
            kl = per_task_mean(old_dist.kl(dist) * batch.valid, batch.valid, M).mean()
        return loss, kl, dist

    def _inner_logps(self, inner, M: int, first_order: bool | None) -> list[torch.Tensor]:
        """log π [T, B] of each inner batch's actions under the parameters that inner step adapts from."""
        first_order = self.cfg.first_order if first_order is None else first_order
        params = expand_params(self.policy.params(), M)
        logps = []
        for j, data in enumerate(inner):
            dist = self.policy.distribution(policy_forward(self.policy, data.batch.obs, params, M))
            logps.append(dist.log_prob(data.batch.actions))
            if j + 1 < len(inner):
                params = self.inner_step(params, data, M, create_graph=not first_order)
        return logps

    def _exploration_loss(self, inner, query: InnerData, M: int, first_order: bool | None = None) -> torch.Tensor:
        """E-MAML's term of the outer loss (to minimise): minus the mean over tasks of :meth:`_exploration`,
        times ``maml.exploration_weight``."""
        terms = self._exploration(self._inner_logps(inner, M, first_order), inner, query, M)
        return -self.cfg.exploration_weight * terms.mean()

    def _exploration(self, inner_logps, inner, query: InnerData, M: int) -> torch.Tensor:
        """E-MAML's term per task [M] (metarl.algos.maml.estimators.exploration_terms), in the plain
        surrogate's units: that surrogate is a per-step mean of normalised advantages, i.e. ≈ ∇J(θ')
        divided by the episode length and by the task's advantage scale, so this term is divided by
        the same two. R' is each task's mean discounted return of its query episodes."""
        q = query.batch
        returns = discounted_returns(q.rewards, q.dones, self.cfg.gamma, q.valid)[0]  # [B] each episode from its start
        post = returns.reshape(M, -1).mean(1)
        units = q.valid.sum(0).reshape(M, -1).mean(1)  # mean episode length per task
        if query.advantage_scale is not None:
            units = units * query.advantage_scale
        total = sum(exploration_terms(lp, d.batch.log_probs, d.batch.valid, post, M) for lp, d in zip(inner_logps, inner))
        return total / units

    def _adam_rl(self, inner, query, M) -> dict[str, float]:
        self.optimizer.zero_grad()
        loss, _, _ = self._surrogate_and_kl(inner, query, M, None)
        loss.backward()
        self.optimizer.step()
        return {"surrogate": float(-loss.detach())}

    def _trpo(self, inner, query, M, fisher_tasks: list[int] | None = None) -> dict[str, float]:
        """One outer TRPO step. ``fisher_tasks``: the tasks whose KL curvature the conjugate gradient uses
        (:meth:`fisher_tasks`; None: every task, the exact step)."""
        cfg = self.cfg
        # the subsampled Fisher: the same products on a batch of the chosen tasks only (each task's
        # adaptation depends on its own data alone, so this is exactly those tasks' mean KL Hessian)
        sub = None if fisher_tasks is None else (
            [d.select_tasks(fisher_tasks) for d in inner], query.select_tasks(fisher_tasks), len(fisher_tasks))
        params = self.meta_parameters()
        spec = mlp_spec(self.policy) if self.fisher == "gauss_newton" else None
        if cfg.estimator not in ("reinforce", "emaml"):
            spec = None  # the hand-derived path differentiates REINFORCE's inner step; lvc and dice use autograd
        if any(d.batch.obs.dim() != 3 or d.batch.policy_inputs is not None for d in (*inner, query)):
            spec = None  # the hand-derived path handles flat observations [T, B, D] only
        if spec is not None:
            # products=0 with a subsample: the whole batch's linearisation then serves the gradient and
            # the line search only, so it skips the cross block that pays off over many products
            lin = OuterLinearization(self, spec, inner, query, M, products=0 if sub else cfg.cg_iters)
            grad, fvp, loss = lin.grad, lin.fvp, lin.loss
            if sub:
                fvp = OuterLinearization(self, spec, *sub, products=cfg.cg_iters).fvp
            emaml = cfg.estimator == "emaml"
            if emaml:
                # E-MAML changes the loss, not the KL: its term's gradient and value are added to the
                # linearisation's (line-search values take it first-order, as the autograd path does).
                explore = self._exploration_loss(inner, query, M)
                grad = grad + flatten(_grads_or_zeros(explore, params, create_graph=False, retain_graph=False))
                loss = loss + explore.detach()
            # Surrogate and KL of the starting point come with the linearisation; later evaluations
            # (line search) are values only, one adaptation each, reused until θ changes.
            cache: dict = {"key": tuple(p._version for p in params), "loss": loss, "kl": lin.kl}

            def evaluate():
                key = tuple(p._version for p in params)
                if cache.get("key") != key:
                    loss, kl = lin.evaluate()
                    if emaml:
                        loss = loss + self._exploration_loss(inner, query, M, first_order=True).detach()
                    cache.update(key=key, loss=loss, kl=kl)
                return cache["loss"], cache["kl"]

        else:
            _, _, old = self._surrogate_and_kl(inner, query, M, None)
            old_dist = old.detach()
            cache = {}
            start = tuple(p._version for p in params)

            def evaluate():
                # The surrogate and the KL share one adaptation; reuse it until θ changes. Only the
                # starting point needs the second-order graph (gradient and Fisher-vector
                # products); line-search candidates are values, so adapt first-order there.
                key = tuple(p._version for p in params)
                if cache.get("key") != key:
                    if key == start:
                        loss, kl, _ = self._surrogate_and_kl(inner, query, M, old_dist)
                    else:
                        loss, kl, _ = self._surrogate_and_kl(inner, query, M, old_dist, first_order=True)
                        loss, kl = loss.detach(), kl.detach()
                    cache.update(key=key, loss=loss, kl=kl)
                return cache["loss"], cache["kl"]

            grad = fvp = None
            if sub:
                with torch.enable_grad():
                    _, _, old_sub = self._surrogate_and_kl(*sub, None)
                    _, kl_sub, _ = self._surrogate_and_kl(*sub, old_sub.detach())
                    fvp = fisher_vector_product_fn(kl_sub, params, damping=0.0)  # trpo_step adds the damping

        info = trpo_step(
            params,
            loss_fn=lambda: evaluate()[0],
            kl_fn=lambda: evaluate()[1],
            max_kl=cfg.max_kl,
            cg_iters=cfg.cg_iters,
            cg_damping=cfg.cg_damping,
            backtrack_ratio=cfg.ls_backtrack_ratio,
            max_backtracks=cfg.ls_max_steps,
            grad=grad,
            fvp=fvp,
        )
        cache.clear()
        return {
            "surrogate_before": -info.loss_before,
            "surrogate_after": -info.loss_after,
            "kl": info.kl_after,
            "line_search/accepted": float(info.accepted),
            "line_search/backtracks": float(info.backtracks),
        }


    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict:
        return {
            "policy": self.policy.state_dict(),
            "inner_lrs": None if self.inner_lrs is None else self.inner_lrs.state_dict(),
            "optimizer": None if self.optimizer is None else self.optimizer.state_dict(),
        }

    def load_state_dict(self, state: dict) -> None:
        self.policy.load_state_dict(state["policy"])
        if self.inner_lrs is not None and state.get("inner_lrs") is not None:
            self.inner_lrs.load_state_dict(state["inner_lrs"])
        if self.optimizer is not None and state.get("optimizer") is not None:
            self.optimizer.load_state_dict(state["optimizer"])
