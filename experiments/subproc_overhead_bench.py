"""Where a Meta-World subproc collection loses against plain loops: three arms in alternated rounds, one run.

* ``collector``: ``Collector.collect`` (backend subproc, W workers): policy in the loop, resets included;
* ``vector_env_only``: the same ``SubprocVectorEnv`` stepped with fixed random actions, no policy: what the
  pipes and the lock-step (every worker waits for the slowest each step) cost;
* ``plain_loops``: W processes at once, each stepping its share of the envs in turn with no collector and
  no pipes (experiments/metaworld_cores_bench.py's loop, resets not timed): what the cores and caches give.

The two ratios printed split the gap: ``vector_env_only / plain_loops`` is the pipes and lock-step,
``collector / vector_env_only`` the main process's serial work (policy, buffers) while the workers wait.

    .venv-mw/bin/python experiments/subproc_overhead_bench.py [--env-name reach-v3] [--tasks 20] [--episodes 10]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np

from metaworld_cores_bench import parallel_rate  # plain loops, with its barrier and failure handling


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env-name", default="reach-v3")
    parser.add_argument("--tasks", type=int, default=20)
    parser.add_argument("--episodes", type=int, default=10)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    import metarl  # noqa: F401  (registers metarl/...)
    from metarl.common.policies import make_policy
    from metarl.sampling.collector import Collector

    collector = Collector("metarl/MetaWorldML1-v0", seed=0, backend="subproc",
                          env_kwargs={"env_name": args.env_name}, num_workers=args.workers)
    tasks = collector.sample_tasks(args.tasks, np.random.default_rng(0))
    policy = make_policy(collector.observation_space, collector.action_space, False, (100, 100))
    columns = args.tasks * args.episodes
    collector.collect(policy, tasks, args.episodes)  # builds the workers' envs
    venv = collector._venv(columns)
    H = collector.horizon
    actions = np.random.default_rng(0).uniform(-1, 1, (H, columns, 4)).astype(np.float32)
    rates: dict[str, list[float]] = {"collector": [], "vector_env_only": [], "plain_loops": []}
    for _ in range(args.rounds):
        t = time.perf_counter()
        batch = collector.collect(policy, tasks, args.episodes)
        rates["collector"].append(batch.num_steps / (time.perf_counter() - t))
        venv.set_tasks([task for task in tasks for _ in range(args.episodes)])
        t = time.perf_counter()
        venv.reset()
        for k in range(H):
            venv.step(actions[k])
        rates["vector_env_only"].append(columns * H / (time.perf_counter() - t))
        rates["plain_loops"].append(parallel_rate(args.env_name, columns // args.workers, columns * H // args.workers, H,
                                                   args.workers))
    collector.close()
    med = {k: statistics.median(v) for k, v in rates.items()}
    print(json.dumps({"env_name": args.env_name, "columns": columns, "workers": args.workers, "rounds": args.rounds,
                      **{f"{k}_steps_per_s": v for k, v in med.items()},
                      "vector_env_only_over_plain_loops": med["vector_env_only"] / med["plain_loops"],
                      "collector_over_vector_env_only": med["collector"] / med["vector_env_only"],
                      "collector_over_plain_loops": med["collector"] / med["plain_loops"]}))


if __name__ == "__main__":
    main()
