import pytest
import torch

from metarl.common.baseline import LinearFeatureBaseline

F64 = torch.float64


def test_features_hand_computed():
    obs = torch.tensor([[[12.0, -0.5]]], dtype=F64)
    t = torch.tensor([[50]])
    f = LinearFeatureBaseline.features(obs, t)
    expected = torch.tensor([[[10.0, -0.5, 100.0, 0.25, 0.5, 0.25, 0.125, 1.0]]], dtype=F64)
    torch.testing.assert_close(f, expected)


def _synthetic(T=100, groups=3, C=4, D=2, seed=0):
    gen = torch.Generator().manual_seed(seed)
    B = groups * C
    obs = torch.randn(T, B, D, generator=gen, dtype=F64) * 2.0
    timesteps = torch.arange(T).unsqueeze(1).expand(T, B)
    F = 2 * D + 4
    weights = torch.randn(groups, F, generator=gen, dtype=F64) * 3.0
    feats = LinearFeatureBaseline.features(obs, timesteps)
    w_per_col = weights.repeat_interleave(C, dim=0)  # [B, F], task-major columns
    returns = torch.einsum("tbf,bf->tb", feats, w_per_col)
    return obs, returns, timesteps, weights


def test_recovers_per_group_weights():
    obs, returns, timesteps, weights = _synthetic()
    valid = torch.ones_like(returns)
    # A vanishing ridge term makes the fit an exact least-squares solve on noise-free data.
    bl = LinearFeatureBaseline(reg_coeff=1e-11)
    pred = bl.fit_predict(obs, returns, valid, timesteps, groups=3)
    torch.testing.assert_close(bl.coeffs, weights, atol=1e-7, rtol=0)
    torch.testing.assert_close(pred, returns, atol=1e-8, rtol=0)
    # one shared fit cannot represent three different weight vectors
    pred_one = LinearFeatureBaseline().fit_predict(obs, returns, valid, timesteps, groups=1)
    assert (pred_one - returns).abs().max() > 0.1


def test_default_ridge_matches_augmented_least_squares():
    # Ridge regression == least squares on [X; sqrt(reg) I] against [y; 0], solved independently
    # with lstsq (QR) per group.
    obs, returns, timesteps, _ = _synthetic(seed=7)
    gen = torch.Generator().manual_seed(8)
    returns = returns + torch.randn(returns.shape, generator=gen, dtype=F64)
    valid = torch.ones_like(returns)
    bl = LinearFeatureBaseline()
    pred = bl.fit_predict(obs, returns, valid, timesteps, groups=3)
    feats = LinearFeatureBaseline.features(obs, timesteps)
    F = feats.shape[-1]
    for g in range(3):
        X = feats[:, 4 * g : 4 * (g + 1)].reshape(-1, F)
        y = returns[:, 4 * g : 4 * (g + 1)].reshape(-1, 1)
        X_aug = torch.cat([X, (1e-5) ** 0.5 * torch.eye(F, dtype=F64)])
        y_aug = torch.cat([y, torch.zeros(F, 1, dtype=F64)])
        w = torch.linalg.lstsq(X_aug, y_aug).solution.squeeze(1)
        torch.testing.assert_close(bl.coeffs[g], w, atol=1e-6, rtol=1e-6)
        torch.testing.assert_close(pred[:, 4 * g : 4 * (g + 1)].reshape(-1), X @ w)


def test_invalid_rows_are_ignored():
    obs, returns, timesteps, weights = _synthetic(seed=1)
    gen = torch.Generator().manual_seed(5)
    valid = (torch.rand(returns.shape, generator=gen) > 0.3).to(F64)
    bl = LinearFeatureBaseline()
    clean = bl.fit_predict(obs, returns, valid, timesteps, groups=3)
    coeffs_clean = bl.coeffs.clone()

    inv = valid == 0
    obs_g, returns_g = obs.clone(), returns.clone()
    returns_g[inv] = torch.where(torch.arange(int(inv.sum())) % 2 == 0, 1e6, float("nan")).to(F64)
    obs_g[inv] = float("nan")
    garbage = bl.fit_predict(obs_g, returns_g, valid, timesteps, groups=3)
    assert torch.equal(bl.coeffs, coeffs_clean)
    assert torch.equal(garbage, clean)
    assert (garbage[inv] == 0).all()
    torch.testing.assert_close(garbage[~inv], returns[~inv], atol=1e-4, rtol=0)


def test_invalid_rows_change_nothing_even_when_wrong():
    # Valid rows follow weights w; invalid rows follow very different ones. Had invalid rows been
    # used, the fit would be a compromise and miss the valid rows.
    obs, returns, timesteps, _ = _synthetic(seed=2, groups=1)
    valid = torch.ones_like(returns)
    valid[60:] = 0
    returns = returns.clone()
    returns[60:] = -returns[60:] * 5 + 7
    pred = LinearFeatureBaseline(1e-11).fit_predict(obs, returns, valid, timesteps, groups=1)
    torch.testing.assert_close(pred[:60], returns[:60], atol=1e-8, rtol=0)


def test_dtype_preserved_and_no_grad():
    obs, returns, timesteps, _ = _synthetic(seed=3)
    obs32 = obs.float().requires_grad_()
    ret32 = returns.float().requires_grad_()
    pred = LinearFeatureBaseline().fit_predict(
        obs32, ret32, torch.ones_like(ret32, dtype=torch.bool), timesteps, groups=3
    )
    assert pred.dtype == torch.float32
    assert not pred.requires_grad
    torch.testing.assert_close(pred, ret32.detach(), atol=1e-3, rtol=1e-4)


def test_indivisible_groups_raise():
    obs, returns, timesteps, _ = _synthetic(groups=1, C=5)
    with pytest.raises(ValueError, match="groups=2"):
        LinearFeatureBaseline().fit_predict(obs, returns, torch.ones_like(returns), timesteps, 2)
    with pytest.raises(ValueError, match="valid"):
        LinearFeatureBaseline().fit_predict(obs, returns, torch.ones(3, 5), timesteps, 1)


def test_retries_with_larger_regularisation(monkeypatch):
    obs, returns, timesteps, _ = _synthetic(seed=4)
    real_solve_ex = torch.linalg.solve_ex
    seen = []

    def flaky_solve_ex(A, b, **kw):
        seen.append(A.clone())
        sol, info = real_solve_ex(A, b, **kw)
        if len(seen) == 1:
            sol = sol.clone()
            sol[1, 0] = float("nan")  # only group 1 fails on the first attempt
        return sol, info

    monkeypatch.setattr(torch.linalg, "solve_ex", flaky_solve_ex)
    bl = LinearFeatureBaseline()
    bl.fit_predict(obs, returns, torch.ones_like(returns), timesteps, groups=3)
    assert len(seen) == 2
    eye = torch.eye(seen[0].shape[-1], dtype=F64)
    torch.testing.assert_close(
        seen[1] - seen[0], (1e-4 - 1e-5) * eye.expand_as(seen[0]), atol=1e-10, rtol=0
    )
    # group 1 takes the retry's solution (reg 1e-4); groups 0 and 2 keep their first one (1e-5)
    feats = LinearFeatureBaseline.features(obs, timesteps)
    for g, reg in ((0, 1e-5), (1, 1e-4), (2, 1e-5)):
        X = feats[:, 4 * g : 4 * (g + 1)].reshape(-1, feats.shape[-1])
        y = returns[:, 4 * g : 4 * (g + 1)].reshape(-1)
        w = torch.linalg.solve(X.T @ X + reg * eye, X.T @ y)
        torch.testing.assert_close(bl.coeffs[g], w, atol=1e-9, rtol=0)
        if g == 1:  # the two regularisations are distinguishable at this tolerance
            w_first = torch.linalg.solve(X.T @ X + 1e-5 * eye, X.T @ y)
            assert (bl.coeffs[g] - w_first).abs().max() > 1e-6


def test_non_finite_targets_fall_back_to_zero_with_warning():
    obs, returns, timesteps, _ = _synthetic(seed=6)
    returns = returns.clone()
    returns[0, 0] = float("inf")  # group 0 cannot be fitted
    with pytest.warns(RuntimeWarning, match=r"groups \[0\]"):
        pred = LinearFeatureBaseline(1e-11).fit_predict(
            obs, returns, torch.ones_like(returns), timesteps, groups=3
        )
    assert (pred[:, :4] == 0).all()
    torch.testing.assert_close(pred[:, 4:], returns[:, 4:], atol=1e-8, rtol=0)
