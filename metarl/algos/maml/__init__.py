"""MAML (and its inner_steps = 0 case, multi-task pretraining): the algorithm, its exact
Fisher-vector products for the outer TRPO step, and its config section."""

from metarl.algos.maml.config import MAMLConfig
from metarl.algos.maml.estimators import (
    ESTIMATORS, dice_terms, exploration_terms, lvc_terms, magic_box, reinforce_terms, surrogate_terms,
)
from metarl.common.adaptation import InnerData
from metarl.algos.maml.maml import MAML, test_time_inner_lrs

__all__ = [
    "MAML", "MAMLConfig", "InnerData", "test_time_inner_lrs",
    "ESTIMATORS", "surrogate_terms", "reinforce_terms", "lvc_terms", "dice_terms", "magic_box", "exploration_terms",
]
