"""RL²'s config section (``rl2:``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from metarl.common.config import ConfigRangeError, check_range


@dataclass
class RL2Config:
    """RL²: recurrent policy trained across trials of several episodes."""

    episodes_per_trial: int = 2
    """Episodes of the same task in one trial; the hidden state is kept across them."""
    trials_per_iteration: int = 100
    """Trials (one task each) collected per iteration."""
    optimizer: Literal["ppo", "trpo"] = "ppo"
    """Policy optimiser."""
    lr: float = 3e-4
    """Adam learning rate (PPO and the value function)."""
    ppo_epochs: int = 4
    """PPO passes over each iteration's data."""
    minibatches: int = 4
    """PPO minibatches per epoch (split by trial, so hidden states stay intact)."""
    clip_range: float = 0.2
    """PPO clipping range of the probability ratio."""
    gamma: float = 0.99
    """Discount factor (across the episodes of a trial)."""
    gae_lambda: float = 0.95
    """GAE lambda."""
    entropy_coef: float = 0.0
    """Weight of the entropy bonus."""
    value_coef: float = 0.5
    """Weight of the value-function loss."""
    max_grad_norm: float = 0.5
    """Gradient-norm clipping threshold."""
    target_kl: float | None = None
    """PPO: end the iteration's epochs at the first minibatch (after the first) whose approximate KL to the collecting policy exceeds 1.5 x target_kl, before its step (SB3's rule; progress.csv then has ppo/steps); null = never."""

    def validate(self) -> None:
        check_range(self, "episodes_per_trial", ge=1)
        check_range(self, "trials_per_iteration", ge=1)
        check_range(self, "lr", gt=0)
        check_range(self, "ppo_epochs", ge=1)
        check_range(self, "minibatches", ge=1)
        # Minibatches are whole trials, so there cannot be more of them than trials.
        if self.minibatches > self.trials_per_iteration:
            raise ConfigRangeError(
                "minibatches", self.minibatches, f"<= trials_per_iteration ({self.trials_per_iteration})"
            )
        check_range(self, "clip_range", gt=0)
        check_range(self, "gamma", gt=0, le=1)
        check_range(self, "gae_lambda", ge=0, le=1)
        check_range(self, "entropy_coef", ge=0)
        check_range(self, "value_coef", ge=0)
        check_range(self, "max_grad_norm", gt=0)
        if self.target_kl is not None:
            check_range(self, "target_kl", gt=0)
            if self.optimizer != "ppo":
                raise ConfigRangeError("target_kl", self.target_kl, "null with optimizer trpo (TRPO bounds each update's KL itself)")
