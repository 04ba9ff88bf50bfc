"""RL² (Duan et al. 2016): a recurrent policy whose hidden state is the fast learner.

A *trial* is ``episodes_per_trial`` consecutive episodes of one task in one collector column. The
:class:`~metarl.common.policies.RecurrentPolicy` sees (observation, previous action, previous reward, done
flag) and keeps its GRU state across the episodes of the trial; the state starts from zero for every
trial. The slow learner is PPO (default) or TRPO on whole trials:

* **Credit assignment over the whole trial.** The paper optimises the return of the entire trial, so
  exploring in episode 1 is credited with what it earns in episode 2. :func:`trial_gae` therefore
  runs the GAE recursion across episode boundaries and stops only at the end of the trial; the
  policy still sees the episode boundaries through its done-flag input.
* **Padded steps** (an episode that terminates early leaves the rest of its slot with valid = 0) are
  skipped by the recursion, frozen in the hidden state (:meth:`RecurrentPolicy.forward_sequence`)
  and excluded from every loss term by masked means.
* **Whole trials per minibatch.** Every update recomputes the sequence from the inputs the collector
  recorded (``batch.policy_inputs``) starting from the zero state, so a minibatch is a set of whole
  columns; no update ever starts mid-trial with a zeroed memory.
* **Full BPTT.** Gradients flow through the entire trial (T = H x episodes_per_trial, at most a few
  hundred steps here); no truncation.
* **Value function.** A separate GRU of the same size on the same inputs plus the position in the
  trial, trained on the same minibatches with the same Adam, on PopArt-normalised targets (see
  :class:`RecurrentValueFunction`). Its gradient norm is clipped separately from the policy's, so the
  value loss never shrinks the policy's step through a joint clip.
"""

from __future__ import annotations

import math
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Sequence

import numpy as np
import torch
from torch import Tensor, nn

from metarl.sampling.collector import Collector, EpisodeBatch
from metarl.common.policies import gru_states
from metarl.common.returns import normalize

__all__ = ["RL2", "RecurrentValueFunction", "trial_gae", "masked_mean", "ppo_loss", "ppo_policy_loss", "value_loss"]

#: TRPO trust region when the config has no ``max_kl`` field (the usual 0.01 of Schulman et al. 2015)
DEFAULT_MAX_KL = 0.01


class RecurrentValueFunction(nn.Module):
    """V(history): a GRU over the policy's input sequence plus the position in the trial, and a
    linear read-out, one value per step.

    * The position t / T is an extra input because the remaining return of a trial depends mostly
      on how many steps remain, which a GRU would otherwise have to count itself.
    * Targets are normalised (PopArt-style, van Hasselt et al. 2016): the head predicts
      (R - mean) / std, and whenever mean and std change the head is rescaled so that the
      unnormalised values stay exactly the same. Without this a linear head trained by Adam (steps
      of about lr per update) needs tens of thousands of updates just to reach trial returns of
      ~100 (tabular MDPs). The statistics are those of the latest batch's targets rather than a
      slow running average: the lambda-returns bootstrap on V, so early in training they grow from
      one iteration to the next faster than an average would follow.
    """

    def __init__(self, input_dim: int, hidden_size: int):
        super().__init__()
        self.hidden_size = hidden_size
        self.cell = nn.GRUCell(input_dim + 1, hidden_size)
        self.head = nn.Linear(hidden_size, 1)
        self.register_buffer("return_mean", torch.zeros(()))
        self.register_buffer("return_std", torch.ones(()))
        self.register_buffer("stats_initialized", torch.zeros((), dtype=torch.bool))

    def normalized_sequence(self, inputs: Tensor, valid: Tensor | None) -> Tensor:
        """Normalised values [T, B] for inputs [T, B, D]; the state starts at zero and is frozen on
        padded steps (``valid=None``: none is padded, see :func:`gru_states`)."""
        T, B = inputs.shape[:2]
        state = inputs.new_zeros(B, self.hidden_size)
        position = torch.arange(T, dtype=inputs.dtype, device=inputs.device) / T
        x = torch.cat([inputs, position.view(T, 1, 1).expand(T, B, 1)], -1)
        return self.head(gru_states(self.cell, x, state, valid)).squeeze(-1)

    def forward_sequence(self, inputs: Tensor, valid: Tensor | None) -> Tensor:
        """Values [T, B] in return units."""
        return self.normalized_sequence(inputs, valid) * self.return_std + self.return_mean

    def normalize_targets(self, returns: Tensor) -> Tensor:
        return (returns - self.return_mean) / self.return_std

    @torch.no_grad()
    def update_return_stats(self, returns: Tensor, valid: Tensor) -> None:
        """Set the target statistics to those of this batch's valid returns, preserving every output
        (from the second call on)."""
        mean = masked_mean(returns, valid)
        std = masked_mean((returns - mean).pow(2), valid).sqrt().clamp(min=1e-4)
        if bool(self.stats_initialized):
            self.head.weight.mul_(self.return_std / std)
            self.head.bias.copy_((self.return_std * self.head.bias + self.return_mean - mean) / std)
        # The first call only sets the statistics: the untrained outputs are not worth preserving, and
        # preserving them would leave the head predicting about -mean/std (in normalised units), which
        # Adam then needs ~mean/(std lr) updates to undo.
        self.return_mean.copy_(mean)
        self.return_std.copy_(std)
        self.stats_initialized.fill_(True)


def masked_mean(x: Tensor, valid: Tensor) -> Tensor:
    """Mean of ``x`` over the entries where ``valid`` is 1 (0 for an all-padded input)."""
    v = valid.to(x.dtype)
    return (x * v).sum() / v.sum().clamp(min=1.0)


def trial_gae(rewards: Tensor, values: Tensor, valid: Tensor, gamma: float, lam: float) -> tuple[Tensor, Tensor]:
    """GAE over each column treated as ONE episode (the RL² trial): ``(advantages, returns)`` [T, B].

    The recursion ``A_t = delta_t + gamma * lam * A_t'`` links every valid step to the next *valid*
    step t' of the same column, whatever episode it belongs to; padded rows are skipped (they neither
    end the trial nor count as a step) and get 0. Nothing is bootstrapped after the last valid step.
    Without padding this equals :func:`metarl.common.returns.gae` with ``dones`` True only on the last row.
    """
    if not 0.0 <= gamma <= 1.0:
        raise ValueError(f"gamma must be in [0, 1], got {gamma}")
    if not 0.0 <= lam <= 1.0:
        raise ValueError(f"lam must be in [0, 1], got {lam}")
    if rewards.dim() != 2 or values.shape != rewards.shape or valid.shape != rewards.shape:
        raise ValueError(
            f"rewards, values and valid must all be [T, B] of one shape, got {tuple(rewards.shape)}, "
            f"{tuple(values.shape)}, {tuple(valid.shape)}"
        )
    m = valid.bool()
    adv = torch.zeros_like(rewards)
    next_value = torch.zeros_like(rewards[0])
    next_adv = torch.zeros_like(rewards[0])
    for t in range(rewards.shape[0] - 1, -1, -1):
        delta = rewards[t] + gamma * next_value - values[t]
        a = delta + gamma * lam * next_adv
        adv[t] = torch.where(m[t], a, torch.zeros_like(a))
        next_adv = torch.where(m[t], a, next_adv)
        next_value = torch.where(m[t], values[t], next_value)
    returns = (adv + values) * m.to(values.dtype)
    return adv, returns


def ppo_policy_loss(
    log_probs: Tensor,
    old_log_probs: Tensor,
    advantages: Tensor,
    entropy: Tensor,
    valid: Tensor,
    clip_range: float,
    entropy_coef: float,
) -> tuple[Tensor, dict[str, Tensor]]:
    """PPO's clipped objective (Schulman et al. 2017) with masked means over the valid steps:
    ``(-mean(min(r A, clip(r, 1 - eps, 1 + eps) A)) - entropy_coef * mean(entropy), stats)``."""
    ratio = torch.exp(log_probs - old_log_probs)
    surrogate = torch.min(ratio * advantages, ratio.clamp(1.0 - clip_range, 1.0 + clip_range) * advantages)
    mean_entropy = masked_mean(entropy, valid)
    policy_loss = -masked_mean(surrogate, valid) - entropy_coef * mean_entropy
    with torch.no_grad():
        stats = {
            "entropy": mean_entropy.detach(),
            # The usual low-variance estimator of KL(old || new): E[(r - 1) - log r].
            "approx_kl": masked_mean((ratio - 1.0) - (log_probs - old_log_probs), valid),
            "clip_fraction": masked_mean(((ratio - 1.0).abs() > clip_range).to(ratio.dtype), valid),
        }
    return policy_loss, stats


def value_loss(values: Tensor, returns: Tensor, valid: Tensor) -> Tensor:
    """``mean((V - R)^2)`` over the valid steps."""
    return masked_mean((values - returns).pow(2), valid)


def ppo_loss(
    log_probs: Tensor,
    old_log_probs: Tensor,
    advantages: Tensor,
    entropy: Tensor,
    values: Tensor,
    returns: Tensor,
    valid: Tensor,
    clip_range: float,
    entropy_coef: float,
    value_coef: float,
) -> tuple[Tensor, Tensor, Tensor, dict[str, Tensor]]:
    """``(policy_loss, value_loss, total, stats)``: :func:`ppo_policy_loss`, :func:`value_loss` and
    ``total = policy_loss + value_coef * value_loss`` (the networks are disjoint, so the training loop
    back-propagates the two terms separately, which gives the same gradients)."""
    policy_loss, stats = ppo_policy_loss(log_probs, old_log_probs, advantages, entropy, valid, clip_range, entropy_coef)
    v_loss = value_loss(values, returns, valid)
    return policy_loss, v_loss, policy_loss + value_coef * v_loss, stats


class RL2:
    """RL² training and evaluation on one task distribution (``cfg`` is a :class:`metarl.algos.rl2.RL2Config`)."""

    metric = "return"
    curve_x_label = "episode in trial"

    def __init__(self, policy: nn.Module, collector: Collector, cfg, device: str | torch.device = "cpu"):
        if not getattr(policy, "is_recurrent", False):
            raise ValueError(f"RL2 needs a recurrent policy (policy.is_recurrent), got {type(policy).__name__}")
        if collector.supervised:
            raise ValueError(f"RL2 needs an RL task distribution, {collector.env_id} is supervised (H = 1 regression)")
        if cfg.optimizer not in ("ppo", "trpo"):
            raise ValueError(f"rl2.optimizer must be 'ppo' or 'trpo', got {cfg.optimizer!r}")
        if cfg.minibatches > cfg.trials_per_iteration:
            raise ValueError(
                f"rl2.minibatches = {cfg.minibatches} must be <= rl2.trials_per_iteration = "
                f"{cfg.trials_per_iteration} (a minibatch is a set of whole trials)"
            )
        self.policy = policy
        self.collector = collector
        self.cfg = cfg
        self.device = torch.device(device)
        # Same initial weights for every run with the same seed: draw them from a fork of the global
        # stream seeded from the policy's own initial parameters.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(_seed_from(policy))
            self.value_fn = RecurrentValueFunction(policy.input_dim, policy.hidden_size)
        self.value_fn.to(self.device)
        params = list(self.value_fn.parameters())
        if cfg.optimizer == "ppo":
            params = list(policy.parameters()) + params
        self.optimizer = torch.optim.Adam(params, lr=cfg.lr)
        self._value_pool: ThreadPoolExecutor | None = None  # PPO's value backward beside the policy's

    # ------------------------------------------------------------------ training
    def collect(self, tasks: Sequence, trials_per_task: int = 1) -> EpisodeBatch:
        E = self.cfg.episodes_per_trial
        self.policy.eval()
        return self.collector.collect(self.policy, tasks, episodes_per_task=E * trials_per_task, episodes_per_trial=E)

    def train_iteration(self, rng: np.random.Generator) -> dict[str, float]:
        cfg = self.cfg
        t0 = time.perf_counter()
        tasks = self.collector.sample_tasks(cfg.trials_per_iteration, rng)
        batch = self.collect(tasks)
        t1 = time.perf_counter()
        stats = trial_return_stats(batch)
        stats["env_steps"] = float(batch.num_steps)
        b = batch.to(self.device)
        # The recurrences get valid=None when no trial has a padded row (one host read per iteration):
        # torch's multi-step GRU then replaces the Python step loop (gru_states).
        seq_valid = None if bool(batch.valid.all()) else b.valid
        with torch.no_grad():
            values = self.value_fn.forward_sequence(b.policy_inputs, seq_valid)
        adv, returns = trial_gae(b.rewards, values, b.valid, cfg.gamma, cfg.gae_lambda)
        # One normalisation over the whole batch (not per minibatch): the same scale in every update.
        adv = normalize(adv, b.valid)
        stats["value/explained_variance"] = _explained_variance(values, returns, b.valid)
        self.value_fn.update_return_stats(returns, b.valid)
        stats["value/return_mean"] = float(self.value_fn.return_mean)
        stats["value/return_std"] = float(self.value_fn.return_std)
        if cfg.optimizer == "ppo":
            stats.update(self._ppo(b, adv, returns, rng, seq_valid))
        else:
            stats.update(self._trpo(b, adv, returns, rng, seq_valid))
        # wall-clock phases, as MAML logs them: training time is read from progress.csv
        stats["time/sampling_s"] = t1 - t0
        stats["time/update_s"] = time.perf_counter() - t1
        return stats

    def _minibatches(self, num_columns: int, rng: np.random.Generator):
        for part in np.array_split(rng.permutation(num_columns), self.cfg.minibatches):
            yield torch.as_tensor(part, dtype=torch.long, device=self.device)

    def _evaluate(self, b: EpisodeBatch, cols: Tensor, seq_valid: Tensor | None):
        """(distribution, normalised values) of the current networks on columns ``cols``, from the zero state."""
        inputs, valid = b.policy_inputs[:, cols], None if seq_valid is None else seq_valid[:, cols]
        return self._policy_distribution(inputs, valid), self.value_fn.normalized_sequence(inputs, valid)

    def _policy_distribution(self, inputs: Tensor, valid: Tensor | None):
        """The policy's distributions over a sequence of inputs [T, columns, D], from the zero state."""
        out = self.policy.forward_sequence(inputs, self.policy.initial_state(inputs.shape[1]).to(inputs), valid)
        return self.policy.distribution(out)

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_value_pool": None}  # a copy starts its own thread when it first updates

    def _value_thread(self) -> ThreadPoolExecutor:
        if self._value_pool is None:
            self._value_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rl2-value")
        return self._value_pool

    def _value_backward(self, inputs: Tensor, valid: Tensor | None, targets: Tensor, step_valid: Tensor) -> Tensor:
        """The value term of the PPO loss on these columns, back-propagated (into the value GRU's gradients)."""
        loss = value_loss(self.value_fn.normalized_sequence(inputs, valid), targets, step_valid)
        (self.cfg.value_coef * loss).backward()
        return loss.detach()

    def _clip(self, params) -> Tensor:
        return nn.utils.clip_grad_norm_(params, self.cfg.max_grad_norm)

    def _ppo(self, b: EpisodeBatch, adv: Tensor, returns: Tensor, rng: np.random.Generator,
             seq_valid: Tensor | None) -> dict[str, float]:
        cfg = self.cfg
        self.policy.train()
        sums: dict[str, Tensor] = {}  # summed on the device (float64): one host read per update, not per minibatch
        n = 0
        targets = self.value_fn.normalize_targets(returns)
        kl_reached = False
        for _ in range(cfg.ppo_epochs):
            if kl_reached:
                break
            for cols in self._minibatches(b.num_columns, rng):
                inputs, valid = b.policy_inputs[:, cols], None if seq_valid is None else seq_valid[:, cols]
                self.optimizer.zero_grad()
                # The value GRU's forward and backward run on a second thread while this one runs the
                # policy's: two disjoint graphs, each a long chain of small sequential ops that holds one
                # core, and torch releases the GIL inside them (1.8x on 2 cores for two 128-unit GRUs over
                # 5,000 steps). Each term is back-propagated on its own, the gradients of their sum.
                value_job = self._value_thread().submit(self._value_backward, inputs, valid, targets[:, cols],
                                                        b.valid[:, cols])
                try:
                    dist = self._policy_distribution(inputs, valid)
                    policy_loss, st = ppo_policy_loss(dist.log_prob(b.actions[:, cols]), b.log_probs[:, cols],
                                                      adv[:, cols], dist.entropy(), b.valid[:, cols],
                                                      cfg.clip_range, cfg.entropy_coef)
                    # One host read per minibatch, only when asked for: the policy has moved too far from the
                    # one that collected the data, so the rest of this iteration's steps are skipped (never
                    # the first, which starts at that policy).
                    kl_reached = cfg.target_kl is not None and n > 0 and float(st["approx_kl"]) > 1.5 * cfg.target_kl
                    if not kl_reached:
                        policy_loss.backward()
                finally:
                    v_loss = value_job.result()  # the value thread's error, if any, is raised here
                if kl_reached:
                    break
                pg_norm = self._clip(self.policy.parameters())
                vf_norm = self._clip(self.value_fn.parameters())
                self.optimizer.step()
                for key, value in {"loss/policy": policy_loss, "loss/value": v_loss, "grad_norm/policy": pg_norm,
                                   "grad_norm/value": vf_norm, **st}.items():
                    value = torch.as_tensor(value.detach() if torch.is_tensor(value) else value,
                                            dtype=torch.float64, device=self.device)
                    sums[key] = sums[key] + value if key in sums else value
                n += 1
        self.policy.eval()
        out = dict(zip(sums, (torch.stack(list(sums.values())) / n).tolist()))
        if cfg.target_kl is not None:
            out["ppo/steps"] = float(n)
        return out

    def _trpo(self, b: EpisodeBatch, adv: Tensor, returns: Tensor, rng: np.random.Generator,
              seq_valid: Tensor | None) -> dict[str, float]:
        from metarl.common.trpo import trpo_step

        cfg = self.cfg
        inputs, valid = b.policy_inputs, b.valid
        with torch.no_grad():
            old = self.policy.distribution(
                self.policy.forward_sequence(inputs, self.policy.initial_state(b.num_columns).to(inputs), seq_valid)
            ).detach()
        params = [p for p in self.policy.parameters() if p.requires_grad]
        cache: dict = {}

        def evaluate():
            # The surrogate and the KL share one forward pass; reuse it until the parameters change.
            key = tuple(p._version for p in params)
            if cache.get("key") != key:
                dist = self.policy.distribution(
                    self.policy.forward_sequence(inputs, self.policy.initial_state(b.num_columns).to(inputs), seq_valid)
                )
                ratio = torch.exp(dist.log_prob(b.actions) - b.log_probs)
                loss = -masked_mean(ratio * adv, valid) - cfg.entropy_coef * masked_mean(dist.entropy(), valid)
                cache.update(key=key, loss=loss, kl=masked_mean(old.kl(dist), valid))
            return cache["loss"], cache["kl"]

        info = trpo_step(params, loss_fn=lambda: evaluate()[0], kl_fn=lambda: evaluate()[1],
                         max_kl=getattr(cfg, "max_kl", DEFAULT_MAX_KL))
        cache.clear()
        # The value function: Adam epochs over minibatches of whole trials, as in the PPO path.
        vsum, n = 0.0, 0
        targets = self.value_fn.normalize_targets(returns)
        for _ in range(cfg.ppo_epochs):
            for cols in self._minibatches(b.num_columns, rng):
                seq_cols = None if seq_valid is None else seq_valid[:, cols]
                values = self.value_fn.normalized_sequence(inputs[:, cols], seq_cols)
                v_loss = value_loss(values, targets[:, cols], valid[:, cols])
                self.optimizer.zero_grad()
                (cfg.value_coef * v_loss).backward()
                self._clip(self.value_fn.parameters())
                self.optimizer.step()
                vsum += float(v_loss.detach())
                n += 1
        return {
            "loss/policy_before": info.loss_before,
            "loss/policy_after": info.loss_after,
            "loss/value": vsum / n,
            "kl": info.kl_after,
            "line_search/accepted": float(info.accepted),
            "line_search/backtracks": float(info.backtracks),
        }

    # ------------------------------------------------------------------ evaluation
    def adaptation_curve(self, tasks: Sequence, collector: Collector, ev) -> np.ndarray:
        """Mean return of each episode index within a trial on held-out ``tasks``: [episodes_per_trial, n_tasks]
        (see :meth:`adaptation_curves`)."""
        return self.adaptation_curves(tasks, collector, ev)["return"]

    def adaptation_curves(self, tasks: Sequence, collector: Collector, ev) -> dict[str, np.ndarray]:
        """Mean return of each episode index within a trial on held-out ``tasks``: [episodes_per_trial, n_tasks],
        and beside it ``<key>_rate`` of every per-step info indicator the env records (e.g. success_rate).

        One trial per task, or ``ceil(ev.episodes_per_task / episodes_per_trial)`` trials when
        ``ev.episodes_per_task`` is set (averaged per task). Actions are sampled, not the mode (the
        learned exploration is part of the algorithm being evaluated), unless ``ev.deterministic``
        asks for mean actions from every method.
        """
        E = self.cfg.episodes_per_trial
        per_task = getattr(ev, "episodes_per_task", None)
        trials = 1 if per_task is None else max(1, math.ceil(per_task / E))
        self.policy.eval()
        batch = collector.collect(self.policy, list(tasks), episodes_per_task=E * trials, episodes_per_trial=E,
                                  deterministic=getattr(ev, "deterministic", False))
        per_episode = {"return": batch.episode_returns(),  # [E, B], columns task-major
                       **{f"{k}_rate": batch.episode_info_max(k) for k in batch.infos}}
        return {key: v.reshape(E, len(tasks), trials).mean(2).cpu().numpy() for key, v in per_episode.items()}

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict:
        return {
            "policy": self.policy.state_dict(),
            "value_fn": self.value_fn.state_dict(),
            "optimizer": self.optimizer.state_dict(),
        }

    def load_state_dict(self, state: dict) -> None:
        self.policy.load_state_dict(state["policy"])
        self.value_fn.load_state_dict(state["value_fn"])
        self.optimizer.load_state_dict(state["optimizer"])


def trial_return_stats(batch: EpisodeBatch) -> dict[str, float]:
    """Mean undiscounted return of every episode index in the trial, and of the whole trial."""
    returns = batch.episode_returns()  # [E, B]
    stats = {f"return/episode_{k}": float(returns[k].mean()) for k in range(returns.shape[0])}
    stats["return/trial"] = float(returns.sum(0).mean())
    for key in batch.infos:  # per-step info indicators, e.g. success: the rate per episode of the trial
        rates = batch.episode_info_max(key)  # [E, B]
        stats.update({f"{key}_rate/episode_{k}": float(rates[k].mean()) for k in range(rates.shape[0])})
    return stats


def _explained_variance(values: Tensor, returns: Tensor, valid: Tensor) -> float:
    """1 - Var[R - V] / Var[R] over valid steps (1: perfect value function, <= 0: useless)."""
    var_r = masked_mean((returns - masked_mean(returns, valid)).pow(2), valid)
    resid = returns - values
    var_e = masked_mean((resid - masked_mean(resid, valid)).pow(2), valid)
    return float(1.0 - var_e / var_r) if float(var_r) > 0 else 0.0


def _seed_from(module: nn.Module) -> int:
    # A deterministic function of the policy's initial weights (which train.py draws from the run's
    # seed), so the value function's initialisation follows the run seed without a stream of its own.
    import hashlib

    first = next(module.parameters()).detach().cpu().contiguous().numpy().tobytes()
    return int.from_bytes(hashlib.sha256(first).digest()[:4], "little") & 0x7FFFFFFF
