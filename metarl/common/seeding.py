"""The random streams of a run: every one is a child of ``numpy.random.SeedSequence(cfg.seed)``."""

from __future__ import annotations

import numpy as np


def seed_streams(seed: int) -> dict[str, np.random.SeedSequence]:
    """Independent streams for policy initialisation, task sampling, the collector and evaluation."""
    children = np.random.SeedSequence(seed).spawn(4)
    return dict(zip(("init", "tasks", "collector", "eval"), children))
