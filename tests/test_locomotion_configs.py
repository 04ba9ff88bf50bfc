"""The MAML and RL² configs of the PEARL locomotion tasks load and run one tiny iteration."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from metarl.experiment import load_config
from metarl.train import train

MAML = ["ant_dir_maml", "walker2d_rand_params_maml"]
RL2 = ["ant_dir_rl2", "walker2d_rand_params_rl2"]
ENV = {"ant_dir": "metarl/AntDir-v0", "walker2d_rand_params": "metarl/Walker2DRandParams-v0"}


def _row(run):
    with open(run / "progress.csv") as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("name", MAML)
def test_maml_config_runs_one_iteration(tmp_path, name):
    cfg = load_config(f"experiments/{name}.yaml", [
        "train.iterations=1", "train.show_progress=false", "maml.meta_batch_size=2", "maml.episodes_per_task=2",
        "env.horizon=20", "policy.hidden_sizes=[16]", "collector.num_threads=1"])
    assert cfg.algo == "maml" and cfg.env.id == ENV[name.rsplit("_", 1)[0]]
    full = load_config(f"experiments/{name}.yaml")
    assert full.env.horizon in (None, 200) and full.maml.meta_batch_size == 40 and full.maml.episodes_per_task == 20
    rows = _row(train(cfg, tmp_path / "run"))
    assert [r["iteration"] for r in rows] == ["1"]
    # inner + query episodes of 2 tasks x 2 episodes, at most H = 20 steps each (falls end episodes early)
    steps = float(rows[0]["env_steps_total"])
    assert 0 < steps <= 2 * 2 * 2 * 20
    assert np.isfinite(float(rows[0]["post_update/return"]))


@pytest.mark.parametrize("name", RL2)
def test_rl2_config_runs_one_iteration(tmp_path, name):
    cfg = load_config(f"experiments/{name}.yaml", [
        "train.show_progress=false", "train.iterations=1", "env.horizon=4", "rl2.trials_per_iteration=2",
        "rl2.minibatches=2", "policy.recurrent_hidden_size=8", "collector.num_threads=1"])
    assert cfg.algo == "rl2" and cfg.rl2.episodes_per_trial == 2 and cfg.env.id == ENV[name.rsplit("_", 1)[0]]
    assert load_config(f"experiments/{name}.yaml").env.horizon == 200
    rows = _row(train(cfg, tmp_path / "run"))
    steps = float(rows[0]["env_steps_total"])
    assert 0 < steps <= 2 * 2 * 4
    assert np.isfinite(float(rows[0]["return/trial"]))


def test_termination_can_be_switched_off_from_the_config(tmp_path):
    """With env.kwargs.terminate_when_unhealthy=false every episode runs the whole horizon."""
    cfg = load_config("experiments/walker2d_rand_params_maml.yaml", [
        "train.iterations=1", "train.show_progress=false", "maml.meta_batch_size=2", "maml.episodes_per_task=2",
        "env.horizon=60", "policy.hidden_sizes=[16]", "collector.num_threads=1",
        "env.kwargs.terminate_when_unhealthy=false"])
    rows = _row(train(cfg, tmp_path / "run"))
    assert float(rows[0]["env_steps_total"]) == 2 * 2 * 2 * 60
    cfg_default = load_config("experiments/walker2d_rand_params_maml.yaml", [
        "train.iterations=1", "train.show_progress=false", "maml.meta_batch_size=2", "maml.episodes_per_task=2",
        "env.horizon=60", "policy.hidden_sizes=[16]", "collector.num_threads=1"])
    rows = _row(train(cfg_default, tmp_path / "run_default"))
    assert float(rows[0]["env_steps_total"]) < 2 * 2 * 2 * 60  # an untrained walker falls within 60 steps
