"""`metarl tune` (test-time settings chosen on validation tasks) and `metarl seeds` (spread across
training seeds)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

import metarl  # noqa: F401  (registers the environments)
from metarl.cli import main
from metarl.evaluation.curves import write_results
from metarl.evaluation.plots import PlotError
from metarl.evaluation.seeds import aggregate_seeds
from metarl.experiment import RunError, evaluate_run, tune_run

SMALL_SINUSOID = ["train.show_progress=false", "collector.num_threads=1", "maml.meta_batch_size=5",
                  "train.iterations=30", "train.checkpoint_every=30", "eval.tasks=20", "eval.steps=2"]


@pytest.fixture(scope="module")
def sinusoid_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("tune") / "sin"
    args = ["train", "experiments/sinusoid_maml.yaml", "--run-dir", str(run_dir)]
    for item in SMALL_SINUSOID:
        args += ["--set", item]
    assert main(args) == 0
    return run_dir


def _read(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_tune_scores_each_setting_as_evaluate_does_on_the_validation_stream(sinusoid_run, tmp_path):
    out = tmp_path / "tune"
    res = tune_run(sinusoid_run, ["eval.inner_lr=1e-06,0.01"], seed=2000, out_dir=out)
    rows = _read(out / "tune.csv")
    assert [r["eval.inner_lr"] for r in rows] == ["1e-06", "0.01"]
    # A step size of 1e-6: next to no adaptation, a flat curve.
    flat = [float(rows[0][f"step{k}"]) for k in range(3)]
    assert flat[2] == pytest.approx(flat[0], rel=1e-3)
    # Each row is the curve `metarl evaluate --seed 2000` gives for that setting (same tasks, same shapes).
    for row, lr in zip(rows, ("1e-06", "0.01")):
        summary = evaluate_run(sinusoid_run, seed=2000, overrides=[f"eval.inner_lr={lr}"], out_dir=tmp_path / f"ev{lr}")
        expected = [r["mean"] for r in summary["curves"]["maml"]]
        np.testing.assert_allclose([float(row[f"step{k}"]) for k in range(3)], expected, rtol=1e-6)
    # The choice is the lowest loss after the last step, and only that row is marked.
    last = [float(r["step2"]) for r in rows]
    assert [int(r["chosen"]) for r in rows] == [int(i == int(np.argmin(last))) for i in range(2)]
    assert res["chosen"] == [f"eval.inner_lr={rows[int(np.argmin(last))]['eval.inner_lr']}"]
    assert last[1] < last[0]  # 30 iterations of MAML already adapt better than not adapting


def test_tune_never_chooses_a_diverged_setting(sinusoid_run, tmp_path):
    res = tune_run(sinusoid_run, ["eval.inner_lr=1e6,0.01"], seed=2000, out_dir=tmp_path)
    assert not np.isfinite(res["rows"][0]["means"][-1])
    assert res["chosen"] == ["eval.inner_lr=0.01"]
    with pytest.raises(RunError, match="every combination of the grid diverged"):
        tune_run(sinusoid_run, ["eval.inner_lr=1e6,1e7"], seed=2000, out_dir=tmp_path)


@pytest.mark.parametrize("args, message", [
    (["--grid", "eval.inner_lr=0.01", "--seed", "1000"], "--seed 1000 is the test-task stream"),
    (["--grid", "maml.inner_lr=0.01", "--seed", "2000"], "--grid expects KEY=V1,V2,... with KEY one of"),
    (["--grid", "eval.tasks=5,10", "--seed", "2000"], "--grid expects KEY=V1,V2,... with KEY one of"),
    (["--grid", "eval.deterministic=true,false", "--seed", "2000"], "--grid expects KEY=V1,V2,... with KEY one of"),
    (["--grid", "eval.inner_lr=0.01,", "--seed", "2000"], "--grid expects KEY=V1,V2,... with KEY one of"),
    (["--seed", "2000"], "tune needs at least one --grid"),
    (["--grid", "eval.inner_lr=0.01", "--seed", "2000", "--steps", "0"], "tune needs --steps >= 1"),
    (["--grid", "eval.inner_lr=0.01,0", "--seed", "2000"], "eval.inner_lr = 0.0 is out of range"),
])
def test_tune_bad_input_is_one_line(sinusoid_run, capsys, args, message):
    assert main(["tune", str(sinusoid_run), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def _fake_eval(root: Path, name: str, values: dict[str, np.ndarray], actions: str = "sampled") -> Path:
    write_results(root / name, values, "return", name, actions=actions)
    return root / name


def test_seeds_mean_and_spread_across_seeds(tmp_path):
    rng = np.random.default_rng(0)
    per_seed = [{"maml": rng.normal(size=(3, 7)), "pretrain": rng.normal(size=(3, 7))} for _ in range(3)]
    sources = [_fake_eval(tmp_path, f"s{i}", v) for i, v in enumerate(per_seed)]
    rows = aggregate_seeds(sources)
    assert len(rows) == 2 * 3
    for r in rows:
        means = np.array([v[r["method"]][r["step"]].mean() for v in per_seed])
        assert r["mean"] == pytest.approx(means.mean())
        assert r["seed_std"] == pytest.approx(means.std(ddof=1))
        assert (r["seed_min"], r["seed_max"], r["n_seeds"]) == (pytest.approx(means.min()), pytest.approx(means.max()), 3)
    assert main(["seeds", *map(str, sources), "--out", str(tmp_path / "agg")]) == 0
    assert len(_read(tmp_path / "agg" / "seeds.csv")) == 6


def test_seeds_refuses_unlike_evaluations(tmp_path):
    a = _fake_eval(tmp_path, "a", {"maml": np.zeros((3, 4))})
    b = _fake_eval(tmp_path, "b", {"maml": np.zeros((2, 4))})
    c = _fake_eval(tmp_path, "c", {"maml": np.zeros((3, 4))}, actions="mean")
    with pytest.raises(PlotError, match="methods and steps"):
        aggregate_seeds([a, b])
    with pytest.raises(PlotError, match="different actions"):
        aggregate_seeds([a, c])
    with pytest.raises(PlotError, match="at least 2 seeds"):
        aggregate_seeds([a])
    d = _fake_eval(tmp_path, "d", {"maml": np.zeros((3, 5))})
    with pytest.raises(PlotError, match="test tasks"):
        aggregate_seeds([a, d])


SMALL_NAV = ["maml.meta_batch_size=4", "maml.episodes_per_task=4", "env.horizon=20", "maml.cg_iters=2",
             "policy.hidden_sizes=[16,16]", "train.iterations=2", "train.checkpoint_every=2", "eval.tasks=6",
             "eval.steps=3"]


@pytest.mark.parametrize("scoring", ["sampled", "mean_action"])
def test_tune_of_an_rl_run_shares_first_steps_and_gives_each_settings_own_curve(tmp_path, monkeypatch, scoring):
    """Combinations with the same first step size share its data (fewer collections), and every row is still
    the curve `metarl evaluate --seed 2000` gives for that setting alone."""
    from metarl.sampling.collector import Collector

    run_dir = tmp_path / "nav"
    args = ["train", "experiments/navigation2d_maml.yaml", "--run-dir", str(run_dir)]
    for item in SMALL_NAV + (["eval.deterministic=true"] if scoring == "mean_action" else []):
        args += ["--set", item]
    assert main(args) == 0
    calls = []
    original = Collector.collect
    monkeypatch.setattr(Collector, "collect", lambda self, *a, **k: (calls.append(1), original(self, *a, **k))[1])
    grid = ["eval.inner_lr=0.05,0.2", "eval.inner_lr_after_first=0.02,0.1"]
    tune_run(run_dir, grid, seed=2000, out_dir=tmp_path / "tune")
    # Separately: 4 combinations x 4 collections (steps 0-3). Shared: step 0 once, step 1 once per first step
    # size, steps 2 and 3 for each combination: 1 + 2 + 4 + 4. Mean-action scoring adds one scored
    # collection per step, shared the same way.
    per_step = 2 if scoring == "mean_action" else 1
    assert len(calls) == (1 + 2 + 4 + 4) * per_step - (1 if scoring == "mean_action" else 0) * 4
    rows = _read(tmp_path / "tune" / "tune.csv")
    assert len(rows) == 4 and len({r["step3"] for r in rows}) == 4  # four different curves
    for row in rows:
        lr, after = row["eval.inner_lr"], row["eval.inner_lr_after_first"]
        summary = evaluate_run(run_dir, seed=2000, overrides=[f"eval.inner_lr={lr}", f"eval.inner_lr_after_first={after}"],
                               out_dir=tmp_path / f"ev{lr}_{after}")
        expected = [r["mean"] for r in summary["curves"]["maml"]]
        np.testing.assert_allclose([float(row[f"step{k}"]) for k in range(4)], expected, rtol=1e-6)


def test_shared_prefixes_keep_only_shared_steps_and_one_task_set():
    from metarl.common.adaptation import SharedPrefixes

    p = SharedPrefixes([(0.1, 0.02, 0.02), (0.1, 0.05, 0.05), (0.2, 0.02, 0.02)])
    assert p.wanted == {(), (0.1,)}  # (0.2,) and every two-step prefix belong to one combination only
    p.store((0.2,), "unused")
    p.store((0.1,), "after 0.1")
    assert p.longest((0.1, 0.05, 0.05)) == (1, "after 0.1") and p.longest((0.2, 0.02, 0.02)) == (0, None)
    tasks = [object(), object()]
    p.check_setting(tasks, 20, False)
    with pytest.raises(ValueError, match="other tasks or scoring"):
        p.check_setting(tasks, 20, True)
