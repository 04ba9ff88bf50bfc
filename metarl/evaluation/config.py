"""Config section of the meta-test evaluation (``eval:``)."""

from __future__ import annotations

from dataclasses import dataclass

from metarl.common.config import check_range


@dataclass
class EvalConfig:
    """Meta-test evaluation on held-out tasks."""

    tasks: int = 40
    """Held-out tasks evaluated."""
    steps: int = 3
    """Gradient steps; performance is measured after 0..steps of them."""
    inner_lr: float | None = None
    """Inner step size at test time; null = maml.inner_lr. Must be null for a Meta-SGD run (maml.learn_inner_lr: true), which adapts with its learned per-parameter rates."""
    inner_lr_after_first: float | None = None
    """Step size for steps after the first; null = inner_lr (the MAML paper used 0.1 then 0.05). Must be null for a Meta-SGD run."""
    episodes_per_task: int | None = None
    """Episodes (H=1: support samples) per task per step; null = maml.episodes_per_task (metarl evaluate: the evaluated run's, for every compared method)."""
    seed: int = 1000
    """Seed of the held-out test task stream, separate from training."""
    task_batch: int | None = None
    """metarl evaluate: held-out tasks adapted at once; null = all. Fewer bounds memory (Meta-World: ~21 MB per column, columns = tasks x episodes); each further batch has its own collector seed, the same for every method."""
    deterministic: bool = False
    """Score every method of the evaluation (MAML, Meta-SGD, ProMP, pretrain, random, RL², oracle) with its mean action instead of sampled actions. Gradient-based methods still adapt on sampled episodes; RL² adapts within the trial it is scored on, so its whole trial uses mean actions. No effect on H=1 tasks."""

    def validate(self) -> None:
        check_range(self, "tasks", ge=1)
        check_range(self, "steps", ge=0)
        check_range(self, "inner_lr", gt=0)
        check_range(self, "inner_lr_after_first", gt=0)
        check_range(self, "episodes_per_task", ge=1)
        check_range(self, "seed", ge=0)
        check_range(self, "task_batch", ge=1)
