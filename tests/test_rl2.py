"""RL²: recurrent inputs and hidden state in the collector, trial-level GAE, PPO loss, masking,
learning on bandits, and the experiment configs end to end."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

from metarl.evaluation.bandit_baselines import evaluate_bandit_baselines, play
from metarl.sampling.collector import Collector
from metarl.algos.rl2 import RL2, RL2Config
from metarl.evaluation.config import EvalConfig
from metarl.experiment import load_config
from metarl.envs.bandit import BanditTask
from metarl.envs.navigation import NavigationTask
from metarl.common.policies import GaussianMLPPolicy, RecurrentPolicy
from metarl.common.returns import gae
from metarl.algos.rl2.rl2 import masked_mean, ppo_loss, trial_gae

EXPERIMENTS = Path(__file__).resolve().parent.parent / "experiments"


def _bandit_policy(n_arms: int, hidden: int = 8, seed: int = 0) -> RecurrentPolicy:
    torch.manual_seed(seed)
    return RecurrentPolicy(1, gym.spaces.Discrete(n_arms), hidden_size=hidden)


# ----------------------------------------------------------------------------- inputs (discrete)


def test_discrete_inputs_hand_checked_trial():
    """Two episodes of 2 pulls per trial; arms pay exactly their 0/1 mean, so everything is checkable."""
    means = (1.0, 0.0, 1.0)
    collector = Collector("metarl/Bandit-v0", seed=0, env_kwargs={"n_arms": 3, "n_pulls": 2}, horizon=2)
    policy = _bandit_policy(3)
    batch = collector.collect(policy, [BanditTask(means)] * 2, episodes_per_task=4, episodes_per_trial=2)
    T, B = 4, 4
    assert batch.policy_inputs.shape == (T, B, 1 + 3 + 1 + 1)
    assert torch.equal(batch.valid, torch.ones(T, B))
    a = batch.actions
    assert torch.equal(batch.rewards, torch.tensor(means)[a])
    # Every episode ends by the env's time limit (truncation) at rows 1 and 3.
    assert batch.dones.tolist() == [[False] * B, [True] * B, [False] * B, [True] * B]
    for b in range(B):
        expected = [
            [0.0, 0.0, 0.0, 0.0, 0.0, 0.0],  # trial start: no previous action (not "arm 0"), reward 0, done 0
            [0.0] + np.eye(3)[a[0, b]].tolist() + [means[a[0, b]], 0.0],
            [0.0] + np.eye(3)[a[1, b]].tolist() + [means[a[1, b]], 1.0],  # after a truncation: done = 1
            [0.0] + np.eye(3)[a[2, b]].tolist() + [means[a[2, b]], 0.0],
        ]
        assert batch.policy_inputs[:, b].tolist() == expected


def test_env_truncation_before_the_slot_end_sets_the_done_flag():
    """n_pulls = 2 but a slot of H = 3: the env truncates at pull 2; row 2 is padding; the next
    episode's first input carries (last real action, last real reward, done = 1)."""
    collector = Collector("metarl/Bandit-v0", seed=1, env_kwargs={"n_arms": 3, "n_pulls": 2}, horizon=3)
    means = (0.0, 1.0, 1.0)
    batch = collector.collect(_bandit_policy(3), [BanditTask(means)], episodes_per_task=2, episodes_per_trial=2)
    assert batch.valid[:, 0].tolist() == [1, 1, 0, 1, 1, 0]
    assert batch.dones[:, 0].tolist() == [False, True, False, False, True, False]
    a1 = int(batch.actions[1, 0])
    assert batch.policy_inputs[3, 0].tolist() == [0.0] + np.eye(3)[a1].tolist() + [means[a1], 1.0]


# ------------------------------------------------------ inputs (continuous), hidden state, padding


@pytest.fixture(scope="module")
def nav_batch():
    """Navigation with goals 0.1 and 0.3 along x and a policy that always moves +0.1 in x: episodes
    terminate after 1 and 3 steps of a 5-step slot, so trials hold padded rows between episodes."""
    torch.manual_seed(3)
    policy = RecurrentPolicy(2, gym.spaces.Box(-0.1, 0.1, (2,), np.float32), hidden_size=6, init_log_std=-8.0)
    with torch.no_grad():
        policy.head.weight.mul_(1e-3)  # the mean depends (weakly) on the hidden state ...
        policy.head.bias.copy_(torch.tensor([1.0, 0.0]))  # ... and is clipped to +0.1 in x by the env
    collector = Collector("metarl/Navigation2D-v0", seed=0, horizon=5)
    tasks = [NavigationTask((0.1, 0.0)), NavigationTask((0.3, 0.0))]
    # 2 trials per task: columns 0, 1 (goal 0.1) and 2, 3 (goal 0.3).
    batch = collector.collect(policy, tasks, episodes_per_task=4, episodes_per_trial=2)
    return policy, batch


def test_navigation_padding_layout(nav_batch):
    _, batch = nav_batch
    short = [1, 0, 0, 0, 0, 1, 0, 0, 0, 0]
    long = [1, 1, 1, 0, 0, 1, 1, 1, 0, 0]
    assert batch.valid.T.tolist() == [short, short, long, long]
    assert batch.dones[:, 0].nonzero().flatten().tolist() == [0, 5]
    assert batch.dones[:, 2].nonzero().flatten().tolist() == [2, 7]
    assert torch.all(batch.rewards[batch.valid == 0] == 0)


def test_manual_step_through_matches_collector_and_training_path(nav_batch):
    """Re-run every column by hand, feeding only its valid steps: the state starts at zero per trial
    (column), is carried across the episode boundary and skips padded rows entirely."""
    policy, batch = nav_batch
    T, B = batch.valid.shape
    manual_out = torch.zeros(T, B, 2)
    reset_at_episode_logp = []
    with torch.no_grad():
        seq_mean, _ = policy.forward_sequence(batch.policy_inputs, policy.initial_state(B), batch.valid)
        for b in range(B):
            h = torch.zeros(1, policy.hidden_size)
            prev_a, prev_r, prev_d = torch.zeros(2), 0.0, 0.0
            for t in range(T):
                if not batch.valid[t, b]:
                    continue
                x = torch.cat([batch.obs[t, b], prev_a, torch.tensor([prev_r, prev_d])])
                torch.testing.assert_close(batch.policy_inputs[t, b], x)
                if t == 5:  # first step of episode 2: what a reset at the episode boundary would give
                    (m0, s0), _ = policy.step(x.unsqueeze(0), torch.zeros_like(h))
                    reset_at_episode_logp.append(float(policy.distribution((m0, s0)).log_prob(batch.actions[t, b : b + 1])))
                (mean, log_std), h = policy.step(x.unsqueeze(0), h)
                manual_out[t, b] = mean[0]
                logp = policy.distribution((mean, log_std)).log_prob(batch.actions[t, b : b + 1])
                # The collector stepped all B columns in one call, this replay one row: the mean may
                # differ in its last bits (a BLAS may round a row differently in a call of another
                # shape). With std = exp(-8) a mean off by d moves the log-probability by up to
                # sum_i |z_i| d / std (z: the action's standardized offset); the bound for d = 1e-6.
                z = (batch.actions[t, b] - mean[0]) / log_std[0].exp()
                tol = float(z.abs().sum()) * 1e-6 / math.exp(-8) + 1e-4
                assert float(logp) == pytest.approx(float(batch.log_probs[t, b]), abs=tol)
                prev_a, prev_r, prev_d = batch.actions[t, b], float(batch.rewards[t, b]), float(batch.dones[t, b])
    valid = batch.valid.bool()
    torch.testing.assert_close(seq_mean[valid], manual_out[valid])
    # The carried state matters: resetting it at the episode boundary would change the policy.
    for b in range(B):
        assert abs(reset_at_episode_logp[b] - float(batch.log_probs[5, b])) > 1e-2


def _loss_and_grads(algo: RL2, batch):
    cfg = algo.cfg
    with torch.no_grad():
        values = algo.value_fn.forward_sequence(batch.policy_inputs, batch.valid)
    adv, returns = trial_gae(batch.rewards, values, batch.valid, cfg.gamma, cfg.gae_lambda)
    cols = torch.arange(batch.num_columns)
    dist, v = algo._evaluate(batch, cols, batch.valid)
    _, _, total, _ = ppo_loss(dist.log_prob(batch.actions), batch.log_probs, adv, dist.entropy(), v, returns,
                              batch.valid, cfg.clip_range, 0.01, cfg.value_coef)
    params = list(algo.policy.parameters()) + list(algo.value_fn.parameters())
    grads = torch.autograd.grad(total, params)
    return total.detach(), [g.detach() for g in grads]


def test_padded_rows_affect_neither_loss_nor_hidden_state(nav_batch):
    policy, batch = nav_batch
    collector = Collector("metarl/Navigation2D-v0", seed=0, horizon=5)
    algo = RL2(policy, collector, RL2Config(episodes_per_trial=2, trials_per_iteration=4, minibatches=1))
    loss, grads = _loss_and_grads(algo, batch)
    corrupt = batch.to("cpu")
    pad = batch.valid == 0
    g = torch.Generator().manual_seed(0)
    corrupt.policy_inputs = batch.policy_inputs.clone()
    corrupt.policy_inputs[pad] = 100 * torch.randn(int(pad.sum()), batch.policy_inputs.shape[-1], generator=g)
    corrupt.actions = batch.actions.clone()
    corrupt.actions[pad] = 1e3
    corrupt.log_probs = batch.log_probs.masked_fill(pad, -1e3)
    corrupt.obs = batch.obs.clone()
    corrupt.obs[pad] = -50.0
    loss2, grads2 = _loss_and_grads(algo, corrupt)
    assert torch.isfinite(loss)
    torch.testing.assert_close(loss2, loss)
    for a, b in zip(grads, grads2):
        torch.testing.assert_close(a, b)
    with torch.no_grad():
        s1, _ = policy.forward_sequence(batch.policy_inputs, policy.initial_state(4), batch.valid)
        s2, _ = policy.forward_sequence(corrupt.policy_inputs, policy.initial_state(4), batch.valid)
    torch.testing.assert_close(s1[~pad], s2[~pad])


# -------------------------------------------------------------------------------- trial GAE / PPO


def test_trial_gae_equals_gae_with_one_done_at_trial_end():
    g = torch.Generator().manual_seed(0)
    r, v = torch.randn(12, 5, generator=g), torch.randn(12, 5, generator=g)
    dones = torch.zeros(12, 5, dtype=torch.bool)
    dones[-1] = True
    adv, ret = trial_gae(r, v, torch.ones(12, 5), 0.97, 0.9)
    adv_ref, ret_ref = gae(r, v, dones, 0.97, 0.9)
    torch.testing.assert_close(adv, adv_ref)
    torch.testing.assert_close(ret, ret_ref)
    # Cutting the recursion at an episode boundary inside the trial gives something else.
    dones[5] = True
    assert not torch.allclose(adv[:6], gae(r, v, dones, 0.97, 0.9)[0][:6])


def test_trial_gae_skips_padded_rows_hand_checked():
    r = torch.tensor([[1.0], [0.0], [2.0]])
    v = torch.tensor([[0.5], [9.0], [1.0]])  # the padded row's value must not be used
    valid = torch.tensor([[1.0], [0.0], [1.0]])
    adv, ret = trial_gae(r, v, valid, gamma=0.9, lam=0.8)
    # t = 2: delta = 2 - 1 = 1.  t = 0: delta = 1 + 0.9 * 1 - 0.5 = 1.4, A = 1.4 + 0.9 * 0.8 * 1 = 2.12
    torch.testing.assert_close(adv[:, 0], torch.tensor([2.12, 0.0, 1.0]))
    torch.testing.assert_close(ret[:, 0], torch.tensor([2.62, 0.0, 2.0]))


def test_ppo_loss_hand_checked():
    log_probs = torch.tensor([[0.5, -0.5, 0.5, -0.5, 3.0]])
    old = torch.zeros(1, 5)
    adv = torch.tensor([[1.0, 1.0, -1.0, -1.0, 100.0]])
    entropy = torch.tensor([[1.0, 2.0, 3.0, 4.0, 100.0]])
    values = torch.tensor([[1.0, 2.0, 0.0, 0.0, 50.0]])
    returns = torch.tensor([[2.0, 0.0, 0.0, 1.0, -50.0]])
    valid = torch.tensor([[1.0, 1.0, 1.0, 1.0, 0.0]])  # the last entry is padding
    pl, vl, total, stats = ppo_loss(log_probs, old, adv, entropy, values, returns, valid,
                                    clip_range=0.2, entropy_coef=0.1, value_coef=0.5)
    e = math.exp
    # min(r A, clip(r) A): r = e^.5 > 1.2 clipped for A > 0; r = e^-.5 kept for A > 0; r = e^.5 kept
    # for A < 0 (more negative); r = e^-.5 < 0.8 clipped for A < 0.
    surrogate = [1.2, e(-0.5), -e(0.5), -0.8]
    expected_pl = -sum(surrogate) / 4 - 0.1 * (1 + 2 + 3 + 4) / 4
    expected_vl = (1 + 4 + 0 + 1) / 4
    assert float(pl) == pytest.approx(expected_pl, rel=1e-6)
    assert float(vl) == pytest.approx(expected_vl, rel=1e-6)
    assert float(total) == pytest.approx(expected_pl + 0.5 * expected_vl, rel=1e-6)
    assert float(stats["clip_fraction"]) == pytest.approx(1.0)  # |r - 1| > 0.2 on all four valid steps
    assert float(masked_mean(torch.ones(2, 2), torch.zeros(2, 2))) == 0.0


def test_value_target_normalisation_preserves_values():
    from metarl.algos.rl2.rl2 import RecurrentValueFunction

    torch.manual_seed(0)
    vf = RecurrentValueFunction(4, 8)
    g = torch.Generator().manual_seed(1)
    inputs, valid = torch.randn(6, 3, 4, generator=g), torch.ones(6, 3)
    valid[4:, 0] = 0
    normalized = vf.normalized_sequence(inputs, valid).detach()
    returns = 100.0 * torch.randn(6, 3, generator=g) + 50.0
    vf.update_return_stats(returns, valid)  # the first call only sets the statistics
    torch.testing.assert_close(vf.normalized_sequence(inputs, valid).detach(), normalized)
    assert float(vf.return_mean) == pytest.approx(float(masked_mean(returns, valid)), rel=1e-5)
    before = vf.forward_sequence(inputs, valid).detach()
    returns = 3.0 * torch.randn(6, 3, generator=g) - 20.0
    vf.update_return_stats(returns, valid)  # later calls move them and preserve every output
    torch.testing.assert_close(vf.forward_sequence(inputs, valid).detach(), before, rtol=1e-5, atol=1e-4)
    assert float(vf.return_std) < 100.0
    targets = vf.normalize_targets(returns)
    torch.testing.assert_close(targets * vf.return_std + vf.return_mean, returns)


# ----------------------------------------------------------------------------- the algorithm


def _bandit_algo(optimizer="ppo", n_arms=3, trials=16, seed=0, init_seed=0, **kw):
    collector = Collector("metarl/Bandit-v0", seed=seed, env_kwargs={"n_arms": n_arms, "n_pulls": 10}, horizon=10)
    cfg = RL2Config(episodes_per_trial=1, trials_per_iteration=trials, minibatches=4, optimizer=optimizer, **kw)
    return RL2(_bandit_policy(n_arms, hidden=16, seed=init_seed), collector, cfg)


def test_minibatches_are_whole_disjoint_trials():
    algo = _bandit_algo(trials=10)
    parts = [p.tolist() for p in algo._minibatches(10, np.random.default_rng(0))]
    assert len(parts) == 4
    assert sorted(sum(parts, [])) == list(range(10))


@pytest.mark.parametrize("optimizer", ["ppo", "trpo"])
def test_train_iteration_stats_and_state_round_trip(optimizer):
    algo = _bandit_algo(optimizer)
    before = [p.detach().clone() for p in algo.policy.parameters()]
    stats = algo.train_iteration(np.random.default_rng(0))
    assert stats["env_steps"] == 16 * 10
    assert set(stats) >= {"return/episode_0", "return/trial", "loss/value"}
    assert stats["return/trial"] == stats["return/episode_0"]
    assert all(math.isfinite(v) for v in stats.values())
    if optimizer == "trpo":
        assert stats["kl"] <= 0.01 * (1 + 1e-6)
    changed = any(not torch.equal(a, b) for a, b in zip(before, algo.policy.parameters()))
    assert changed or (optimizer == "trpo" and stats["line_search/accepted"] == 0.0)
    # A differently initialised copy given the state (and the same collector streams) continues
    # exactly like the original: policy, value function and optimizer moments all travel.
    clone = _bandit_algo(optimizer, init_seed=1)
    buffer = io.BytesIO()  # through serialisation, as a checkpoint does (no tensors shared with algo)
    torch.save(algo.state_dict(), buffer)
    buffer.seek(0)
    clone.load_state_dict(torch.load(buffer))
    clone.collector.set_rng_state(algo.collector.get_rng_state())
    # wall-clock columns cannot match between two runs; every other statistic must
    s1, s2 = ({k: v for k, v in algo_.train_iteration(np.random.default_rng(5)).items() if not k.startswith("time/")}
              for algo_ in (algo, clone))
    assert s1 == pytest.approx(s2, rel=1e-5, abs=1e-7)
    for a, b in zip(algo.state_dict()["policy"].values(), clone.state_dict()["policy"].values()):
        torch.testing.assert_close(a, b)


def test_rl2_rejects_a_feedforward_policy():
    collector = Collector("metarl/Bandit-v0", seed=0)
    with pytest.raises(ValueError, match="recurrent policy"):
        RL2(GaussianMLPPolicy(1, 1), collector, RL2Config())


def test_adaptation_curve_shape_and_trials_per_task():
    algo = _bandit_algo()
    tasks = algo.collector.sample_tasks(7, np.random.default_rng(0))
    ev_collector = Collector("metarl/Bandit-v0", seed=9, env_kwargs={"n_arms": 3, "n_pulls": 10}, horizon=10)
    curve = algo.adaptation_curve(tasks, ev_collector, EvalConfig(episodes_per_task=3))
    assert curve.shape == (1, 7)
    assert np.all((curve >= 0) & (curve <= 10))
    # 3 trials per task averaged: multiples of 1/3
    np.testing.assert_allclose(curve * 3, np.round(curve * 3), atol=1e-4)


def test_adaptation_curve_scores_sampled_or_mean_actions_as_asked():
    """Sampled actions by default (as every method); eval.deterministic: the mode, as for every method."""
    algo = _bandit_algo()
    tasks = algo.collector.sample_tasks(7, np.random.default_rng(0))

    def ev_collector():
        return Collector("metarl/Bandit-v0", seed=9, env_kwargs={"n_arms": 3, "n_pulls": 10}, horizon=10)

    for deterministic in (False, True):
        curve = algo.adaptation_curve(tasks, ev_collector(), EvalConfig(episodes_per_task=4, deterministic=deterministic))
        batch = ev_collector().collect(algo.policy, tasks, 4, episodes_per_trial=algo.cfg.episodes_per_trial,
                                       deterministic=deterministic)
        expected = batch.episode_returns().reshape(algo.cfg.episodes_per_trial, 7, -1).mean(2).numpy()
        np.testing.assert_array_equal(curve, expected)


# --------------------------------------------------------------------------------- baselines


def test_bandit_baselines():
    tasks = np.random.default_rng(0).uniform(size=(3000, 10))
    res = evaluate_bandit_baselines(tasks, 10, np.random.default_rng(1))
    assert set(res) == {"random", "ucb1", "greedy", "thompson"} and all(v.shape == (3000,) for v in res.values())
    assert res["random"].mean() == pytest.approx(5.0, abs=0.15)
    # UCB1 must try all 10 arms first, so with 10 pulls it is a random permutation of the arms.
    assert res["ucb1"].mean() == pytest.approx(5.0, abs=0.15)
    assert res["greedy"].mean() > 6.3
    # One arm that always pays: every policy but random finds it at once or after trying arms.
    sure = np.zeros((5, 4))
    sure[:, 2] = 1.0
    assert np.all(play("greedy", sure, 6, np.random.default_rng(0)) >= 3)
    with pytest.raises(ValueError, match="unknown bandit baseline 'gittins'"):
        play("gittins", sure, 3, np.random.default_rng(0))
    with pytest.raises(ValueError, match="n_pulls must be a positive integer, got 0"):
        play("random", sure, 0, np.random.default_rng(0))


def test_rl2_learns_bandits_beyond_random():
    """3 arms, 10 pulls, 4000 training trials. A policy that ignores the rewards it has seen earns 5.0
    on average whatever it does (the arms are exchangeable), so clearing random + 0.4 on 500 held-out
    tasks (standard error about 0.07) needs the recurrent memory to have learned to exploit."""
    torch.manual_seed(0)
    collector = Collector("metarl/Bandit-v0", seed=0, env_kwargs={"n_arms": 3, "n_pulls": 10}, horizon=10)
    policy = RecurrentPolicy(1, gym.spaces.Discrete(3), hidden_size=64)
    cfg = RL2Config(episodes_per_trial=1, trials_per_iteration=100, lr=1e-2, gamma=1.0, gae_lambda=0.95)
    algo = RL2(policy, collector, cfg)
    rng = np.random.default_rng(0)
    for _ in range(40):
        algo.train_iteration(rng)
    tasks = collector.sample_tasks(500, np.random.default_rng(1000))
    ev_collector = Collector("metarl/Bandit-v0", seed=1000, env_kwargs={"n_arms": 3, "n_pulls": 10}, horizon=10)
    learned = algo.adaptation_curve(tasks, ev_collector, EvalConfig()).mean()
    random = evaluate_bandit_baselines(tasks, 10, np.random.default_rng(0), names=("random",), repeats=4)["random"].mean()
    assert learned > random + 0.4, (learned, random)


# ---------------------------------------------------------------------------- configs end to end


@pytest.mark.parametrize("name", ["halfcheetah_vel_rl2.yaml", "halfcheetah_dir_rl2.yaml"])
def test_cheetah_config_runs_one_iteration_end_to_end(tmp_path, name):
    from metarl.experiment import evaluate_run
    from metarl.train import train

    cfg = load_config(EXPERIMENTS / name, [
        "train.show_progress=false", "train.iterations=1", "env.horizon=4", "rl2.trials_per_iteration=2",
        "rl2.minibatches=2", "policy.recurrent_hidden_size=8", "collector.num_threads=1",
    ])
    assert cfg.algo == "rl2" and cfg.rl2.episodes_per_trial == 2
    run = train(cfg, tmp_path / "run")
    with open(run / "progress.csv") as f:
        row = next(csv.DictReader(f))
    assert float(row["env_steps_total"]) == 2 * 2 * 4
    assert {"return/episode_0", "return/episode_1", "return/trial"} <= set(row)
    assert float(row["time/sampling_s"]) > 0 and float(row["time/update_s"]) > 0
    summary = evaluate_run(run, tasks=2)
    assert [r["step"] for r in summary["curves"]["rl2"]] == [0, 1]
    assert summary["x_label"] == "episode in trial"


@pytest.mark.parametrize("name", ["bandit_rl2.yaml", "tabular_mdp_rl2.yaml"])
def test_small_configs_load(name):
    cfg = load_config(EXPERIMENTS / name)
    assert cfg.algo == "rl2"


def test_target_kl_stops_the_ppo_epochs_and_only_when_asked():
    def run(**kw):
        algo = _bandit_algo(**kw)
        stats = algo.train_iteration(np.random.default_rng(0))
        return stats, [p.detach().clone() for p in algo.policy.parameters()]

    plain, plain_params = run()
    assert "ppo/steps" not in plain  # progress.csv of runs without target_kl keeps its columns
    # A bound no minibatch reaches: every step of 4 epochs x 4 minibatches, the same update as without it.
    loose, loose_params = run(target_kl=1e9)
    assert loose["ppo/steps"] == 4 * 4
    for a, b in zip(plain_params, loose_params):
        torch.testing.assert_close(a, b)
    # A bound the first step already exceeds on the next minibatch: one step, a smaller move.
    tight, tight_params = run(target_kl=1e-12)
    assert tight["ppo/steps"] == 1
    init = [p.detach().clone() for p in _bandit_algo().policy.parameters()]
    moved = lambda ps: sum(float((a - b).pow(2).sum()) for a, b in zip(ps, init))  # noqa: E731
    assert 0 < moved(tight_params) < moved(plain_params)


@pytest.mark.parametrize("overrides, message", [
    (["rl2.target_kl=0.0"], "rl2.target_kl = 0.0 is out of range"),
    (["rl2.optimizer=trpo", "rl2.target_kl=0.01"], "null with optimizer trpo"),
])
def test_target_kl_bad_values_are_refused_in_one_line(overrides, message):
    with pytest.raises(Exception, match=message):
        load_config(str(EXPERIMENTS / "tabular_mdp_rl2.yaml"), overrides)


def test_gru_states_fused_path_matches_the_stepped_cell_in_values_and_gradients():
    """valid=None (no padded step) goes through torch's multi-step GRU; it must be the cell's recursion (to
    rounding), forward and backward. A padded sequence still freezes the state on its padded rows."""
    from metarl.common.policies import gru_states

    torch.manual_seed(0)
    cell = torch.nn.GRUCell(7, 16)
    T, B = 30, 4
    inputs = torch.randn(T, B, 7, requires_grad=True)
    state0 = torch.randn(B, 16)

    def stepped(x, valid):
        s, hs = state0, []
        for t in range(T):
            s = torch.where(valid[t].bool().unsqueeze(-1), cell(x[t], s), s)
            hs.append(s)
        return torch.stack(hs)

    valid = torch.ones(T, B)
    weights = torch.randn(T, B, 16)
    fused = gru_states(cell, inputs, state0, None)
    (g_fused,) = torch.autograd.grad((fused * weights).sum(), [inputs])
    g_fused_w = torch.autograd.grad((gru_states(cell, inputs, state0, None) * weights).sum(), [cell.weight_hh])[0]
    ref = gru_states(cell, inputs, state0, valid)  # an all-ones mask takes the stepped path
    torch.testing.assert_close(ref, stepped(inputs, valid), rtol=0, atol=0)
    (g_ref,) = torch.autograd.grad((ref * weights).sum(), [inputs])
    g_ref_w = torch.autograd.grad((stepped(inputs, valid) * weights).sum(), [cell.weight_hh])[0]
    torch.testing.assert_close(fused, ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(g_fused, g_ref, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(g_fused_w, g_ref_w, rtol=1e-4, atol=1e-5)

    padded = valid.clone()
    padded[10:15, 1] = 0  # column 1 pads five rows: its state must stay at row 9's
    out = gru_states(cell, inputs, state0, padded)
    assert torch.equal(out[10:15, 1], out[9, 1].expand(5, 16))  # a copy by construction (torch.where)
    torch.testing.assert_close(out, stepped(inputs, padded), rtol=0, atol=0)
    assert not torch.allclose(out[9:15, 1], fused[9:15, 1])


def test_update_on_unpadded_trials_takes_the_fused_gru_and_matches_the_stepped_one(monkeypatch):
    """Tabular MDP trials never end early: the iteration passes valid=None to the recurrences, and its
    log-probabilities and values equal the stepped path's to rounding."""
    import metarl.algos.rl2.rl2 as rl2_module
    from metarl.experiment import build_experiment, load_config

    exp = build_experiment(load_config("experiments/tabular_mdp_rl2.yaml", ["rl2.trials_per_iteration=4"]))
    algo = exp.algo
    batch = algo.collect(algo.collector.sample_tasks(4, np.random.default_rng(0)))
    assert bool(batch.valid.all())
    cols = torch.arange(batch.num_columns)
    with torch.no_grad():
        dist_f, v_f = algo._evaluate(batch, cols, None)
        dist_s, v_s = algo._evaluate(batch, cols, batch.valid)
    torch.testing.assert_close(dist_f.log_prob(batch.actions), dist_s.log_prob(batch.actions), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(v_f, v_s, rtol=1e-5, atol=1e-5)

    seen = []
    real = rl2_module.gru_states
    monkeypatch.setattr(rl2_module, "gru_states", lambda cell, x, s, valid: seen.append(valid is None) or real(cell, x, s, valid))
    algo.train_iteration(np.random.default_rng(1))
    exp.collector.close()
    assert seen and all(seen)


def test_ppo_update_with_the_value_backward_on_a_thread_equals_one_joint_backward():
    """The PPO step back-propagates the value term on a second thread; the parameters after an update equal
    those of the textbook loop (one backward of policy_loss + value_coef * value_loss, clip, Adam) to rounding."""
    import copy

    from metarl.experiment import build_experiment, load_config

    exp = build_experiment(load_config("experiments/tabular_mdp_rl2.yaml",
                                       ["rl2.trials_per_iteration=4", "rl2.minibatches=2", "rl2.ppo_epochs=2"]))
    algo = exp.algo
    cfg = algo.cfg
    batch = algo.collect(algo.collector.sample_tasks(4, np.random.default_rng(0)))
    exp.collector.close()
    with torch.no_grad():
        values = algo.value_fn.forward_sequence(batch.policy_inputs, None)
    adv, returns = trial_gae(batch.rewards, values, batch.valid, cfg.gamma, cfg.gae_lambda)
    reference = copy.deepcopy(algo)
    start_policy, start_value = copy.deepcopy(algo.policy), copy.deepcopy(algo.value_fn)

    stats = algo._ppo(batch, adv, returns, np.random.default_rng(5), None)

    rng = np.random.default_rng(5)  # the same minibatches
    targets = reference.value_fn.normalize_targets(returns)
    losses = []
    for _ in range(cfg.ppo_epochs):
        for cols in reference._minibatches(batch.num_columns, rng):
            dist, v = reference._evaluate(batch, cols, None)
            _, v_loss, total, _ = ppo_loss(dist.log_prob(batch.actions[:, cols]), batch.log_probs[:, cols], adv[:, cols],
                                           dist.entropy(), v, targets[:, cols], batch.valid[:, cols], cfg.clip_range,
                                           cfg.entropy_coef, cfg.value_coef)
            reference.optimizer.zero_grad()
            total.backward()
            reference._clip(reference.policy.parameters())
            reference._clip(reference.value_fn.parameters())
            reference.optimizer.step()
            losses.append(float(v_loss.detach()))
    for (name, p), q in zip([*algo.policy.named_parameters(), *algo.value_fn.named_parameters()],
                            [*reference.policy.parameters(), *reference.value_fn.parameters()]):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6, msg=name)
    # both networks moved (an update that skipped either would also match a reference that skipped it)
    for before, after in ((start_policy, algo.policy), (start_value, algo.value_fn)):
        assert any(not torch.allclose(p, q) for p, q in zip(before.parameters(), after.parameters()))
    assert stats["loss/value"] == pytest.approx(sum(losses) / len(losses), rel=1e-5)
    assert copy.deepcopy(algo)._value_pool is None  # an algorithm that has updated can still be copied
