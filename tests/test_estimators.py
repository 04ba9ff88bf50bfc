"""MAML's inner-loop estimators against the exact meta-gradient of a tabular MDP small enough to enumerate.

The MDP: 3 states, 2 actions, horizon 3, a stationary softmax policy with logits θ [3, 2]; all
3^3 · 2^3 = 216 trajectories are enumerated, so J(θ) (expected undiscounted return) is an exact
differentiable function and autograd through J(θ + α ∇J(θ)) gives the exact meta-gradient.

The Monte Carlo estimate of one sampled trajectory n (trajectories drawn with θ) is what MAML's
second-order backward computes: with S_n(θ) the sum of the estimator's per-step terms,
θ'_n = θ + α ∇S_n(θ) and e_n = ∇_θ [θ'_n · g'] = g' + α ∇(∇S_n · g'), where g' = ∇J(θ') is the
exact outer gradient at the exact adapted θ' (the outer step is the same for every estimator;
only the inner step's Jacobian, which is what the estimators differ in, is estimated).
E[e_n] is the exact meta-gradient iff the estimator's Hessian is unbiased. Sampling is vectorised
over trajectories (per-sample parameter copies, as MAML's per-task parameters), and every
estimate comes from the functions MAML itself uses (metarl.algos.maml).
"""

from __future__ import annotations

import math

import torch

from metarl.algos.maml import ESTIMATORS, MAMLConfig, surrogate_terms

S, A, H = 3, 2, 3
ALPHA = 5.0
N = 40_000
#: |z| bound per component: two-sided p ≈ 7e-6 each, so a correct estimator fails with p < 1e-4 over
#: the 6 components (the seeds are fixed, so the test is deterministic anyway).
Z_OK = 4.5
#: a deviation this many standard errors out is a bias, not noise
Z_BIASED = 10.0


def _mdp():
    g = torch.Generator().manual_seed(3)
    p0 = torch.softmax(torch.randn(S, generator=g, dtype=torch.float64), 0)
    P = torch.softmax(2.0 * torch.randn(S, A, S, generator=g, dtype=torch.float64), -1)  # P[s, a, s']
    R = torch.rand(S, A, generator=g, dtype=torch.float64)
    theta = 0.5 * torch.randn(S, A, generator=g, dtype=torch.float64)
    return p0, P, R, theta


def _exact_return(theta, p0, P, R):
    """J(θ) by enumerating every trajectory (as a forward pass over the state distribution, which
    sums the same 216 terms)."""
    pi = torch.softmax(theta, -1)
    d, J = p0, theta.new_zeros(())
    for _ in range(H):
        sa = d[:, None] * pi  # P(s_t, a_t)
        J = J + (sa * R).sum()
        d = torch.einsum("sa,sat->t", sa, P)
    return J


def _values(theta, p0, P, R):
    """V_t(s) under θ for t = 0..H-1 (the state baseline; it does not bias any estimator)."""
    pi = torch.softmax(theta, -1)
    V = [None] * H
    nxt = theta.new_zeros(S)
    for t in reversed(range(H)):
        nxt = (pi * (R + P @ nxt)).sum(-1)
        V[t] = nxt
    return torch.stack(V)  # [H, S]


def _sample(theta, p0, P, R, n, gen):
    """n trajectories: states and actions [H, n], rewards [H, n]; vectorised over trajectories."""
    pi = torch.softmax(theta, -1)
    s = torch.multinomial(p0.expand(n, S), 1, generator=gen).squeeze(1)
    states, actions, rewards = [], [], []
    for _ in range(H):
        a = torch.multinomial(pi[s], 1, generator=gen).squeeze(1)
        states.append(s)
        actions.append(a)
        rewards.append(R[s, a])
        s = torch.multinomial(P[s, a], 1, generator=gen).squeeze(1)
    return torch.stack(states), torch.stack(actions), torch.stack(rewards)


def _setup():
    p0, P, R, theta = _mdp()
    th = theta.clone().requires_grad_(True)
    grad = torch.autograd.grad(_exact_return(th, p0, P, R), th, create_graph=True)[0]
    J_post = _exact_return(th + ALPHA * grad, p0, P, R)
    exact_meta = torch.autograd.grad(J_post, th)[0]
    theta_post = (theta + ALPHA * grad).detach()
    tp = theta_post.clone().requires_grad_(True)
    g_post = torch.autograd.grad(_exact_return(tp, p0, P, R), tp)[0]
    states, actions, rewards = _sample(theta, p0, P, R, N, torch.Generator().manual_seed(0))
    togo = rewards.flip(0).cumsum(0).flip(0)
    steps = torch.arange(H)[:, None]
    adv = togo - _values(theta, p0, P, R)[steps, states]
    return dict(theta=theta, grad=grad.detach(), exact_meta=exact_meta, g_post=g_post,
                states=states, actions=actions, adv=adv)


def _per_sample(name: str, d):
    """Per-trajectory inner gradients and meta-gradient estimates [N, S, A] of estimator ``name``."""
    thetas = d["theta"].expand(N, S, A).clone().requires_grad_(True)  # one parameter copy per sample
    logits = thetas[torch.arange(N), d["states"]]  # [H, N, A]
    logp = torch.log_softmax(logits, -1).gather(-1, d["actions"].unsqueeze(-1)).squeeze(-1)  # [H, N]
    valid = torch.ones_like(logp)
    terms = surrogate_terms(name)(logp, d["adv"], valid)  # what MAML.inner_loss averages
    inner = torch.autograd.grad(terms.sum(), thetas, create_graph=True)[0]
    hvp = torch.autograd.grad((inner * d["g_post"]).sum(), thetas)[0]
    return inner.detach(), d["g_post"] + ALPHA * hvp


def _z(samples: torch.Tensor, target: torch.Tensor):
    dev = samples.mean(0) - target
    se = samples.std(0) / math.sqrt(samples.shape[0])
    return dev, se, (dev / se).abs().max().item()


_CACHE: dict = {}


def _results():
    if not _CACHE:
        d = _setup()
        _CACHE["d"] = d
        for name in ESTIMATORS:
            _CACHE[name] = _per_sample(name, d)
    return _CACHE


def test_every_estimator_has_the_unbiased_first_derivative():
    r = _results()
    for name in ESTIMATORS:
        _, _, z = _z(r[name][0], r["d"]["grad"])
        assert z < Z_OK, f"{name}: inner gradient off by {z:.1f} standard errors"


def test_dice_meta_gradient_is_unbiased_and_reinforce_is_not():
    r = _results()
    exact = r["d"]["exact_meta"]
    # the problem is one where the inner step's curvature matters: the meta-gradient is not g'
    assert (exact - r["d"]["g_post"]).norm() > 0.1 * exact.norm()
    dev, se, z_dice = _z(r["dice"][1], exact)
    assert z_dice < Z_OK, f"DiCE meta-gradient off by {z_dice:.1f} standard errors: {dev} (se {se})"
    dev, se, z_rf = _z(r["reinforce"][1], exact)
    assert z_rf > Z_BIASED, f"REINFORCE's bias should show: only {z_rf:.1f} standard errors ({dev}, se {se})"


def test_lvc_is_biased_but_has_lower_variance_than_dice():
    r = _results()
    exact = r["d"]["exact_meta"]
    dev_lvc, _, z_lvc = _z(r["lvc"][1], exact)
    dev_rf, _, _ = _z(r["reinforce"][1], exact)
    # LVC drops the Hessian's cross-step terms (ProMP, Sec. 4): biased by design, and this test can
    # see it (which also shows it would catch a DiCE that lost its cross-step terms).
    print(f"LVC: deviation {dev_lvc.norm():.4f} ({z_lvc:.1f} se); REINFORCE: {dev_rf.norm():.4f}; "
          f"|exact| {exact.norm():.4f}")
    assert z_lvc > Z_OK
    var = {name: r[name][1].var(0).sum().item() for name in ("lvc", "dice")}
    assert var["lvc"] < var["dice"], var


def test_estimator_is_a_checked_config_choice():
    import pytest

    from metarl.common.config import ConfigError
    from metarl.experiment import load_config

    assert MAMLConfig().estimator == "reinforce"
    assert load_config(None, ["maml.estimator=dice"]).maml.estimator == "dice"
    with pytest.raises(ConfigError, match="maml.estimator: expected one of 'reinforce', 'lvc', 'dice', got 'foo'"):
        load_config(None, ["maml.estimator=foo"])
    with pytest.raises(ValueError, match="unknown inner-loop estimator 'foo'; expected one of reinforce, lvc, dice"):
        surrogate_terms("foo")


def test_maml_uses_the_chosen_estimator():
    """On navigation episodes: every estimator takes the same inner step (same first derivative),
    and the second-order meta-gradient through it differs (the choice reaches MAML's backward)."""
    import numpy as np

    from metarl.algos.maml import MAML
    from metarl.common.policies import GaussianMLPPolicy
    from metarl.sampling.collector import Collector

    collector = Collector("metarl/Navigation2D-v0", seed=1)
    tasks = collector.sample_tasks(2, np.random.default_rng(0))
    torch.manual_seed(0)
    policy = GaussianMLPPolicy(2, 2, hidden_sizes=(8,))
    inner, query = MAML(policy, collector, MAMLConfig()).rollout_adaptation(tasks, 1, 3, 3)
    steps, metas = {}, {}
    for name in ESTIMATORS:
        algo = MAML(policy, collector, MAMLConfig(meta_batch_size=2, episodes_per_task=3, estimator=name))
        steps[name] = algo.inner_step_detached(None, inner, 2)
        loss, _, _ = algo._surrogate_and_kl([inner], query, 2, None)
        metas[name] = torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, list(policy.parameters()))])
    for name in ("lvc", "dice"):
        for k in steps["reinforce"]:
            torch.testing.assert_close(steps[name][k], steps["reinforce"][k], rtol=1e-5, atol=1e-6)
        assert (metas[name] - metas["reinforce"]).norm() > 1e-2 * metas["reinforce"].norm(), name
