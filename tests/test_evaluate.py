"""Adaptation curves, their files and plots (`metarl evaluate`, `metarl plot`) and the periodic
meta-test of `metarl train`."""

from __future__ import annotations

import csv
import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

import metarl  # noqa: F401  (registers the environments)
from metarl.common.checkpoint import load_latest_checkpoint
from metarl.cli import main
from metarl.sampling.collector import Collector
from metarl.algos.maml.maml import EVAL_QUERY_POINTS
from metarl.common.config import dump_yaml
from metarl.evaluation.curves import CSV_COLUMNS, gap_closed, summarize, t_quantile_975, write_results
from metarl.experiment import build_experiment, evaluate_run, load_config
from metarl.train import train

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
# Small budgets; one torch thread: these nets are tiny and the machines are shared.
SINUSOID = [
    "train.show_progress=false", "collector.num_threads=1", "maml.meta_batch_size=5", "maml.outer_lr=0.003",
    "train.checkpoint_every=0", "train.log_every=20", "train.iterations=200",
]


def _assert_png(path: Path) -> None:
    import matplotlib.image

    assert path.is_file(), path
    assert path.read_bytes()[:8] == PNG_MAGIC, path
    h, w = matplotlib.image.imread(path).shape[:2]
    assert h > 100 and w > 100


def _read_csv(path: Path) -> tuple[list[str], list[dict]]:
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        return list(reader.fieldnames), list(reader)


def _per_task(path: Path, method: str, step: int) -> np.ndarray:
    _, rows = _read_csv(path)
    rows = [r for r in rows if r["method"] == method and int(r["step"]) == step]
    rows.sort(key=lambda r: int(r["task"]))
    return np.array([float(list(r.values())[3]) for r in rows])


# ------------------------------------------------------------------ statistics and files
def test_summarize_matches_hand_computation():
    s = summarize(np.array([1.0, 2.0, 3.0, 4.0, 6.0]))
    # By hand: mean 3.2; squared deviations 4.84 + 1.44 + 0.04 + 0.64 + 7.84 = 14.8; sample variance
    # 14.8 / 4 = 3.7, std 1.9235384; t(0.975, df=4) = 2.776; half width 2.776 * 1.9235384 / sqrt(5).
    half = 2.776 * 1.9235384061671346 / 2.23606797749979
    assert s["mean"] == pytest.approx(3.2)
    assert s["std"] == pytest.approx(1.9235384061671346)
    assert s["ci95_low"] == pytest.approx(3.2 - half) and s["ci95_high"] == pytest.approx(3.2 + half)
    assert s["n_tasks"] == 5
    one = summarize(np.array([2.5]))
    assert one["mean"] == 2.5 and one["std"] == 0.0 and math.isnan(one["ci95_low"])


@pytest.mark.parametrize("df, expected", [(1, 12.706), (10, 2.228), (30, 2.042), (40, 2.0211), (100, 1.9840), (1000, 1.9623)])
def test_t_quantile(df, expected):
    assert t_quantile_975(df) == pytest.approx(expected, abs=2e-4)


def test_write_results_files(tmp_path):
    curves = {"maml": np.array([[3.0, 4.0, 5.0], [1.0, 2.0, 4.0]]), "random": np.array([[4.0, 4.0, 4.5], [4.0, 3.5, 4.5]])}
    write_results(tmp_path, curves, "loss", "title")
    header, rows = _read_csv(tmp_path / "adaptation.csv")
    assert header == CSV_COLUMNS == ["method", "step", "mean", "std", "ci95_low", "ci95_high", "n_tasks"]
    assert [(r["method"], r["step"]) for r in rows] == [("maml", "0"), ("maml", "1"), ("random", "0"), ("random", "1")]
    expected = summarize(np.array([1.0, 2.0, 4.0]))
    for key in CSV_COLUMNS[2:]:
        assert float(rows[1][key]) == pytest.approx(expected[key])
    header, rows = _read_csv(tmp_path / "adaptation_per_task.csv")
    assert header == ["method", "step", "task", "loss"]
    assert len(rows) == 12 and float(rows[5]["loss"]) == 4.0  # maml, step 1, task 2
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["metric"] == "loss" and set(summary["curves"]) == {"maml", "random"}
    assert "gap_closed" not in summary  # needs both a pretrain and an oracle curve
    _assert_png(tmp_path / "adaptation.png")


def test_gap_closed_fraction(tmp_path):
    # Per step: (maml - pretrain) / (oracle - pretrain) on the means over tasks.
    curves = {
        "maml": np.array([[-100.0, -90.0], [-60.0, -50.0]]),      # means -95, -55
        "pretrain": np.array([[-100.0, -100.0], [-90.0, -90.0]]),  # means -100, -90
        "oracle": np.array([[-40.0, -40.0], [-40.0, -40.0]]),
        "random": np.array([[-300.0, -300.0], [-250.0, -250.0]]),
    }
    assert gap_closed(curves) == {"maml": [pytest.approx(5 / 60), pytest.approx(35 / 50)]}
    write_results(tmp_path, curves, "return", "title")
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["gap_closed"]["maml"] == [pytest.approx(5 / 60), pytest.approx(0.7)]
    # against the pretrained policy without fine-tuning (-100): (-95 + 100) / 60, (-55 + 100) / 60
    assert summary["gap_closed_vs_pretrain_step0"]["maml"] == [pytest.approx(5 / 60), pytest.approx(45 / 60)]
    assert gap_closed({k: v for k, v in curves.items() if k != "oracle"}) == {}


def test_gap_from_separate_evaluations(tmp_path, capsys):
    # Each method evaluated on its own (as with step sizes chosen per method): `metarl gap` combines
    # the mean columns of three adaptation CSVs.
    write_results(tmp_path / "m", {"maml": np.array([[-100.0, -90.0], [-60.0, -50.0], [-45.0, -35.0]])}, "return", "t")
    write_results(tmp_path / "p", {"pretrain": np.array([[-100.0, -100.0], [-90.0, -90.0], [-80.0, -80.0]])}, "return", "t")
    write_results(tmp_path / "o", {"oracle": np.array([[-40.0, -40.0]] * 3), "pretrain": np.zeros((3, 2))}, "return", "t")
    assert main(["gap", str(tmp_path / "m"), "--low", str(tmp_path / "p"), "--high", str(tmp_path / "o" / "adaptation.csv"), "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["means"] == {"maml": [-95.0, -55.0, -40.0], "pretrain": [-100.0, -90.0, -80.0], "oracle": [-40.0] * 3}
    # (m_k - p_k) / (o - p_k): 5/60, 35/50, 40/40;  (m_k - p_0) / (o - p_0): 5/60, 45/60, 60/60
    assert res["gap_closed"] == [pytest.approx(5 / 60), pytest.approx(0.7), pytest.approx(1.0)]
    assert res["gap_closed_vs_low_step0"] == [pytest.approx(5 / 60), pytest.approx(0.75), pytest.approx(1.0)]
    assert res["method"] == "maml"  # no --method-name: the METHOD source's first curve
    # another method's evaluation (its own curve first, then the random initialisation's) needs no --method-name
    write_results(tmp_path / "q", {"promp": np.array([[-100.0, -90.0], [-70.0, -70.0], [-50.0, -50.0]]),
                                   "random": np.full((3, 2), -300.0)}, "return", "t")
    assert main(["gap", str(tmp_path / "q"), "--low", str(tmp_path / "p"), "--high", str(tmp_path / "o")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["promp", "mean", "by", "step", "0:", "-95.000", "1:", "-70.000", "2:", "-50.000"]
    # (q_k - p_k) / (o - p_k): 5/60, 20/50, 30/40
    assert lines[-2].split()[:2] == ["promp", "pretrain_k->oracle"] and lines[-2].split()[-5:] == ["0.08", "1:", "0.40", "2:", "0.75"]
    assert main(["gap", str(tmp_path / "q"), "--low", str(tmp_path / "p"), "--high", str(tmp_path / "o"), "--method-name", "random", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["means"]["random"] == [-300.0] * 3  # an explicit name still picks
    # a curve the CSV does not hold: one line naming it and what is there
    assert main(["gap", str(tmp_path / "m"), "--low", str(tmp_path / "m"), "--high", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "no curve named 'pretrain'" in err and "['maml']" in err
    # evaluations scored with different actions (eval.deterministic) are not put side by side
    write_results(tmp_path / "o_mean", {"oracle": np.array([[-30.0, -30.0]] * 3)}, "return", "t", actions="mean")
    assert json.loads((tmp_path / "m" / "summary.json").read_text())["actions"] == "sampled"
    for args in (["gap", str(tmp_path / "m"), "--low", str(tmp_path / "p"), "--high", str(tmp_path / "o_mean")],
                 ["plot", str(tmp_path / "m"), str(tmp_path / "o_mean"), "--out", str(tmp_path / "x.png")]):
        assert main(args) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "(mean actions)" in err and "(sampled actions)" in err, err


def test_gap_fractions_validate_lengths():
    from metarl.evaluation.curves import gap_fractions

    assert gap_fractions([-50.0, -20.0], [-100.0, -80.0], [0.0]) == [pytest.approx(0.5), pytest.approx(0.75)]
    with pytest.raises(ValueError, match="equal length"):
        gap_fractions([1.0, 2.0], [1.0], [3.0])
    with pytest.raises(ValueError, match="low_step=5"):
        gap_fractions([1.0], [0.0], [2.0], low_step=5)


# ------------------------------------------------------------------ trained sinusoid runs
@pytest.fixture(scope="module")
def sinusoid_runs(tmp_path_factory):
    """A MAML and a pretrain run (same budget), evaluated through the CLI with --compare."""
    root = tmp_path_factory.mktemp("runs")
    maml_dir, pre_dir = root / "sin_maml", root / "sin_pretrain"
    for config, run_dir in (("experiments/sinusoid_maml.yaml", maml_dir), ("experiments/sinusoid_pretrain.yaml", pre_dir)):
        args = ["train", config, "--run-dir", str(run_dir)]
        for item in SINUSOID:
            args += ["--set", item]
        assert main(args) == 0
    assert main(["evaluate", str(maml_dir), "--steps", "3", "--tasks", "50", "--compare", str(pre_dir)]) == 0
    return maml_dir, pre_dir


def test_sinusoid_eval_files(sinusoid_runs):
    maml_dir, _ = sinusoid_runs
    header, rows = _read_csv(maml_dir / "eval" / "adaptation.csv")
    assert header == CSV_COLUMNS
    assert [(r["method"], int(r["step"])) for r in rows] == [(m, k) for m in ("maml", "random", "pretrain") for k in range(4)]
    assert all(int(r["n_tasks"]) == 50 for r in rows)
    for r in rows:
        assert float(r["ci95_low"]) <= float(r["mean"]) <= float(r["ci95_high"])
    _assert_png(maml_dir / "eval" / "adaptation.png")
    _assert_png(maml_dir / "eval" / "sinusoid_fits.png")


def test_maml_adapts_better_than_pretrained(sinusoid_runs):
    maml_dir, _ = sinusoid_runs
    per_task = maml_dir / "eval" / "adaptation_per_task.csv"
    for step in (1, 2, 3):
        # Same test tasks and support points for both methods: a paired comparison per task.
        diff = _per_task(per_task, "maml", step) - _per_task(per_task, "pretrain", step)
        assert summarize(diff)["ci95_high"] < 0, (step, summarize(diff))
    # And MAML's own adaptation helps: loss after 3 steps well below before adaptation.
    assert _per_task(per_task, "maml", 3).mean() < 0.8 * _per_task(per_task, "maml", 0).mean()


def test_step0_is_the_query_loss_of_theta(sinusoid_runs):
    """Step 0 recomputed independently: the meta-parameters' MSE on the evaluation's query points."""
    maml_dir, _ = sinusoid_runs
    cfg = load_config(maml_dir / "config.yaml")
    exp = build_experiment(cfg)
    exp.algo.load_state_dict(load_latest_checkpoint(maml_dir)["algo"])
    policy = exp.algo.policy
    collector = Collector(cfg.env.id, seed=cfg.eval.seed)
    tasks = collector.sample_tasks(50, np.random.default_rng(cfg.eval.seed))
    # The evaluator draws the K support points first, then the query points, from one collector.
    collector.collect(policy, tasks, cfg.maml.episodes_per_task)
    query = collector.collect(policy, tasks, EVAL_QUERY_POINTS)
    with torch.no_grad():
        sq = ((policy(query.obs[0]) - query.targets[0]) ** 2).squeeze(-1)  # [tasks * points]
    expected = sq.reshape(50, EVAL_QUERY_POINTS).mean(1).numpy()
    got = _per_task(maml_dir / "eval" / "adaptation_per_task.csv", "maml", 0)
    np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_regression_fits_data(sinusoid_runs):
    """The data behind sinusoid_fits.png: true curve from query samples, support set, predictions."""
    from metarl.evaluation.curves import regression_fits

    maml_dir, _ = sinusoid_runs
    cfg = load_config(maml_dir / "config.yaml")
    exp = build_experiment(cfg)
    exp.algo.load_state_dict(load_latest_checkpoint(maml_dir)["algo"])
    tasks = Collector(cfg.env.id, seed=1).sample_tasks(2, np.random.default_rng(1))
    fits = regression_fits(exp.algo, tasks, Collector(cfg.env.id, seed=cfg.eval.seed), cfg.eval, steps=(0, 1, 3))
    assert len(fits) == 2
    for task, fit in zip(tasks, fits):
        assert np.all(np.diff(fit["x"]) >= 0) and len(fit["x"]) == 200
        np.testing.assert_allclose(fit["y"], task.amplitude * np.sin(fit["x"] - task.phase), rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(fit["support_y"], task.amplitude * np.sin(fit["support_x"] - task.phase), rtol=1e-4, atol=1e-5)
        assert len(fit["support_x"]) == cfg.maml.episodes_per_task and set(fit["predictions"]) == {0, 1, 3}
        with torch.no_grad():
            theta = exp.algo.policy(torch.from_numpy(fit["x"]).unsqueeze(-1)).squeeze(-1).numpy()
        np.testing.assert_allclose(fit["predictions"][0], theta, rtol=1e-5, atol=1e-6)
        # Adapting on the support points fits them better than θ does.
        def support_mse(k):
            pred = np.interp(fit["support_x"], fit["x"], fit["predictions"][k])
            return np.mean((pred - fit["support_y"]) ** 2)
        assert support_mse(3) < support_mse(0)


def test_plot_commands(sinusoid_runs, tmp_path, capsys):
    maml_dir, pre_dir = sinusoid_runs
    assert main(["evaluate", str(pre_dir), "--steps", "2", "--tasks", "5"]) == 0
    out = tmp_path / "overlay.png"
    assert main(["plot", str(maml_dir), str(pre_dir / "eval"), "--out", str(out)]) == 0
    _assert_png(out)
    # --methods keeps only the named curves; a name no source holds is an error naming what they hold.
    from metarl.evaluation.plots import select_curves

    all_labels = [label for label, _ in select_curves([maml_dir, pre_dir / "eval"])[0]]
    assert {l.split(": ")[1] for l in all_labels} >= {"maml", "pretrain", "random"}
    kept = [label for label, _ in select_curves([maml_dir, pre_dir / "eval"], ["random"])[0]]
    assert len(kept) == 2 and all(l.endswith(": random") for l in kept)
    one_run = f"{maml_dir.name}:random"  # RUN:NAME keeps that source's curve only
    kept = [label for label, _ in select_curves([maml_dir, pre_dir / "eval"], [one_run, "pretrain"])[0]]
    assert f"{maml_dir.name}: random" in kept and f"{pre_dir.name}: random" not in kept, kept
    assert f"{pre_dir.name}: pretrain" in kept, kept
    assert main(["plot", str(maml_dir), "--methods", "maml", "--out", str(out)]) == 0
    capsys.readouterr()
    assert main(["plot", str(maml_dir), "--methods", "maml", "nosuch", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "nosuch" in err and "random" in err
    out = tmp_path / "training.png"
    assert main(["plot", "--training", str(maml_dir), str(pre_dir), "--out", str(out)]) == 0
    _assert_png(out)
    assert main(["plot", "--training", str(maml_dir), "--x", "env_steps", "--out", str(out)]) == 0
    capsys.readouterr()
    # An option the chosen kind of plot would not read is an error naming it, not silently dropped.
    assert main(["plot", "--training", str(maml_dir), "--methods", "maml", "--out", str(out)]) == 2
    assert "--methods" in capsys.readouterr().err
    assert main(["plot", str(maml_dir), "--x", "env_steps", "--out", str(tmp_path / "a.png")]) == 2
    assert "--x env_steps" in capsys.readouterr().err
    assert main(["plot", "--training", str(maml_dir), "--ylim", "0", "1", "--out", str(out)]) == 2
    assert "--ylim" in capsys.readouterr().err
    assert main(["plot", str(maml_dir), "--ylim", "1", "0", "--out", str(out)]) == 2
    assert "--ylim 1 0: LOW must be below HIGH" in capsys.readouterr().err
    # A run without eval/ : one clear line naming it, exit status 2.
    bare = tmp_path / "bare"
    bare.mkdir()
    assert main(["plot", str(bare), "--out", str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(bare) in err and "metarl evaluate" in err
    assert main(["plot", "--training", str(bare), "--out", str(tmp_path / "x.png")]) == 2
    assert "progress.csv" in capsys.readouterr().err


# ------------------------------------------------------------------ iteration 0, RL
def test_evaluate_untrained_navigation_step0(tmp_path):
    """A run dir holding only config.yaml (iteration 0); step 0 equals a plain collect with θ."""
    cfg = load_config("experiments/navigation2d_maml.yaml", [
        "maml.episodes_per_task=2", "eval.tasks=3", "eval.steps=1", "collector.num_threads=1",
    ])
    run_dir = tmp_path / "nav"
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text(dump_yaml(cfg))
    summary = evaluate_run(run_dir)
    assert summary["title"].endswith("(iteration 0)")
    assert set(summary["curves"]) == {"maml", "random"}
    policy = build_experiment(cfg).policy  # the initial θ: seeded from cfg.seed
    tasks = Collector(cfg.env.id, seed=cfg.eval.seed).sample_tasks(3, np.random.default_rng(cfg.eval.seed))
    batch = Collector(cfg.env.id, seed=cfg.eval.seed).collect(policy, tasks, 2)
    expected = batch.mean_return_per_task().numpy()
    got = _per_task(run_dir / "eval" / "adaptation_per_task.csv", "maml", 0)
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    assert [r["step"] for r in summary["curves"]["maml"]] == [0, 1]


# ------------------------------------------------------------------ periodic meta-test in training
def test_periodic_meta_test_logging_leaves_training_unchanged(tmp_path):
    base = load_config("experiments/sinusoid_maml.yaml", [
        "train.show_progress=false", "collector.num_threads=1", "maml.meta_batch_size=3",
        "train.iterations=6", "train.log_every=2", "train.checkpoint_every=3", "eval.steps=2",
    ])
    # eval_tasks = meta_batch_size: evaluation batches the same shape as training batches, so an
    # evaluation that drew from the training collector's streams would change training.
    with_eval = replace(base, train=replace(base.train, eval_every=3, eval_tasks=3))
    train(base, tmp_path / "plain")
    train(with_eval, tmp_path / "eval")
    header, rows = _read_csv(tmp_path / "eval" / "progress.csv")
    keys = [f"meta_test/loss_step{k}" for k in range(3)]
    assert all(k in header for k in keys)
    by_iter = {int(r["iteration"]): r for r in rows}
    assert sorted(by_iter) == [2, 3, 4, 6]  # every log_every, plus every eval_every
    for it in (3, 6):
        assert all(math.isfinite(float(by_iter[it][k])) for k in keys)
    for it in (2, 4):
        assert all(by_iter[it][k] == "" for k in keys)
    # Evaluating used its own streams: training is bit-identical to the run without evaluation.
    _, plain = _read_csv(tmp_path / "plain" / "progress.csv")
    for r in plain:
        for key in ("pre_update/loss", "post_update/loss"):
            assert by_iter[int(r["iteration"])][key] == r[key]
    a = load_latest_checkpoint(tmp_path / "plain")["algo"]["policy"]
    b = load_latest_checkpoint(tmp_path / "eval")["algo"]["policy"]
    assert all(torch.equal(a[k], b[k]) for k in a)

    # Resuming from iteration 3 reproduces iterations 4..6, meta-test cells included.
    (tmp_path / "eval" / "checkpoints" / "iter_0000006.pt").unlink()
    train(with_eval, tmp_path / "eval", resume=True)
    _, resumed = _read_csv(tmp_path / "eval" / "progress.csv")
    assert [r["iteration"] for r in resumed] == [r["iteration"] for r in rows]
    for r, q in zip(rows, resumed):
        assert {k: v for k, v in r.items() if not k.startswith("time/")} == {k: v for k, v in q.items() if not k.startswith("time/")}
    c = load_latest_checkpoint(tmp_path / "eval")["algo"]["policy"]
    assert all(torch.equal(a[k], c[k]) for k in a)


# ------------------------------------------------------------------ Meta-SGD: evaluated with its learned rates
def _meta_sgd_run(tmp_path, rates: float) -> Path:
    """A Meta-SGD sinusoid run of 2 iterations whose checkpoint's learned rates are all set to ``rates``."""
    from metarl.common.checkpoint import list_checkpoints

    run_dir = tmp_path / "sgd"
    cfg = load_config("experiments/sinusoid_maml.yaml", [
        "maml.learn_inner_lr=true", "train.iterations=2", "train.checkpoint_every=2", "maml.meta_batch_size=3",
        "train.show_progress=false", "collector.num_threads=1", "eval.tasks=4", "eval.steps=3",
    ])
    train(cfg, run_dir)
    _, path = list_checkpoints(run_dir)[-1]
    state = torch.load(path, weights_only=False)
    for v in state["algo"]["inner_lrs"].values():
        v.fill_(rates)
    torch.save(state, path)
    return run_dir


def test_meta_sgd_with_zeroed_learned_rates_does_not_adapt(tmp_path):
    """Zero learned rates: every evaluation path (metarl evaluate, the fit figure, the periodic
    meta-test) must show no change across steps; scalar eval.inner_lr would move θ."""
    from metarl.evaluation.curves import meta_test_scalars, regression_fits

    run_dir = _meta_sgd_run(tmp_path, 0.0)
    summary = evaluate_run(run_dir)
    means = [r["mean"] for r in summary["curves"]["metasgd"]]  # a Meta-SGD run's curve is named so
    assert len(means) == 4 and means == [means[0]] * 4, means
    random_means = [r["mean"] for r in summary["curves"]["random"]]
    assert random_means[3] != random_means[0]  # the random init adapts with the scalar maml.inner_lr
    for k in range(4):
        np.testing.assert_array_equal(_per_task(run_dir / "eval" / "adaptation_per_task.csv", "metasgd", k),
                                      _per_task(run_dir / "eval" / "adaptation_per_task.csv", "metasgd", 0))

    cfg = load_config(run_dir / "config.yaml")
    exp = build_experiment(cfg)
    exp.algo.load_state_dict(load_latest_checkpoint(run_dir)["algo"])
    assert all(torch.all(v == 0) for v in exp.algo.inner_lrs.values())
    tasks = Collector(cfg.env.id, seed=1).sample_tasks(2, np.random.default_rng(1))
    for fit in regression_fits(exp.algo, tasks, Collector(cfg.env.id, seed=cfg.eval.seed), cfg.eval, steps=(0, 1, 3)):
        np.testing.assert_array_equal(fit["predictions"][3], fit["predictions"][0])
    scalars = meta_test_scalars(exp.algo, cfg)
    assert len(scalars) == 4 and len(set(scalars.values())) == 1, scalars


def test_meta_sgd_uniform_learned_rates_equal_that_scalar_step(tmp_path):
    """Learned rates all equal to c adapt exactly like MAML's scalar step size c."""
    from metarl.algos.maml import MAML

    run_dir = _meta_sgd_run(tmp_path, 0.03)
    cfg = load_config(run_dir / "config.yaml")
    exp = build_experiment(cfg)
    exp.algo.load_state_dict(load_latest_checkpoint(run_dir)["algo"])
    tasks = Collector(cfg.env.id, seed=5).sample_tasks(4, np.random.default_rng(5))
    got = exp.algo.adaptation_curve(tasks, Collector(cfg.env.id, seed=9), cfg.eval)
    scalar = MAML(exp.algo.policy, exp.collector, replace(cfg.maml, learn_inner_lr=False, inner_lr=0.03))
    expected = scalar.adaptation_curve(tasks, Collector(cfg.env.id, seed=9), cfg.eval)
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    assert got[3].mean() < got[0].mean()


def test_meta_sgd_refuses_explicit_eval_step_sizes(tmp_path):
    from metarl.common.config import ConfigError
    from metarl.algos.maml import test_time_inner_lrs

    for key in ("eval.inner_lr", "eval.inner_lr_after_first"):
        with pytest.raises(ConfigError) as err:
            load_config("experiments/sinusoid_maml.yaml", ["maml.learn_inner_lr=true", f"{key}=0.05"])
        assert str(err.value).startswith(f"{key} = 0.05 is set for a Meta-SGD run") and "\n" not in str(err.value)
    with pytest.raises(ConfigError, match="needs algo maml"):
        load_config("experiments/sinusoid_pretrain.yaml", ["maml.learn_inner_lr=true"])
    cfg = load_config("experiments/navigation2d_maml.yaml")  # eval.inner_lr 0.1, then 0.05
    with pytest.raises(ValueError, match="eval.inner_lr = 0.1 is set for a Meta-SGD run"):
        test_time_inner_lrs(cfg.maml, cfg.eval, 3, learned=True)
    assert test_time_inner_lrs(cfg.maml, cfg.eval, 3) == [0.1, 0.05, 0.05]
    # metarl evaluate refuses it too, in one line
    run_dir = _meta_sgd_run(tmp_path, 0.0)
    assert main(["evaluate", str(run_dir), "--set", "eval.inner_lr=0.05"]) == 2


# ------------------------------------------------------------------ scoring: sampled, or mean actions for all
def test_maml_curve_scores_sampled_episodes_or_mean_actions():
    """Default: the return of the sampled episodes each step adapts on. eval.deterministic: the
    mean-action return of the parameters after each step, the adaptation still on sampled episodes
    (Navigation2D has no randomness but the policy's, so both are recomputed here exactly)."""
    from metarl.algos.maml import MAML

    nav = "metarl/Navigation2D-v0"
    cfg = load_config("experiments/navigation2d_maml.yaml", ["collector.num_threads=1"])
    algo = build_experiment(cfg).algo
    tasks = Collector(nav).sample_tasks(3, np.random.default_rng(4))
    ev = replace(cfg.eval, steps=2, episodes_per_task=2)  # step sizes 0.1, then 0.05
    sampled = algo.adaptation_curve(tasks, Collector(nav, seed=5), ev)
    data = MAML(algo.policy, Collector(nav, seed=5), cfg.maml).rollout_adaptation(tasks, 2, 2, 2, [0.1, 0.05])
    np.testing.assert_array_equal(sampled, np.stack([d.batch.mean_return_per_task().numpy() for d in data]))

    mean = algo.adaptation_curve(tasks, Collector(nav, seed=5), replace(ev, deterministic=True))
    m = MAML(algo.policy, Collector(nav, seed=5), cfg.maml)
    params, expected = None, []
    for j in range(3):
        scored = Collector(nav, seed=0).collect(algo.policy, tasks, 2, params=params,
                                                per_task_params=params is not None, deterministic=True)
        expected.append(scored.mean_return_per_task().numpy())
        if j < 2:
            params = m.inner_step_detached(params, m.collect_inner(tasks, params, 2), 3, lr=[0.1, 0.05][j])
    np.testing.assert_array_equal(mean, np.stack(expected))
    assert not np.array_equal(mean, sampled)


def test_compare_runs_must_share_horizon_and_env_kwargs(tmp_path, capsys):
    runs = {}
    for name, extra in (("a", []), ("b", ["env.horizon=50"])):
        cfg = load_config("experiments/navigation2d_maml.yaml", ["eval.tasks=2", "eval.steps=0", *extra])
        runs[name] = tmp_path / name
        runs[name].mkdir()
        (runs[name] / "config.yaml").write_text(dump_yaml(cfg))
    assert main(["evaluate", str(runs["a"]), "--compare", str(runs["b"])]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "horizon and env.kwargs (50, {})" in err and "(100, {})" in err


def test_plot_ylim_fixes_the_axis(sinusoid_runs, tmp_path, monkeypatch):
    """--ylim LOW HIGH sets the y axis (a diverging curve would otherwise flatten the others)."""
    from metarl.evaluation import plots

    seen = []
    save = plots._save
    monkeypatch.setattr(plots, "_save", lambda fig, out: (seen.append(fig.axes[0].get_ylim()), save(fig, out))[1])
    out = tmp_path / "ylim.png"
    assert main(["plot", str(sinusoid_runs[0]), "--ylim", "0.25", "3.5", "--out", str(out)]) == 0
    assert main(["plot", str(sinusoid_runs[0]), "--out", str(out)]) == 0
    assert seen[0] == (0.25, 3.5) and seen[1] != (0.25, 3.5)
    _assert_png(out)


def test_plot_of_unlike_x_axes_names_both(sinusoid_runs, tmp_path, monkeypatch):
    """MAML's gradient steps beside RL²'s episodes: the axis label names both, never a neutral 'step'."""
    import shutil

    from metarl.evaluation import plots

    other = tmp_path / "episodes"
    shutil.copytree(Path(sinusoid_runs[0]) / "eval", other)
    summary = json.loads((other / "summary.json").read_text())
    own = summary["x_label"]
    summary["x_label"] = "episode in trial"
    (other / "summary.json").write_text(json.dumps(summary))
    seen = []
    save = plots._save
    monkeypatch.setattr(plots, "_save", lambda fig, out: (seen.append(fig.axes[0].get_xlabel()), save(fig, out))[1])
    assert main(["plot", str(sinusoid_runs[0]), str(other), "--out", str(tmp_path / "mixed.png")]) == 0
    assert main(["plot", str(sinusoid_runs[0]), "--out", str(tmp_path / "one.png")]) == 0
    assert seen == [" / ".join(sorted([own, "episode in trial"])), own]
