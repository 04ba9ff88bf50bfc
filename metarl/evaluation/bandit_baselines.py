"""Hand-designed reference policies for Bernoulli bandits, measured on the same held-out tasks as RL².

Each policy plays ``n_pulls`` pulls on every task at once (numpy, vectorized over tasks; one loop
over pulls) and returns the total reward per task, the quantity RL² maximises and ``metarl evaluate``
reports for ``experiments/bandit_rl2.yaml``. Policies:

* ``random``: a uniformly random arm at every pull (expected return n_pulls / 2 for U[0, 1] means).
* ``ucb1``: UCB1 of Auer et al. (2002): play every arm once, then the arm maximising
  mean_i + sqrt(2 ln t / n_i). With n_pulls <= n_arms it never gets past the first round, so it
  scores like ``random``; the RL² paper's UCB1 (6.7 at 10 arms, 10 pulls) must be a variant with
  prior counts and a tuned constant, which the paper does not spell out here; hence the next two.
* ``greedy``: the arm with the highest posterior mean under a uniform Beta(1, 1) prior.
* ``thompson``: Thompson sampling with the Beta(1, 1) prior (Thompson 1933).

Ties are broken uniformly at random. Usage::

    python -m metarl.evaluation.bandit_baselines --tasks 1000            # same tasks as `metarl evaluate --tasks 1000`
"""

from __future__ import annotations

import argparse
from typing import Sequence

import numpy as np

__all__ = ["BASELINES", "evaluate_bandit_baselines", "play"]

BASELINES = ("random", "ucb1", "greedy", "thompson")


def _means_array(tasks) -> np.ndarray:
    if isinstance(tasks, np.ndarray):
        means = np.asarray(tasks, dtype=np.float64)
    else:
        means = np.array([t.means for t in tasks], dtype=np.float64)
    if means.ndim != 2 or means.shape[0] < 1 or means.shape[1] < 1:
        raise ValueError(f"tasks must be a non-empty list of BanditTask or an [n_tasks, n_arms] array, got shape {means.shape}")
    if not np.all((means >= 0) & (means <= 1)):
        raise ValueError("bandit arm means must lie in [0, 1]")
    return means


def _argmax_random_ties(scores: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    best = scores >= scores.max(axis=1, keepdims=True)
    # A random key per entry, -1 off the maxima: argmax picks a uniform choice among tied maxima.
    return np.argmax(np.where(best, rng.random(scores.shape), -1.0), axis=1)


def play(name: str, means: np.ndarray, n_pulls: int, rng: np.random.Generator) -> np.ndarray:
    """Total reward of policy ``name`` on each task (row of ``means``) over ``n_pulls`` pulls: [n_tasks]."""
    if name not in BASELINES:
        raise ValueError(f"unknown bandit baseline {name!r}; expected one of {', '.join(BASELINES)}")
    if isinstance(n_pulls, bool) or not isinstance(n_pulls, (int, np.integer)) or n_pulls < 1:
        raise ValueError(f"n_pulls must be a positive integer, got {n_pulls!r}")
    means = _means_array(means)
    n_tasks, n_arms = means.shape
    rows = np.arange(n_tasks)
    pulls = np.zeros((n_tasks, n_arms))
    wins = np.zeros((n_tasks, n_arms))
    total = np.zeros(n_tasks)
    for t in range(n_pulls):
        if name == "random":
            arm = rng.integers(n_arms, size=n_tasks)
        elif name == "ucb1":
            with np.errstate(divide="ignore", invalid="ignore"):
                index = wins / pulls + np.sqrt(2.0 * np.log(max(t, 1)) / pulls)
            # Unplayed arms first (an infinite index), as in Auer et al.'s initial round.
            arm = _argmax_random_ties(np.where(pulls == 0, np.inf, index), rng)
        elif name == "greedy":
            arm = _argmax_random_ties((wins + 1.0) / (pulls + 2.0), rng)
        else:  # thompson
            arm = np.argmax(rng.beta(wins + 1.0, pulls - wins + 1.0), axis=1)
        reward = (rng.random(n_tasks) < means[rows, arm]).astype(np.float64)
        pulls[rows, arm] += 1.0
        wins[rows, arm] += reward
        total += reward
    return total


def evaluate_bandit_baselines(
    tasks, n_pulls: int, rng: np.random.Generator, names: Sequence[str] = BASELINES, repeats: int = 1
) -> dict[str, np.ndarray]:
    """``{name: per-task return}`` for every baseline on ``tasks`` (BanditTasks or an [n, arms] array).

    ``repeats`` > 1 averages that many independent plays per task (less noise per task).
    """
    if isinstance(repeats, bool) or not isinstance(repeats, (int, np.integer)) or repeats < 1:
        raise ValueError(f"repeats must be a positive integer, got {repeats!r}")
    means = _means_array(tasks)
    return {name: np.mean([play(name, means, n_pulls, rng) for _ in range(repeats)], axis=0) for name in names}


def main(argv: Sequence[str] | None = None) -> None:
    from metarl.envs.bandit import BanditEnv
    from metarl.evaluation.curves import summarize

    p = argparse.ArgumentParser(prog="python -m metarl.evaluation.bandit_baselines", description=__doc__.split("\n")[0])
    p.add_argument("--tasks", type=int, default=1000, help="held-out tasks (default 1000)")
    p.add_argument("--arms", type=int, default=10, help="arms per bandit (default 10)")
    p.add_argument("--pulls", type=int, default=10, help="pulls per trial (default 10)")
    p.add_argument("--seed", type=int, default=1000,
                   help="seed of the task stream; the default eval.seed, so the tasks are those of `metarl evaluate`")
    p.add_argument("--play-seed", type=int, default=0, help="seed of the policies' and rewards' randomness")
    p.add_argument("--repeats", type=int, default=1, help="plays per task, averaged (default 1)")
    args = p.parse_args(argv)
    if args.tasks < 1:
        p.error(f"--tasks must be >= 1, got {args.tasks}")
    # The same draw as the evaluator: sample_tasks(n, default_rng(eval.seed)) on the env.
    tasks = BanditEnv(n_arms=args.arms, n_pulls=args.pulls).sample_tasks(args.tasks, np.random.default_rng(args.seed))
    results = evaluate_bandit_baselines(tasks, args.pulls, np.random.default_rng(args.play_seed), repeats=args.repeats)
    print(f"Bernoulli bandits, {args.arms} arms, {args.pulls} pulls, {args.tasks} tasks (seed {args.seed}):")
    for name, values in results.items():
        s = summarize(values)
        print(f"  {name:>9}: {s['mean']:.3f}  (95% CI {s['ci95_low']:.3f} .. {s['ci95_high']:.3f})")


if __name__ == "__main__":
    main()
