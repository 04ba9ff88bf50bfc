"""The navigation configs of the three families (results/families_navigation/) describe one comparison."""

from __future__ import annotations

import csv

import numpy as np

from metarl.experiment import load_config
from metarl.train import train


def test_the_three_families_share_tasks_and_horizon_and_rl2_trials_match_pearl_context():
    maml = load_config("experiments/navigation2d_maml.yaml")
    pearl = load_config("experiments/navigation2d_pearl.yaml")
    rl2 = load_config("experiments/navigation2d_rl2.yaml")
    assert maml.env == pearl.env == rl2.env
    assert rl2.env.id == "metarl/Navigation2D-v0" and rl2.algo == "rl2"
    # RL²'s episode k and PEARL's "k episodes of context" line up on one x axis: 4 episodes each.
    assert rl2.rl2.episodes_per_trial == pearl.pearl.eval_episodes == 4
    assert rl2.train.iterations == pearl.train.iterations == 150


def test_rl2_navigation_trains_with_a_meta_test_per_episode_of_the_trial(tmp_path):
    cfg = load_config("experiments/navigation2d_rl2.yaml", [
        "train.iterations=2", "train.show_progress=false", "train.eval_every=2", "train.eval_tasks=2",
        "env.horizon=5", "rl2.trials_per_iteration=2", "rl2.minibatches=1", "rl2.ppo_epochs=1",
        "policy.recurrent_hidden_size=8"])
    with open(train(cfg, tmp_path / "run") / "progress.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["iteration"] for r in rows] == ["1", "2"]
    assert float(rows[-1]["env_steps_total"]) <= 2 * 2 * 4 * 5
    assert rows[0]["meta_test/return_step0"] == ""  # meta-test only every 2 iterations
    returns = [float(rows[-1][f"meta_test/return_step{k}"]) for k in range(4)]
    # navigation rewards are minus distances to a goal inside [-0.5, 0.5]^2, so each episode of 5 steps lies in (-5 * 1.5, 0)
    assert all(np.isfinite(returns)) and all(-7.5 < r < 0 for r in returns)
    assert "meta_test/return_step4" not in rows[-1]
