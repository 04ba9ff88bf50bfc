"""ProMP: LVC inner step (shared inner loop of metarl.common.adaptation), clipped outer objective
with an inner-step KL penalty, optimised with Adam; and its config section."""

from metarl.algos.promp.config import ProMPConfig
from metarl.algos.promp.promp import ProMP, clipped_surrogate, lvc_inner_terms

__all__ = ["ProMP", "ProMPConfig", "clipped_surrogate", "lvc_inner_terms"]
