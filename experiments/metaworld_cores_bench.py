"""How fast the cores step Meta-World envs when each core cycles through many of them (one JSON line).

The subproc collector steps its columns in lock-step: every env step, each worker steps all of its
B/W envs once, then waits for the policy. This script times that pattern without the collector, so the
collector's own cost can be told apart from the machine's. Each process steps N envs of ML1 (one task
each, the same random actions, reset every --horizon steps, resets not timed) in a plain loop:

* ``one_process_{N}_envs``: one process alone, N = 1 and N = --envs;
* ``{W}_processes_{N}_envs``: W processes at once (released by a barrier), summed, N = 1 and N = --envs.

With N = 1 the envs stay in each core's cache; with N = 100 every step walks through 100 models'
data, and two cores doing so share the L3 cache and memory bandwidth.

    python experiments/metaworld_cores_bench.py [--env-name reach-v3] [--envs 100] [--workers 2] [--steps 20000]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import time

import numpy as np


def loop_rate(env_name: str, n: int, steps: int, horizon: int, barrier=None) -> float:
    """env-steps/s of n envs stepped round-robin, ``steps`` in all."""
    import gymnasium as gym

    import metarl.envs  # noqa: F401  (registers metarl/...)

    first = gym.make("metarl/MetaWorldML1-v0", env_name=env_name, disable_env_checker=True).unwrapped
    envs = [first] + [gym.make("metarl/MetaWorldML1-v0", env_name=env_name, disable_env_checker=True).unwrapped
                      for _ in range(n - 1)]
    for env, task in zip(envs, first.sample_tasks(n, np.random.default_rng(0))):
        env.set_task(task)
    actions = np.random.default_rng(0).uniform(-1, 1, (horizon, 4)).astype(np.float32)
    rounds = max(1, steps // n)
    if barrier is not None:
        barrier.wait()
    stepping = 0.0  # resets are left out of the time: with N = 1 they come every --horizon steps, with N = 100 once
    for r in range(rounds):
        if r % horizon == 0:
            for env in envs:
                env.reset()
        t = time.perf_counter()
        a = actions[r % horizon]
        for env in envs:
            env.step(a)
        stepping += time.perf_counter() - t
    return rounds * n / stepping


def _worker(args, barrier, queue):
    try:
        queue.put(loop_rate(*args, barrier=barrier))
    except Exception as err:
        barrier.abort()  # the other processes stop waiting at the barrier
        queue.put(f"{type(err).__name__}: {err}")


def parallel_rate(env_name: str, n: int, steps: int, horizon: int, workers: int) -> float:
    ctx = multiprocessing.get_context("fork")
    barrier, queue = ctx.Barrier(workers), ctx.Queue()
    procs = [ctx.Process(target=_worker, args=((env_name, n, steps, horizon), barrier, queue)) for _ in range(workers)]
    for p in procs:
        p.start()
    rates = [queue.get(timeout=900) for _ in procs]
    for p in procs:
        p.join()
    failed = [r for r in rates if isinstance(r, str)]
    if failed:
        raise SystemExit(f"a loop failed: {failed[0]}")
    return float(sum(rates))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--env-name", default="reach-v3")
    p.add_argument("--envs", type=int, default=100, help="envs per process in the many-envs set-ups")
    p.add_argument("--workers", type=int, default=2, help="processes run at once")
    p.add_argument("--steps", type=int, default=20000, help="env steps per process per set-up")
    p.add_argument("--horizon", type=int, default=500)
    args = p.parse_args()
    out = {"env_name": args.env_name, "cpus": os.cpu_count()}
    for n in (1, args.envs):
        out[f"one_process_{n}_envs"] = loop_rate(args.env_name, n, args.steps, args.horizon)
        out[f"{args.workers}_processes_{n}_envs"] = parallel_rate(args.env_name, n, args.steps, args.horizon, args.workers)
    one = out["one_process_1_envs"]
    out["ratios_to_one_process_1_env"] = {k: v / one for k, v in out.items() if k.endswith("_envs")}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
