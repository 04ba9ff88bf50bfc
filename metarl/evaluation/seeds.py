"""Across-seed summaries: one adaptation curve per training seed, read back from ``adaptation.csv``.

An evaluation's 95% CI is across held-out tasks for one trained model; it says nothing about how much
the result moves when the same config is trained again from another seed. ``metarl seeds`` puts the
second spread beside the first: for every method and step, the mean over seeds of the per-seed means,
their sample standard deviation across seeds, min and max, and the mean across-task CI half-width.

Every source must hold the same methods and steps and be scored the same way (``summary.json``'s
``actions``), so that the seeds differ only in training.
"""

from __future__ import annotations

import csv
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np

from metarl.evaluation.plots import PlotError, adaptation_csv_path, check_same_actions, read_adaptation_csv

SEEDS_COLUMNS = ["method", "step", "mean", "seed_std", "seed_min", "seed_max", "n_seeds", "task_ci95_halfwidth"]
SEEDS_FILE = "seeds.csv"


def aggregate_seeds(sources: Sequence[str | Path]) -> list[dict]:
    """Rows of :data:`SEEDS_COLUMNS`, one per method and step, from one evaluation per seed."""
    if len(sources) < 2:
        raise PlotError(f"metarl seeds needs the evaluations of at least 2 seeds, got {len(sources)}")
    check_same_actions(sources)
    per_source = [read_adaptation_csv(adaptation_csv_path(Path(s))) for s in sources]
    first = per_source[0]
    for src, curves in zip(sources[1:], per_source[1:]):
        shape = {m: len(rows) for m, rows in curves.items()}
        expected = {m: len(rows) for m, rows in first.items()}
        if shape != expected:
            raise PlotError(f"{src}: methods and steps {shape} differ from {sources[0]}'s {expected}; "
                             "evaluate every seed with the same --compare runs and --steps")
        tasks = {r.get("n_tasks") for rows in curves.values() for r in rows}
        expected_tasks = {r.get("n_tasks") for rows in first.values() for r in rows}
        if tasks != expected_tasks:
            raise PlotError(f"{src}: scored on {sorted(tasks)} test tasks, {sources[0]} on {sorted(expected_tasks)}; "
                            "evaluate every seed on the same --tasks")
    rows = []
    # A diverged method (inf / nan after some step, e.g. Meta-SGD's one-step rates applied ten times)
    # gives inf / nan statistics there, as it should, without numpy's warnings.
    with np.errstate(invalid="ignore", over="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        for method, method_rows in first.items():
            rows.extend(_method_rows(method, len(method_rows), per_source))
    return rows


def _method_rows(method: str, num_steps: int, per_source: list[dict]) -> list[dict]:
    """One method's rows: per step, statistics of the per-seed means."""
    rows = []
    for k in range(num_steps):
        means = np.array([float(c[method][k]["mean"]) for c in per_source])
        halves = np.array([(float(c[method][k]["ci95_high"]) - float(c[method][k]["ci95_low"])) / 2
                           for c in per_source])
        rows.append({
            "method": method, "step": k, "mean": float(means.mean()),
            "seed_std": float(means.std(ddof=1)), "seed_min": float(means.min()), "seed_max": float(means.max()),
            "n_seeds": len(means), "task_ci95_halfwidth": float(np.nanmean(halves)),
        })
    return rows


def write_seeds_csv(rows: list[dict], out: str | Path) -> Path:
    """``seeds.csv`` in ``out`` (a folder, created if needed)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / SEEDS_FILE
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=SEEDS_COLUMNS)
        w.writeheader()
        for r in rows:
            w.writerow({c: (repr(r[c]) if isinstance(r[c], float) else r[c]) for c in SEEDS_COLUMNS})
    return path


def format_seeds(rows: list[dict], digits: int = 3) -> str:
    """One line per method: ``mean ± seed std [min, max]`` at every step."""
    lines = []
    for method in dict.fromkeys(r["method"] for r in rows):
        cells = [f"{r['step']}: {r['mean']:.{digits}f} ± {r['seed_std']:.{digits}f}"
                 for r in rows if r["method"] == method]
        n = next(r["n_seeds"] for r in rows if r["method"] == method)
        lines.append(f"{method:>12} mean ± std across {n} seeds  " + "  ".join(cells))
    return "\n".join(lines)
