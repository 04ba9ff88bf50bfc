"""results/promp_navigation/aggregate.py: the script behind the navigation comparison tables and plots."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "results" / "promp_navigation" / "aggregate.py"


def _run_dir(root: Path, name: str, iterations: int, steps_per_iteration: float, base: float) -> None:
    """A fake run whose meta-test (every 5 iterations) returns base + iteration + k at step k."""
    d = root / name
    d.mkdir(parents=True)
    cols = ["iteration", "env_steps_total"] + [f"meta_test/return_step{k}" for k in range(4)]
    with open(d / "progress.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(cols)
        for it in range(1, iterations + 1):
            tested = it % 5 == 0
            w.writerow([it, it * steps_per_iteration] + [base + it + k if tested else "" for k in range(4)])


def _aggregate(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True)


def test_methods_of_unlike_length_are_kept_and_an_unfinished_seed_is_left_out(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    _run_dir(a, "maml_s0", 20, 1000.0, -40.0)
    _run_dir(a, "maml_s1", 20, 1000.0, -42.0)
    _run_dir(b, "pearl_s0", 10, 10.0, -30.0)
    _run_dir(b, "pearl_s1", 5, 10.0, -30.0)  # stopped early: left out
    out = tmp_path / "out"
    r = _aggregate("--runs", str(a), str(b), "--out", str(out), "--last", "2", "--threshold", "-21",
                   "--threshold-step", "3", "--log-x")
    assert r.returncode == 0, r.stderr
    assert "unfinished, left out: pearl_s1" in r.stdout
    rows = {(x["method"], x["seed"]): x for x in csv.DictReader(open(out / "final.csv"))}
    assert set(rows) == {("maml", "0"), ("maml", "1"), ("pearl", "0")}
    # maml seed 0: meta-tests at 15 and 20, step k returns -40 + it + k; mean of the last 2
    assert [float(rows[("maml", "0")][f"step{k}_last2"]) for k in range(4)] == [-22.5, -21.5, -20.5, -19.5]
    # step 3 first reaches -21: maml seed 0 at iteration 20 (-22 at 15, -17 at 20), pearl seed 0 at 10 (-22 at 5, -17 at 10)
    assert float(rows[("maml", "0")]["env_steps_to_threshold"]) == 20000.0
    assert float(rows[("pearl", "0")]["env_steps_to_threshold"]) == 100.0
    assert (out / "curve.png").stat().st_size > 0


def test_methods_filter_and_a_seed_read_twice_is_refused(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    _run_dir(a, "maml_s0", 10, 1.0, -40.0)
    _run_dir(a, "rl2_s0", 10, 1.0, -40.0)
    _run_dir(b, "maml_s0", 10, 1.0, -40.0)
    r = _aggregate("--runs", str(a), "--methods", "rl2", "--out", str(tmp_path / "out"))
    assert r.returncode == 0, r.stderr
    assert {x["method"] for x in csv.DictReader(open(tmp_path / "out" / "final.csv"))} == {"rl2"}
    r = _aggregate("--runs", str(a), str(b), "--out", str(tmp_path / "out2"))
    assert r.returncode != 0 and "maml seed 0 was already read" in r.stderr
