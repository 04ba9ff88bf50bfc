"""HalfCheetahVel, the three families against environment steps (issue 20).

    .venv/bin/python results/families_cheetah/compare.py --maml runs/hcv_maml --rl2 runs/hcv_rl2 \
        --pearl runs/hcv_pearl_cpu --final-maml results/halfcheetah_vel/tuned/maml \
        --final-rl2 results/halfcheetah_vel/rl2 --final-pearl results/halfcheetah_vel/pearl_cpu --out results/families_cheetah

Curves (x: meta-training env steps, log scale):
* PEARL: its periodic meta-test (``meta_test/return_step<k>``, held-out tasks of the eval stream), k = --pearl-step
  (2: the third episode, the first with z from the posterior, the paper's protocol);
* MAML: the post-update training return of each iteration, on tasks drawn fresh from the training stream that
  iteration (unseen before it; adapted with the training step size), smoothed over --smooth iterations;
* RL²: the training return of the last episode of each trial, likewise smoothed.
Final figures (horizontal lines; 40 test tasks, the same for every method): MAML after each of --maml-steps gradient steps
at its validation-chosen step sizes, RL² and PEARL after their last episode of context.
Writes summary.txt and curve.png to --out: for each other method's final test return, the env steps at which
PEARL's meta-test first reaches it and from which it stays at or above it (a 10-task meta-test is noisy), each
with the ratio of that method's training env steps to it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from metarl.evaluation.plots import adaptation_csv_path, read_adaptation_csv, read_progress


def column(run: Path, name: str) -> tuple[np.ndarray, np.ndarray]:
    """(env steps, values) of the progress.csv rows where ``name`` is filled."""
    cols = read_progress(run)
    values = cols.get(name)
    if values is None or np.isnan(values).all():
        raise SystemExit(f"{run}/progress.csv: no column {name!r} with values")
    filled = ~np.isnan(values)
    return cols["env_steps_total"][filled], values[filled]


def final(eval_dir: Path, step: int | None) -> float:
    """Mean test return of an evaluation's own curve (its first: the evaluated run's) at ``step`` (None: its last)."""
    curves = read_adaptation_csv(adaptation_csv_path(eval_dir))
    rows = next(iter(curves.values()))
    return float(rows[-1 if step is None else step]["mean"])


def smooth(y: np.ndarray, n: int) -> np.ndarray:
    return np.array([y[max(0, i - n + 1): i + 1].mean() for i in range(len(y))])


def first_reach(x: np.ndarray, y: np.ndarray, level: float) -> float | None:
    """Env steps of the first meta-test at or above ``level`` (None: never)."""
    hit = np.flatnonzero(y >= level)
    return float(x[hit[0]]) if hit.size else None


def stays_above(x: np.ndarray, y: np.ndarray, level: float) -> float | None:
    """Env steps of the first meta-test from which every later one is at or above ``level``: a 10-task
    meta-test is noisy, so one lucky crossing is not taken as reaching the level."""
    below = np.flatnonzero(y < level)
    if not below.size:
        return float(x[0])
    i = below[-1] + 1
    return float(x[i]) if i < len(x) else None


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    for m in ("maml", "rl2", "pearl"):
        p.add_argument(f"--{m}", type=Path, required=True, help=f"{m} run directory")
        p.add_argument(f"--final-{m}", type=Path, required=True, help=f"{m} evaluation directory (adaptation.csv)")
    p.add_argument("--maml-steps", type=int, nargs="+", default=[1, 3],
                   help="MAML's final figures after these gradient steps (1 matches its training curve)")
    p.add_argument("--pearl-step", type=int, default=2)
    p.add_argument("--smooth", type=int, default=10)
    p.add_argument("--out", type=Path, required=True)
    a = p.parse_args(argv)
    curves = {
        "PEARL CPU-sized variant (meta-test, 10 held-out tasks)": column(a.pearl, f"meta_test/return_step{a.pearl_step}"),
        "MAML-TRPO (post-update training return)": column(a.maml, "post_update/return"),
        "RL² (training return, last episode)": column(a.rl2, "return/episode_1"),
    }
    for name in list(curves)[1:]:
        x, y = curves[name]
        curves[name] = (x, smooth(y, a.smooth))
    finals = {f"maml k={k}": final(a.final_maml, k) for k in a.maml_steps}
    finals.update(rl2=final(a.final_rl2, None), pearl=final(a.final_pearl, None))
    maml_budget = column(a.maml, "post_update/return")[0][-1]
    budgets = {**{f"maml k={k}": maml_budget for k in a.maml_steps}, "rl2": column(a.rl2, "return/episode_1")[0][-1],
               "pearl": column(a.pearl, f"meta_test/return_step{a.pearl_step}")[0][-1]}
    a.out.mkdir(parents=True, exist_ok=True)
    px, py = next(v for k, v in curves.items() if k.startswith("PEARL"))
    lines = []
    for m in [k for k in finals if k != "pearl"]:
        head = f"{m}: final test return {finals[m]:.1f} after {budgets[m] / 1e6:.1f}M training env steps; PEARL's meta-test"
        hit, kept = first_reach(px, py, finals[m]), stays_above(px, py, finals[m])
        if hit is None:
            lines.append(f"{head} does not reach it within {budgets['pearl'] / 1e6:.2f}M")
            continue
        lines.append(f"{head} first reaches it at {hit / 1e6:.2f}M ({budgets[m] / hit:.0f}x fewer), "
                     + (f"stays at or above it from {kept / 1e6:.2f}M ({budgets[m] / kept:.0f}x fewer)" if kept
                        else "but falls below it again at the last meta-test"))
    lines.append(f"pearl: final test return {finals['pearl']:.1f} after {budgets['pearl'] / 1e6:.2f}M training env steps")
    (a.out / "summary.txt").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(8, 5))
    colors = {"PEARL": "C2", "MAML-TRPO": "C0", "RL²": "C1"}
    for name, (x, y) in curves.items():
        c = colors[name.split(" ")[0]]
        ax.plot(x, y, color=c, label=name, marker="o" if c == "C2" else None, ms=3)
    for key, value in finals.items():
        c = {"pearl": "C2", "rl2": "C1"}.get(key, "C0")
        ax.axhline(value, color=c, ls="--" if key != f"maml k={a.maml_steps[0]}" else ":", lw=1,
                   label=f"{key.replace('k=', 'after k=')}: final, 40 test tasks")
    ax.set_xscale("log")
    ax.set_xlabel("meta-training environment steps")
    ax.set_ylabel("return per 200-step episode")
    ax.set_title("HalfCheetahVel: the three families against meta-training env steps")
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(a.out / "curve.png", dpi=120)


if __name__ == "__main__":
    main()
