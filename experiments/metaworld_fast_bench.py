"""One Meta-World env stepped in a Python loop, with metaworld's own code and with envs/metaworld_fast.py,
alternated in one run (3 rounds each, medians): what the fast paths buy per env step.

    .venv-mw/bin/python experiments/metaworld_fast_bench.py [--env-names reach-v3 push-v3 pick-place-v3] [--steps 3000]
        [--leave-out PIECE ...]   # the fast arm without those pieces (envs/metaworld_fast.py PIECES): their share

Random actions in [-1, 1], a reset every 500 steps (the horizon), resets timed. BENCHMARKS.md has the figures.
"""

from __future__ import annotations

import argparse
import statistics
import time

import gymnasium as gym
import numpy as np

import metarl  # noqa: F401  (registers metarl/...)
from metarl.envs.metaworld_fast import PIECES, use_fast_paths


def steps_per_s(env, actions: np.ndarray) -> float:
    env.reset(seed=0)
    t0 = time.perf_counter()
    for i, a in enumerate(actions):
        env.step(a)
        if (i + 1) % 500 == 0:
            env.reset()
    return len(actions) / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env-names", nargs="+", default=["reach-v3", "push-v3", "pick-place-v3"])
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--leave-out", nargs="*", default=[], choices=PIECES,
                        help="also time a third arm: the fast paths without these pieces (their share)")
    args = parser.parse_args()
    actions = np.random.default_rng(0).uniform(-1, 1, (args.steps, 4)).astype(np.float32)
    arms = {"metaworld": dict(enabled=False), "fast": dict(enabled=True)}
    if args.leave_out:
        arms["fast without " + "+".join(args.leave_out)] = dict(enabled=True, leave_out=tuple(args.leave_out))
    for name in args.env_names:
        env = gym.make("metarl/MetaWorldML1-v0", env_name=name).unwrapped
        env.set_task(env.sample_tasks(1, np.random.default_rng(0))[0])
        rates: dict[str, list[float]] = {arm: [] for arm in arms}
        for _ in range(args.rounds):
            for arm, setting in arms.items():
                use_fast_paths(**setting)
                rates[arm].append(steps_per_s(env, actions))
        use_fast_paths(True)
        own = statistics.median(rates["metaworld"])
        print(f"{name}: metaworld's code {own:,.0f} steps/s (rounds {[round(r) for r in rates['metaworld']]})")
        for arm in list(arms)[1:]:
            rate = statistics.median(rates[arm])
            print(f"  {arm}: {rate:,.0f} steps/s, ratio {rate / own:.2f} (rounds {[round(r) for r in rates[arm]]})")


if __name__ == "__main__":
    main()
