"""Seconds of RL²'s PPO update (``time/update_s``) over a few iterations of a config, from the checkout it runs in.

To compare two commits, run it from each checkout in alternation (the same machine load for both), e.g.
with a worktree of the older commit:

    git worktree add /tmp/wt-old OLD
    for d in /tmp/wt-old .; do (cd $d && PYTHONPATH=$d python experiments/rl2_update_bench.py \\
        experiments/halfcheetah_vel_rl2.yaml rl2.episodes_per_trial=25 rl2.trials_per_iteration=20 \\
        rl2.minibatches=4 collector.num_threads=1); done

(25 cheetah episodes of 200 steps per trial: 5,000-step GRU sequences, the length of an ML1 trial of 10
500-step episodes.) Prints one JSON line: the checkout and the update seconds of each iteration.
"""

from __future__ import annotations

import argparse
import json

import metarl
from metarl.experiment import build_experiment, configure_threads, load_config


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("config")
    p.add_argument("overrides", nargs="*", help="KEY=VALUE config overrides")
    p.add_argument("--iterations", type=int, default=3)
    args = p.parse_args()
    cfg = load_config(args.config, args.overrides)
    configure_threads(cfg.collector.torch_threads)
    exp = build_experiment(cfg)
    seconds = [round(exp.algo.train_iteration(exp.task_rng)["time/update_s"], 2) for _ in range(args.iterations)]
    exp.collector.close()
    print(json.dumps({"checkout": metarl.__file__, "update_s": seconds}))


if __name__ == "__main__":
    main()
