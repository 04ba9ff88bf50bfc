"""What every training algorithm provides, so ``train`` and ``evaluate`` treat them alike.

An algorithm owns its policy and optimizer state and asks a :class:`~metarl.sampling.collector.Collector`
for data; it never steps environments itself.
"""

from __future__ import annotations

from typing import Protocol, Sequence

import numpy as np

from metarl.sampling.collector import Collector


class Algorithm(Protocol):
    #: "return" (RL) or "loss" (supervised): what the adaptation curve measures
    metric: str
    #: what the x axis of its adaptation curve counts ("gradient steps", "episode in trial")
    curve_x_label: str

    def train_iteration(self, rng: np.random.Generator) -> dict[str, float]:
        """One training iteration; returns scalars to log (``env_steps`` is summed by the trainer)."""

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...

    def adaptation_curve(self, tasks: Sequence, collector: Collector, ev) -> np.ndarray:
        """Per-task performance at each point of the curve on held-out ``tasks``: [points, n_tasks].

        ``collector`` is an evaluation collector (own seed stream); ``ev`` is the EvalConfig.
        """
