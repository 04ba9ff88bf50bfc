"""Adaptation curves: performance on held-out tasks after 0, 1, ..., K gradient steps.

For every method and step k the evaluator reports the mean over test tasks of the per-task
performance (mean episode return for RL, query-set loss for supervised tasks), its sample standard
deviation and a Student-t 95% confidence interval. Test tasks come from their own seed stream
(``eval.seed``), never from the training stream, and evaluation uses its own collector, so
evaluating never changes a training run's random streams.

Files written by ``metarl evaluate RUN_DIR`` into ``RUN_DIR/eval/``: ``adaptation.csv`` (one row per
method and step: method, step, mean, std, ci95_low, ci95_high, n_tasks), ``adaptation_per_task.csv``
(method, step, task, value), ``summary.json``, ``adaptation.png`` and, for supervised tasks with a 1-D
input and a 1-D output (the sinusoid), ``sinusoid_fits.png`` (see :func:`regression_fits`).

:func:`meta_test_scalars` is the periodic meta-test of ``metarl train`` (``train.eval_every``).
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import replace
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from metarl.sampling.backends import make_evaluation_collector
from metarl.sampling.collector import Collector
from metarl.evaluation.plots import plot_curves, plot_curves_by_group

CSV_COLUMNS = ["method", "step", "mean", "std", "ci95_low", "ci95_high", "n_tasks"]

# Two-sided 95% Student-t quantiles for 1..30 degrees of freedom.
_T975 = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145,
         2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048,
         2.045, 2.042]


def t_quantile_975(df: int) -> float:
    """0.975 quantile of Student's t with ``df`` degrees of freedom."""
    if df < 1:
        return float("nan")
    if df <= 30:
        return _T975[df - 1]
    z = 1.959963984540054  # Cornish-Fisher expansion around the normal quantile (error < 1e-4 for df > 30)
    return z + (z**3 + z) / (4 * df) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)


def summarize(values: np.ndarray) -> dict[str, float]:
    """mean, sample std and t-based 95% CI of per-task values."""
    values = np.asarray(values, dtype=np.float64)
    n = values.size
    mean = float(values.mean())
    std = float(values.std(ddof=1)) if n > 1 else 0.0
    half = t_quantile_975(n - 1) * std / math.sqrt(n) if n > 1 else float("nan")
    return {"mean": mean, "std": std, "ci95_low": mean - half, "ci95_high": mean + half, "n_tasks": n}


def step_line(name: str, what: str, values: Sequence[float], digits: int) -> str:
    """One printed line of per-step values: ``name what by step  0: v0  1: v1 ...``."""
    return f"{name:>12} {what} by step  " + "  ".join(f"{k}: {v:.{digits}f}" for k, v in enumerate(values))


def gap_fractions(method: np.ndarray, low: np.ndarray, high: np.ndarray, low_step: int | None = None) -> list[float]:
    """(method_k - low_k) / (high_k - low_k) for every step k, from per-step means; with ``low_step`` = j
    the low method's step-j value replaces low_k (j = 0: the low method not fine-tuned at all).

    ``high`` may hold one value (an oracle does not adapt) or one per step; ``low`` and ``method``
    one per step, the same number."""
    method, low, high = (np.asarray(x, dtype=float) for x in (method, low, high))
    if method.shape != low.shape or high.shape not in (method.shape, (1,)):
        raise ValueError(f"gap fractions need per-step means of equal length: method {method.shape}, "
                         f"low {low.shape}, high {high.shape} (or one high value)")
    if low_step is not None:
        if not 0 <= low_step < len(low):
            raise ValueError(f"low_step={low_step} is not a step of the low curve (0..{len(low) - 1})")
        low = np.full_like(low, low[low_step])
    return [float(x) for x in (method - low) / (high - low)]


def gap_closed(
    curves: dict[str, np.ndarray], low: str = "pretrain", high: str = "oracle", low_step: int | None = None
) -> dict[str, list[float]]:
    """Fraction of the ``low``-to-``high`` gap each other method closes, per step (:func:`gap_fractions`
    on the per-step means), with the ``low`` method fine-tuned for the same k steps, or, with
    ``low_step`` = j, held at its step-j value.

    The MAML paper's way of comparing cheetah results across return scales (pretrained -> oracle).
    Empty unless both methods are among the curves; ``random`` is not reported.
    """
    if low not in curves or high not in curves:
        return {}
    lo, hi = curves[low].mean(axis=1), curves[high].mean(axis=1)
    return {
        method: gap_fractions(values.mean(axis=1), lo, hi, low_step)
        for method, values in curves.items()
        if method not in (low, high, "random")
    }


def gap_from_csvs(method_csv, low_csv, high_csv, method: str | None = None, low: str = "pretrain",
                  high: str = "oracle") -> dict:
    """Gap fractions from the ``mean`` columns of adaptation CSVs written by separate evaluations
    (e.g. each method at the test-time step size chosen for it on validation tasks).

    Each source is a run directory, an eval directory or an adaptation.csv; ``method``, ``low`` and
    ``high`` name the curve to take from each. ``method`` None takes the first curve of its CSV:
    `metarl evaluate` writes the evaluated run's first (maml, promp, rl2, ...). Curves evaluated for
    different numbers of steps are compared over the steps all of them hold; a one-step ``high`` curve
    applies to every step. Returns the method's name, the means and both fractions (``low`` fine-tuned
    the same k steps, and ``low`` not fine-tuned)."""
    from metarl.evaluation.plots import (
        PlotError, adaptation_csv_path, adaptation_means, check_same_actions, read_adaptation_csv,
    )

    check_same_actions([method_csv, low_csv, high_csv])
    if method is None:
        method = next(iter(read_adaptation_csv(adaptation_csv_path(Path(method_csv)))), None)
        if method is None:
            raise PlotError(f"{method_csv}: its adaptation.csv holds no curve")
    m = adaptation_means(method_csv, method)
    lo = adaptation_means(low_csv, low)
    hi = adaptation_means(high_csv, high)
    steps = min(len(m), len(lo))
    if len(hi) > 1:
        steps = min(steps, len(hi))
        hi = hi[:steps]
    m, lo = m[:steps], lo[:steps]
    return {
        "method": method,
        "means": {method: m, low: lo, high: hi},
        "gap_closed": gap_fractions(m, lo, hi),
        "gap_closed_vs_low_step0": gap_fractions(m, lo, hi, low_step=0),
    }


def write_results(out_dir: Path, curves: dict[str, np.ndarray], metric: str, title: str, x_label: str = "gradient steps",
                  actions: str = "sampled") -> dict:
    """adaptation.csv, adaptation_per_task.csv, summary.json and adaptation.png in ``out_dir``;
    ``actions`` (``sampled`` or ``mean``) says how every method was scored."""
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for method, values in curves.items():
        for step in range(values.shape[0]):
            rows.append({"method": method, "step": step, **summarize(values[step])})
    with open(out_dir / "adaptation.csv", "w", newline="") as f:
        w = csv.DictWriter(f, CSV_COLUMNS)
        w.writeheader()
        w.writerows(rows)
    with open(out_dir / "adaptation_per_task.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["method", "step", "task", metric])
        for method, values in curves.items():
            for step in range(values.shape[0]):
                for task, v in enumerate(values[step]):
                    w.writerow([method, step, task, repr(float(v))])
    summary = {"metric": metric, "title": title, "x_label": x_label, "actions": actions, "curves": {m: [r for r in rows if r["method"] == m] for m in curves}}
    gaps = gap_closed(curves)
    if gaps:
        summary["gap_closed"] = gaps
        # against the pretrained policy as trained (no fine-tuning): robust to a step size that
        # makes the pretrained policy worse when it is fine-tuned
        summary["gap_closed_vs_pretrain_step0"] = gap_closed(curves, low_step=0)
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    plot_curves(summary["curves"], metric, title, out_dir / "adaptation.png", x_label)
    return summary


def adaptation_curves(algo, tasks: Sequence, collector: Collector, ev) -> dict[str, np.ndarray]:
    """Every curve an algorithm gives from one evaluation: its metric's, and where the env records
    per-step indicators, ``<key>_rate`` beside it (e.g. ``success_rate``); each [steps + 1, n_tasks]."""
    fn = getattr(algo, "adaptation_curves", None)
    if fn is not None:
        return fn(tasks, collector, ev)
    return {getattr(algo, "metric", "return"): algo.adaptation_curve(tasks, collector, ev)}


def write_rate_results(out_dir: Path, key: str, curves: dict[str, np.ndarray], title: str, x_label: str,
                       groups: Sequence[str] | None = None) -> dict:
    """``<key>.csv`` / ``<key>_per_task.csv`` / ``<key>.png`` (as adaptation.*) for a rate curve such as
    success_rate, and with task ``groups`` (Meta-World: each test task's class) ``<key>_by_group.csv``
    (column ``group``) and ``<key>_by_group.png``, one panel per group. Returns the summary entries."""
    rows = [{"method": m, "step": j, **summarize(v[j])} for m, v in curves.items() for j in range(v.shape[0])]
    with open(out_dir / f"{key}.csv", "w", newline="") as f:
        w = csv.DictWriter(f, CSV_COLUMNS)
        w.writeheader()
        w.writerows(rows)
    with open(out_dir / f"{key}_per_task.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["method", "step", "task", "group", key])
        for m, v in curves.items():
            for j in range(v.shape[0]):
                for i, value in enumerate(v[j]):
                    w.writerow([m, j, i, "" if groups is None else groups[i], repr(float(value))])
    out = {key: {m: [r for r in rows if r["method"] == m] for m in curves}}
    plot_curves(out[key], key, title, out_dir / f"{key}.png", x_label)
    if groups is not None:
        names = list(dict.fromkeys(groups))
        index = np.array(groups)
        by_group = {g: {m: [{"method": m, "group": g, "step": j, **summarize(v[j][index == g])}
                            for j in range(v.shape[0])] for m, v in curves.items()} for g in names}
        with open(out_dir / f"{key}_by_group.csv", "w", newline="") as f:
            w = csv.DictWriter(f, ["method", "group", *CSV_COLUMNS[1:]])
            w.writeheader()
            for g in names:
                for m in curves:
                    w.writerows(by_group[g][m])
        plot_curves_by_group(by_group, key, title, out_dir / f"{key}_by_group.png", x_label)
        out[f"{key}_by_group"] = by_group
    return out


def eval_collector(cfg, ev) -> Collector:
    """A fresh evaluation collector (seed ``ev.seed``) on the run's backend (see
    :func:`~metarl.sampling.backends.make_evaluation_collector`: a Ray run evaluates in this process).
    Every method gets a fresh collector with the same seed: common random numbers across methods."""
    return make_evaluation_collector(cfg.env.id, backend=cfg.collector.backend, num_workers=cfg.collector.num_workers,
                                     num_threads=cfg.collector.num_threads, seed=ev.seed, env_kwargs=cfg.env.kwargs,
                                     horizon=cfg.env.horizon, rescale_actions=cfg.env.rescale_actions)


#: gradient steps shown in the regression-fit figure (the MAML paper's Figure 2: before, 1 and 10 steps)
FIT_STEPS = (0, 1, 10)
#: test tasks (panels) in the regression-fit figure
FIT_TASKS = 3
#: query points per task drawn as the true function in the regression-fit figure
FIT_QUERY_POINTS = 200
#: file name of the regression-fit figure in the eval directory
FITS_FILE = "sinusoid_fits.png"


def supports_regression_fits(collector: Collector) -> bool:
    """Supervised task with a 1-D input and a 1-D prediction (a curve can be drawn)."""
    def dim(space):
        return int(np.prod(space.shape)) if getattr(space, "shape", None) is not None else -1

    return collector.supervised and dim(collector.observation_space) == 1 and dim(collector.action_space) == 1


def regression_fits(algo, tasks: Sequence, collector: Collector, ev, steps: Sequence[int] = FIT_STEPS) -> list[dict]:
    """Predictions of a gradient-based method on 1-D regression tasks before and after adaptation.

    For every task: ``FIT_QUERY_POINTS`` fresh samples of the task (inputs and targets, sorted by x)
    stand for the true function, whatever the task family; the model adapts on K support samples
    (``ev.episodes_per_task`` or ``maml.episodes_per_task``) with the test-time step sizes (a
    Meta-SGD run: its learned rates), and its predictions at the query inputs are recorded after
    each of ``steps`` inner steps.
    """
    from metarl.algos.maml import InnerData, test_time_inner_lrs
    from metarl.common.policies import expand_params, policy_forward

    cfg = algo.cfg
    m = algo.evaluator(collector)
    M = len(tasks)
    support = m.collect_inner(tasks, None, ev.episodes_per_task or cfg.episodes_per_task).batch
    query = m.collect_inner(tasks, None, FIT_QUERY_POINTS).batch
    last = max(steps)
    lrs = test_time_inner_lrs(cfg, ev, last, learned=algo.inner_lrs is not None)
    params = None
    preds: dict[int, torch.Tensor] = {}
    for j in range(last + 1):
        if j in steps:
            with torch.no_grad():
                p = params if params is not None else expand_params(algo.policy.params(), M)
                preds[j] = policy_forward(algo.policy, query.obs, p, M)
        if j < last:
            params = m.inner_step_detached(params, InnerData(support, None), M, lr=lrs[j])

    def per_task(t: torch.Tensor, i: int, n: int) -> np.ndarray:
        return t.reshape(-1)[i * n:(i + 1) * n].detach().cpu().numpy()

    out = []
    K = support.num_columns // M
    Q = query.num_columns // M
    for i, task in enumerate(tasks):
        x = per_task(query.obs, i, Q)
        order = np.argsort(x)
        out.append({
            "label": _task_label(task),
            "x": x[order],
            "y": per_task(query.targets, i, Q)[order],
            "support_x": per_task(support.obs, i, K),
            "support_y": per_task(support.targets, i, K),
            "predictions": {j: per_task(pred, i, Q)[order] for j, pred in sorted(preds.items())},
        })
    return out


def _task_label(task) -> str:
    """A short panel title: the task's fields with 2 decimals (a dataclass), else its str()."""
    import dataclasses

    if not dataclasses.is_dataclass(task):
        return str(task)
    parts = []
    for f in dataclasses.fields(task):
        v = getattr(task, f.name)
        parts.append(f"{f.name}={v:.2f}" if isinstance(v, float) else f"{f.name}={v}")
    return ", ".join(parts)


def meta_test_scalars(algo, cfg) -> dict[str, float]:
    """The periodic meta-test of ``metarl train``: mean over ``train.eval_tasks`` held-out tasks of the
    adaptation curve, as ``meta_test/<metric>_step<k>``.

    Where the env records per-step indicators (Meta-World's success), ``meta_test/<key>_rate_step<k>``
    too. The test tasks are the first ``train.eval_tasks`` held-out draws of the eval seed stream (``eval.seed``),
    the same at every evaluation; a fresh evaluation collector (seed ``eval.seed``) is built each
    time and torch's / numpy's global generators are restored afterwards, so evaluating never
    changes the training run's random streams (resumed runs stay bit-identical).
    """
    ev = replace(cfg.eval, tasks=cfg.train.eval_tasks)
    collector = eval_collector(cfg, ev)
    np_state = np.random.get_state()
    try:
        with torch.random.fork_rng(devices=[]):
            tasks = collector.sample_test_tasks(ev.tasks, np.random.default_rng(ev.seed))
            curves = adaptation_curves(algo, tasks, collector, ev)
    finally:
        np.random.set_state(np_state)
        collector.close()
    return {f"meta_test/{name}_step{k}": float(np.mean(curve[k])) for name, curve in curves.items()
            for k in range(curve.shape[0])}
