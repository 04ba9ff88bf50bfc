"""results/families_cheetah/compare.py: the script behind the three-family HalfCheetahVel comparison."""

from __future__ import annotations

import csv
import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np

from metarl.evaluation.curves import write_results

SCRIPT = Path(__file__).resolve().parents[1] / "results" / "families_cheetah" / "compare.py"


def _module():
    spec = importlib.util.spec_from_file_location("families_cheetah_compare", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_first_reach_and_stays_above():
    m = _module()
    x = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    y = np.array([-10.0, -4.0, -6.0, -3.0, -2.0])
    assert m.first_reach(x, y, -5.0) == 2.0  # one lucky crossing
    assert m.stays_above(x, y, -5.0) == 4.0  # from here on never below again
    assert m.first_reach(x, y, -1.0) is None and m.stays_above(x, y, -1.0) is None
    assert m.stays_above(x, np.array([-1.0, -6.0, -1.0, -1.0, -7.0]), -5.0) is None  # below at the end
    assert m.stays_above(x, y, -20.0) == 1.0


def _progress(d: Path, cols: dict[str, list], steps: list[float]) -> None:
    d.mkdir(parents=True)
    with open(d / "progress.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["iteration", "env_steps_total", *cols])
        for i, s in enumerate(steps):
            w.writerow([i + 1, s, *(v[i] for v in cols.values())])


def _eval(d: Path, method: str, means: list[float]) -> None:
    # one value per task: the per-step mean is that value; the random initialisation's curve comes after the run's
    write_results(d, {method: np.array([[m] for m in means]), "random": np.full((len(means), 1), -500.0)}, "return", "t")


def test_summary_gives_the_env_steps_pearl_needs_and_the_ratio(tmp_path):
    # PEARL's meta-test (every other row, as with train.eval_every): -90, -50 (lucky), -70, -40, -30 at 20k..100k
    pearl_steps = [10e3 * i for i in range(1, 11)]
    test = ["", -90, "", -50, "", -70, "", -40, "", -30]
    _progress(tmp_path / "pearl", {"meta_test/return_step2": test}, pearl_steps)
    _progress(tmp_path / "maml", {"post_update/return": [-100.0, -60.0]}, [1e6, 2e6])
    _progress(tmp_path / "rl2", {"return/episode_1": [-100.0, -80.0]}, [0.5e6, 1e6])
    _eval(tmp_path / "fm", "maml", [-100.0, -60.0, -50.0, -45.0])
    _eval(tmp_path / "fr", "rl2", [-80.0, -60.0])
    _eval(tmp_path / "fp", "pearl", [-90.0, -60.0, -35.0])
    out = tmp_path / "out"
    r = subprocess.run(
        [sys.executable, str(SCRIPT), "--maml", str(tmp_path / "maml"), "--rl2", str(tmp_path / "rl2"),
         "--pearl", str(tmp_path / "pearl"), "--final-maml", str(tmp_path / "fm"), "--final-rl2", str(tmp_path / "fr"),
         "--final-pearl", str(tmp_path / "fp"), "--out", str(out), "--smooth", "1"],
        capture_output=True, text=True,
    )
    assert r.returncode == 0, r.stderr
    lines = (out / "summary.txt").read_text().splitlines()
    # MAML k=1: -60 after 2M; PEARL first at -50 (40k), stays from 80k: 50x and 25x
    assert lines[0].startswith("maml k=1: final test return -60.0 after 2.0M")
    assert "first reaches it at 0.04M (50x fewer)" in lines[0] and "from 0.08M (25x fewer)" in lines[0]
    # MAML k=3: -45; first and stays from 80k (-40): 25x
    assert "first reaches it at 0.08M (25x fewer)" in lines[1]
    # RL²: its last episode, -60 after 1M: first at 40k (25x), stays from 80k (12.5x)
    assert lines[2].startswith("rl2: final test return -60.0 after 1.0M")
    assert "(25x fewer)" in lines[2] and "(12x fewer)" in lines[2]
    assert lines[3] == "pearl: final test return -35.0 after 0.10M training env steps"
    assert (out / "curve.png").stat().st_size > 0
