"""Adaptation curves: performance on held-out tasks after 0, 1, ..., K gradient steps.

For every method and step k the evaluator reports the mean over test tasks of the per-task
performance (mean episode return for RL, query-set loss for supervised tasks), its sample standard
deviation and a Student-t 95% confidence interval. Test tasks come from their own seed stream
(``eval.seed``), never from the training stream, and evaluation uses its own collector, so
evaluating never changes a training run's random streams.
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

from metarl.collector import Collector

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


def write_results(out_dir: Path, curves: dict[str, np.ndarray], metric: str, title: str, x_label: str = "gradient steps") -> dict:
    """adaptation.csv, adaptation_per_task.csv, summary.json and adaptation.png in ``out_dir``."""
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
    summary = {"metric": metric, "title": title, "x_label": x_label, "curves": {m: [r for r in rows if r["method"] == m] for m in curves}}
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    plot_curves(summary["curves"], metric, title, out_dir / "adaptation.png", x_label)
    return summary


def plot_curves(curves: dict[str, list[dict]], metric: str, title: str, path: Path, x_label: str = "gradient steps") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for method, rows in curves.items():
        steps = [r["step"] for r in rows]
        mean = np.array([r["mean"] for r in rows])
        ax.plot(steps, mean, marker="o", label=method)
        low = np.array([r["ci95_low"] for r in rows])
        high = np.array([r["ci95_high"] for r in rows])
        if np.all(np.isfinite(low)):
            ax.fill_between(steps, low, high, alpha=0.2)
    ax.set_xlabel(x_label)
    ax.set_ylabel(metric + " (mean over test tasks, 95% CI)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _load_run(run_dir: Path, checkpoint: int | None, overrides: Sequence[str] = ()):
    """(config, experiment with the checkpoint's state loaded, iteration) of a run directory."""
    from metarl.checkpoint import CheckpointError, load_latest_checkpoint
    from metarl.config import parse_override, set_by_path, validate_config
    from metarl.train import RunError, build_experiment, load_run_config

    cfg = load_run_config(run_dir)
    for item in overrides:
        cfg = set_by_path(cfg, *parse_override(item))
    validate_config(cfg)
    exp = build_experiment(cfg)
    try:
        state = load_latest_checkpoint(run_dir, checkpoint)
    except CheckpointError as err:
        if checkpoint is not None:
            raise RunError(str(err)) from None
        state = None  # iteration 0: evaluating the initial meta-parameters is allowed
    if state is not None:
        exp.algo.load_state_dict(state["algo"])
    return cfg, exp, 0 if state is None else state["iteration"]


def _eval_collector(cfg, ev) -> Collector:
    # Every method gets a fresh collector with the same seed: common random numbers across methods.
    return Collector(cfg.env.id, seed=ev.seed, backend=cfg.collector.backend, env_kwargs=cfg.env.kwargs, horizon=cfg.env.horizon)


def evaluate_run(
    run_dir: str | Path,
    steps: int | None = None,
    tasks: int | None = None,
    seed: int | None = None,
    checkpoint: int | None = None,
    overrides: Sequence[str] = (),
    compare: Sequence[str | Path] = (),
    out_dir: str | Path | None = None,
) -> dict:
    """``metarl evaluate``: the run's curve, a random initialisation adapted the same way (for
    gradient-based runs), and the curves of the ``compare`` runs, all on the same test tasks."""
    from metarl.train import RunError, build_policy

    run_dir = Path(run_dir)
    cfg, exp, iteration = _load_run(run_dir, checkpoint, overrides)
    ev = replace(cfg.eval, steps=cfg.eval.steps if steps is None else steps,
                 tasks=cfg.eval.tasks if tasks is None else tasks, seed=cfg.eval.seed if seed is None else seed)
    if ev.steps < 0 or ev.tasks < 1:
        raise RunError(f"evaluate needs --steps >= 0 and --tasks >= 1, got steps={ev.steps}, tasks={ev.tasks}")
    test_tasks = _eval_collector(cfg, ev).sample_tasks(ev.tasks, np.random.default_rng(ev.seed))

    curves: dict[str, np.ndarray] = {cfg.algo: exp.algo.adaptation_curve(test_tasks, _eval_collector(cfg, ev), ev)}
    if cfg.algo in ("maml", "pretrain"):
        from metarl.maml import MAML

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(ev.seed + 1)
            random_policy = build_policy(cfg, exp.collector)
        random_algo = MAML(random_policy, exp.collector, cfg.maml)
        curves["random"] = random_algo.adaptation_curve(test_tasks, _eval_collector(cfg, ev), ev)
    for other in compare:
        other = Path(other)
        ocfg, oexp, _ = _load_run(other, None)
        if ocfg.env.id != cfg.env.id:
            raise RunError(f"--compare {other}: its environment is {ocfg.env.id}, not {cfg.env.id}")
        name = ocfg.algo if ocfg.algo not in curves else f"{ocfg.algo} ({other.name})"
        curves[name] = oexp.algo.adaptation_curve(test_tasks, _eval_collector(ocfg, ev), ev)

    metric = getattr(exp.algo, "metric", "return")
    title = f"{cfg.env.id} (iteration {iteration})"
    out = Path(out_dir) if out_dir is not None else run_dir / "eval"
    summary = write_results(out, curves, metric, title, getattr(exp.algo, "curve_x_label", "gradient steps"))
    for method, rows in summary["curves"].items():
        line = "  ".join(f"{r['step']}: {r['mean']:.3f}" for r in rows)
        print(f"{method:>12} {metric} by step  {line}")
    print(f"wrote {out}/adaptation.csv, adaptation_per_task.csv, summary.json, adaptation.png")
    return summary
