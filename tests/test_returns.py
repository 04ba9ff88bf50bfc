import pytest
import torch

from metarl.common.returns import discounted_returns, gae, normalize, normalize_per_column_group

F64 = torch.float64


def _batch():
    """Three columns, T = 4.

    col 0: one episode running to the horizon, rewards 1 2 3 4.
    col 1: two episodes (RL²-style trial): rewards 1 1 | 2 2, done after step 1 and step 3.
    col 2: episode terminated after step 1; rows 2, 3 are invalid and hold garbage rewards.
    """
    rewards = torch.tensor(
        [[1.0, 1.0, 4.0], [2.0, 1.0, 2.0], [3.0, 2.0, 100.0], [4.0, 2.0, -50.0]], dtype=F64
    )
    dones = torch.tensor(
        [[False, False, False], [False, True, True], [False, False, False], [True, True, False]]
    )
    valid = torch.tensor([[1, 1, 1], [1, 1, 1], [1, 1, 0], [1, 1, 0]], dtype=F64)
    return rewards, dones, valid


def test_discounted_returns_hand_computed():
    rewards, dones, valid = _batch()
    g = discounted_returns(rewards, dones, 0.5, valid)
    # col 0: G3 = 4, G2 = 3 + 2 = 5, G1 = 2 + 2.5 = 4.5, G0 = 1 + 2.25 = 3.25
    # col 1: G1 = 1, G0 = 1.5 | G3 = 2, G2 = 3 (the second episode does not leak into the first)
    # col 2: G1 = 2, G0 = 5, invalid rows 0 despite their garbage rewards
    expected = torch.tensor(
        [[3.25, 1.5, 5.0], [4.5, 1.0, 2.0], [5.0, 3.0, 0.0], [4.0, 2.0, 0.0]], dtype=F64
    )
    torch.testing.assert_close(g, expected)


def test_discounted_returns_invalid_tail_without_done_does_not_leak():
    rewards, dones, valid = _batch()
    dones = dones.clone()
    dones[1, 2] = False  # collector forgot to mark the early termination: valid still cuts it
    g = discounted_returns(rewards, dones, 0.5, valid)
    torch.testing.assert_close(g[:, 2], torch.tensor([5.0, 2.0, 0.0, 0.0], dtype=F64))


def test_discounted_returns_bad_gamma():
    rewards, dones, valid = _batch()
    with pytest.raises(ValueError, match="gamma"):
        discounted_returns(rewards, dones, 1.5, valid)
    with pytest.raises(ValueError, match="dones"):
        discounted_returns(rewards, dones[:2], 0.9, valid)


def test_gae_hand_computed():
    rewards = torch.tensor([[1.0], [2.0]], dtype=F64)
    values = torch.tensor([[0.5], [1.0]], dtype=F64)
    dones = torch.tensor([[False], [True]])
    adv, ret = gae(rewards, values, dones, gamma=0.5, lam=0.5)
    # delta1 = 2 - 1 = 1; delta0 = 1 + 0.5 * 1 - 0.5 = 1; A1 = 1; A0 = 1 + 0.25 * 1 = 1.25
    torch.testing.assert_close(adv, torch.tensor([[1.25], [1.0]], dtype=F64))
    torch.testing.assert_close(ret, torch.tensor([[1.75], [2.0]], dtype=F64))


def test_gae_two_episodes_and_early_termination_hand_computed():
    rewards, dones, valid = _batch()
    values = torch.tensor(
        [[1.0, 1.0, 1.0], [1.0, 2.0, 3.0], [1.0, 1.0, 9.0], [1.0, 4.0, 9.0]], dtype=F64
    )
    adv, ret = gae(rewards, values, dones, gamma=0.5, lam=0.5, valid=valid)
    # col 1, episode 2: delta3 = 2 - 4 = -2, delta2 = 2 + 0.5*4 - 1 = 3; A3 = -2, A2 = 3 - 0.5 = 2.5
    #        episode 1: delta1 = 1 - 2 = -1 (no bootstrap across the done), delta0 = 1 + 1 - 1 = 1
    #                   A1 = -1, A0 = 1 - 0.25 = 0.75
    # col 2: delta1 = 2 - 3 = -1, delta0 = 4 + 1.5 - 1 = 4.5; A1 = -1, A0 = 4.5 - 0.25 = 4.25
    # col 0: delta = [1 + .5 - 1, 2 + .5 - 1, 3 + .5 - 1, 4 - 1] = [.5, 1.5, 2.5, 3]
    #        A3 = 3, A2 = 2.5 + .75 = 3.25, A1 = 1.5 + .8125 = 2.3125, A0 = .5 + .578125 = 1.078125
    expected = torch.tensor(
        [[1.078125, 0.75, 4.25], [2.3125, -1.0, -1.0], [3.25, 2.5, 0.0], [3.0, -2.0, 0.0]],
        dtype=F64,
    )
    torch.testing.assert_close(adv, expected)
    torch.testing.assert_close(ret, (expected + values) * valid)


def test_gae_lambda_one_zero_values_equals_discounted_returns():
    torch.manual_seed(0)
    rewards, dones, valid = _batch()
    rewards = rewards + torch.randn_like(rewards)
    adv, ret = gae(rewards, torch.zeros_like(rewards), dones, 0.9, 1.0, valid)
    g = discounted_returns(rewards, dones, 0.9, valid)
    torch.testing.assert_close(adv, g)
    torch.testing.assert_close(ret, g)
    # with lambda = 1 and any values, A = G - V (telescoping), and returns = G.
    values = torch.randn_like(rewards)
    adv, ret = gae(rewards, values, dones, 0.9, 1.0, valid)
    torch.testing.assert_close(adv, (g - values) * valid)
    torch.testing.assert_close(ret, g)


def test_gae_lambda_zero_is_one_step_td_error():
    torch.manual_seed(1)
    rewards, dones, valid = _batch()
    values = torch.randn_like(rewards)
    adv, _ = gae(rewards, values, dones, 0.9, 0.0, valid)
    v = values * valid
    next_v = torch.cat([v[1:], torch.zeros_like(v[:1])])
    td = (rewards * valid + 0.9 * (~dones).to(F64) * next_v - v) * valid
    torch.testing.assert_close(adv, td)
    # spot check one entry by hand: col 1, t = 1 is a done, so A = r - V
    torch.testing.assert_close(adv[1, 1], rewards[1, 1] - values[1, 1])


def test_normalize_hand_computed_and_masked():
    x = torch.tensor([[1.0, 100.0], [3.0, -7.0]], dtype=F64)
    valid = torch.tensor([[1, 0], [1, 0]], dtype=F64)
    out = normalize(x, valid, eps=0.0)
    # valid entries 1, 3: mean 2, population std 1
    torch.testing.assert_close(out, torch.tensor([[-1.0, 0.0], [1.0, 0.0]], dtype=F64))


def test_normalize_constant_input_is_finite():
    x = torch.full((3, 2), 5.0)
    out = normalize(x, torch.ones(3, 2))
    assert torch.isfinite(out).all() and (out == 0).all()


def test_normalize_per_column_group_matches_separate_normalisation():
    torch.manual_seed(2)
    T, groups, C = 5, 3, 4
    x = torch.randn(T, groups * C, dtype=F64) * torch.arange(1, groups * C + 1, dtype=F64)
    valid = (torch.rand(T, groups * C) > 0.3).to(F64)
    out = normalize_per_column_group(x, valid, groups)
    for g in range(groups):
        cols = slice(g * C, (g + 1) * C)
        torch.testing.assert_close(out[:, cols], normalize(x[:, cols], valid[:, cols]))
        sel = out[:, cols][valid[:, cols] > 0]
        torch.testing.assert_close(sel.mean(), torch.tensor(0.0, dtype=F64), atol=1e-12, rtol=0)
    assert (out[valid == 0] == 0).all()


def test_normalize_per_column_group_hand_computed():
    # groups of columns {0, 1} and {2, 3}
    x = torch.tensor([[0.0, 2.0, 10.0, 10.0], [0.0, 2.0, 30.0, 30.0]], dtype=F64)
    out = normalize_per_column_group(x, None, 2, eps=0.0)
    expected = torch.tensor([[-1.0, 1.0, -1.0, -1.0], [-1.0, 1.0, 1.0, 1.0]], dtype=F64)
    torch.testing.assert_close(out, expected)


def test_normalize_per_column_group_indivisible():
    with pytest.raises(ValueError, match="groups=3"):
        normalize_per_column_group(torch.zeros(2, 4), None, 3)
