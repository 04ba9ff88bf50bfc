"""PEARL (Rakelly et al., ICML 2019): off-policy meta-RL by probabilistic inference of a latent task z.

* **Task inference.** A context encoder maps each context transition (s, a, r) to a Gaussian factor
  over z; the posterior q(z | c) is their normalised product (``networks.product_of_gaussians``), and
  ``kl_lambda * sum_tasks KL(q(z | c) || N(0, I))`` pulls it towards the prior.
* **SAC on (s, z).** Twin Q-functions Q(s, a, z) with Polyak-averaged targets and a learned entropy
  temperature (see :class:`~metarl.algos.pearl.config.PEARLConfig`). The encoder is trained by the
  critic's loss (gradients flow through z into it) plus the KL term; the policy and the targets see
  z detached, as in the paper.
* **Data.** Every training task has an RL replay buffer and an encoder buffer
  (:class:`~metarl.algos.pearl.buffers.TaskReplayBuffers`). Each iteration collects for
  ``tasks_per_iteration`` training tasks: the task's encoder buffer is cleared, ``prior_episodes``
  episodes act with z ~ N(0, I) (into both buffers), ``posterior_episodes`` and then
  ``extra_posterior_episodes`` act with z from the posterior of a context batch drawn from the
  encoder buffer (the latter into the RL buffer only). So context always comes from recent data of
  the current policy, as the paper prescribes, while SAC learns from everything. Each episode draws
  its own z (the paper's code resamples z every trajectory). Departure from the paper's code: its
  extra-posterior collection acts its first trajectory with the prior (it clears z before
  collecting); here every one of those episodes uses the posterior.
* **Collection** goes through the ordinary :class:`~metarl.sampling.collector.Collector`: z enters as a
  per-task input (``task_inputs``), the column list holds one entry per episode, so every episode of
  every task runs in one batched step loop.
* **Evaluation** (the paper's protocol): on each held-out task, episode k is acted with z from the
  prior for k < ``eval_prior_episodes`` and from the posterior of all transitions of episodes 0..k-1
  afterwards; the curve is the return of episode k against k episodes of context.

Randomness: z samples, minibatch indices and SAC's action noise come from the algorithm's own
``torch.Generator`` (seeded from the policy's initial weights, which derive from the run seed), the
choice of tasks from the trainer's task stream; all are in the checkpoint, so a resumed run continues
bit-identically.
"""

from __future__ import annotations

import copy
import hashlib
import math
import time
from typing import Sequence

import gymnasium as gym
import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from metarl.algos.pearl.buffers import TaskReplayBuffers, transitions_from_batch
from metarl.algos.pearl.networks import ContextEncoder, QFunction, TanhGaussianPolicy, kl_to_standard_normal
from metarl.sampling.collector import Collector, EpisodeBatch

__all__ = ["PEARL", "context_features", "soft_q_target", "alpha_loss", "polyak_update", "gradient_step_flops"]


def context_features(obs: Tensor, actions: Tensor, rewards: Tensor) -> Tensor:
    """One context transition as the encoder sees it: [s, a, r] (the paper's default, without s')."""
    return torch.cat([obs, actions, rewards.unsqueeze(-1)], -1)


def soft_q_target(rewards: Tensor, terminals: Tensor, next_q1: Tensor, next_q2: Tensor, next_log_prob: Tensor,
                  alpha: Tensor | float, gamma: float, reward_scale: float) -> Tensor:
    """SAC's target with twin Q-functions:
    reward_scale * r + gamma * (1 - terminal) * (min(Q1', Q2') - alpha * log pi(a' | s'))."""
    soft_value = torch.min(next_q1, next_q2) - alpha * next_log_prob
    return reward_scale * rewards + gamma * (1.0 - terminals.to(rewards.dtype)) * soft_value


def alpha_loss(log_alpha: Tensor, log_prob: Tensor, target_entropy: float) -> Tensor:
    """The temperature's loss -log(alpha) * (log pi + target_entropy): its gradient raises alpha when the
    policy's entropy (-log pi) is below the target, and lowers it when above."""
    return -(log_alpha * (log_prob.detach() + target_entropy)).mean()


@torch.no_grad()
def polyak_update(target: nn.Module, source: nn.Module, tau: float) -> None:
    """target <- (1 - tau) * target + tau * source, parameter by parameter."""
    for t, s in zip(target.parameters(), source.parameters()):
        t.mul_(1.0 - tau).add_(s, alpha=tau)


def gradient_step_flops(cfg, obs_dim: int, act_dim: int) -> int:
    """Matrix-multiply FLOPs of one :meth:`PEARL.gradient_step` (2 per multiply-add), from the layer shapes.

    With R = meta_batch x batch_size RL rows, C = meta_batch x context_batch_size context rows and
    F_net = 2 * sum of (in x out) over a network's layers (one forward pass of one row):
    * critic step: Q1, Q2 forward and backward with weight and input gradients (z needs its gradient):
      2 x 3 F_Q R; targets: the policy and both target Q-functions forward on s': (F_pi + 2 F_Q) R;
    * policy step: the policy forward and backward (no input gradient in its first layer:
      3 F_pi - 2 in_1 out_1), both Q-functions forward and back to the action only (frozen: 2 F_Q each);
    * encoder: forward and backward on the context (no input gradient in its first layer): 3 F_enc - 2 in_1 out_1.

    Total: R (12 F_Q + 4 F_pi - 2 in_1 out_1 of pi) + C (3 F_enc - 2 in_1 out_1 of the encoder). Everything
    else in the step is elementwise. The cheetah settings give 25.5 GFLOP per step.
    """
    L = cfg.latent_dim

    def dims(d_in, hidden, d_out):
        d = [d_in, *hidden, d_out]
        return 2 * sum(a * b for a, b in zip(d, d[1:])), d[0] * d[1]

    f_q, _ = dims(obs_dim + act_dim + L, cfg.hidden_sizes, 1)
    f_pi, first_pi = dims(obs_dim + L, cfg.hidden_sizes, 2 * act_dim)
    f_enc, first_enc = dims(obs_dim + act_dim + 1, cfg.encoder_hidden_sizes, 2 * L)
    rows, context = cfg.meta_batch * cfg.batch_size, cfg.meta_batch * cfg.context_batch_size
    return rows * (12 * f_q + 4 * f_pi - 2 * first_pi) + context * (3 * f_enc - 2 * first_enc)


class _frozen:
    """Within the block the modules' parameters do not require gradients (restored after)."""

    def __init__(self, *modules: nn.Module):
        self.params = [p for m in modules for p in m.parameters()]

    def __enter__(self):
        for p in self.params:
            p.requires_grad_(False)

    def __exit__(self, *exc):
        for p in self.params:
            p.requires_grad_(True)


class PEARL:
    """PEARL training and evaluation on one task distribution (``cfg`` is a :class:`PEARLConfig`)."""

    metric = "return"
    curve_x_label = "episodes of context"

    def __init__(self, policy: TanhGaussianPolicy, collector: Collector, cfg, device: str | torch.device = "cpu"):
        if collector.supervised:
            raise ValueError(f"PEARL needs an RL task distribution; {collector.env_id} is supervised (H = 1 regression)")
        space = collector.action_space
        if not isinstance(space, gym.spaces.Box):
            raise ValueError(f"PEARL's SAC needs a continuous (Box) action space; {collector.env_id} has {space}")
        if not isinstance(policy, TanhGaussianPolicy):
            raise ValueError(f"PEARL needs a TanhGaussianPolicy, got {type(policy).__name__}")
        if str(device) != "cpu":
            raise ValueError(f"PEARL runs on the CPU here (collector.device = {device!r} is not supported)")
        self.policy, self.collector, self.cfg = policy, collector, cfg
        obs_dim, act_dim, L = policy.obs_dim, policy.act_dim, cfg.latent_dim
        if policy.latent_dim != L:
            raise ValueError(f"policy latent size {policy.latent_dim} != pearl.latent_dim {L}")
        self.generator = torch.Generator().manual_seed(_seed_from(policy))
        # The other networks' initial weights follow the run seed too: drawn from a fork of the global
        # stream seeded from the policy's own initial weights.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(_seed_from(policy))
            self.encoder = ContextEncoder(obs_dim + act_dim + 1, L, cfg.encoder_hidden_sizes)
            self.q1 = QFunction(obs_dim, act_dim, L, cfg.hidden_sizes)
            self.q2 = QFunction(obs_dim, act_dim, L, cfg.hidden_sizes)
        self.q1_target, self.q2_target = copy.deepcopy(self.q1), copy.deepcopy(self.q2)
        for p in [*self.q1_target.parameters(), *self.q2_target.parameters()]:
            p.requires_grad_(False)
        self.log_alpha = torch.tensor(math.log(cfg.init_alpha), requires_grad=cfg.auto_entropy)
        self.target_entropy = float(-act_dim if cfg.target_entropy is None else cfg.target_entropy)
        # fused: one kernel per optimizer step instead of a dozen per parameter tensor (Adam's maths)
        self.policy_opt = torch.optim.Adam(policy.parameters(), lr=cfg.policy_lr, fused=True)
        self.q_opt = torch.optim.Adam([*self.q1.parameters(), *self.q2.parameters()], lr=cfg.q_lr, fused=True)
        self.encoder_opt = torch.optim.Adam(self.encoder.parameters(), lr=cfg.encoder_lr, fused=True)
        self.alpha_opt = (torch.optim.Adam([self.log_alpha], lr=cfg.alpha_lr, fused=True) if cfg.auto_entropy
                          else None)
        H = collector.horizon
        self.replay = TaskReplayBuffers(cfg.num_train_tasks, cfg.replay_capacity, obs_dim, act_dim)
        # holds one collection's encoder data: the initial episodes, or prior + posterior episodes
        enc_capacity = H * max(cfg.initial_episodes, cfg.prior_episodes + cfg.posterior_episodes)
        self.encoder_buffer = TaskReplayBuffers(cfg.num_train_tasks, enc_capacity, obs_dim, act_dim)
        per_collection = H * max(cfg.initial_episodes,
                                 cfg.prior_episodes + cfg.posterior_episodes + cfg.extra_posterior_episodes)
        if per_collection > cfg.replay_capacity:
            raise ValueError(f"pearl.replay_capacity = {cfg.replay_capacity} cannot hold one collection of a task "
                             f"({per_collection} transitions at horizon {H})")
        #: the training tasks, drawn from the trainer's task stream in the first iteration
        self.train_tasks: list | None = None
        #: episode returns [episodes] of this iteration's collections (logged as train/return)
        self._last_returns: list[Tensor] = []

    # ------------------------------------------------------------------ inference
    def sample_z(self, mean: Tensor, var: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """z = mean + sqrt(var) * eps, eps ~ N(0, I) from ``generator`` (default: the algorithm's own)."""
        eps = torch.randn(mean.shape, generator=generator or self.generator)
        return mean + var.sqrt() * eps

    def posterior_from_buffer(self, tasks: Tensor) -> tuple[Tensor, Tensor]:
        """q(z | c) of each of ``tasks`` [k] from ``context_batch_size`` transitions of its encoder buffer."""
        c = self.encoder_buffer.sample(tasks, self.cfg.context_batch_size, self.generator)
        return self.encoder.posterior(context_features(c["obs"], c["actions"], c["rewards"]))

    # ------------------------------------------------------------------ collection
    def _collect(self, task_ids: Tensor, episodes: int, posterior: bool, encoder_too: bool) -> int:
        """``episodes`` episodes of each training task in ``task_ids``, z per episode from the prior or the
        posterior; their transitions go to the RL buffer (and the encoder buffer). Returns env steps."""
        if episodes == 0:
            return 0
        ids = task_ids.repeat_interleave(episodes)  # one collector column per episode, task-major
        L = self.cfg.latent_dim
        with torch.no_grad():
            if posterior:
                mean, var = self.posterior_from_buffer(task_ids)
                z = self.sample_z(mean.repeat_interleave(episodes, 0), var.repeat_interleave(episodes, 0))
            else:
                z = torch.randn(len(ids), L, generator=self.generator)
        self.policy.eval()
        batch = self.collector.collect(self.policy, [self.train_tasks[i] for i in ids.tolist()], 1, task_inputs=z)
        tr = transitions_from_batch(batch)
        owner = ids[tr["column"]]
        self.replay.add(owner, tr)
        if encoder_too:
            self.encoder_buffer.add(owner, tr)
        self._last_returns.append(batch.episode_returns()[0])
        return batch.num_steps

    def _initialize(self, rng: np.random.Generator) -> int:
        cfg = self.cfg
        self.train_tasks = list(self.collector.sample_tasks(cfg.num_train_tasks, rng))
        return self._collect(torch.arange(cfg.num_train_tasks), cfg.initial_episodes, posterior=False, encoder_too=True)

    # ------------------------------------------------------------------ training
    def train_iteration(self, rng: np.random.Generator) -> dict[str, float]:
        cfg = self.cfg
        t0 = time.perf_counter()
        self._last_returns = []
        env_steps = 0
        if self.train_tasks is None:
            env_steps += self._initialize(rng)
        chosen = torch.as_tensor(rng.choice(cfg.num_train_tasks, cfg.tasks_per_iteration, replace=False))
        self.encoder_buffer.clear(chosen)
        env_steps += self._collect(chosen, cfg.prior_episodes, posterior=False, encoder_too=True)
        env_steps += self._collect(chosen, cfg.posterior_episodes, posterior=True, encoder_too=True)
        env_steps += self._collect(chosen, cfg.extra_posterior_episodes, posterior=True, encoder_too=False)
        t1 = time.perf_counter()
        sums: dict[str, float] = {}
        for _ in range(cfg.gradient_steps):
            for k, v in self.gradient_step().items():
                sums[k] = sums.get(k, 0.0) + v
        stats = {k: v / max(cfg.gradient_steps, 1) for k, v in sums.items()}
        stats["train/return"] = float(torch.cat(self._last_returns).mean())
        stats["env_steps"] = float(env_steps)
        stats["replay/transitions"] = float(self.replay.size.sum())
        stats["time/sampling_s"] = t1 - t0
        stats["time/update_s"] = time.perf_counter() - t1
        return stats

    @property
    def alpha(self) -> Tensor:
        return self.log_alpha.exp()

    def gradient_step(self) -> dict[str, float]:
        """One SAC step on a meta-batch of training tasks; returns its losses."""
        cfg, g = self.cfg, self.generator
        tasks = torch.randint(cfg.num_train_tasks, (cfg.meta_batch,), generator=g)
        c = self.encoder_buffer.sample(tasks, cfg.context_batch_size, g)
        b = self.replay.sample(tasks, cfg.batch_size, g)
        self.policy.train()
        # posterior of each task and one z per task, repeated over its RL batch
        mean, var = self.encoder.posterior(context_features(c["obs"], c["actions"], c["rewards"]))
        z = self.sample_z(mean, var)
        kl = kl_to_standard_normal(mean, var).sum()
        z_rows = z.unsqueeze(1).expand(-1, cfg.batch_size, -1)
        z_fixed = z_rows.detach()
        alpha = self.alpha.detach()

        with torch.no_grad():
            next_dist = self.policy.distribution(self.policy(torch.cat([b["next_obs"], z_fixed], -1)))
            next_a, next_logp = next_dist.rsample_with_log_prob(torch.randn(next_dist.noise_shape, generator=g))
            y = soft_q_target(b["rewards"], b["terminals"], self.q1_target(b["next_obs"], next_a, z_fixed),
                              self.q2_target(b["next_obs"], next_a, z_fixed), next_logp, alpha, cfg.gamma,
                              cfg.reward_scale)
        q_loss = (F.mse_loss(self.q1(b["obs"], b["actions"], z_rows), y)
                  + F.mse_loss(self.q2(b["obs"], b["actions"], z_rows), y))
        self.q_opt.zero_grad()
        self.encoder_opt.zero_grad()
        (q_loss + cfg.kl_lambda * kl).backward()
        self.q_opt.step()
        self.encoder_opt.step()

        mean_a, log_std = self.policy(torch.cat([b["obs"], z_fixed], -1))
        dist = self.policy.distribution((mean_a, log_std))
        a, logp = dist.rsample_with_log_prob(torch.randn(dist.noise_shape, generator=g))
        # the policy's loss differentiates through the Q-functions into the action only: their own
        # weight gradients would be thrown away (the next critic step zeroes them), so are not computed
        with _frozen(self.q1, self.q2):
            q_new = torch.min(self.q1(b["obs"], a, z_fixed), self.q2(b["obs"], a, z_fixed))
        policy_loss = ((alpha * logp - q_new).mean() + cfg.policy_mean_reg * mean_a.pow(2).mean()
                       + cfg.policy_std_reg * log_std.pow(2).mean())
        self.policy_opt.zero_grad()
        policy_loss.backward()
        self.policy_opt.step()

        stats = {"loss/q": float(q_loss.detach()), "loss/policy": float(policy_loss.detach()),
                 "kl": float(kl.detach()) / cfg.meta_batch, "alpha": float(alpha),
                 "entropy": float(-logp.detach().mean())}
        if self.alpha_opt is not None:
            a_loss = alpha_loss(self.log_alpha, logp, self.target_entropy)
            self.alpha_opt.zero_grad()
            a_loss.backward()
            self.alpha_opt.step()
        polyak_update(self.q1_target, self.q1, cfg.tau)
        polyak_update(self.q2_target, self.q2, cfg.tau)
        return stats

    # ------------------------------------------------------------------ evaluation
    def adaptation_curve(self, tasks: Sequence, collector: Collector, ev, posteriors: list | None = None) -> np.ndarray:
        """Mean return of episode k on held-out ``tasks`` after k episodes of context: [eval_episodes, n_tasks].

        Episode k acts with z from the prior for k < eval_prior_episodes, else with z sampled from the
        posterior of every valid transition of episodes 0..k-1 (the paper's protocol). With
        ``ev.episodes_per_task`` set, ``ceil(episodes_per_task / eval_episodes)`` independent runs per task
        are averaged. z is drawn from a generator seeded with ``ev.seed`` (the training streams are not
        touched). Actions are sampled unless ``ev.deterministic``. ``posteriors``: a list that receives the
        posterior (mean, var) [runs x tasks, latent] of each posterior episode, in order (diagnostics).
        """
        cfg = self.cfg
        E = cfg.eval_episodes
        per_task = getattr(ev, "episodes_per_task", None)
        runs = 1 if per_task is None else max(1, math.ceil(per_task / E))
        run_tasks = [t for t in tasks for _ in range(runs)]
        n = len(run_tasks)
        g = torch.Generator().manual_seed(int(ev.seed))
        self.policy.eval()
        contexts: list[Tensor] = []
        weights: list[Tensor] = []
        returns = []
        for k in range(E):
            with torch.no_grad():
                if k < cfg.eval_prior_episodes:
                    z = torch.randn(n, cfg.latent_dim, generator=g)
                else:
                    mean, var = self.encoder.posterior(torch.cat(contexts, 1), torch.cat(weights, 1))
                    z = self.sample_z(mean, var, g)
                    if posteriors is not None:
                        posteriors.append((mean, var))
            batch = collector.collect(self.policy, run_tasks, 1, task_inputs=z,
                                      deterministic=getattr(ev, "deterministic", False))
            returns.append(batch.episode_returns()[0])
            # context [n, H, C], one row per step of the episode, masked where the episode had ended
            contexts.append(context_features(batch.obs, batch.actions.float(), batch.rewards).transpose(0, 1))
            weights.append(batch.valid.T)
        curve = torch.stack(returns)  # [E, n], task-major
        return curve.reshape(E, len(tasks), runs).mean(2).cpu().numpy()

    # ------------------------------------------------------------------ state
    def _modules(self) -> dict[str, nn.Module]:
        return {"policy": self.policy, "encoder": self.encoder, "q1": self.q1, "q2": self.q2,
                "q1_target": self.q1_target, "q2_target": self.q2_target}

    def _optimizers(self) -> dict:
        opts = {"policy_opt": self.policy_opt, "q_opt": self.q_opt, "encoder_opt": self.encoder_opt}
        if self.alpha_opt is not None:
            opts["alpha_opt"] = self.alpha_opt
        return opts

    def state_dict(self) -> dict:
        """Every network, optimizer and random stream, the training tasks and both replay buffers
        (their filled entries): a resumed run continues exactly where this one stopped."""
        return {
            **{k: m.state_dict() for k, m in self._modules().items()},
            **{k: o.state_dict() for k, o in self._optimizers().items()},
            "log_alpha": self.log_alpha.detach().clone(),
            "generator": self.generator.get_state(),
            "train_tasks": self.train_tasks,
            "replay": self.replay.state_dict(),
            "encoder_buffer": self.encoder_buffer.state_dict(),
        }

    def load_state_dict(self, state: dict) -> None:
        for k, m in self._modules().items():
            m.load_state_dict(state[k])
        for k, o in self._optimizers().items():
            o.load_state_dict(state[k])
        with torch.no_grad():
            self.log_alpha.copy_(state["log_alpha"])
        self.generator.set_state(state["generator"])
        self.train_tasks = state["train_tasks"]
        self.replay.load_state_dict(state["replay"])
        self.encoder_buffer.load_state_dict(state["encoder_buffer"])


def _seed_from(module: nn.Module) -> int:
    # A deterministic function of the policy's initial weights (drawn from the run seed).
    first = next(module.parameters()).detach().cpu().contiguous().numpy().tobytes()
    return int.from_bytes(hashlib.sha256(first).digest()[:4], "little") & 0x7FFFFFFF
