"""PEARL: a context encoder infers a latent task z (product of Gaussians), SAC acts on (s, z) from
per-task replay buffers; the algorithm, its buffers, networks and config section."""

from metarl.algos.pearl.buffers import TaskReplayBuffers, transitions_from_batch
from metarl.algos.pearl.config import PEARLConfig
from metarl.algos.pearl.networks import (
    ContextEncoder,
    QFunction,
    TanhGaussian,
    TanhGaussianPolicy,
    kl_to_standard_normal,
    product_of_gaussians,
)
from metarl.algos.pearl.pearl import (
    PEARL,
    alpha_loss,
    context_features,
    gradient_step_flops,
    polyak_update,
    soft_q_target,
)

__all__ = [
    "PEARL", "PEARLConfig", "TaskReplayBuffers", "transitions_from_batch", "ContextEncoder", "QFunction",
    "TanhGaussian", "TanhGaussianPolicy", "kl_to_standard_normal", "product_of_gaussians", "alpha_loss",
    "context_features", "gradient_step_flops", "polyak_update", "soft_q_target",
]
