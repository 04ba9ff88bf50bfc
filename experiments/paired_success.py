"""Paired per-task difference of two success rates from ``success_rate_per_task.csv`` files of ``metarl evaluate``.

Each side is FILE:METHOD:STEP (METHOD as in the file's ``method`` column, STEP its ``step``: the adaptation
step for MAML, the episode of the trial counted from 0 for RL²). Both files must score the same tasks in the
same order (the same ``eval.seed`` and draw), which is checked by task count. Prints the mean of A - B with a
normal 95% interval over tasks and on how many tasks A was higher, lower or equal. (``paired_gain.py`` pairs the
steps of one ``adaptation_per_task.csv`` with a t interval; this pairs any two files' columns, with the normal
interval every paired figure of results/metaworld_ml1 was published with.)

    python experiments/paired_success.py results/metaworld_ml1/push_rl2_50M/success_rate_per_task.csv:rl2:0 \\
        results/metaworld_ml1/push_maml_60M/success_rate_per_task.csv:maml:0
"""

from __future__ import annotations

import argparse
import csv

import numpy as np


def per_task(spec: str) -> np.ndarray:
    """The success rates of one FILE:METHOD:STEP, in task order."""
    path, sep, rest = spec.rpartition(":")
    path, sep2, method = path.rpartition(":")
    if not sep or not sep2 or not path:
        raise SystemExit(f"expected FILE:METHOD:STEP, got {spec!r}")
    rates: dict[int, float] = {}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            if row["method"] == method and row["step"] == rest:
                rates[int(row["task"])] = float(row["success_rate"])
    if not rates:
        raise SystemExit(f"{path}: no rows with method {method!r} and step {rest!r}")
    return np.array([rates[t] for t in sorted(rates)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("a", help="FILE:METHOD:STEP")
    parser.add_argument("b", help="FILE:METHOD:STEP")
    args = parser.parse_args()
    a, b = per_task(args.a), per_task(args.b)
    if a.shape != b.shape:
        raise SystemExit(f"the two sides score different numbers of tasks: {a.size} and {b.size}")
    d = a - b
    half = 1.96 * d.std(ddof=1) / np.sqrt(d.size) if d.size > 1 else float("nan")
    print(f"A - B over {d.size} tasks: {d.mean():+.3f} [{d.mean() - half:+.3f}, {d.mean() + half:+.3f}]; "
          f"A higher on {(d > 0).sum()}, lower on {(d < 0).sum()}, equal on {(d == 0).sum()} "
          f"(A {a.mean():.3f}, B {b.mean():.3f})")


if __name__ == "__main__":
    main()
