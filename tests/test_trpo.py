import math

import pytest
import torch

from metarl.common import trpo as trpo_mod
from metarl.common.trpo import (
    conjugate_gradient,
    fisher_vector_product_fn,
    flatten,
    trpo_step,
    unflatten_like,
)

F64 = torch.float64


# ---------------------------------------------------------------- helpers


def test_flatten_roundtrip_and_bad_size():
    ts = [torch.arange(6.0).reshape(2, 3), torch.tensor([7.0]), torch.zeros(2, 1, 2)]
    flat = flatten(ts)
    assert flat.shape == (11,)
    back = unflatten_like(flat, ts)
    for a, b in zip(back, ts):
        assert torch.equal(a, b)
    with pytest.raises(ValueError, match="11 elements"):
        unflatten_like(torch.zeros(10), ts)


def test_conjugate_gradient_solves_spd_system():
    gen = torch.Generator().manual_seed(0)
    M = torch.randn(20, 20, generator=gen, dtype=F64)
    A = M @ M.T / 20 + 0.5 * torch.eye(20, dtype=F64)
    b = torch.randn(20, generator=gen, dtype=F64)
    x = conjugate_gradient(lambda v: A @ v, b, iters=40, residual_tol=1e-24)
    torch.testing.assert_close(x, torch.linalg.solve(A, b), atol=1e-9, rtol=1e-9)
    # a few iterations give only an approximation: the test above is not vacuous
    x3 = conjugate_gradient(lambda v: A @ v, b, iters=3)
    assert (x3 - torch.linalg.solve(A, b)).abs().max() > 1e-3


def test_conjugate_gradient_freezes_after_convergence():
    # b is an eigenvector, so one iteration gives r = 0 exactly; afterwards p = 0 and
    # p^T A p = 0, which without freezing would turn the iterate into 0/0 = NaN.
    A = torch.diag(torch.tensor([2.0, 5.0], dtype=F64))
    b = torch.tensor([1.0, 0.0], dtype=F64)
    calls = []

    def avp(v):
        calls.append(v.clone())
        return A @ v

    x = conjugate_gradient(avp, b, iters=10)
    assert torch.equal(x, torch.tensor([0.5, 0.0], dtype=F64))
    assert len(calls) == 10  # fixed iteration count, no host-side early exit
    # general right-hand side: exact after 2 iterations, then frozen
    x2 = conjugate_gradient(lambda v: A @ v, torch.tensor([1.0, -3.0], dtype=F64), iters=10)
    torch.testing.assert_close(x2, torch.tensor([0.5, -0.6], dtype=F64), atol=1e-15, rtol=0)


# ---------------------------------------------------------------- Fisher-vector product


def _smooth_problem():
    gen = torch.Generator().manual_seed(1)
    X = torch.randn(8, 3, generator=gen, dtype=F64)
    w = torch.randn(3, 2, generator=gen, dtype=F64, requires_grad=True)
    b = torch.randn(2, generator=gen, dtype=F64, requires_grad=True)

    def f(w, b):
        h = torch.tanh(X @ w + b)
        return (h**2).sum() + (w**3).sum() * 0.1 + (b.exp() * w[0]).sum()

    return f, w, b, gen


def test_fvp_matches_explicit_hessian():
    f, w, b, gen = _smooth_problem()
    damping = 0.3
    fvp = fisher_vector_product_fn(f(w, b), [w, b], damping)

    def f_flat(theta):
        ww, bb = unflatten_like(theta, [w, b])
        return f(ww, bb)

    H = torch.autograd.functional.hessian(f_flat, flatten([w, b]).detach())
    for _ in range(3):
        v = torch.randn(8, generator=gen, dtype=F64)
        torch.testing.assert_close(fvp(v), H @ v + damping * v, atol=1e-10, rtol=1e-10)


def test_fvp_differentiates_kl_only_once(monkeypatch):
    f, w, b, gen = _smooth_problem()
    real_grad = torch.autograd.grad
    kinds = []

    def counting_grad(outputs, inputs, *args, **kwargs):
        kinds.append(kwargs.get("create_graph", False))
        return real_grad(outputs, inputs, *args, **kwargs)

    monkeypatch.setattr(torch.autograd, "grad", counting_grad)
    fvp = fisher_vector_product_fn(f(w, b), [w, b], 0.0)
    for _ in range(4):
        fvp(torch.randn(8, generator=gen, dtype=F64))
    # one create_graph backward for the gradient, then one plain backward per product
    assert kinds == [True, False, False, False, False]


def test_fvp_unused_parameter_gives_zero_block():
    x = torch.tensor([1.0, 2.0], dtype=F64, requires_grad=True)
    unused = torch.zeros(3, dtype=F64, requires_grad=True)
    fvp = fisher_vector_product_fn((x**2).sum(), [x, unused], 0.0)
    out = fvp(torch.ones(5, dtype=F64))
    assert torch.equal(out, torch.tensor([2.0, 2.0, 0.0, 0.0, 0.0], dtype=F64))


# ---------------------------------------------------------------- toy categorical policy


class CategoricalToy:
    """Linear-softmax policy on a fixed batch; IS surrogate and KL(old || new)."""

    def __init__(self, seed=0, n=64, d=4, k=3):
        gen = torch.Generator().manual_seed(seed)
        self.X = torch.randn(n, d, generator=gen, dtype=F64)
        self.W = (0.3 * torch.randn(d, k, generator=gen, dtype=F64)).requires_grad_()
        self.b = torch.zeros(k, dtype=F64, requires_grad=True)
        with torch.no_grad():
            self.logp_old_all = torch.log_softmax(self.X @ self.W + self.b, dim=-1)
        self.actions = torch.multinomial(self.logp_old_all.exp(), 1, generator=gen).squeeze(1)
        self.adv = torch.randn(n, generator=gen, dtype=F64)
        self.grad_modes = []

    @property
    def params(self):
        return [self.W, self.b]

    def logp_all(self):
        return torch.log_softmax(self.X @ self.W + self.b, dim=-1)

    def loss(self):
        self.grad_modes.append(torch.is_grad_enabled())
        logp = self.logp_all().gather(1, self.actions[:, None]).squeeze(1)
        logp_old = self.logp_old_all.gather(1, self.actions[:, None]).squeeze(1)
        return -(torch.exp(logp - logp_old) * self.adv).mean()

    def kl(self):
        self.grad_modes.append(torch.is_grad_enabled())
        p_old = self.logp_old_all.exp()
        return (p_old * (self.logp_old_all - self.logp_all())).sum(-1).mean()


@pytest.mark.parametrize("max_kl", [0.01, 0.5])
def test_trpo_step_respects_kl_and_improves(max_kl):
    toy = CategoricalToy()
    before = [p.detach().clone() for p in toy.params]
    loss0 = float(toy.loss().detach())
    info = trpo_step(toy.params, toy.loss, toy.kl, max_kl=max_kl)
    assert info.accepted
    with torch.no_grad():
        kl_after = float(toy.kl())
        loss_after = float(toy.loss())
    assert kl_after <= max_kl * (1 + 1e-9)
    assert kl_after > 0
    assert loss_after < loss0
    assert info.loss_before == pytest.approx(loss0, abs=1e-12)
    assert info.loss_after == pytest.approx(loss_after, abs=1e-12)
    assert info.kl_after == pytest.approx(kl_after, abs=1e-12)
    assert info.step_fraction == pytest.approx(0.8**info.backtracks)
    assert any(not torch.equal(p, q) for p, q in zip(toy.params, before))


def test_kl_bound_violation_triggers_backtracking():
    # kl + 1000 kl^2 has the same value, gradient and Hessian (the Fisher matrix) at the start as
    # the true KL, so the full step is sized for it to be 0.01; but measured at that step it is
    # about 0.01 + 0.1, over the bound, and the line search has to shrink the step.
    toy = CategoricalToy(seed=3)
    max_kl = 0.01

    def stiff_kl():
        kl = toy.kl()
        return kl + 1000.0 * kl**2

    info = trpo_step(toy.params, toy.loss, stiff_kl, max_kl=max_kl)
    assert info.accepted
    assert info.backtracks > 0
    assert info.step_fraction == pytest.approx(0.8**info.backtracks)
    assert info.kl_after <= max_kl
    with torch.no_grad():
        assert float(stiff_kl()) == pytest.approx(info.kl_after, rel=1e-12)
        # the previous (larger) candidate would have broken the bound
        true_kl = float(toy.kl())
    f_prev = 0.8 ** (info.backtracks - 1)
    f_now = info.step_fraction
    # KL is close to quadratic at this scale: scale the true KL to the previous candidate
    kl_prev = true_kl * (f_prev / f_now) ** 2
    assert kl_prev + 1000 * kl_prev**2 > max_kl


def test_closures_always_run_with_grad_enabled():
    toy = CategoricalToy(seed=1)
    with torch.no_grad():
        info = trpo_step(toy.params, toy.loss, toy.kl, max_kl=0.01)
    assert info.accepted
    assert len(toy.grad_modes) >= 4 and all(toy.grad_modes)


def test_step_violating_bound_is_rejected_bit_for_bit():
    toy = CategoricalToy(seed=2)
    start = [p.detach().clone() for p in toy.params]
    calls = {"loss": 0}

    def kl_any_change():
        # Same value and Hessian as the true KL at the start (the indicator is a constant there),
        # but any actual change of the parameters reports a KL far beyond the bound.
        changed = any(not torch.equal(p.detach(), s) for p, s in zip(toy.params, start))
        return toy.kl() + (10.0 if changed else 0.0)

    def loss():
        calls["loss"] += 1
        return toy.loss()

    info = trpo_step(toy.params, loss, kl_any_change, max_kl=0.01, max_backtracks=7)
    assert not info.accepted
    assert info.backtracks == 7 and info.step_fraction == 0.0
    assert info.loss_after == info.loss_before
    assert calls["loss"] == 1 + 7
    for p, s in zip(toy.params, start):
        assert torch.equal(p, s)


@pytest.mark.parametrize("bad", [float("nan"), float("-inf")])
def test_non_finite_loss_after_step_is_rejected(bad):
    # -inf would pass a plain "loss < loss_before" test, so finiteness must be checked explicitly.
    toy = CategoricalToy(seed=4)
    start = [p.detach().clone() for p in toy.params]

    def loss_bad_when_moved():
        changed = any(not torch.equal(p.detach(), s) for p, s in zip(toy.params, start))
        return toy.loss() + (bad if changed else 0.0)

    info = trpo_step(toy.params, loss_bad_when_moved, toy.kl, max_kl=0.01)
    assert not info.accepted
    for p, s in zip(toy.params, start):
        assert torch.equal(p, s)


def test_no_strict_improvement_is_rejected():
    toy = CategoricalToy(seed=8)
    start = [p.detach().clone() for p in toy.params]
    loss0 = toy.loss().detach()

    def loss_flat_when_moved():
        # the gradient at the start is the toy's (non-zero), but every candidate ties the start
        changed = any(not torch.equal(p.detach(), s) for p, s in zip(toy.params, start))
        return loss0.clone() if changed else toy.loss()

    info = trpo_step(toy.params, loss_flat_when_moved, toy.kl, max_kl=0.01, max_backtracks=4)
    assert not info.accepted and info.backtracks == 4
    for p, s in zip(toy.params, start):
        assert torch.equal(p, s)


def test_non_finite_candidates_are_skipped_by_backtracking():
    toy = CategoricalToy(seed=5)
    start = [p.detach().clone() for p in toy.params]
    state = {"n": 0}

    def loss_first_candidates_inf():
        changed = any(not torch.equal(p.detach(), s) for p, s in zip(toy.params, start))
        if changed:
            state["n"] += 1
            if state["n"] <= 3:
                return toy.loss() + float("inf")
        return toy.loss()

    info = trpo_step(toy.params, loss_first_candidates_inf, toy.kl, max_kl=0.01)
    assert info.accepted
    assert info.backtracks == 3
    assert info.step_fraction == pytest.approx(0.8**3)


def test_non_finite_gradient_never_changes_params():
    toy = CategoricalToy(seed=6)
    start = [p.detach().clone() for p in toy.params]
    kl_calls = []

    def loss_nan_grad():
        # d/dW sqrt(|W - W0|) at W = W0 is 0 * inf = NaN
        return toy.loss() + (toy.W - start[0]).abs().sqrt().sum()

    def kl():
        kl_calls.append(1)
        return toy.kl()

    info = trpo_step(toy.params, loss_nan_grad, kl, max_kl=0.01)
    assert not info.accepted and info.backtracks == 0
    assert kl_calls == []
    for p, s in zip(toy.params, start):
        assert torch.equal(p, s)


def test_rejects_non_leaf_params():
    w = torch.zeros(3, requires_grad=True) * 2
    with pytest.raises(ValueError, match="leaf"):
        trpo_step([w], lambda: w.sum(), lambda: (w**2).sum())


# ---------------------------------------------------------------- natural gradient direction


def test_step_is_natural_gradient_direction():
    # Gaussian policy with unit std and mean X w: KL(old || new) = mean 0.5 (X (w - w0))^2 is
    # exactly quadratic, with Fisher matrix F = X^T X / N computed explicitly.
    gen = torch.Generator().manual_seed(7)
    N, d = 50, 5
    X = torch.randn(N, d, generator=gen, dtype=F64) * torch.tensor([1.0, 3.0, 0.5, 2.0, 1.0])
    w = torch.randn(d, generator=gen, dtype=F64, requires_grad=True)
    w0 = w.detach().clone()
    mu_old = X @ w0
    actions = mu_old + torch.randn(N, generator=gen, dtype=F64)
    adv = torch.randn(N, generator=gen, dtype=F64)
    logp_old = -0.5 * (actions - mu_old) ** 2

    def loss():
        logp = -0.5 * (actions - X @ w) ** 2
        return -(torch.exp(logp - logp_old) * adv).mean()

    def kl():
        return (0.5 * (X @ w - mu_old) ** 2).mean()

    g = torch.autograd.grad(loss(), w)[0]
    F = X.T @ X / N
    nat = -torch.linalg.solve(F, g)
    # the plain gradient points elsewhere, so the test can tell the two apart
    cos_plain = torch.nn.functional.cosine_similarity(-g, nat, dim=0)
    assert cos_plain < 0.99

    max_kl = 0.01
    info = trpo_step([w], loss, kl, max_kl=max_kl, cg_iters=10, cg_damping=1e-12)
    assert info.accepted
    step = w.detach() - w0
    cos = torch.nn.functional.cosine_similarity(step, nat, dim=0)
    assert cos > 1 - 1e-9
    # length: 1/2 s^T F s = max_kl for the full step, scaled by the accepted fraction squared
    quad = 0.5 * step @ F @ step
    assert float(quad) == pytest.approx(max_kl * info.step_fraction**2, rel=1e-6)
    assert info.kl_after == pytest.approx(float(quad), rel=1e-9)


def test_invalid_arguments():
    toy = CategoricalToy()
    with pytest.raises(ValueError, match="max_kl"):
        trpo_step(toy.params, toy.loss, toy.kl, max_kl=0.0)
    with pytest.raises(ValueError, match="backtrack_ratio"):
        trpo_step(toy.params, toy.loss, toy.kl, backtrack_ratio=1.5)
    assert math.isfinite(float(toy.loss().detach()))
    assert trpo_mod.TRPOStepInfo.__dataclass_fields__.keys() >= {
        "accepted",
        "step_fraction",
        "loss_before",
        "loss_after",
        "kl_after",
        "backtracks",
    }


# ---------------------------------------------------------------- caller-supplied gradient / product


def _toy_grad_and_kl_hessian(toy):
    g = torch.autograd.grad(toy.loss(), toy.params)
    flat = flatten([p.detach() for p in toy.params])

    def kl_flat(theta):
        W, b = unflatten_like(theta, toy.params)
        p_old = toy.logp_old_all.exp()
        logp = torch.log_softmax(toy.X @ W + b, dim=-1)
        return (p_old * (toy.logp_old_all - logp)).sum(-1).mean()

    return flatten(list(g)), torch.autograd.functional.hessian(kl_flat, flat)


def test_supplied_grad_and_fvp_give_the_same_step():
    toy = CategoricalToy(seed=9)
    start = [p.detach().clone() for p in toy.params]
    ref = trpo_step(toy.params, toy.loss, toy.kl, max_kl=0.05, cg_iters=5)
    ref_params = [p.detach().clone() for p in toy.params]
    with torch.no_grad():
        for p, s in zip(toy.params, start):
            p.copy_(s)
    g, H = _toy_grad_and_kl_hessian(toy)
    products, kl_modes = [], []

    def fvp(v):
        products.append(v)
        return H @ v

    def kl_values_only():
        # with a supplied product the KL is only evaluated in the line search: no graph needed
        kl_modes.append(any(not torch.equal(p, s) for p, s in zip(toy.params, start)))
        with torch.no_grad():
            return toy.kl()

    info = trpo_step(toy.params, lambda: toy.loss().detach(), kl_values_only, max_kl=0.05, cg_iters=5,
                     grad=g, fvp=fvp)
    assert info.accepted and ref.accepted
    assert info.backtracks == ref.backtracks
    assert info.kl_after == pytest.approx(ref.kl_after, rel=1e-10)
    for p, q in zip(toy.params, ref_params):
        torch.testing.assert_close(p.detach(), q, rtol=1e-10, atol=1e-12)
    # exactly cg_iters products: s^T F s comes from the CG residual, not from one more product
    assert len(products) == 5
    assert kl_modes and all(kl_modes)


def test_supplied_grad_must_match_the_parameters():
    toy = CategoricalToy()
    with pytest.raises(ValueError, match="grad must be flat"):
        trpo_step(toy.params, toy.loss, toy.kl, grad=torch.zeros(3, dtype=F64))


def test_step_length_from_cg_residual_matches_an_explicit_product():
    # The quadratic model 1/2 s^T F s that sizes the step (F s taken from the CG residual) equals
    # the explicit product even when CG stops short of the solution (3 iterations, 4 unknowns): on
    # this exactly quadratic KL the accepted full step has KL = max_kl.
    gen = torch.Generator().manual_seed(11)
    X = torch.randn(40, 4, generator=gen, dtype=F64)
    w = torch.randn(4, generator=gen, dtype=F64, requires_grad=True)
    w0 = w.detach().clone()
    target = torch.randn(40, generator=gen, dtype=F64)

    def loss():
        return ((X @ w - target) ** 2).mean()

    def kl():
        return (0.5 * (X @ (w - w0)) ** 2).mean()

    info = trpo_step([w], loss, kl, max_kl=1e-3, cg_iters=3, cg_damping=0.0)
    assert info.accepted and info.backtracks == 0
    step = w.detach() - w0
    F = X.T @ X / 40
    assert float(0.5 * step @ F @ step) == pytest.approx(1e-3, rel=1e-10)
