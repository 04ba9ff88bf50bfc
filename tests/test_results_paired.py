"""results/halfcheetah_vel/paired.py: paired differences of two evaluations on the same test tasks."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "results" / "halfcheetah_vel" / "paired.py"


def _per_task(path: Path, method: str, returns: dict[int, list[float]]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["method", "step", "task", "return"])
        for k, values in returns.items():
            for t, v in enumerate(values):
                w.writerow([method, k, t, v])
                w.writerow(["random", k, t, -1000.0])  # another method's rows are ignored


def test_paired_difference_mean_ci_and_count(tmp_path):
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    # differences at step 0: 1, 2, 3, 6 -> mean 3, sample std sqrt(14/3), t(3) = 3.182, half width 3.437
    _per_task(a, "promp", {0: [1.0, 2.0, 3.0, 6.0], 1: [0.0, 0.0, 0.0, 0.0]})
    _per_task(b, "maml", {0: [0.0, 0.0, 0.0, 0.0], 1: [1.0, -1.0, 1.0, 1.0]})
    r = subprocess.run([sys.executable, str(SCRIPT), str(a), str(b)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == "step 0: promp - maml = 3.0 [-0.4, 6.4], promp higher on 4 of 4 tasks"
    assert lines[1].startswith("step 1: promp - maml = -0.5 [") and lines[1].endswith("promp higher on 1 of 4 tasks")


def test_unlike_task_sets_are_refused(tmp_path):
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    _per_task(a, "promp", {0: [1.0, 2.0, 3.0]})
    _per_task(b, "maml", {0: [1.0, 2.0]})
    r = subprocess.run([sys.executable, str(SCRIPT), str(a), str(b)], capture_output=True, text=True)
    assert r.returncode != 0 and "do not hold the same (step, task) pairs" in r.stderr
