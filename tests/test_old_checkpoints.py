"""Checkpoints written before metarl/ was split into packages (commit 4af0c51) load and resume.

A checkpoint holds only tensors, numbers, strings and plain containers (no pickled metarl class),
and the config as a plain mapping, so a module moving does not change what it can load.
"""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import pytest
import torch

from metarl.common.checkpoint import list_checkpoints, load_latest_checkpoint
from metarl.experiment import load_run, load_run_config
from metarl.train import train

OLD_RUNS = Path(__file__).resolve().parent / "data" / "runs_4af0c51"


def _assert_same(a, b, where="state"):
    """Nested state dicts equal: tensors bitwise, everything else with ==."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.shape == b.shape and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert isinstance(b, dict) and set(a) == set(b), f"{where}: keys {sorted(a)} != {sorted(b)}"
        for k in a:
            _assert_same(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_same(x, y, f"{where}[{i}]")
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


@pytest.mark.parametrize("name,algo", [("maml_navigation2d", "maml"), ("rl2_bandit", "rl2")])
def test_old_checkpoint_loads_into_the_new_layout(name, algo):
    run = OLD_RUNS / name
    saved = load_latest_checkpoint(run)
    assert saved["iteration"] == 2
    cfg, exp, iteration = load_run(run, None)
    assert cfg.algo == algo and iteration == 2
    assert cfg == load_run_config(run)
    # Everything the old run saved for the algorithm is what the new code holds after loading.
    _assert_same(saved["algo"], exp.algo.state_dict(), "algo")


@pytest.mark.parametrize("name", ["maml_navigation2d", "rl2_bandit"])
def test_old_run_resumes(tmp_path, name):
    run = tmp_path / name
    shutil.copytree(OLD_RUNS / name, run)
    cfg = load_run_config(run, ["train.iterations=3"])
    train(cfg, run, resume=True)
    assert [i for i, _ in list_checkpoints(run)] == [3]
    with open(run / "progress.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["iteration"]) for r in rows] == [1, 2, 3]
    with open(OLD_RUNS / name / "progress.csv", newline="") as f:
        assert rows[:2] == list(csv.DictReader(f))  # the old rows are kept as they were
    assert float(rows[2]["env_steps_total"]) > float(rows[1]["env_steps_total"])
