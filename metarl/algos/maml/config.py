"""MAML's config section (``maml:``), also the fine-tuning loop of the pretrain and oracle baselines."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from metarl.common.config import check_range

#: the meta-gradient estimators of metarl.algos.maml.estimators (the one list of their names)
Estimator = Literal["reinforce", "lvc", "dice", "emaml"]


@dataclass
class MAMLConfig:
    """MAML: inner-loop adaptation and outer (meta) optimisation."""

    meta_batch_size: int = 20
    """Tasks per meta-iteration."""
    episodes_per_task: int = 20
    """Episodes per task per inner step; for H=1 tasks the number K of support samples."""
    query_episodes_per_task: int | None = None
    """Post-update episodes (query samples for H=1) per task; null = same as episodes_per_task."""
    inner_steps: int = 1
    """Inner-loop gradient steps per task during meta-training."""
    inner_lr: float = 0.1
    """Step size of the inner-loop gradient step."""
    estimator: Estimator = "reinforce"
    """How the meta-gradient accounts for the inner step's sampling. reinforce (MAML): it does not. lvc (ProMP, Rothfuss et al. 2019) and dice (Foerster et al. 2018): through the inner surrogate's Hessian. emaml (E-MAML, Stadie et al. 2018): the inner step stays REINFORCE and the outer objective gains each task's inner-episode score function weighted by its post-update return (one value, not a flag, because it would count that sampling term twice on top of lvc or dice)."""
    exploration_weight: float = 1.0
    """estimator emaml: weight of the exploration term. 1 makes the outer gradient an unbiased estimate of the gradient of the expected post-update return (tests/test_estimators.py); the ProMP authors' E-MAML code averages the inner log-likelihood over steps instead of summing it, i.e. about 1 / (episodes_per_task x H) of that."""
    first_order: bool = False
    """First-order MAML: do not backpropagate through the inner-loop gradient."""
    learn_inner_lr: bool = False
    """Meta-SGD: learn a per-parameter inner learning rate (initialised to inner_lr)."""
    outer: Literal["trpo", "adam"] = "trpo"
    """Outer (meta) optimiser: TRPO for RL, Adam for supervised tasks."""
    outer_lr: float = 1e-3
    """Adam learning rate when outer is adam."""
    max_kl: float = 0.01
    """TRPO trust region: bound on the mean KL between old and new post-update policies."""
    cg_iters: int = 10
    """TRPO conjugate-gradient iterations."""
    cg_damping: float = 1e-5
    """TRPO damping added to the Fisher-vector product."""
    fisher_subsample: float = 1.0
    """TRPO: fraction of the meta-batch's tasks whose samples make the Fisher-vector products of the conjugate gradient (rllab's subsample_factor, by task: ceil(fraction x meta_batch_size) tasks, drawn at random each iteration). 1 = every task: the exact step (the default). Below 1 the step's direction and length come from that subset's KL curvature, an approximation that makes the conjugate gradient about 1/fraction times cheaper; the gradient, and the line search's surrogate and KL bound, still use every task."""
    ls_max_steps: int = 15
    """TRPO backtracking line-search steps."""
    ls_backtrack_ratio: float = 0.8
    """TRPO line-search step shrink factor."""
    gamma: float = 0.99
    """Discount factor."""
    gae_lambda: float = 1.0
    """GAE lambda; 1.0 = plain REINFORCE with the linear baseline."""
    normalize_advantages: bool = True
    """Standardise advantages per task before each policy-gradient step."""

    def validate(self) -> None:
        check_range(self, "meta_batch_size", ge=1)
        check_range(self, "episodes_per_task", ge=1)
        check_range(self, "query_episodes_per_task", ge=1)
        check_range(self, "inner_steps", ge=0)
        check_range(self, "inner_lr", gt=0)
        check_range(self, "exploration_weight", ge=0)
        check_range(self, "outer_lr", gt=0)
        check_range(self, "max_kl", gt=0)
        check_range(self, "cg_iters", ge=1)
        check_range(self, "cg_damping", ge=0)
        check_range(self, "fisher_subsample", gt=0, le=1)
        check_range(self, "ls_max_steps", ge=1)
        check_range(self, "ls_backtrack_ratio", gt=0, lt=1)
        check_range(self, "gamma", gt=0, le=1)
        check_range(self, "gae_lambda", ge=0, le=1)
