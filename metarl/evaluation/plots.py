"""Plots (PNG, matplotlib's non-interactive Agg backend): adaptation curves, training curves and
few-shot regression fits.

* :func:`plot_curves` draws one evaluation's curves (mean over test tasks with the 95% CI band).
* :func:`plot_runs` overlays the ``eval/adaptation.csv`` curves of several runs (``metarl plot``).
* :func:`plot_training` draws pre/post-update training curves from ``progress.csv`` files
  (``metarl plot --training``).
* :func:`plot_regression_fits` draws 1-D regression fits before and after adaptation (the MAML
  paper's Figure 2).
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Sequence

import numpy as np


class PlotError(ValueError):
    """Missing or unusable input files (reported as one line by the CLI)."""


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _draw_curve(ax, rows: list[dict], label: str) -> None:
    steps = [int(r["step"]) for r in rows]
    mean = np.array([float(r["mean"]) for r in rows])
    (line,) = ax.plot(steps, mean, marker="o", label=label)
    low = np.array([float(r["ci95_low"]) for r in rows])
    high = np.array([float(r["ci95_high"]) for r in rows])
    if np.all(np.isfinite(low)) and np.all(np.isfinite(high)):  # a single task has no CI
        ax.fill_between(steps, low, high, alpha=0.15, color=line.get_color())  # the band in its line's colour


def _integer_steps(ax) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def plot_curves(curves: dict[str, list[dict]], metric: str, title: str, path: Path, x_label: str = "gradient steps") -> None:
    """One evaluation's adaptation curves: ``curves`` maps a method to its adaptation.csv rows."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for method, rows in curves.items():
        _draw_curve(ax, rows, method)
    ax.set_xlabel(x_label)
    _integer_steps(ax)
    ax.set_ylabel(metric + " (mean over test tasks, 95% CI)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_curves_by_group(by_group: dict[str, dict[str, list[dict]]], metric: str, title: str, path: Path,
                         x_label: str = "gradient steps") -> None:
    """One panel per task group (Meta-World: held-out task class), each with every method's curve."""
    plt = _pyplot()
    n = len(by_group)
    cols = min(n, 5)
    rows_ = math.ceil(n / cols)
    fig, axes = plt.subplots(rows_, cols, figsize=(3.6 * cols, 3.0 * rows_), squeeze=False, sharey=True)
    for ax, (group, curves) in zip(axes.flat, by_group.items()):
        for method, rows in curves.items():
            _draw_curve(ax, rows, method)
        ax.set_title(f"{group} (n={curves[next(iter(curves))][0]['n_tasks']})", fontsize="small")
        ax.set_xlabel(x_label)
        _integer_steps(ax)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    axes[0][0].set_ylabel(metric)
    axes[0][0].legend(fontsize="x-small")
    fig.suptitle(title)
    _save(fig, path)


# ------------------------------------------------------------------ several runs' adaptation curves
def adaptation_csv_path(source: Path, curves: str = "adaptation") -> Path:
    """A run directory, its eval directory or a curves file -> the ``<curves>.csv`` path (``adaptation``,
    or a rate such as ``success_rate`` written beside it)."""
    name = f"{curves}.csv"
    for candidate in (source / "eval" / name, source / name, source):
        if candidate.is_file():
            return candidate
    raise PlotError(f"{source}: no {curves} curves found (expected {source}/eval/{name}; run `metarl evaluate {source}` first)")


def read_adaptation_csv(path: Path) -> dict[str, list[dict]]:
    """adaptation.csv -> {method: rows ordered by step}."""
    curves: dict[str, list[dict]] = {}
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        missing = {"method", "step", "mean", "ci95_low", "ci95_high"} - set(reader.fieldnames or [])
        if missing:
            raise PlotError(f"{path}: not an adaptation.csv (missing columns {sorted(missing)})")
        for row in reader:
            curves.setdefault(row["method"], []).append(row)
    for rows in curves.values():
        rows.sort(key=lambda r: int(r["step"]))
    return curves


def adaptation_means(source: str | Path, method: str) -> list[float]:
    """The per-step ``mean`` column of one method's curve in a run's / eval dir's adaptation.csv."""
    path = adaptation_csv_path(Path(source))
    curves = read_adaptation_csv(path)
    if method not in curves:
        raise PlotError(f"{path}: no curve named {method!r} (it has {sorted(curves)})")
    return [float(r["mean"]) for r in curves[method]]


def check_same_actions(sources: Sequence[str | Path]) -> None:
    """Refuse to put side by side evaluations scored with different actions (``actions`` in their
    summary.json: ``sampled``, or ``mean`` with eval.deterministic); summaries without it pass."""
    scored = {}
    for source in map(Path, sources):
        summary_path = adaptation_csv_path(source).parent / "summary.json"
        if summary_path.is_file():
            actions = json.loads(summary_path.read_text()).get("actions")
            if actions is not None:
                scored.setdefault(actions, str(source))
    if len(scored) > 1:
        raise PlotError("cannot compare evaluations scored with different actions: "
                        + ", ".join(f"{src} ({a} actions)" for a, src in sorted(scored.items()))
                        + "; evaluate all with the same eval.deterministic")


def _run_label(source: Path) -> str:
    """The run directory's name, whichever of run dir / eval dir / csv file was given."""
    source = source.resolve()
    if source.is_file():
        source = source.parent
    if source.name == "eval":
        source = source.parent
    return source.name


def select_curves(sources: Sequence[str | Path], methods: Sequence[str] | None = None,
                  curves_name: str = "adaptation") -> tuple[list[tuple[str, list[dict]]], set, set]:
    """The curves to overlay: ``[(label "run: method", rows)]`` from every source, keeping only
    ``methods`` when given, plus the metrics and x labels their summaries declare. A method is
    ``NAME`` (that method in every source) or ``RUN:NAME`` (only in the source labelled RUN, the
    label the legend shows), so two evaluations holding the same method can each give one curve."""
    curves, metrics, x_labels, seen = [], set(), set(), set()
    wanted = set(methods or ())
    check_same_actions(sources)
    for source in map(Path, sources):
        csv_path = adaptation_csv_path(source, curves_name)
        summary_path = csv_path.parent / "summary.json"
        if summary_path.is_file():
            summary = json.loads(summary_path.read_text())
            metrics.add(summary.get("metric", "value") if curves_name == "adaptation" else curves_name)
            x_labels.add(summary.get("x_label", "gradient steps"))
        run = _run_label(source)
        for method, rows in read_adaptation_csv(csv_path).items():
            seen.update((method, f"{run}:{method}"))
            if methods is None or method in wanted or f"{run}:{method}" in wanted:
                curves.append((f"{run}: {method}", rows))
    missing = sorted(wanted - seen)
    if missing:
        raise PlotError(f"--methods {' '.join(missing)}: no such method in {', '.join(map(str, sources))}; "
                        f"they hold {', '.join(sorted(m for m in seen if ':' in m))}")
    return curves, metrics, x_labels


def x_axis_label(x_labels: set[str]) -> str:
    """The sources' x-axis label; when they differ (MAML's gradient steps beside RL²'s episodes in a
    trial), every one of them, so the axis says that it puts unlike things side by side."""
    return " / ".join(sorted(x_labels)) if x_labels else "step"


def plot_runs(sources: Sequence[str | Path], out: str | Path, title: str | None = None,
              methods: Sequence[str] | None = None, ylim: Sequence[float] | None = None,
              curves_name: str = "adaptation") -> Path:
    """Overlay the adaptation curves of several runs in one PNG; labels are ``run: method``.
    ``curves_name``: ``adaptation`` (the metric's curves) or a rate written beside them, e.g. ``success_rate``.
    ``methods`` keeps only the curves of those methods (e.g. leave out ``random``); ``ylim`` (low,
    high) fixes the y axis, e.g. when one curve diverges and would flatten the others."""
    if not sources:
        raise PlotError("plot needs at least one run directory")
    curves, metrics, x_labels = select_curves(sources, methods, curves_name)
    if len(metrics) > 1:
        raise PlotError(f"cannot overlay curves of different metrics {sorted(metrics)} on one axis")
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for label, rows in curves:
        _draw_curve(ax, rows, label)
    metric = metrics.pop() if metrics else "value"
    ax.set_xlabel(x_axis_label(x_labels))
    _integer_steps(ax)
    ax.set_ylabel(metric + " (mean over test tasks, 95% CI)")
    ax.set_title(title or "adaptation curves")
    if ylim is not None:
        ax.set_ylim(*ylim)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    return _save(fig, out)


def _save(fig, out) -> Path:
    """Write ``fig`` as a PNG at ``out`` (parents created) and free it."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


# ------------------------------------------------------------------ training curves
#: progress.csv columns drawn by plot_training, per metric, in legend order.
TRAINING_SERIES = {
    "return": ["pre_update/return", "post_update/return", "train/return", "return/trial"],
    "loss": ["pre_update/loss", "post_update/loss", "train/loss"],
    # Meta-World (per-step success indicators); RL²'s first and last episode of a trial are added per run
    "success_rate": ["pre_update/success_rate", "post_update/success_rate"],
}
#: legend label and line style of each training column (MAML / pretrain, oracle, RL²)
_SERIES_STYLE = {"pre_update": ("pre-update", "--"), "post_update": ("post-update", "-"), "train": ("train", "-"),
                 "return/trial": ("return per trial", "-")}


def read_progress(run_dir: Path) -> dict[str, np.ndarray]:
    """progress.csv as columns of floats (empty cells are NaN)."""
    path = run_dir / "progress.csv"
    if not path.is_file():
        raise PlotError(f"{run_dir}: no progress.csv (not a training run directory, or it has not logged yet)")
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise PlotError(f"{path} has no rows yet")
    return {k: np.array([float(r[k]) if r.get(k) not in (None, "") else math.nan for r in rows]) for k in rows[0]}


def plot_training(run_dirs: Sequence[str | Path], out: str | Path, x: str = "iteration") -> Path:
    """Training curves of several runs from their progress.csv, against ``x``.

    x: ``iteration`` or ``env_steps`` (environment steps so far: compares algorithms whose
    iterations differ in cost). One panel per metric present (return, loss) with the pre-update
    (dashed) and post-update (solid) curves, the oracle's training return or RL²'s return per trial
    (see :data:`TRAINING_SERIES`); when the runs logged a
    periodic meta-test (``train.eval_every``: columns ``meta_test/<metric>_step<k>``) a second panel
    shows it before adaptation (dashed) and after the last step (solid). One colour per run.
    """
    if x not in ("iteration", "env_steps"):
        raise PlotError(f"--x must be iteration or env_steps, got {x!r}")
    if not run_dirs:
        raise PlotError("plot --training needs at least one run directory")
    runs = [(Path(d), read_progress(Path(d))) for d in run_dirs]
    for run_dir, prog in runs:
        if x == "env_steps" and "env_steps_total" not in prog:
            raise PlotError(f"{run_dir}/progress.csv has no env_steps_total column")

    def meta_cols(prog, metric):
        prefix = f"meta_test/{metric}_step"
        cols = sorted((c for c in prog if c.startswith(prefix) and np.isfinite(prog[c]).any()), key=lambda c: int(c[len(prefix):]))
        return [(int(c[len(prefix):]), c) for c in cols]

    def series_cols(prog, metric):
        cols = [c for c in TRAINING_SERIES[metric] if c in prog]
        if metric == "success_rate":  # RL²: success rate of the first and the last episode of a trial
            episodes = sorted((c for c in prog if c.startswith("success_rate/episode_")), key=lambda c: int(c.rsplit("_", 1)[1]))
            cols += list(dict.fromkeys(episodes[:1] + episodes[-1:]))
        return cols

    panels = []
    for metric in TRAINING_SERIES:
        if any(series_cols(prog, metric) for _, prog in runs):
            panels.append(("training", metric))
        if any(meta_cols(prog, metric) for _, prog in runs):
            panels.append(("meta-test", metric))
    if not panels:
        raise PlotError(
            f"no training curve columns ({', '.join(c for cs in TRAINING_SERIES.values() for c in cs)}) in "
            + ", ".join(str(d / 'progress.csv') for d, _ in runs)
        )
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(6.5 * len(panels), 4.5), squeeze=False)
    for ax, (kind, metric) in zip(axes[0], panels):
        for i, (run_dir, prog) in enumerate(runs):
            xs = prog["iteration"] if x == "iteration" else prog["env_steps_total"]
            name, color = _run_label(run_dir), f"C{i % 10}"
            if kind == "training":
                series = [(*_SERIES_STYLE.get(c, _SERIES_STYLE.get(c.split("/")[0], (c, "-"))), c)
                          for c in series_cols(prog, metric)]
            else:
                steps = meta_cols(prog, metric)
                picked = [steps[0], steps[-1]] if len(steps) > 1 else steps
                series = [(f"step {k}", "--" if k == 0 else "-", c) for k, c in picked]
            for label, style, col in series:
                ok = np.isfinite(prog[col])
                ax.plot(xs[ok], prog[col][ok], linestyle=style, color=color, marker="." if kind == "meta-test" else None,
                        label=f"{name}: {label}")
        ax.set_xlabel("iteration" if x == "iteration" else "environment steps")
        ax.set_ylabel(metric if kind == "training" else f"{metric} (mean over held-out tasks)")
        ax.set_title(f"{kind} {metric}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    return _save(fig, out)


# ------------------------------------------------------------------ 1-D regression fits
def plot_regression_fits(fits: dict[str, list[dict]], path: Path, title: str = "") -> None:
    """Few-shot 1-D regression fits: one row per method, one column per task.

    ``fits[method][i]`` holds, for task i: ``x`` / ``y`` (dense query points of the true function,
    sorted by x), ``support_x`` / ``support_y`` (the K points adapted on), ``predictions``
    ({steps: predictions at x}) and ``label`` (the task).
    """
    plt = _pyplot()
    methods = list(fits)
    n_tasks = max(len(v) for v in fits.values())
    fig, axes = plt.subplots(len(methods), n_tasks, figsize=(4 * n_tasks, 3.2 * len(methods)), squeeze=False)
    for r, method in enumerate(methods):
        for c, fit in enumerate(fits[method]):
            ax = axes[r][c]
            ax.plot(fit["x"], fit["y"], color="black", linewidth=2, label="ground truth")
            for i, (steps, pred) in enumerate(fit["predictions"].items()):
                ax.plot(fit["x"], pred, linestyle="--" if steps == 0 else "-", color=f"C{i}",
                        label="before adaptation" if steps == 0 else f"after {steps} step{'s' if steps > 1 else ''}")
            ax.scatter(fit["support_x"], fit["support_y"], color="red", marker="^", zorder=5,
                       label=f"{len(fit['support_x'])} support points")
            ax.set_title(fit["label"], fontsize="small")
            ax.grid(alpha=0.3)
            if c == 0:
                ax.set_ylabel(method)
            if r == 0 and c == 0:
                ax.legend(fontsize="x-small")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
