"""Aggregate the periodic held-out meta-tests of the runs of run.sh into one curve per method.

    .venv/bin/python results/promp_navigation/aggregate.py [--runs runs/promp_nav ...] [--out results/promp_navigation]

Also used by results/families_navigation/ (MAML against PEARL and RL², ``--log-x``). Reads
RUNS/<method>_s<seed>/progress.csv in every RUNS directory given, or only the ``--methods`` named: the
rows with a meta-test, meta_test/return_step<k>, the mean return over the held-out tasks after k inner
steps (PEARL and RL²: after k episodes of experience). Writes, into OUT:

* ``curve.csv``: per method and meta-test iteration, the environment steps (mean over the method's
  seeds; they differ by under 1% because navigation episodes can end early), the number of seeds, and
  for every step k the mean over seeds of the held-out return, its sample std over seeds, min and max;
* ``final.csv``: per method and seed, the held-out return after every step k averaged over the last
  ``--last`` meta-tests (the end of training, less noisy than one meta-test), and the area under the
  step-1 curve (mean over all meta-tests: rewards learning speed as well), and the environment steps
  at the first meta-test whose return after step ``--threshold-step`` (default 1) reached ``--threshold``;
* ``curve.png`` (``--png``; ``--plot-methods`` to show some): held-out return after 1 step (left) and 3
  steps (right) against environment steps, mean over seeds with a band of ± one std over seeds, thin
  lines for the seeds.

Runs that stopped before the longest run of their method's last meta-test (unfinished: resume them with
``metarl train --resume RUN``, or run.sh again) are listed and left out of the curves and final scores,
so every method is compared on the same env-step budget.
"""

from __future__ import annotations

import argparse
import csv
import math
import re
from collections import defaultdict
from pathlib import Path

import numpy as np

LABELS = {"maml": "MAML-TRPO", "promp": "ProMP", "emaml": "E-MAML-TRPO", "emamlw": "E-MAML-TRPO, weight 1/2000",
          "pearl": "PEARL", "pearllong": "PEARL, continued to 600 iterations", "rl2": "RL²"}


def read_runs(runs: Path, methods: list[str] | None = None,
              out: dict | None = None) -> dict[str, dict[int, dict[str, np.ndarray]]]:
    """{method: {seed: {column: values over the meta-test rows}}}, added to ``out`` if given."""
    out = defaultdict(dict) if out is None else out
    for d in sorted(runs.iterdir()):
        m = re.fullmatch(r"(\w+?)_s(\d+)", d.name)
        if not m or not (d / "progress.csv").is_file() or (methods and m.group(1) not in methods):
            continue
        if int(m.group(2)) in out[m.group(1)]:
            raise SystemExit(f"{d}: {m.group(1)} seed {m.group(2)} was already read from another --runs directory")
        with open(d / "progress.csv", newline="") as f:
            rows = [r for r in csv.DictReader(f) if r.get("meta_test/return_step1") not in (None, "")]
        if not rows:
            continue
        cols = ["iteration", "env_steps_total"] + sorted(k for k in rows[0] if k.startswith("meta_test/return_step"))
        out[m.group(1)][int(m.group(2))] = {c: np.array([float(r[c]) for r in rows]) for c in cols}
    return out


def steps_of(run: dict[str, np.ndarray]) -> list[int]:
    return sorted(int(c.rsplit("step", 1)[1]) for c in run if c.startswith("meta_test/return_step"))


def aggregate(runs: dict[int, dict[str, np.ndarray]]) -> list[dict]:
    """Rows of curve.csv for one method: the iterations every seed reached."""
    seeds = sorted(runs)
    common = sorted(set.intersection(*(set(runs[s]["iteration"].astype(int)) for s in seeds)))
    ks = steps_of(runs[seeds[0]])
    rows = []
    for it in common:
        idx = {s: int(np.flatnonzero(runs[s]["iteration"] == it)[0]) for s in seeds}
        row = {"iteration": it, "env_steps": float(np.mean([runs[s]["env_steps_total"][idx[s]] for s in seeds])),
               "n_seeds": len(seeds)}
        for k in ks:
            v = np.array([runs[s][f"meta_test/return_step{k}"][idx[s]] for s in seeds])
            row.update({f"step{k}_mean": v.mean(), f"step{k}_std": v.std(ddof=1) if len(v) > 1 else math.nan,
                        f"step{k}_min": v.min(), f"step{k}_max": v.max()})
        rows.append(row)
    return rows


def final_scores(runs: dict[int, dict[str, np.ndarray]], last: int, threshold: float, threshold_step: int = 1) -> list[dict]:
    out = []
    for s in sorted(runs):
        r = runs[s]
        reached = np.flatnonzero(r[f"meta_test/return_step{threshold_step}"] >= threshold)
        out.append({"seed": s, "iterations": int(r["iteration"][-1]), "env_steps": r["env_steps_total"][-1],
                    **{f"step{k}_last{last}": r[f"meta_test/return_step{k}"][-last:].mean() for k in steps_of(r)},
                    "step1_area": r["meta_test/return_step1"].mean(),
                    "env_steps_to_threshold": r["env_steps_total"][reached[0]] if reached.size else math.nan})
    return out


def write_csv(path: Path, rows: list[dict]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        for r in rows:
            w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})


def plot(curves: dict[str, list[dict]], runs, path: Path, title: str, log_x: bool = False,
         panel: str = "after {k} inner step{s}") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(13, 4.8), sharey=True)
    for ax, k in zip(axes, (1, 3)):
        for i, (method, rows) in enumerate(curves.items()):
            color = f"C{i}"
            x = np.array([r["env_steps"] for r in rows]) / 1e6
            mean = np.array([r[f"step{k}_mean"] for r in rows])
            std = np.nan_to_num(np.array([r[f"step{k}_std"] for r in rows]))
            n = rows[0]["n_seeds"] if rows else 0
            what = f"mean of {n} seeds, band ± 1 std" if n > 1 else "1 seed"
            ax.plot(x, mean, color=color, label=f"{LABELS.get(method, method)} ({what})")
            ax.fill_between(x, mean - std, mean + std, color=color, alpha=0.2)
            for s, r in runs[method].items():
                ax.plot(r["env_steps_total"] / 1e6, r[f"meta_test/return_step{k}"], color=color, alpha=0.35, lw=0.7)
        ax.set_xlabel("environment steps (millions" + (", log scale)" if log_x else ")"))
        if log_x:
            ax.set_xscale("log")
        ax.set_title(panel.format(k=k, s="s" if k > 1 else ""))
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("return on held-out tasks (mean over tasks)")
    axes[0].legend(fontsize="small", loc="lower right")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", nargs="+", default=["runs/promp_nav"], help="directories of <method>_s<seed> runs")
    p.add_argument("--methods", nargs="+", metavar="METHOD", help="only these methods' runs (default: all)")
    p.add_argument("--out", default="results/promp_navigation")
    p.add_argument("--last", type=int, default=5, help="meta-tests averaged for the final score")
    p.add_argument("--plot-methods", nargs="+", metavar="METHOD", help="methods in the plot (default: all)")
    p.add_argument("--png", default="curve.png", help="plot file name in OUT")
    p.add_argument("--threshold", type=float, default=-15.0, help="return whose first reaching is reported")
    p.add_argument("--threshold-step", type=int, default=1, help="the step k whose return --threshold applies to")
    p.add_argument("--title", default="2D navigation: post-adaptation return on 40 held-out tasks")
    p.add_argument("--panel", default="after {k} inner step{s}", help="panel title; {k} is the step, {s} a plural s")
    p.add_argument("--log-x", action="store_true", help="log-scale environment steps (methods of unlike budgets)")
    args = p.parse_args()
    runs: dict = defaultdict(dict)
    for d in args.runs:
        read_runs(Path(d), args.methods, runs)
    runs = {m: seeds for m, seeds in runs.items() if seeds}
    if not runs:
        raise SystemExit(f"no runs with a periodic meta-test under {' '.join(args.runs)}")
    for m in list(runs):
        target = max(int(r["iteration"][-1]) for r in runs[m].values())
        for seed in [s for s, r in runs[m].items() if int(r["iteration"][-1]) < target]:
            print(f"unfinished, left out: {m}_s{seed} (iteration {int(runs[m][seed]['iteration'][-1])} of {target})")
            del runs[m][seed]
        if not runs[m]:
            del runs[m]
    order = [m for m in LABELS if m in runs] + sorted(set(runs) - set(LABELS))
    curves = {m: aggregate(runs[m]) for m in order}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_csv(out / "curve.csv", [{"method": m, **r} for m in order for r in curves[m]])
    finals = [{"method": m, **r} for m in order
              for r in final_scores(runs[m], args.last, args.threshold, args.threshold_step)]
    write_csv(out / "final.csv", finals)
    shown = [m for m in order if args.plot_methods is None or m in args.plot_methods]
    plot({m: curves[m] for m in shown}, runs, out / args.png, args.title, args.log_x, args.panel)
    key = f"step1_last{args.last}"
    for m in order:
        f = [r for r in finals if r["method"] == m]
        v = np.array([r[key] for r in f])
        a = np.array([r["step1_area"] for r in f])
        t = np.array([r["env_steps_to_threshold"] for r in f]) / 1e6
        print(f"{LABELS.get(m, m):>12}: {len(f)} seeds, iterations {[r['iterations'] for r in f]}; after 1 step, last "
              f"{args.last} meta-tests: mean {v.mean():.2f}, std over seeds {v.std(ddof=1) if len(v) > 1 else math.nan:.2f}, "
              f"per seed {np.round(v, 2).tolist()}; mean over all meta-tests {a.mean():.2f} "
              f"(per seed {np.round(a, 2).tolist()}); millions of env steps to reach {args.threshold:g} after "
              f"{args.threshold_step} step{'s' if args.threshold_step > 1 else ''}: "
              f"per seed {np.round(t, 2).tolist()}")
        per_k = [(c, np.array([r[c] for r in f])) for c in f[0] if re.fullmatch(rf"step\d+_last{args.last}", c)]
        print(" " * 14 + "last meta-tests by step, mean ± std over seeds: " + ", ".join(
            f"{c.split('_')[0]} {v.mean():.1f} ± {v.std(ddof=1) if len(v) > 1 else math.nan:.1f}" for c, v in per_k))
    print(f"wrote {out / 'curve.csv'}, {out / 'final.csv'}, {out / args.png}")


if __name__ == "__main__":
    main()
