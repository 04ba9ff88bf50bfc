"""experiments/progress_window.py: window means of progress.csv columns against a hand computation."""

import subprocess
import sys


def _run(*args):
    return subprocess.run([sys.executable, "experiments/progress_window.py", *map(str, args)],
                          capture_output=True, text=True)


def test_window_means_and_missing_rows(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    rows = ["iteration,post_update/return,kl"] + [f"{i},{10 * i},{0.001 * i if i != 3 else ''}" for i in range(1, 6)]
    (run / "progress.csv").write_text("\n".join(rows) + "\n")
    out = _run(run, "--first", 2, "--last", 4, "--columns", "post_update/return", "kl")
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["run,post_update/return,kl", f"{run},30,0.003"]  # kl: empty row 3 skipped
    short = _run(run, "--first", 4, "--last", 7)
    assert short.returncode != 0 and "iterations 6..7 of the window 4-7 are missing" in short.stderr
    bad = _run(run, "--first", 1, "--last", 2, "--columns", "nope")
    assert bad.returncode != 0 and "no column 'nope'" in bad.stderr
