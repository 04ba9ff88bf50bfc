"""PEARL's config section (``pearl:``).

Defaults are the paper's HalfCheetahVel settings (Rakelly et al., ICML 2019), read from the authors'
code (github.com/katerakelly/oyster: ``configs/default.py`` and ``configs/cheetah-vel.json``). Their
settings count environment steps; ours count whole episodes of the collector's horizon H (200 for
the cheetahs), so "400 steps" there is 2 episodes here.
"""

from __future__ import annotations

from dataclasses import dataclass

from metarl.common.config import ConfigRangeError, check_range


@dataclass
class PEARLConfig:
    """PEARL: context encoder -> latent z (product of Gaussians), SAC on (s, z), per-task replay
    buffers. SAC here is the twin-Q form with a learned entropy temperature (Haarnoja et al. 2018b),
    not the paper's V-function form with a fixed temperature (set auto_entropy: false, init_alpha: 1
    for the paper's fixed weight, where reward_scale sets the entropy trade-off)."""

    num_train_tasks: int = 100
    """Training tasks, drawn once from the training task stream; each has its own replay buffer (oyster cheetah-vel: n_train_tasks 100)."""
    latent_dim: int = 5
    """Size of the latent task variable z (oyster: latent_size 5)."""
    hidden_sizes: tuple[int, ...] = (300, 300, 300)
    """Hidden widths of the policy and of both Q-functions (oyster: net_size 300, three layers)."""
    encoder_hidden_sizes: tuple[int, ...] = (200, 200, 200)
    """Hidden widths of the context encoder MLP (oyster launch_experiment.py: [200, 200, 200])."""
    initial_episodes: int = 10
    """Episodes per training task collected with z from the prior before training (oyster: num_initial_steps 2000 = 10 x H 200)."""
    tasks_per_iteration: int = 5
    """Training tasks collected for in each iteration, drawn without replacement (oyster: num_tasks_sample 5, drawn with replacement)."""
    prior_episodes: int = 2
    """Episodes per collected task with z from the prior N(0, I), into both buffers (oyster: num_steps_prior 400); the task's encoder buffer is cleared first. Must be >= 1: posterior sampling needs context."""
    posterior_episodes: int = 0
    """Episodes per collected task with z from the posterior, into both buffers (oyster: num_steps_posterior 0)."""
    extra_posterior_episodes: int = 3
    """Episodes per collected task with z from the posterior, into the RL buffer only (oyster cheetah-vel: num_extra_rl_steps_posterior 600)."""
    gradient_steps: int = 2000
    """SAC gradient steps per iteration (oyster: num_train_steps_per_itr 2000)."""
    meta_batch: int = 16
    """Training tasks per gradient step (oyster: meta_batch 16)."""
    batch_size: int = 256
    """RL transitions per task per gradient step (oyster: batch_size 256)."""
    context_batch_size: int = 100
    """Context transitions per task per gradient step, drawn from the encoder buffer (oyster cheetah-vel: embedding_batch_size 100)."""
    replay_capacity: int = 50000
    """Transitions each training task's RL buffer holds (a ring: the oldest are overwritten). Memory: num_train_tasks x replay_capacity x bytes per transition (BENCHMARKS.md)."""
    gamma: float = 0.99
    """Discount factor (oyster: discount 0.99)."""
    tau: float = 0.005
    """Polyak rate of the target Q-functions (oyster: soft_target_tau 0.005)."""
    policy_lr: float = 3e-4
    """Adam learning rate of the policy (oyster: policy_lr 3e-4)."""
    q_lr: float = 3e-4
    """Adam learning rate of both Q-functions (oyster: qf_lr 3e-4)."""
    encoder_lr: float = 3e-4
    """Adam learning rate of the context encoder (oyster: context_lr 3e-4)."""
    alpha_lr: float = 3e-4
    """Adam learning rate of the log entropy temperature (auto_entropy)."""
    reward_scale: float = 5.0
    """Rewards are multiplied by this in the Bellman target (oyster: reward_scale 5); the context sees raw rewards."""
    kl_lambda: float = 0.1
    """Weight of KL(q(z | context) || N(0, I)), summed over the meta-batch, in the encoder's loss (oyster: kl_lambda 0.1)."""
    auto_entropy: bool = True
    """Learn the entropy temperature alpha towards target_entropy (SAC here has twin Q-functions, not the paper's V-function); false: alpha stays init_alpha (the paper: fixed at 1, entropy traded by reward_scale)."""
    init_alpha: float = 1.0
    """Initial (or, without auto_entropy, fixed) entropy temperature."""
    target_entropy: float | None = None
    """Target policy entropy of auto_entropy; null = -(action dimensions), the usual choice."""
    policy_mean_reg: float = 1e-3
    """Weight of the squared pre-tanh mean in the policy loss (oyster: policy_mean_reg_weight 1e-3)."""
    policy_std_reg: float = 1e-3
    """Weight of the squared log standard deviation in the policy loss (oyster: policy_std_reg_weight 1e-3)."""
    eval_episodes: int = 3
    """Episodes per held-out task in the adaptation curve, each after the context of the ones before it (oyster cheetah-vel: num_steps_per_eval 600 = 3 episodes)."""
    eval_prior_episodes: int = 2
    """First episodes of the curve acted with z from the prior; later ones sample z from the posterior of all context so far (oyster cheetah-vel: num_exp_traj_eval 2). Must be >= 1 and < eval_episodes."""

    def validate(self) -> None:
        for key in ("num_train_tasks", "latent_dim", "initial_episodes", "tasks_per_iteration", "prior_episodes",
                    "meta_batch", "batch_size", "context_batch_size", "replay_capacity", "eval_episodes"):
            check_range(self, key, ge=1)
        for key in ("posterior_episodes", "extra_posterior_episodes", "gradient_steps", "kl_lambda",
                    "policy_mean_reg", "policy_std_reg"):
            check_range(self, key, ge=0)
        for sizes in ("hidden_sizes", "encoder_hidden_sizes"):
            if any(w < 1 for w in getattr(self, sizes)):
                raise ConfigRangeError(sizes, getattr(self, sizes), "a list of ints >= 1")
        if self.tasks_per_iteration > self.num_train_tasks:
            raise ConfigRangeError("tasks_per_iteration", self.tasks_per_iteration,
                                   f"<= num_train_tasks ({self.num_train_tasks})")
        check_range(self, "gamma", gt=0, le=1)
        check_range(self, "tau", gt=0, le=1)
        for key in ("policy_lr", "q_lr", "encoder_lr", "alpha_lr", "reward_scale", "init_alpha"):
            check_range(self, key, gt=0)
        if self.eval_prior_episodes < 1:
            raise ConfigRangeError("eval_prior_episodes", self.eval_prior_episodes,
                                   ">= 1 (the first episode has no context to sample a posterior from)")
        if self.eval_prior_episodes >= self.eval_episodes:
            raise ConfigRangeError("eval_prior_episodes", self.eval_prior_episodes,
                                   f"< eval_episodes ({self.eval_episodes}), so that some episode samples the posterior")
