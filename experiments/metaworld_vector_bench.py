"""One process stepping many Meta-World envs: one at a time (each env's own ``step``, what a worker did before
``envs/metaworld_vector.py``) against the batched step of ``MetaWorldVectorEnv``, alternated rounds, medians.

Both arms step the same sub-environments with the same uniform random actions and the same resets; no policy,
no pipes. Run from the checkout to time, in the Meta-World venv:

    PYTHONPATH=. .venv-mw/bin/python experiments/metaworld_vector_bench.py [--env-name push-v3] [--envs 100]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env-name", default="push-v3")
    parser.add_argument("--envs", type=int, default=100, help="sub-environments (a worker's share of 200 columns)")
    parser.add_argument("--steps", type=int, default=100, help="steps per round and arm")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    import metarl  # noqa: F401  (registers metarl/...)
    from metarl.envs.metaworld import MetaWorldVectorEnv

    venv = MetaWorldVectorEnv(args.envs, benchmark="ML1", env_name=args.env_name)
    venv.set_tasks(venv.envs[0].sample_tasks(args.envs, np.random.default_rng(0)))
    rng = np.random.default_rng(0)

    def rate(batched: bool) -> float:
        venv.reset()
        actions = rng.uniform(-1, 1, (args.steps, args.envs, 4)).astype(np.float32)
        t = time.perf_counter()
        for a in actions:
            if batched:
                venv.step(a)
            else:
                for env, row in zip(venv.envs, a):
                    env.step(row)
        return args.envs * args.steps / (time.perf_counter() - t)

    rounds: dict[str, list[float]] = {"one_at_a_time": [], "batched": []}
    for _ in range(args.rounds):
        rounds["one_at_a_time"].append(rate(False))
        rounds["batched"].append(rate(True))
    med = {k: statistics.median(v) for k, v in rounds.items()}
    print(json.dumps({"env_name": args.env_name, "envs": args.envs, "steps_per_s_one_at_a_time": med["one_at_a_time"],
                      "steps_per_s_batched": med["batched"], "ratio": med["batched"] / med["one_at_a_time"],
                      "rounds": rounds}))


if __name__ == "__main__":
    main()
