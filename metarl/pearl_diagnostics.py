"""``python -m metarl.pearl_diagnostics RUN_DIR [--tasks N] [--checkpoint ITER]``: does a PEARL run's z carry
the task? Prints, on N held-out tasks (default 200; the evaluation's task stream), the return of every episode
of the evaluation protocol and, for the posterior episodes, the R² of the task from the posterior mean and its
KL to the prior (:func:`metarl.algos.pearl.diagnostics.task_inference`)."""

from __future__ import annotations

import argparse
from dataclasses import replace

import numpy as np

from metarl.algos.pearl.diagnostics import task_inference
from metarl.common.checkpoint import CheckpointError
from metarl.common.config import ConfigError
from metarl.evaluation.curves import eval_collector
from metarl.experiment import RunError, load_run


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m metarl.pearl_diagnostics", description="R² of the task from PEARL's posterior")
    p.add_argument("run_dir")
    p.add_argument("--tasks", type=int, default=200, help="held-out tasks (default 200)")
    p.add_argument("--checkpoint", type=int, default=None)
    args = p.parse_args(argv)
    try:
        cfg, exp, iteration = load_run(args.run_dir, args.checkpoint)
    except (ConfigError, RunError, CheckpointError) as err:  # one line, as the metarl commands
        raise SystemExit(f"pearl_diagnostics: error: {err}") from None
    if cfg.algo != "pearl":
        raise SystemExit(f"pearl_diagnostics: error: {args.run_dir} is a {cfg.algo} run, not pearl")
    ev = replace(cfg.eval, tasks=args.tasks)
    collector = eval_collector(cfg, ev)
    try:
        tasks = collector.sample_test_tasks(ev.tasks, np.random.default_rng(ev.seed))
        out = task_inference(exp.algo, collector, tasks, ev)
    finally:
        collector.close()
        exp.collector.close()
    first = cfg.pearl.eval_prior_episodes
    print(f"{args.run_dir} at iteration {iteration}, {len(tasks)} held-out tasks")
    for k, ret in enumerate(out["return"]):
        extra = "" if k < first else (f"  R² of the task from the posterior mean {out['r2'][k - first]:.3f}, "
                                      f"KL {out['kl'][k - first]:.2f}")
        print(f"episode {k} ({k} of context, z from the {'prior' if k < first else 'posterior'}): return {ret:.2f}{extra}")


if __name__ == "__main__":
    main()
