"""One Meta-World env stepped in a Python loop, with metaworld's own code and with envs/metaworld_fast.py,
alternated in one run (3 rounds each, medians): what the fast paths buy per env step.

    .venv-mw/bin/python experiments/metaworld_fast_bench.py [--env-names reach-v3 push-v3 pick-place-v3] [--steps 3000]

Random actions in [-1, 1], a reset every 500 steps (the horizon), resets timed. BENCHMARKS.md has the figures.
"""

from __future__ import annotations

import argparse
import statistics
import time

import gymnasium as gym
import numpy as np

import metarl  # noqa: F401  (registers metarl/...)
from metarl.envs.metaworld_fast import use_fast_paths


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
    args = parser.parse_args()
    actions = np.random.default_rng(0).uniform(-1, 1, (args.steps, 4)).astype(np.float32)
    for name in args.env_names:
        env = gym.make("metarl/MetaWorldML1-v0", env_name=name).unwrapped
        env.set_task(env.sample_tasks(1, np.random.default_rng(0))[0])
        rates: dict[str, list[float]] = {"metaworld": [], "fast": []}
        for _ in range(args.rounds):
            for kind in ("metaworld", "fast"):
                use_fast_paths(kind == "fast")
                rates[kind].append(steps_per_s(env, actions))
        use_fast_paths(True)
        own, fast = statistics.median(rates["metaworld"]), statistics.median(rates["fast"])
        print(f"{name}: metaworld's code {own:,.0f} steps/s, fast paths {fast:,.0f} steps/s, "
              f"ratio {fast / own:.2f} (rounds: metaworld {[round(r) for r in rates['metaworld']]}, "
              f"fast {[round(r) for r in rates['fast']]})")


if __name__ == "__main__":
    main()
