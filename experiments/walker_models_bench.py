"""Per-task models vs one shared model for the batched Walker2DRandParams (one JSON line).

Steps BatchedWalker2DRandParams over a MAML-sized batch (--tasks x --rows rows, the same random
actions, no termination so every row steps every time) in three set-ups and prints env-steps/s of
each (best of --repeats, the set-ups interleaved so machine load hits them alike):

* ``per_task_models``: --tasks distinct tasks, one model copy per task (what training does);
* ``copies_of_one_task``: one task, but still one model copy per row group, so the comparison with
  ``one_model`` isolates the cost of many model objects from the dynamics of the tasks;
* ``one_model``: one task, one model object shared by every row.

    python experiments/walker_models_bench.py [--tasks 40] [--rows 20] [--steps 200] [--repeats 3]
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import time

import numpy as np

from metarl.envs.walker import BatchedWalker2DRandParams, Walker2DRandParamsEnv


def steps_per_s(venv, tasks, actions, copies: int = 0) -> float:
    venv.set_tasks(tasks)
    if copies:  # replace the shared model by `copies` equal copies, one per row group
        models = [copy.copy(venv._model_list[0]) for _ in range(copies)]
        rows = venv.num_envs // copies
        venv._model_list = [models[i // rows] for i in range(venv.num_envs)]
    venv.seed(list(range(venv.num_envs)))
    venv.reset()
    t = time.perf_counter()
    for a in actions:
        venv.step(a)
    return venv.num_envs * len(actions) / (time.perf_counter() - t)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tasks", type=int, default=40)
    p.add_argument("--rows", type=int, default=20, help="rows (episodes) per task")
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    B = args.tasks * args.rows
    tasks = Walker2DRandParamsEnv().sample_tasks(args.tasks, np.random.default_rng(0))
    per_task = [t for t in tasks for _ in range(args.rows)]
    shared = [tasks[0]] * B
    actions = np.random.default_rng(1).uniform(-1, 1, (args.steps, B, 6))
    venv = BatchedWalker2DRandParams(B, terminate_when_unhealthy=False)
    steps_per_s(venv, per_task, actions[:5])  # warm-up: thread pool, caches
    best = {"per_task_models": 0.0, "copies_of_one_task": 0.0, "one_model": 0.0}
    load = os.getloadavg()[0]
    for _ in range(args.repeats):
        best["per_task_models"] = max(best["per_task_models"], steps_per_s(venv, per_task, actions))
        best["copies_of_one_task"] = max(best["copies_of_one_task"], steps_per_s(venv, shared, actions, args.tasks))
        best["one_model"] = max(best["one_model"], steps_per_s(venv, shared, actions))
    venv.close()
    print(json.dumps({
        "bench": "walker_models", "batch": B, "distinct_models": args.tasks, "steps": args.steps,
        "num_threads": venv.num_threads, **{f"{k}_steps_per_s": v for k, v in best.items()},
        "copies_vs_one_model": best["copies_of_one_task"] / best["one_model"],
        "per_task_vs_one_model": best["per_task_models"] / best["one_model"],
        "cpus": os.cpu_count(), "load_average_at_start": load,
    }))


if __name__ == "__main__":
    main()
