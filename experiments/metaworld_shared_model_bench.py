"""Does the MuJoCo model's share of the cache limit a process that steps 100 Meta-World envs in turn?

Timing only, not a correct simulation: the second set of envs (one task each) is pointed at its first env's
MjModel, so every step walks one model and N MjData instead of N of each (metaworld writes goal sites into
its model per task, so the shared set steps the wrong goals). Both sets get the same random actions, in
alternated rounds; the printed ratio of medians, shared / separate, is what the models' cache footprint costs.

    .venv-mw/bin/python experiments/metaworld_shared_model_bench.py [--env-name reach-v3] [--envs 100]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import gymnasium as gym
import numpy as np


def make_envs(env_name: str, n: int) -> list:
    import metarl.envs  # noqa: F401  (registers metarl/...)

    envs = [gym.make("metarl/MetaWorldML1-v0", env_name=env_name, disable_env_checker=True).unwrapped
            for _ in range(n)]
    for env, task in zip(envs, envs[0].sample_tasks(n, np.random.default_rng(0))):
        env.set_task(task)
        env.reset()
    return envs


def rate(envs: list, actions: np.ndarray) -> float:
    """env-steps/s of one pass of ``actions`` [steps, 4] over every env in turn."""
    t = time.perf_counter()
    for a in actions:
        for env in envs:
            env.step(a)
    return len(envs) * len(actions) / (time.perf_counter() - t)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--env-name", default="reach-v3")
    p.add_argument("--envs", type=int, default=100)
    p.add_argument("--steps", type=int, default=40, help="steps of every env per round")
    p.add_argument("--rounds", type=int, default=4)
    args = p.parse_args()
    separate, shared = make_envs(args.env_name, args.envs), make_envs(args.env_name, args.envs)
    model = shared[0]._env.model  # metaworld's env inside our task wrapper; MujocoEnv steps self.model
    for env in shared:
        env._env.model = model
    actions = np.random.default_rng(0).uniform(-1, 1, (args.steps, 4)).astype(np.float32)
    rates: dict[str, list[float]] = {"separate_models": [], "one_shared_model": []}
    for _ in range(args.rounds):
        rates["separate_models"].append(rate(separate, actions))
        rates["one_shared_model"].append(rate(shared, actions))
    med = {k: statistics.median(v) for k, v in rates.items()}
    print(json.dumps({"env_name": args.env_name, "envs": args.envs, **{f"{k}_steps_per_s": v for k, v in med.items()},
                      "shared_over_separate": med["one_shared_model"] / med["separate_models"]}))


if __name__ == "__main__":
    main()
