"""RL² collection speed on Meta-World ML1: env-steps/s of ``Collector.collect`` with a GRU policy, subproc backend.

Trials of ``--episodes`` episodes, one per column; the first collection (which builds the workers' envs) is not
timed, then ``--repeats`` collections are. Run it from the checkout whose code it should time:

    PYTHONPATH=. .venv-mw/bin/python experiments/rl2_collect_bench.py [--env-name push-v3] [--trials 20] [--episodes 3]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env-name", default="push-v3")
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--episodes", type=int, default=3, help="episodes per trial")
    parser.add_argument("--hidden", type=int, default=128, help="GRU size (the ML1 RL² configs' 128)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()

    import metarl  # noqa: F401  (registers metarl/...)
    from metarl.common.policies import RecurrentPolicy
    from metarl.sampling import collector as collector_module
    from metarl.sampling.collector import Collector

    c = Collector("metarl/MetaWorldML1-v0", seed=0, backend="subproc", env_kwargs={"env_name": args.env_name},
                  num_workers=args.workers)
    tasks = c.sample_tasks(args.trials, np.random.default_rng(0))
    torch.manual_seed(0)
    policy = RecurrentPolicy(c.observation_space.shape[0], c.action_space, hidden_size=args.hidden)
    c.collect(policy, tasks, 1)  # builds the workers' envs (the same number of columns)
    rates = []
    for _ in range(args.repeats):
        t = time.perf_counter()
        batch = c.collect(policy, tasks, args.episodes, episodes_per_trial=args.episodes)
        rates.append(batch.num_steps / (time.perf_counter() - t))
    c.close()
    print(json.dumps({"env_name": args.env_name, "trials": args.trials, "episodes_per_trial": args.episodes,
                      "code": collector_module.__file__, "steps_per_s": rates}))


if __name__ == "__main__":
    main()
