"""MAML correctness: meta-gradients against central finite differences, first-order mode, TRPO
through the adaptation, and small learning tests."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from metarl.sampling.collector import Collector, EpisodeBatch
from metarl.algos.maml import MAML, InnerData, MAMLConfig
from metarl.common.policies import GaussianMLPPolicy, MLPRegressor, expand_params


def _double(batch: EpisodeBatch) -> EpisodeBatch:
    out = batch.to("cpu")
    for name in ("obs", "rewards", "valid", "log_probs", "targets"):
        value = getattr(out, name)
        if value is not None:
            setattr(out, name, value.double())
    if out.actions.is_floating_point():
        out.actions = out.actions.double()
    return out


def _flat_grad(fn, params):
    loss = fn()
    grads = torch.autograd.grad(loss, params)
    return torch.cat([g.reshape(-1) for g in grads])


def _finite_difference(fn, params, eps=1e-6):
    """Central differences of the scalar fn() w.r.t. every entry of params (float64)."""
    out = []
    with torch.no_grad():
        for p in params:
            flat = p.view(-1)
            for i in range(flat.numel()):
                orig = flat[i].item()
                flat[i] = orig + eps
                with torch.enable_grad():
                    up = fn().item()
                flat[i] = orig - eps
                with torch.enable_grad():
                    down = fn().item()
                flat[i] = orig
                out.append((up - down) / (2 * eps))
    return torch.tensor(out, dtype=torch.float64)


@pytest.fixture(scope="module")
def sinusoid_setup():
    collector = Collector("metarl/Sinusoid-v0", seed=3)
    tasks = collector.sample_tasks(3, np.random.default_rng(0))
    torch.manual_seed(0)
    policy = MLPRegressor(1, 1, hidden_sizes=(4,), activation="tanh").double()
    cfg = MAMLConfig(meta_batch_size=3, episodes_per_task=5, inner_lr=0.05, outer="adam")
    algo = MAML(policy, collector, cfg)
    support = InnerData(_double(collector.collect(policy.float(), tasks, 5)), None)
    query = InnerData(_double(collector.collect(policy, tasks, 7)), None)
    policy.double()
    return algo, tasks, support, query


@pytest.mark.parametrize("steps", [1, 2])
def test_supervised_meta_gradient_matches_finite_differences(sinusoid_setup, steps):
    algo, tasks, support, query = sinusoid_setup
    M = len(tasks)
    params = list(algo.policy.parameters())

    def meta_loss():
        adapted = algo.adapt([support] * steps, M, first_order=False)
        return algo.inner_loss(adapted, query, M).mean()

    analytic = _flat_grad(meta_loss, params)
    numeric = _finite_difference(meta_loss, params)
    torch.testing.assert_close(analytic, numeric, rtol=1e-5, atol=1e-7)
    # The second-order term matters here: the first-order gradient is measurably different.
    def fo_loss():
        adapted = algo.adapt([support] * steps, M, first_order=True)
        return algo.inner_loss(adapted, query, M).mean()

    assert (_flat_grad(fo_loss, params) - numeric).abs().max() > 1e-4


def test_first_order_drops_the_inner_hessian(sinusoid_setup):
    algo, tasks, support, query = sinusoid_setup
    M = len(tasks)
    params = list(algo.policy.parameters())
    adapted = algo.adapt([support], M, first_order=True)
    fo = torch.autograd.grad(algo.inner_loss(adapted, query, M).mean(), params)
    # Gradient of the query loss at the adapted parameters, summed over tasks = FOMAML gradient.
    theta = expand_params(algo.policy.params(), M)
    grads = torch.autograd.grad(algo.inner_loss(theta, support, M).sum(), list(theta.values()))
    at = {k: (theta[k] - algo.cfg.inner_lr * g).detach().requires_grad_(True) for k, g in zip(theta, grads)}
    expected = torch.autograd.grad(algo.inner_loss(at, query, M).mean(), list(at.values()))
    for got, want in zip(fo, expected):
        torch.testing.assert_close(got, want.sum(0), rtol=1e-10, atol=1e-12)


@pytest.fixture(scope="module")
def navigation_setup():
    collector = Collector("metarl/Navigation2D-v0", seed=5, horizon=6)
    tasks = collector.sample_tasks(2, np.random.default_rng(1))
    torch.manual_seed(1)
    policy = GaussianMLPPolicy(2, 2, hidden_sizes=(5,), activation="tanh", init_log_std=-0.5)
    cfg = MAMLConfig(meta_batch_size=2, episodes_per_task=4, inner_lr=0.3, outer="trpo", max_kl=0.01)
    algo = MAML(policy, collector, cfg)
    inner = [algo.collect_inner(tasks, None, 4) for _ in range(2)]
    query = algo.collect_inner(tasks, None, 4)
    policy.double()
    inner = [InnerData(_double(d.batch), d.advantages.double()) for d in inner]
    query = InnerData(_double(query.batch), query.advantages.double())
    return algo, tasks, inner, query


@pytest.mark.parametrize("steps", [1, 2])
def test_rl_meta_gradient_matches_finite_differences(navigation_setup, steps):
    algo, tasks, inner, query = navigation_setup
    M = len(tasks)
    params = list(algo.policy.parameters())

    def surrogate():
        loss, _, _ = algo._surrogate_and_kl(inner[:steps], query, M, None)
        return loss

    analytic = _flat_grad(surrogate, params)
    numeric = _finite_difference(surrogate, params)
    torch.testing.assert_close(analytic, numeric, rtol=1e-5, atol=1e-7)


def test_trpo_step_through_adaptation_respects_kl_and_improves(navigation_setup):
    algo, tasks, inner, query = navigation_setup
    M = len(tasks)
    before = [p.detach().clone() for p in algo.policy.parameters()]
    loss0, _, old = algo._surrogate_and_kl(inner, query, M, None)
    stats = algo._trpo(inner, query, M)
    try:
        loss1, kl1, _ = algo._surrogate_and_kl(inner, query, M, old.detach())
        if stats["line_search/accepted"]:
            assert float(kl1.detach()) <= algo.cfg.max_kl * (1 + 1e-6)
            assert float(loss1.detach()) < float(loss0.detach())
            assert any(not torch.equal(a, b) for a, b in zip(before, algo.policy.parameters()))
        else:  # a rejected step must leave θ exactly as it was
            assert all(torch.equal(a, b) for a, b in zip(before, algo.policy.parameters()))
        assert stats["line_search/accepted"] == 1.0  # on this smooth toy problem a step is found
    finally:
        with torch.no_grad():
            for p, b in zip(algo.policy.parameters(), before):
                p.copy_(b)


def _train_sinusoid(inner_steps: int, iterations: int, seed: int = 0):
    collector = Collector("metarl/Sinusoid-v0", seed=seed)
    torch.manual_seed(seed)
    policy = MLPRegressor(1, 1, hidden_sizes=(40, 40))
    cfg = MAMLConfig(meta_batch_size=25, episodes_per_task=10, inner_steps=inner_steps, inner_lr=0.01,
                     outer="adam", outer_lr=1e-3)
    algo = MAML(policy, collector, cfg)
    rng = np.random.default_rng(seed)
    for _ in range(iterations):
        algo.train_iteration(rng)
    return algo


def test_sinusoid_maml_beats_pretraining_after_one_step():
    from metarl.evaluation.config import EvalConfig

    maml = _train_sinusoid(inner_steps=1, iterations=1500)
    # inner_steps = 0 is plain multi-task pretraining on the same tasks with the same budget
    pretrained = _train_sinusoid(inner_steps=0, iterations=1500)
    collector = Collector("metarl/Sinusoid-v0", seed=99)
    tasks = collector.sample_tasks(100, np.random.default_rng(12345))
    curves = {}
    for name, algo in (("maml", maml), ("pretrained", pretrained)):
        ev = EvalConfig(tasks=100, steps=1, inner_lr=0.01, episodes_per_task=10)
        curves[name] = algo.adaptation_curve(tasks, collector, ev).mean(1)
    pre, post = curves["maml"]
    assert post < 0.6 * pre, curves
    assert post < 0.75 * curves["pretrained"][1], curves


@pytest.mark.parametrize("config,extra", [("navigation2d_maml", []), ("navigation2d_promp", []),
                                          ("navigation2d_maml", ["maml.fisher_subsample=0.3"])])
def test_navigation_learns_to_adapt_in_a_few_iterations(config, extra):
    """MAML, ProMP on the same inner loop, and MAML with the Fisher-vector products of 3 of the 10 tasks
    (maml.fisher_subsample) pass one bar with the same settings; only learning reaches it (the untrained
    policy's post-update return is 50 below it)."""
    from metarl.evaluation.config import EvalConfig
    from metarl.experiment import build_experiment, load_config

    cfg = load_config(f"experiments/{config}.yaml",
                      ["maml.meta_batch_size=10", "maml.episodes_per_task=10", "policy.hidden_sizes=[64,64]", *extra])
    exp = build_experiment(cfg)
    ev = EvalConfig(tasks=20, steps=1, inner_lr=0.1, episodes_per_task=10)

    def curve():
        collector = Collector(cfg.env.id, seed=7)
        tasks = collector.sample_tasks(20, np.random.default_rng(7))
        return exp.algo.adaptation_curve(tasks, collector, ev).mean(1)

    before = curve()
    for _ in range(15):
        exp.algo.train_iteration(exp.task_rng)
    after = curve()
    # One gradient step now helps clearly, and the adapted policy is far better than at the start.
    assert after[1] > after[0] + 5.0, (before, after)
    assert after[1] > before[1] + 50.0, (before, after)


@pytest.mark.parametrize("config", ["halfcheetah_vel_maml", "halfcheetah_dir_maml", "halfcheetah_vel_promp",
                                    "halfcheetah_dir_promp"])
def test_halfcheetah_configs_run_end_to_end(tmp_path, config):
    import csv

    from metarl.experiment import load_config
    from metarl.train import train

    cfg = load_config(f"experiments/{config}.yaml", [
        "train.iterations=2", "train.show_progress=false", "maml.meta_batch_size=2", "maml.episodes_per_task=2",
        "env.horizon=20", "policy.hidden_sizes=[16]", "collector.num_threads=1"])
    run = train(cfg, tmp_path / "run")
    rows = list(csv.DictReader(open(run / "progress.csv")))
    assert [r["iteration"] for r in rows] == ["1", "2"]
    assert float(rows[-1]["env_steps_total"]) == 2 * 2 * (2 * 2 * 20)  # iterations x (inner + query) episodes x H
    assert all(np.isfinite(float(r["post_update/return"])) for r in rows)


def test_supervised_env_steps_count_support_and_query_samples_like_pretraining():
    """Both methods draw K support + Q query samples per task and iteration (pretraining as one
    batch of K + Q, metarl.train): the budget both log must be that, or an env-steps axis lies."""
    from metarl.experiment import load_config
    from metarl.experiment import build_experiment

    steps = {}
    for algo in ("maml", "pretrain"):
        cfg = load_config(f"experiments/sinusoid_{algo}.yaml", ["maml.meta_batch_size=3", "maml.inner_steps=2"])
        stats = build_experiment(cfg).algo.train_iteration(np.random.default_rng(0))
        steps[algo] = stats["env_steps"]
    assert steps == {"maml": 3 * (10 + 10), "pretrain": 3 * (10 + 10)}
