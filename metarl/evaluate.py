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
from metarl.maml import MAML

#: query points per task for supervised evaluation (more points, less noise in the curve)
EVAL_QUERY_POINTS = 100

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


def inner_lr_schedule(steps: int, first: float, after_first: float | None) -> list[float]:
    return [first if j == 0 or after_first is None else after_first for j in range(steps)]


def adaptation_curve(algo: MAML, tasks: Sequence, steps: int, lrs: Sequence[float], episodes: int) -> np.ndarray:
    """Per-task performance after 0..steps inner steps: array [steps + 1, n_tasks].

    RL: mean episode return of fresh episodes collected after each step. Supervised: loss on a
    fresh query set of EVAL_QUERY_POINTS points, after steps on the same K support points.
    """
    M = len(tasks)
    if not algo.supervised:
        data = algo.rollout_adaptation(tasks, steps, episodes, episodes, lrs)
        return np.stack([d.batch.mean_return_per_task().numpy() for d in data])
    support = algo.collect_inner(tasks, None, episodes)
    query = algo.collect_inner(tasks, None, EVAL_QUERY_POINTS)
    params = None
    rows = []
    for j in range(steps + 1):
        with torch.no_grad():
            p = params if params is not None else _expand_theta(algo, M)
            rows.append(algo.inner_loss(p, query, M).numpy())
        if j < steps:
            params = algo.inner_step_detached(params, support, M, lr=lrs[j])
    return np.stack(rows)


def _expand_theta(algo: MAML, M: int):
    from metarl.policies import expand_params

    return expand_params(algo.policy.params(), M)


def write_results(out_dir: Path, curves: dict[str, np.ndarray], metric: str, title: str) -> dict:
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
    summary = {"metric": metric, "title": title, "curves": {m: [r for r in rows if r["method"] == m] for m in curves}}
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    plot_curves({m: [r for r in rows if r["method"] == m] for m in curves}, metric, title, out_dir / "adaptation.png")
    return summary


def plot_curves(curves: dict[str, list[dict]], metric: str, title: str, path: Path) -> None:
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
    ax.set_xlabel("gradient steps on the new task")
    ax.set_ylabel(metric + " (mean over test tasks, 95% CI)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def evaluate_run(
    run_dir: str | Path,
    steps: int | None = None,
    tasks: int | None = None,
    seed: int | None = None,
    checkpoint: int | None = None,
    overrides: Sequence[str] = (),
    compare: Sequence[str] = (),
) -> dict:
    """``metarl evaluate``: curves of the run (``maml``) and of a randomly initialised policy."""
    from metarl.checkpoint import CheckpointError, load_latest_checkpoint
    from metarl.config import parse_override, set_by_path, validate_config
    from metarl.train import RunError, build_experiment, build_policy, load_run_config

    run_dir = Path(run_dir)
    cfg = load_run_config(run_dir)
    for item in overrides:
        cfg = set_by_path(cfg, *parse_override(item))
    validate_config(cfg)
    ev = cfg.eval
    ev = replace(ev, steps=ev.steps if steps is None else steps, tasks=ev.tasks if tasks is None else tasks,
                 seed=ev.seed if seed is None else seed)
    if ev.steps < 0 or ev.tasks < 1:
        raise RunError(f"evaluate needs steps >= 0 and tasks >= 1, got steps={ev.steps}, tasks={ev.tasks}")
    exp = build_experiment(cfg)
    try:
        state = load_latest_checkpoint(run_dir, checkpoint)
    except CheckpointError as err:
        if checkpoint is not None:
            raise RunError(str(err)) from None
        state = None  # iteration 0: evaluating the initial meta-parameters is allowed
    if state is not None:
        exp.algo.load_state_dict(state["algo"])
    iteration = 0 if state is None else state["iteration"]

    curves = evaluate_methods(cfg, ev, exp.policy, build_policy)
    metric = "loss" if exp.collector.supervised else "return"
    title = f"{cfg.env.id} (iteration {iteration})"
    summary = write_results(run_dir / "eval", curves, metric, title)
    for method, rows in summary["curves"].items():
        line = "  ".join(f"{r['step']}: {r['mean']:.3f}" for r in rows)
        print(f"{method:>10} {metric} by step  {line}")
    print(f"wrote {run_dir / 'eval'}/adaptation.csv, adaptation_per_task.csv, summary.json, adaptation.png")
    return summary


def evaluate_methods(cfg, ev, policy, build_policy) -> dict[str, np.ndarray]:
    """Curves of the meta-trained ``policy`` and of a random initialisation, on the same test tasks."""
    mc = cfg.maml
    episodes = ev.episodes_per_task or mc.episodes_per_task
    first = ev.inner_lr if ev.inner_lr is not None else mc.inner_lr
    lrs = inner_lr_schedule(ev.steps, first, ev.inner_lr_after_first)
    curves = {}
    collector = Collector(cfg.env.id, seed=ev.seed, backend=cfg.collector.backend, env_kwargs=cfg.env.kwargs, horizon=cfg.env.horizon)
    test_tasks = collector.sample_tasks(ev.tasks, np.random.default_rng(ev.seed))
    eval_cfg = replace(mc, learn_inner_lr=False)
    curves["maml"] = adaptation_curve(MAML(policy, collector, eval_cfg), test_tasks, ev.steps, lrs, episodes)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(ev.seed + 1)
        random_policy = build_policy(cfg, collector)
    collector = Collector(cfg.env.id, seed=ev.seed, backend=cfg.collector.backend, env_kwargs=cfg.env.kwargs, horizon=cfg.env.horizon)
    curves["random"] = adaptation_curve(MAML(random_policy, collector, eval_cfg), test_tasks, ev.steps, lrs, episodes)
    return curves
