"""Does PEARL's latent z carry the task? Diagnostics of a trained run on held-out tasks.

:func:`task_inference` (run by ``python -m metarl.pearl_diagnostics RUN_DIR [--tasks N]``) runs the evaluation protocol
(:meth:`PEARL.adaptation_curve`, sampled actions, ``eval.seed``) on N held-out tasks and prints, for
every posterior episode k, the mean return and how much of the tasks' variance the posterior mean after
k episodes of context explains: the held-out R² of an affine least-squares fit from the posterior mean to
the task's array (the environment's ``task_to_array``, e.g. the navigation goal), fitted on the first half
of the tasks and scored on the second. R² near 0: z says nothing linear about the task (inference failed
or collapsed to the prior); near 1: the task can be read off z. It also prints the mean KL of those
posteriors to N(0, I).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch
from torch import Tensor

from metarl.algos.pearl.networks import kl_to_standard_normal

__all__ = ["explained_variance", "task_inference"]


def explained_variance(features: Tensor, targets: Tensor) -> float:
    """Held-out R² of targets [n, d] from features [n, f] by an affine least-squares fit on the first
    n // 2 rows, scored on the others: 1 - sum of squared errors / sum of squares around their mean
    (negative when the fit is worse than that mean)."""
    if features.shape[0] != targets.shape[0] or features.shape[0] < 4:
        raise ValueError(f"explained_variance needs the same number (>= 4) of feature and target rows, got "
                         f"{features.shape[0]} and {targets.shape[0]}")
    x = torch.cat([features.double(), torch.ones(len(features), 1, dtype=torch.float64)], 1)
    y = targets.double().reshape(len(targets), -1)
    h = len(x) // 2
    w = torch.linalg.lstsq(x[:h], y[:h], driver="gelsd").solution  # SVD: also for rank-deficient features
    err = ((x[h:] @ w - y[h:]) ** 2).sum()
    total = ((y[h:] - y[h:].mean(0)) ** 2).sum()
    return float(1.0 - err / total)


def task_inference(algo, collector, tasks, ev) -> dict[str, list[float]]:
    """The evaluation protocol on ``tasks`` (one run per task): ``return`` [eval_episodes] per episode, and per
    posterior episode ``r2`` (explained_variance of the task arrays from the posterior means) and ``kl``."""
    task_to_array = getattr(collector.task_env.unwrapped, "task_to_array", None)
    if task_to_array is None:
        raise ValueError(f"{collector.env_id} has no task_to_array: the posterior cannot be compared with the task")
    posteriors: list = []
    curve = algo.adaptation_curve(tasks, collector, replace(ev, episodes_per_task=None), posteriors)
    arrays = torch.as_tensor(np.stack([task_to_array(t) for t in tasks]))
    return {"return": curve.mean(1).tolist(),
            "r2": [explained_variance(mean, arrays) for mean, _ in posteriors],
            "kl": [float(kl_to_standard_normal(mean, var).mean()) for mean, var in posteriors]}
