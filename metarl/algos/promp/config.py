"""ProMP's config section (``promp:``): its outer update. The inner loop (meta-batch, episodes, inner
steps and step size, discount, advantages) is the ``maml:`` section's, shared with MAML.

Defaults are those of the ProMP authors' code (jonasrothfuss/ProMP, run_scripts/pro-mp_run_mujoco.py:
learning_rate 1e-3, num_promp_steps 5, clip_eps 0.3, target_inner_step 0.01, init_inner_kl_penalty
5e-4, adaptive_inner_kl_penalty False).
"""

from __future__ import annotations

from dataclasses import dataclass

from metarl.common.config import check_range


@dataclass
class ProMPConfig:
    """ProMP (Rothfuss et al., ICLR 2019): clipped outer objective with an inner-step KL penalty."""

    lr: float = 1e-3
    """Adam learning rate of the outer objective (ProMP authors' code: learning_rate 1e-3)."""
    steps: int = 5
    """Adam steps on the clipped objective per meta-iteration (authors' code: num_promp_steps 5)."""
    clip_eps: float = 0.3
    """Likelihood-ratio clip range [1 - eps, 1 + eps] of the outer objective (authors' code: clip_eps 0.3)."""
    init_inner_kl_penalty: float = 5e-4
    """Initial weight of each inner step's KL(sampling policy || current) (authors' code: init_inner_kl_penalty 5e-4)."""
    adaptive_inner_kl_penalty: bool = False
    """Halve / double each inner KL weight when its KL is below / above target / 1.5, target * 1.5 (authors' default: off)."""
    target_inner_kl: float = 0.01
    """Target inner-step KL of the adaptive penalty (authors' code: target_inner_step 0.01)."""

    def validate(self) -> None:
        check_range(self, "lr", gt=0)
        check_range(self, "steps", ge=1)
        check_range(self, "clip_eps", gt=0)
        check_range(self, "init_inner_kl_penalty", ge=0)
        check_range(self, "target_inner_kl", gt=0)
