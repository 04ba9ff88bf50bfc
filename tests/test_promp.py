"""ProMP: the clipped objective against a hand computation, its meta-gradient against MAML's with the
LVC estimator, the inner-KL penalty rule, config refusals, and exact resume (its learning test is
beside MAML's in tests/test_maml.py)."""

from __future__ import annotations

import csv
from dataclasses import replace

import numpy as np
import pytest
import torch

from metarl.algos.maml import MAML, MAMLConfig
from metarl.algos.promp import ProMP, ProMPConfig, clipped_surrogate
from metarl.algos.promp.promp import adapt_kl_penalty
from metarl.common.config import ConfigError
from metarl.common.policies import GaussianMLPPolicy
from metarl.experiment import load_config
from metarl.sampling.collector import Collector


def test_clipped_surrogate_by_hand():
    # Two tasks, one column each, T = 3; the last step of task 1 is padding.
    logp = torch.tensor([[0.0, 0.5], [0.2, -0.4], [-1.0, 9.0]])
    logp_old = torch.zeros(3, 2)
    adv = torch.tensor([[1.0, -2.0], [-1.0, 3.0], [2.0, 0.0]])
    valid = torch.tensor([[1.0, 1.0], [1.0, 1.0], [1.0, 0.0]])
    eps = 0.3
    r = np.exp([[0.0, 0.5], [0.2, -0.4], [-1.0, 0.0]])
    # min(rA, clip(r)A) step by step
    t0 = [1.0,                                            # r = 1
          min(r[1, 0] * -1.0, min(r[1, 0], 1.3) * -1.0),   # r = 1.22 < 1.3, A < 0
          min(r[2, 0] * 2.0, max(r[2, 0], 0.7) * 2.0)]     # r = 0.37 clipped up to 0.7, A > 0: r A
    t1 = [min(r[0, 1] * -2.0, min(r[0, 1], 1.3) * -2.0),  # r = 1.65, A < 0: the unclipped r A
          min(r[1, 1] * 3.0, max(r[1, 1], 0.7) * 3.0)]     # r = 0.67 < 0.7, A > 0: r A
    expected = (np.mean(t0) + np.mean(t1)) / 2
    got = clipped_surrogate(logp, logp_old, adv, valid, 2, eps)
    assert got.item() == pytest.approx(expected, rel=1e-6)
    # where clipping binds (r > 1 + ε with A > 0) the term is flat in θ: no gradient
    lp = torch.tensor([[0.5]], requires_grad=True)
    clipped_surrogate(lp, torch.zeros(1, 1), torch.ones(1, 1), torch.ones(1, 1), 1, eps).backward()
    assert lp.grad.item() == 0.0


def test_kl_penalty_rule():
    assert adapt_kl_penalty(1.0, 0.001, 0.01) == 0.5
    assert adapt_kl_penalty(1.0, 0.02, 0.01) == 2.0
    assert adapt_kl_penalty(1.0, 0.012, 0.01) == 1.0


def test_promp_meta_gradient_at_theta_old_is_maml_lvc():
    """At θ_old (ratio 1, nothing clipped, KL gradient 0) ProMP's first outer gradient is the
    meta-gradient of MAML's surrogate with the LVC inner estimator, through the same adaptation."""
    collector = Collector("metarl/Navigation2D-v0", seed=1)
    tasks = collector.sample_tasks(2, np.random.default_rng(0))
    torch.manual_seed(0)
    policy = GaussianMLPPolicy(2, 2, hidden_sizes=(8,))
    mcfg = MAMLConfig(meta_batch_size=2, episodes_per_task=3, estimator="lvc")
    maml = MAML(policy, collector, mcfg)
    *inner, query = maml.rollout_adaptation(tasks, 1, 3, 3)
    params = list(policy.parameters())
    loss, _, _ = maml._surrogate_and_kl(inner, query, 2, None)
    expected = torch.autograd.grad(loss, params)
    promp = ProMP(policy, collector, replace(mcfg, estimator="reinforce"), ProMPConfig(init_inner_kl_penalty=10.0))
    _, old_pre = promp._forward(inner, query, 2, first_order=True)
    loss, _, kls, _ = promp._objective(inner, query, 2, [d.detach() for d in old_pre], first_order=False)
    got = torch.autograd.grad(loss, params)
    assert kls[0].item() == pytest.approx(0.0, abs=1e-6)
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e, rtol=1e-4, atol=1e-6)


def test_promp_config_refusals():
    with pytest.raises(ConfigError, match="maml.estimator = dice is MAML's choice"):
        load_config(None, ["algo=promp", "maml.estimator=dice"])
    with pytest.raises(ConfigError, match="learn_inner_lr"):
        load_config(None, ["algo=promp", "maml.learn_inner_lr=true"])
    with pytest.raises(ConfigError, match="promp.clip_eps"):
        load_config(None, ["algo=promp", "promp.clip_eps=0"])
    collector = Collector("metarl/Sinusoid-v0", seed=0)
    from metarl.common.policies import MLPRegressor
    with pytest.raises(ValueError, match="algo promp needs an RL task distribution"):
        ProMP(MLPRegressor(1, 1, hidden_sizes=(4,)), collector, MAMLConfig(), ProMPConfig())


ARGS = ["train.show_progress=false", "env.horizon=15", "maml.meta_batch_size=3", "maml.episodes_per_task=4",
        "policy.hidden_sizes=[16]", "collector.num_threads=1", "train.checkpoint_every=2",
        "promp.adaptive_inner_kl_penalty=true"]


def _rows(run_dir):
    with open(run_dir / "progress.csv", newline="") as f:
        return [{k: v for k, v in r.items() if not k.startswith("time/")} for r in csv.DictReader(f)]


def test_promp_runs_and_resumes_bit_identically(tmp_path):
    from metarl.common.checkpoint import load_latest_checkpoint
    from metarl.train import train

    full = load_config("experiments/navigation2d_promp.yaml", ARGS + ["train.iterations=6"])
    train(full, tmp_path / "full")
    train(load_config("experiments/navigation2d_promp.yaml", ARGS + ["train.iterations=4"]), tmp_path / "parts")
    train(full, tmp_path / "parts", resume=True)
    a, b = _rows(tmp_path / "full"), _rows(tmp_path / "parts")
    assert len(a) == 6 and a == b
    # the adaptive penalty moved, so the resumed run had to restore it from the checkpoint
    assert len({r["inner_kl_penalty/0"] for r in a}) > 1
    sa, sb = load_latest_checkpoint(tmp_path / "full")["algo"], load_latest_checkpoint(tmp_path / "parts")["algo"]
    assert sa["inner_kl_penalty"] == sb["inner_kl_penalty"]
    for k, v in sa["policy"].items():
        assert torch.equal(v, sb["policy"][k]), k



@pytest.mark.parametrize("name", ["navigation2d", "halfcheetah_vel", "halfcheetah_dir"])
def test_promp_configs_match_maml_but_for_the_outer_update(name):
    """Each ProMP config is comparable with its MAML config: same env (horizon, clipping), tasks,
    policy, inner loop, advantages, iterations (env-step budget) and meta-test settings."""
    maml = load_config(f"experiments/{name}_maml.yaml")
    promp = load_config(f"experiments/{name}_promp.yaml")
    assert (maml.algo, promp.algo) == ("maml", "promp")
    for section in ("env", "policy", "collector", "eval"):
        assert getattr(promp, section) == getattr(maml, section), section
    for key in ("meta_batch_size", "episodes_per_task", "query_episodes_per_task", "inner_steps", "inner_lr",
                "estimator", "first_order", "gamma", "gae_lambda", "normalize_advantages"):
        assert getattr(promp.maml, key) == getattr(maml.maml, key), key
    assert promp.train.iterations == maml.train.iterations
    # the ProMP authors' outer update (jonasrothfuss/ProMP, run_scripts/pro-mp_run_mujoco.py)
    assert (promp.promp.lr, promp.promp.steps, promp.promp.clip_eps, promp.promp.init_inner_kl_penalty,
            promp.promp.adaptive_inner_kl_penalty, promp.promp.target_inner_kl) == (1e-3, 5, 0.3, 5e-4, False, 0.01)
