"""Profile the main process of one collection (cProfile, top functions by own time): where the collector's
time goes, e.g. how much of it the main process spends waiting on subproc workers' pipes.

    .venv-mw/bin/python experiments/profile_collect.py --env metarl/MetaWorldML1-v0 --env-kwarg env_name=reach-v3 \
        --tasks 20 --episodes 10 --backend subproc

A first collection (not profiled) builds the workers' envs; the second is profiled.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import time

import numpy as np

import metarl  # noqa: F401  (registers metarl/...)
from metarl.common.policies import make_policy
from metarl.sampling.collector import Collector


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="metarl/MetaWorldML1-v0")
    parser.add_argument("--env-kwarg", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--tasks", type=int, default=20)
    parser.add_argument("--episodes", type=int, default=10)
    parser.add_argument("--backend", default="subproc")
    parser.add_argument("--top", type=int, default=15)
    args = parser.parse_args()
    kwargs = dict(kv.split("=", 1) for kv in args.env_kwarg)
    collector = Collector(args.env, seed=0, env_kwargs=kwargs, backend=args.backend, num_workers=2)
    policy = make_policy(collector.observation_space, collector.action_space, False, (128, 128))
    tasks = collector.sample_tasks(args.tasks, np.random.default_rng(0))
    collector.collect(policy, tasks, args.episodes)
    profile = cProfile.Profile()
    start = time.perf_counter()
    profile.enable()
    batch = collector.collect(policy, tasks, args.episodes)
    profile.disable()
    wall = time.perf_counter() - start
    print(f"{batch.num_steps:,} env steps in {wall:.2f} s ({batch.num_steps / wall:,.0f} steps/s)")
    pstats.Stats(profile).sort_stats("tottime").print_stats(args.top)
    collector.close()


if __name__ == "__main__":
    main()
