"""Paired gain of adaptation per task: step k minus step 0 of each task, for every method and step.

Reads an ``adaptation_per_task.csv`` written by ``metarl evaluate`` (columns method, step, task, return or
another metric) and prints the mean difference with a t-based 95% CI over tasks (the same interval as
adaptation.csv) and on how many tasks the step helped. Pairing removes the task-to-task spread that the
unpaired intervals of adaptation.csv carry, which is most of their width on tasks as varied as
Walker2DRandParams.

    python experiments/paired_gain.py results/walker2d_rand_params/maml/adaptation_per_task.csv
"""

from __future__ import annotations

import argparse
import csv
from collections import defaultdict

import numpy as np

from metarl.evaluation.curves import summarize


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("csv", help="adaptation_per_task.csv of metarl evaluate")
    args = parser.parse_args()
    with open(args.csv, newline="") as f:
        reader = csv.DictReader(f)
        metric = [c for c in reader.fieldnames if c not in ("method", "step", "task")][0]
        values: dict[str, dict[tuple[int, int], float]] = defaultdict(dict)
        for row in reader:
            values[row["method"]][(int(row["step"]), int(row["task"]))] = float(row[metric])
    for method, table in values.items():
        tasks = sorted({t for (_, t) in table})
        steps = sorted({s for (s, _) in table})
        for step in steps[1:]:
            diff = np.array([table[(step, t)] - table[(0, t)] for t in tasks])
            c = summarize(diff)
            print(f"{method} {metric} step {step} - step 0: {c['mean']:+.3f} [{c['ci95_low']:.3f}, {c['ci95_high']:.3f}]"
                  f", up on {(diff > 0).sum()} of {len(tasks)} tasks, down on {(diff < 0).sum()}")


if __name__ == "__main__":
    main()
