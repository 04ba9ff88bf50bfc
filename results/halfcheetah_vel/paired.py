"""Paired difference of two evaluations on the same test tasks: per step, the mean over tasks of (A - B) with
its Student-t 95% CI, and on how many tasks A scores higher. Both evaluations must hold the same tasks
(the same eval.seed and eval.tasks), which `metarl evaluate` guarantees for runs of one environment.

    .venv/bin/python results/halfcheetah_vel/paired.py A/adaptation_per_task.csv B/adaptation_per_task.csv

Each file's first method is used (an evaluation's own run; its `random` rows are skipped).
"""

from __future__ import annotations

import csv
import sys

import numpy as np

from metarl.evaluation.curves import summarize


def per_task(path: str) -> tuple[str, dict[tuple[int, int], float]]:
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    method = rows[0]["method"]
    return method, {(int(r["step"]), int(r["task"])): float(r["return"]) for r in rows if r["method"] == method}


def main(argv: list[str]) -> None:
    if len(argv) != 2:
        raise SystemExit("usage: paired.py A/adaptation_per_task.csv B/adaptation_per_task.csv")
    (ma, a), (mb, b) = per_task(argv[0]), per_task(argv[1])
    if set(a) != set(b):
        raise SystemExit(f"{argv[0]} and {argv[1]} do not hold the same (step, task) pairs")
    steps = sorted({k for k, _ in a})
    tasks = sorted({t for _, t in a})
    for k in steps:
        d = np.array([a[(k, t)] - b[(k, t)] for t in tasks])
        s = summarize(d)
        print(f"step {k}: {ma} - {mb} = {s['mean']:.1f} [{s['ci95_low']:.1f}, {s['ci95_high']:.1f}], "
              f"{ma} higher on {(d > 0).sum()} of {len(tasks)} tasks")


if __name__ == "__main__":
    main(sys.argv[1:])
