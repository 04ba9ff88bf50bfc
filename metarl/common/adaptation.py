"""The inner loop the gradient-based meta-RL families share (MAML, ProMP): per-task adaptation.

Inner loop: k gradient steps from the meta-parameters θ, for every task at once. Adapted
parameters are per-task dicts (each leaf has a leading task dimension M) evaluated with vmap, so
the tasks of a meta-batch never run in a Python loop. The inner loss is a policy-gradient surrogate
(the family's ``inner_terms``) with the linear feature baseline's advantages (RL tasks), or the
task's differentiable loss on the K support samples (H = 1). The graph through the inner steps is
kept (second order) unless ``first_order``.

RL episodes are collected once per meta-iteration with θ_old: for each inner step j, episodes with
the parameters after j steps, then the post-update (query) episodes. An outer objective re-runs the
adaptation from the current θ on those fixed inner batches, as in the MAML paper's code.

``cfg`` is the ``maml:`` config section (duck-typed: this module sits below the algorithm packages).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Callable, Sequence

import numpy as np
import torch

from metarl.common.baseline import LinearFeatureBaseline
from metarl.common.policies import Params, Policy, expand_params, policy_forward
from metarl.common.returns import column_group_std, discounted_returns, gae, normalize_per_column_group


#: query points per task when evaluating supervised tasks (more points, less noise in the curve)
EVAL_QUERY_POINTS = 100


@dataclass
class InnerData:
    """One inner step's episodes with their (fixed) advantages (the inner and query data)."""

    batch: "EpisodeBatch"  # noqa: F821 (metarl.sampling.collector.EpisodeBatch; common sits below sampling)
    advantages: torch.Tensor | None  # [T, B]; None for supervised tasks
    #: [M] what each task's advantages were divided by (normalize_advantages: their std + eps); None = 1
    advantage_scale: torch.Tensor | None = None

    def select_tasks(self, tasks: Sequence[int]) -> "InnerData":
        """The data of ``tasks`` only, as ``len(tasks)`` tasks numbered in that order (copies)."""
        cols = self.batch.task_columns(tasks)
        idx = torch.as_tensor(tasks, dtype=torch.long, device=cols.device)
        return InnerData(
            batch=self.batch.select_tasks(tasks),
            advantages=None if self.advantages is None else self.advantages.index_select(1, cols),
            advantage_scale=None if self.advantage_scale is None else self.advantage_scale.index_select(0, idx),
        )


#: per-step inner surrogate terms [T, B] (to maximise) from log π(a_t|s_t) [T, B] and the step's data
InnerTerms = Callable[[torch.Tensor, InnerData], torch.Tensor]


def reinforce_inner_terms(logp: torch.Tensor, data: InnerData) -> torch.Tensor:
    """log π(a_t|s_t) · A_t: MAML's original inner surrogate."""
    return logp * data.advantages


class GradientAdaptation:
    """Per-task inner-loop adaptation of a policy (and its evaluation as an adaptation curve).

    ``inner_terms`` is the family's inner surrogate (default: REINFORCE); the outer update is the
    subclass's (``MAML``, ``ProMP``).
    """

    curve_x_label = "gradient steps on the new task"

    def __init__(self, policy: Policy, collector, cfg, device: str | torch.device = "cpu",
                 inner_terms: InnerTerms = reinforce_inner_terms):
        self.policy = policy
        self.collector = collector
        self.cfg = cfg
        self.device = torch.device(device)
        self.supervised = collector.supervised
        self.metric = "loss" if self.supervised else "return"
        self.loss_fn = collector.supervised_loss
        self.baseline = LinearFeatureBaseline()
        self.inner_terms = inner_terms
        # Meta-SGD: one learned inner learning rate per parameter entry.
        self.inner_lrs: torch.nn.ParameterDict | None = None
        if cfg.learn_inner_lr:
            self.inner_lrs = torch.nn.ParameterDict(
                {k.replace(".", "__"): torch.nn.Parameter(torch.full_like(v, cfg.inner_lr)) for k, v in policy.named_parameters()}
            )
        #: wall-clock seconds by phase in the current iteration (sampling includes advantage fitting)
        self._seconds = {"sampling": 0.0, "adaptation": 0.0}

    # ------------------------------------------------------------------ parameters
    def meta_parameters(self) -> list[torch.nn.Parameter]:
        params = list(self.policy.parameters())
        if self.inner_lrs is not None:
            params += list(self.inner_lrs.parameters())
        return params

    def _lr(self, name: str, lr: float | None):
        if lr is not None:
            return lr
        if self.inner_lrs is not None:
            return self.inner_lrs[name.replace(".", "__")]
        return self.cfg.inner_lr

    # ------------------------------------------------------------------ inner loop
    def inner_loss(self, params: Params, data: InnerData, num_tasks: int) -> torch.Tensor:
        """Per-task inner loss [M] of per-task ``params`` on ``data``."""
        batch = data.batch
        if self.supervised:
            pred = policy_forward(self.policy, batch.obs, params, num_tasks)
            loss = self.loss_fn(pred, batch.targets) * batch.valid  # [T, B]
            return per_task_mean(loss, batch.valid, num_tasks)
        dist = self.policy.distribution(policy_forward(self.policy, batch.obs, params, num_tasks))
        logp = dist.log_prob(batch.actions)
        return -per_task_mean(self.inner_terms(logp, data), batch.valid, num_tasks)

    def inner_step(self, params: Params, data: InnerData, num_tasks: int, create_graph: bool, lr: float | None = None) -> Params:
        """One gradient step for every task: θ_i' = θ_i - α ∇L_i(θ_i)."""
        loss = self.inner_loss(params, data, num_tasks).sum()  # tasks are independent: sum gives per-task grads
        names = list(params)
        grads = torch.autograd.grad(loss, [params[k] for k in names], create_graph=create_graph)
        if not create_graph:
            grads = [g.detach() for g in grads]
        return {k: params[k] - self._lr(k, lr) * g for k, g in zip(names, grads)}

    def adapt(
        self,
        inner_data: Sequence[InnerData],
        num_tasks: int,
        first_order: bool | None = None,
        params: Params | None = None,
    ) -> Params:
        """Adapted per-task parameters after one step on each element of ``inner_data``."""
        first_order = self.cfg.first_order if first_order is None else first_order
        params = expand_params(params if params is not None else self.policy.params(), num_tasks)
        for data in inner_data:
            params = self.inner_step(params, data, num_tasks, create_graph=not first_order)
        return params

    # ------------------------------------------------------------------ data
    def advantages(self, batch) -> torch.Tensor:
        """Baseline-subtracted returns (or GAE), normalised per task; no gradient."""
        return self.advantages_and_scale(batch)[0]

    def advantages_and_scale(self, batch) -> tuple[torch.Tensor, torch.Tensor | None]:
        """:meth:`advantages` and the per-task divisor [M] of the normalisation (None without it)."""
        cfg = self.cfg
        returns = discounted_returns(batch.rewards, batch.dones, cfg.gamma, batch.valid)
        values = self.baseline.fit_predict(batch.obs, returns, batch.valid, batch.timesteps, batch.num_tasks)
        if cfg.gae_lambda < 1.0:
            adv, _ = gae(batch.rewards, values, batch.dones, cfg.gamma, cfg.gae_lambda, batch.valid)
        else:
            adv = (returns - values) * batch.valid
        scale = None
        if cfg.normalize_advantages:
            scale = (column_group_std(adv, batch.valid, batch.num_tasks) + 1e-8).detach()  # normalize's eps
            adv = normalize_per_column_group(adv, batch.valid, batch.num_tasks)
        return adv.detach(), scale

    def collect_inner(self, tasks, params: Params | None, episodes: int) -> InnerData:
        t = time.perf_counter()
        batch = self.collector.collect(
            self.policy, tasks, episodes, params=params, per_task_params=params is not None
        ).to(self.device)
        data = InnerData(batch, None) if self.supervised else InnerData(batch, *self.advantages_and_scale(batch))
        self._seconds["sampling"] += time.perf_counter() - t
        return data

    def inner_step_detached(self, params: Params | None, data: InnerData, num_tasks: int, lr: float | None = None) -> Params:
        """One inner step from ``params`` (None: θ) without keeping any graph (sampling, evaluation)."""
        t = time.perf_counter()
        if params is None:
            params = expand_params(self.policy.params(), num_tasks)
        with torch.enable_grad():
            base = {k: v.detach().requires_grad_(True) for k, v in params.items()}
            new = self.inner_step(base, data, num_tasks, create_graph=False, lr=lr)
        self._seconds["adaptation"] += time.perf_counter() - t
        return {k: v.detach() for k, v in new.items()}

    def rollout_adaptation(self, tasks, steps: int, episodes: int, final_episodes: int, lrs: Sequence[float] | None = None):
        """Adapt θ for ``steps`` steps on every task, collecting fresh data before each step.

        Returns ``steps + 1`` InnerData: element j was collected with the parameters after j steps
        (the last with ``final_episodes`` episodes, the post-update / query data). For supervised
        tasks every step reuses the first K support samples (the few-shot setting), and the last
        element is a fresh query set; their inputs do not depend on the parameters, so no inner step
        is taken here (both sets are collected with θ, whose predictions and rewards they hold: the
        outer objective adapts on them, nothing reads the adapted predictions).
        """
        M = len(tasks)
        params = None
        out: list[InnerData] = []
        for j in range(steps + 1):
            n = final_episodes if j == steps else episodes
            if self.supervised and 0 < j < steps:
                data = out[0]
            else:
                data = self.collect_inner(tasks, params, n)
            out.append(data)
            if j < steps and not self.supervised:
                params = self.inner_step_detached(params, data, M, lr=None if lrs is None else lrs[j])
        return out


    # ------------------------------------------------------------------ one meta-batch
    def collect_meta_batch(self, rng: np.random.Generator) -> tuple[list[InnerData], InnerData, int]:
        """Tasks of one meta-iteration and their inner and query data (collected with θ_old)."""
        cfg = self.cfg
        self._seconds = {"sampling": 0.0, "adaptation": 0.0}
        tasks = self.collector.sample_tasks(cfg.meta_batch_size, rng)
        query_eps = cfg.query_episodes_per_task or cfg.episodes_per_task
        *inner, query = self.rollout_adaptation(tasks, cfg.inner_steps, cfg.episodes_per_task, query_eps)
        return inner, query, len(tasks)

    def iteration_accounting(self, inner: list[InnerData], query: InnerData, update_start: float) -> dict[str, float]:
        """Phase timings and the environment steps drawn in this iteration."""
        stats = {
            "time/sampling_s": self._seconds["sampling"],
            "time/adaptation_s": self._seconds["adaptation"],
            "time/update_s": time.perf_counter() - update_start,
        }
        # Every sample drawn: supervised inner steps all reuse the first K support samples (count
        # them once, as pretraining's budget in metarl.train counts them).
        inner_samples = inner[:1] if self.supervised else inner
        steps = sum(d.batch.num_steps for d in inner_samples) + query.batch.num_steps
        stats["env_steps"] = float(steps)
        return stats

    def _pre_post_stats(self, inner: list[InnerData], query: InnerData, M: int) -> dict[str, float]:
        if self.supervised:
            with torch.no_grad():
                params = expand_params(self.policy.params(), M)
                pre = self.inner_loss(params, query, M).mean()
            return {"pre_update/loss": float(pre)}
        pre_batch = inner[0].batch if inner else query.batch
        stats = {"pre_update/return": float(pre_batch.mean_return_per_task().mean()),
                 "post_update/return": float(query.batch.mean_return_per_task().mean())}
        stats.update(info_rates(pre_batch, "pre_update/"))
        stats.update(info_rates(query.batch, "post_update/"))
        return stats


    # ------------------------------------------------------------------ evaluation
    def adaptation_curve(self, tasks, collector, ev) -> np.ndarray:
        """Performance after 0..ev.steps inner steps on held-out tasks: [steps + 1, n_tasks].

        RL: mean return of fresh episodes collected after each step (the sampled episodes the next
        step adapts on; with ``ev.deterministic``, separate mean-action episodes of the same
        parameters). Supervised: loss on one query set of ``EVAL_QUERY_POINTS`` points per task,
        drawn once and scored after every step; every step adapts on the same K support points.
        Step sizes: :func:`test_time_inner_lrs` (a Meta-SGD run: its learned per-parameter rates).
        """
        return self.adaptation_curves(tasks, collector, ev)[self.metric]

    def adaptation_curves(self, tasks, collector, ev, prefixes: "SharedPrefixes | None" = None) -> dict[str, np.ndarray]:
        """:meth:`adaptation_curve` under ``self.metric``, and for RL, beside it, ``<key>_rate`` for every
        per-step info indicator the env records (e.g. ``success_rate``), from the same episodes.

        ``prefixes`` (RL; ``metarl tune``): steps shared with other calls on the same tasks, each call with
        a fresh collector of the same seed. A call continues from the longest stored prefix of its step
        sizes, and stores the prefixes the others will want, so it returns what it would without them."""
        cfg = self.cfg
        episodes = ev.episodes_per_task or cfg.episodes_per_task
        lrs = test_time_inner_lrs(cfg, ev, ev.steps, learned=self.inner_lrs is not None)
        algo = self.evaluator(collector)
        M = len(tasks)
        if not algo.supervised:
            deterministic = getattr(ev, "deterministic", False)
            params, rows, data, start = None, [], None, 0
            if prefixes is not None:
                prefixes.check_setting(tasks, episodes, deterministic)
                start, hit = prefixes.longest(lrs[:ev.steps])
                if hit is not None:
                    params, data, saved_rows, rng_state = hit
                    rows = list(saved_rows)
                    collector.set_rng_state(rng_state)

            def score(batch):
                rows.append({"return": batch.mean_return_per_task().cpu().numpy(),
                             **{f"{k}_rate": batch.mean_info_max_per_task(k).cpu().numpy() for k in batch.infos}})

            for j in range(start, ev.steps + 1):
                if data is None:  # (a stored prefix brings step `start`'s data, already scored)
                    if deterministic:
                        # Scored on mean-action episodes; the inner step still adapts on sampled ones.
                        score(collector.collect(self.policy, tasks, episodes, params=params,
                                                per_task_params=params is not None, deterministic=True))
                        if j == ev.steps:
                            break
                    data = algo.collect_inner(tasks, params, episodes)
                    if not deterministic:
                        score(data.batch)
                    if prefixes is not None and j < ev.steps:
                        prefixes.store(tuple(lrs[:j]), (params, data, list(rows), collector.get_rng_state()))
                if j < ev.steps:
                    params = algo.inner_step_detached(params, data, M, lr=lrs[j])
                data = None
            return {key: np.stack([r[key] for r in rows]) for key in rows[0]}
        support = algo.collect_inner(tasks, None, episodes)
        query = algo.collect_inner(tasks, None, EVAL_QUERY_POINTS)
        params = None
        rows = []
        for j in range(ev.steps + 1):
            with torch.no_grad():
                p = params if params is not None else expand_params(self.policy.params(), M)
                rows.append(algo.inner_loss(p, query, M).cpu().numpy())
            if j < ev.steps:
                params = algo.inner_step_detached(params, support, M, lr=lrs[j])
        return {"loss": np.stack(rows)}

    def evaluator(self, collector) -> "GradientAdaptation":
        """This policy, its inner surrogate and step sizes (a Meta-SGD run's learned rates included)
        on another collector, for evaluation: without an optimizer or state of the training run's."""
        m = GradientAdaptation(self.policy, collector, replace(self.cfg, learn_inner_lr=False), self.device, self.inner_terms)
        m.inner_lrs = self.inner_lrs
        return m


class SharedPrefixes:
    """Adaptation steps shared between evaluations that differ only in their later step sizes (``metarl
    tune``'s grid): after collecting step j's data with the parameters that step sizes ``lrs[:j]`` gave,
    an evaluation stores that data, its scores so far and the collector's random streams under
    ``lrs[:j]``; another evaluation with the same first j step sizes starts there. Only the prefixes in
    ``wanted`` (those two or more evaluations share) are kept, so memory stays at one batch per prefix."""

    def __init__(self, step_sizes: Sequence[Sequence[float | None]]):
        counts: dict[tuple, int] = {}
        for lrs in step_sizes:
            for j in range(len(lrs)):
                counts[tuple(lrs[:j])] = counts.get(tuple(lrs[:j]), 0) + 1
        self.wanted = {key for key, n in counts.items() if n > 1}
        self._stored: dict[tuple, tuple] = {}
        self._setting: tuple | None = None

    def check_setting(self, tasks, episodes: int, deterministic: bool) -> None:
        setting = (tuple(id(t) for t in tasks), episodes, deterministic)  # the same task objects
        if self._setting is None:
            self._setting = setting
        elif setting != self._setting:
            raise ValueError("SharedPrefixes holds steps of other tasks or scoring; use one per task set")

    def longest(self, lrs: Sequence[float | None]) -> tuple[int, tuple | None]:
        """(j, stored state) for the longest stored prefix lrs[:j], or (0, None)."""
        for j in range(len(lrs), -1, -1):
            if tuple(lrs[:j]) in self._stored:
                return j, self._stored[tuple(lrs[:j])]
        return 0, None

    def store(self, key: tuple, state: tuple) -> None:
        if key in self.wanted:
            self._stored.setdefault(key, state)


def test_time_inner_lrs(cfg, ev, steps: int, learned: bool = False) -> list[float | None]:
    """Inner step sizes at evaluation: ``ev.inner_lr`` (default ``cfg.inner_lr``) for the first step,
    ``ev.inner_lr_after_first`` (default the same) after it.

    ``learned`` (a Meta-SGD run): None for every step, i.e. the learned per-parameter rates
    (:meth:`MAML._lr`); an explicit ``ev.inner_lr*`` is refused rather than mixed with them."""
    if learned:
        for key in ("inner_lr", "inner_lr_after_first"):
            if getattr(ev, key) is not None:
                raise ValueError(f"eval.{key} = {getattr(ev, key)} is set for a Meta-SGD run, which adapts with "
                                 f"its learned per-parameter rates at test time; unset it (--set eval.{key}=null)")
        return [None] * steps
    first = ev.inner_lr if ev.inner_lr is not None else cfg.inner_lr
    later = ev.inner_lr_after_first if ev.inner_lr_after_first is not None else first
    return [first if j == 0 else later for j in range(steps)]


def info_rates(batch, prefix: str = "") -> dict[str, float]:
    """``<prefix><key>_rate`` for every per-step info indicator of the batch (e.g. success): the fraction
    of episodes in which it was 1 at some step, averaged per task, then over tasks."""
    return {f"{prefix}{key}_rate": float(batch.mean_info_max_per_task(key).mean()) for key in batch.infos}


def per_task_mean(x: torch.Tensor, valid: torch.Tensor, num_tasks: int) -> torch.Tensor:
    """Mean of x [T, B] over the valid steps of each task's columns: [M]."""
    T, B = valid.shape
    num = x.reshape(T, num_tasks, B // num_tasks).sum((0, 2))
    den = valid.reshape(T, num_tasks, B // num_tasks).sum((0, 2)).clamp_min(1.0)
    return num / den

