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

from metarl.algos.maml import ESTIMATORS, MAMLConfig, exploration_terms, surrogate_terms

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
    with pytest.raises(ConfigError, match="maml.estimator: expected one of 'reinforce', 'lvc', 'dice', 'emaml', got 'foo'"):
        load_config(None, ["maml.estimator=foo"])
    with pytest.raises(ValueError, match="unknown inner-loop estimator 'foo'; expected one of reinforce, lvc, dice, emaml"):
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
    for name in ("lvc", "dice", "emaml"):
        for k in steps["reinforce"]:
            torch.testing.assert_close(steps[name][k], steps["reinforce"][k], rtol=1e-5, atol=1e-6)
        assert (metas[name] - metas["reinforce"]).norm() > 1e-2 * metas["reinforce"].norm(), name


# ------------------------------------------------------------------ E-MAML
# E-MAML's meta-objective is the expected return after the *sampled* inner step,
#     J_E(θ) = E_{τ~π_θ}[ J(θ'_τ(θ)) ],   θ'_τ(θ) = θ + α ∇_θ S_τ(θ),
# S_τ the REINFORCE surrogate of the inner episode τ with its advantages fixed (data, as in MAML).
# Its gradient has two parts:
#     ∇J_E = Σ_τ p_θ(τ) ∇_θ J(θ'_τ(θ))      (pathwise: what the plain surrogate's backward estimates)
#          + Σ_τ ∇p_θ(τ) J(θ'_τ)            (sampling: what the plain surrogate misses).
# E-MAML's estimate of one sampled τ_n is the plain one, (I + α ∇²S_n)ᵀ ∇J(θ'_n), plus the gradient of
# exploration_terms (MAML's own function): ∇log p_θ(τ_n) (J(θ'_n) - b_n), b_n the mean over the other
# samples (treated as tasks). Its expectation is exactly ∇J_E, both parts enumerable over all 216
# trajectories. J_E is not J(θ + α ∇J(θ)), the objective whose exact gradient the tests above use:
# the inner step is a one-episode estimate here and J is not linear in θ', so the two differ (asserted
# below). To first order in α they agree: the sampling part is α E[∇log p(τ) ĝ_τᵀ] ∇J(θ') + O(α²), and
# E[∇log p(τ) ĝ_τᵀ] is exactly the part of ∇²J = ∇E_θ[ĝ_τ(θ)] that the REINFORCE surrogate's Hessian
# E[∇ĝ_τ] lacks, so E-MAML's exploration term supplies what the exact meta-gradient has and MAML's
# plain estimate misses, through the post-update return instead of the inner Hessian (asserted at
# small α, where the relative gap shrinks in proportion to α).


def _exact_return_batched(thetas, p0, P, R):
    """J(θ_n) for a batch of parameters [n, S, A]: [n]."""
    pi = torch.softmax(thetas, -1)
    d = p0.expand(thetas.shape[0], S)
    J = thetas.new_zeros(thetas.shape[0])
    for _ in range(H):
        sa = d[:, :, None] * pi
        J = J + (sa * R).sum((1, 2))
        d = torch.einsum("nsa,sat->nt", sa, P)
    return J


def _inner_step(copies, states, actions, adv, alpha=ALPHA):
    """θ'_n = θ_n + α ∇S_n(θ_n) with MAML's REINFORCE terms, one parameter copy per column [n, S, A]."""
    n = copies.shape[0]
    logits = copies[torch.arange(n), states]  # [H, n, A]
    logp = torch.log_softmax(logits, -1).gather(-1, actions.unsqueeze(-1)).squeeze(-1)  # [H, n]
    terms = surrogate_terms("emaml")(logp, adv, torch.ones_like(logp))
    inner = torch.autograd.grad(terms.sum(), copies, create_graph=True)[0]
    return copies + alpha * inner, logp


def _enumerate(theta, p0, P, R):
    """Every trajectory once: states, actions [H, 216], fixed advantages [H, 216], log p_0 + log P [216]."""
    s = torch.cartesian_prod(*[torch.arange(S)] * H).T  # [H, S^H]
    a = torch.cartesian_prod(*[torch.arange(A)] * H).T  # [H, A^H]
    states = s.repeat_interleave(a.shape[1], 1)
    actions = a.repeat(1, s.shape[1])  # [H, 216]: every (states, actions) pair once
    n = states.shape[1]
    togo = R[states, actions].flip(0).cumsum(0).flip(0)
    adv = togo - _values(theta, p0, P, R)[torch.arange(H)[:, None], states]
    log_env = torch.log(p0[states[0]]) + torch.log(P[states[:-1], actions[:-1], states[1:]]).sum(0)
    return states, actions, adv, log_env


def _emaml_exact(alpha=ALPHA):
    """∇J_E and its pathwise and sampling parts, by enumerating every trajectory."""
    p0, P, R, theta = _mdp()
    states, actions, adv, log_env = _enumerate(theta, p0, P, R)
    n = states.shape[1]
    th = theta.clone().requires_grad_(True)
    theta_post, logp = _inner_step(th.expand(n, S, A), states, actions, adv, alpha)  # θ'_τ(θ) for every τ
    prob = torch.exp(log_env + logp.sum(0))
    assert abs(prob.sum().item() - 1) < 1e-12  # the enumeration is complete
    J_post = _exact_return_batched(theta_post, p0, P, R)
    total = torch.autograd.grad((prob * J_post).sum(), th, retain_graph=True)[0]
    pathwise = torch.autograd.grad((prob.detach() * J_post).sum(), th, retain_graph=True)[0]
    sampling = torch.autograd.grad((prob * J_post.detach()).sum(), th)[0]
    return total, pathwise, sampling


def _emaml_per_sample(d):
    """Per-sample plain and exploration parts [N, S, A] of E-MAML's meta-gradient estimate."""
    p0, P, R, _ = _mdp()
    copies = d["theta"].expand(N, S, A).clone().requires_grad_(True)
    theta_post, logp = _inner_step(copies, d["states"], d["actions"], d["adv"])
    J_post = _exact_return_batched(theta_post, p0, P, R)  # the post-update return (exact: less noise)
    plain = torch.autograd.grad(J_post.sum(), copies, retain_graph=True)[0]
    # N samples of one MDP as N tasks of one episode each: the leave-one-out baseline is the others' mean
    explore = exploration_terms(logp, logp.detach(), torch.ones_like(logp), J_post.detach(), N)
    exploration = torch.autograd.grad(explore.sum(), copies)[0]
    return plain, exploration


def test_emaml_estimates_the_gradient_of_the_expected_post_update_return():
    r = _results()
    total, pathwise, sampling = _emaml_exact()
    torch.testing.assert_close(pathwise + sampling, total)
    plain, exploration = _emaml_per_sample(r["d"])
    # J_E's gradient is not the exact MAML meta-gradient at this α (one-episode inner steps, α = 5)
    assert (total - r["d"]["exact_meta"]).norm() > 0.1 * total.norm()
    dev, se, z = _z(plain + exploration, total)
    assert z < Z_OK, f"E-MAML meta-gradient off by {z:.1f} standard errors: {dev} (se {se})"
    dev, se, z = _z(exploration, sampling)
    assert z < Z_OK, f"E-MAML's exploration term off the sampling part by {z:.1f} standard errors: {dev} (se {se})"
    dev, se, z = _z(plain, pathwise)
    assert z < Z_OK, f"the plain part off the pathwise part by {z:.1f} standard errors: {dev} (se {se})"
    dev, se, z = _z(plain, total)
    assert z > Z_BIASED, f"without the exploration term the bias should show: only {z:.1f} standard errors"
    print(f"|∇J_E| {total.norm():.4f}, |sampling part| {sampling.norm():.4f}, |∇J_E - exact MAML| "
          f"{(total - r['d']['exact_meta']).norm():.4f}, plain-only bias {z:.1f} se")


def test_emaml_exploration_term_in_maml():
    """MAML with estimator emaml: the outer loss is the plain one minus the mean of the exploration
    term, which is exploration_terms in the plain surrogate's units (per-step mean, task scale)."""
    import numpy as np

    from metarl.algos.maml import MAML
    from metarl.common.policies import GaussianMLPPolicy
    from metarl.common.returns import discounted_returns
    from metarl.sampling.collector import Collector

    collector = Collector("metarl/Navigation2D-v0", seed=1)
    tasks = collector.sample_tasks(3, np.random.default_rng(0))
    torch.manual_seed(0)
    policy = GaussianMLPPolicy(2, 2, hidden_sizes=(8,))
    cfg = MAMLConfig(meta_batch_size=3, episodes_per_task=4, estimator="emaml")
    algo = MAML(policy, collector, cfg)
    inner, query = algo.rollout_adaptation(tasks, 1, 4, 4)
    plain = MAML(policy, collector, MAMLConfig(meta_batch_size=3, episodes_per_task=4))
    loss_e, _, _ = algo._surrogate_and_kl([inner], query, 3, None)
    loss_p, _, _ = plain._surrogate_and_kl([inner], query, 3, None)
    # at θ_old the exploration term's value is 0 (log-ratio form) ...
    torch.testing.assert_close(loss_e, loss_p)
    # ... and its gradient is the score of each task's inner batch times (R'_i - b_i) / (L_i σ_i)
    params = list(policy.parameters())
    g_e = torch.autograd.grad(loss_e, params)
    g_p = torch.autograd.grad(loss_p, params)
    q = query.batch
    post = discounted_returns(q.rewards, q.dones, cfg.gamma, q.valid)[0].reshape(3, -1).mean(1)
    units = q.valid.sum(0).reshape(3, -1).mean(1) * query.advantage_scale
    # by hand: the std of each task's raw advantages is the normalisation's divisor
    raw = discounted_returns(q.rewards, q.dones, cfg.gamma, q.valid)
    raw = (raw - plain.baseline.fit_predict(q.obs, raw, q.valid, q.timesteps, 3)) * q.valid
    for i in range(3):
        cols = slice(i * 4, (i + 1) * 4)
        x, v = raw[:, cols], q.valid[:, cols]
        mean = (x * v).sum() / v.sum()
        std = (((x - mean) * v) ** 2).sum().div(v.sum()).sqrt()
        torch.testing.assert_close(query.advantage_scale[i], std + 1e-8)
    weights = (post - (post.sum() - post) / 2) / units  # leave-one-out baseline over the 3 tasks
    b = inner.batch
    dist = policy.distribution(policy(b.obs))
    score = (dist.log_prob(b.actions) * b.valid).sum(0).reshape(3, -1).sum(1)  # Σ log π of each task's batch
    expected = torch.autograd.grad(-(score * weights).mean(), params)
    for ge, gp, ex in zip(g_e, g_p, expected):
        torch.testing.assert_close(ge - gp, ex, rtol=1e-4, atol=1e-6)
    # maml.exploration_weight scales the term
    algo.cfg.exploration_weight = 0.25
    loss_w, _, _ = algo._surrogate_and_kl([inner], query, 3, None)
    for gw, gp, ex in zip(torch.autograd.grad(loss_w, params), g_p, expected):
        torch.testing.assert_close(gw - gp, 0.25 * ex, rtol=1e-4, atol=1e-6)


def _reinforce_missing_part(alpha):
    """exact meta-gradient of J(θ + α∇J(θ)) minus the expectation of MAML's REINFORCE estimate of it
    (the tests above: g' + α ∇²S_τ g', g' the exact outer gradient), both by enumeration."""
    p0, P, R, theta = _mdp()
    states, actions, adv, log_env = _enumerate(theta, p0, P, R)
    th = theta.clone().requires_grad_(True)
    grad = torch.autograd.grad(_exact_return(th, p0, P, R), th, create_graph=True)[0]
    exact = torch.autograd.grad(_exact_return(th + alpha * grad, p0, P, R), th)[0]
    tp = (theta + alpha * grad).detach().requires_grad_(True)
    g_post = torch.autograd.grad(_exact_return(tp, p0, P, R), tp)[0]
    copies = theta.expand(states.shape[1], S, A).clone().requires_grad_(True)
    logp = torch.log_softmax(copies[torch.arange(states.shape[1]), states], -1)
    logp = logp.gather(-1, actions.unsqueeze(-1)).squeeze(-1)
    prob = torch.exp(log_env + logp.sum(0)).detach()
    inner = torch.autograd.grad(surrogate_terms("reinforce")(logp, adv, torch.ones_like(logp)).sum(), copies, create_graph=True)[0]
    hvp = torch.autograd.grad((inner * g_post).sum(), copies)[0]
    return exact - (prob[:, None, None] * (g_post + alpha * hvp)).sum(0)


def test_emaml_sampling_part_is_what_reinforce_misses_to_first_order():
    gaps = {}
    for alpha in (0.1, 0.05):
        missing = _reinforce_missing_part(alpha)
        _, _, sampling = _emaml_exact(alpha)
        gaps[alpha] = ((sampling - missing).norm() / missing.norm()).item()
    print(f"relative gap between E-MAML's sampling part and REINFORCE's missing part: {gaps}")
    assert gaps[0.1] < 0.05, gaps
    assert 1.5 < gaps[0.1] / gaps[0.05] < 2.5, gaps  # O(α): halving α halves it


def test_emaml_navigation_config_is_maml_but_for_the_estimator():
    from dataclasses import replace

    from metarl.experiment import load_config

    emaml = load_config("experiments/navigation2d_emaml.yaml")
    maml = load_config("experiments/navigation2d_maml.yaml")
    assert emaml.maml.estimator == "emaml"
    assert replace(emaml, maml=replace(emaml.maml, estimator="reinforce")) == maml
