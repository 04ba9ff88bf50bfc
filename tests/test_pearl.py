"""PEARL: the collector's per-task inputs and final observations, the Gaussian algebra of the posterior,
SAC's pieces against their formulas, the replay buffers, bad input, checkpoints and exact resume."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from metarl.algos.pearl import (
    TanhGaussian,
    TanhGaussianPolicy,
    TaskReplayBuffers,
    alpha_loss,
    kl_to_standard_normal,
    polyak_update,
    product_of_gaussians,
    soft_q_target,
    transitions_from_batch,
)
from metarl.algos.pearl.buffers import FIELDS
from metarl.common.config import ConfigError
from metarl.common.policies import GaussianMLPPolicy
from metarl.envs.navigation import NavigationTask
from metarl.sampling.collector import Collector

NAV = "metarl/Navigation2D-v0"

#: a PEARL run small enough for unit tests (navigation, H = 10, tiny networks)
TINY = ["algo=pearl", f"env.id={NAV}", "env.horizon=10", "pearl.num_train_tasks=6", "pearl.initial_episodes=2",
        "pearl.tasks_per_iteration=2", "pearl.prior_episodes=1", "pearl.extra_posterior_episodes=1",
        "pearl.gradient_steps=3", "pearl.hidden_sizes=[16,16]", "pearl.encoder_hidden_sizes=[16]",
        "pearl.meta_batch=3", "pearl.batch_size=8", "pearl.context_batch_size=5", "pearl.replay_capacity=200",
        "pearl.eval_episodes=2", "pearl.eval_prior_episodes=1", "train.show_progress=false"]


# ------------------------------------------------------------------------------------------ collector
def test_task_inputs_are_appended_to_each_tasks_observations():
    collector = Collector(NAV, seed=3, horizon=5)
    tasks = [NavigationTask((0.3, -0.2)), NavigationTask((-0.4, 0.1)), NavigationTask((0.1, 0.4))]
    torch.manual_seed(0)
    policy = GaussianMLPPolicy(2 + 4, 2, (8,))
    z = torch.randn(3, 4)
    batch = collector.collect(policy, tasks, 2, task_inputs=z, deterministic=True)
    # each column's task input, next to its observations, gives the recorded (mean) action
    z_cols = z.repeat_interleave(2, 0).unsqueeze(0).expand(batch.obs.shape[0], -1, -1)
    with torch.no_grad():
        expected = policy(torch.cat([batch.obs, z_cols], -1))[0]
    assert torch.allclose(batch.actions, expected, atol=1e-6)
    # and other inputs would have given other actions
    assert not torch.allclose(batch.actions[:, :2], batch.actions[:, 2:4])
    with pytest.raises(ValueError, match=r"task_inputs must be \[num_tasks=3, D\], got \(2, 4\)"):
        collector.collect(policy, tasks, 1, task_inputs=z[:2])


def test_task_inputs_of_a_share_equal_the_whole_collection():
    # what a Ray actor runs: a share of the tasks with its rows of task_inputs gives the whole batch's columns
    from gymnasium.utils import seeding

    tasks = [NavigationTask((0.3, -0.2)), NavigationTask((-0.4, 0.1)), NavigationTask((0.1, 0.4)),
             NavigationTask((-0.2, -0.3))]
    torch.manual_seed(0)
    policy = TanhGaussianPolicy(2, 3, 2, (8,))
    z = torch.randn(4, 3)
    whole = Collector(NAV, seed=5, horizon=10).collect(policy, tasks, 2, task_inputs=z)
    apart = Collector(NAV, seed=5, horizon=10)
    noise = apart.action_noise(10, 8)
    states = [seeding.np_random(s)[0].bit_generator.state for s in apart.column_seeds(8)]
    parts = [apart.collect_columns(policy, tasks[m0:m1], 2, noise=noise[:, 2 * m0:2 * m1],
                                   env_states=states[2 * m0:2 * m1], first_task=m0, total_tasks=4,
                                   task_inputs=z[m0:m1])[0] for m0, m1 in [(0, 1), (1, 4)]]
    for name in ("obs", "actions", "rewards", "log_probs", "final_obs"):
        assert torch.equal(torch.cat([getattr(p, name) for p in parts], 1), getattr(whole, name)), name


def test_final_obs_is_the_observation_after_each_episodes_last_step():
    collector = Collector(NAV, seed=0, horizon=30)
    # a goal next to the origin terminates early; a far one runs the full horizon
    tasks = [NavigationTask((0.05, 0.0)), NavigationTask((0.45, 0.45))]
    policy = GaussianMLPPolicy(2, 2, (8,))
    with torch.no_grad():
        policy.mean_net[-1].bias.copy_(torch.tensor([0.5, 0.0]))
        policy.mean_net[-1].weight.zero_()
    batch = collector.collect(policy, tasks, 1, deterministic=True)
    last = batch.valid.sum(0).long() - 1
    assert int(last[0]) < 29 and int(last[1]) == 29
    for b in range(2):
        t = int(last[b])
        step = collector.env_action(batch.actions[t, b].numpy())
        np.testing.assert_allclose(batch.final_obs[0, b].numpy(), batch.obs[t, b].numpy() + step, atol=1e-6)
    tr = transitions_from_batch(batch)
    # column 0: the terminal step is its last; column 1 ended at the horizon (not terminal: bootstrapped)
    n0 = int(last[0]) + 1
    assert tr["terminals"][:n0].tolist() == [False] * (n0 - 1) + [True]
    assert not tr["terminals"][n0:].any()
    assert torch.equal(tr["next_obs"][: n0 - 1], batch.obs[1:n0, 0])
    assert torch.equal(tr["next_obs"][n0 - 1], batch.final_obs[0, 0])
    assert torch.equal(tr["next_obs"][-1], batch.final_obs[0, 1])
    assert tr["obs"].shape[0] == batch.num_steps


# ------------------------------------------------------------------------------------------ Gaussians
def test_product_of_gaussians_matches_the_product_of_densities():
    torch.manual_seed(0)
    mu = torch.randn(7, 1, dtype=torch.float64)
    var = torch.rand(7, 1, dtype=torch.float64) + 0.1
    mean, post_var = product_of_gaussians(mu, var)
    # sum of log-densities is a quadratic in x: its maximiser is the mean, -1/(its curvature) the variance
    def log_density(x):
        return (-0.5 * (x - mu[:, 0]) ** 2 / var[:, 0]).sum()

    xs = torch.linspace(-3, 3, 60001, dtype=torch.float64)
    values = torch.stack([log_density(x) for x in xs[::100]])
    assert abs(float(xs[::100][values.argmax()]) - float(mean)) < 0.011
    h = 1e-3
    m = mean[0]
    curvature = (log_density(m + h) - 2 * log_density(m) + log_density(m - h)) / h**2
    assert torch.allclose(-1.0 / curvature, post_var[0], rtol=1e-6)
    # closed form for two factors
    mean2, var2 = product_of_gaussians(mu[:2], var[:2])
    v = 1 / (1 / var[0] + 1 / var[1])
    assert torch.allclose(var2, v) and torch.allclose(mean2, v * (mu[0] / var[0] + mu[1] / var[1]))


def test_product_is_permutation_invariant_and_weights_drop_factors():
    torch.manual_seed(1)
    mu, var = torch.randn(2, 9, 3, dtype=torch.float64), torch.rand(2, 9, 3, dtype=torch.float64) + 0.05
    perm = torch.randperm(9)
    a = product_of_gaussians(mu, var)
    b = product_of_gaussians(mu[:, perm], var[:, perm])
    assert all(torch.allclose(x, y) for x, y in zip(a, b))
    w = torch.ones(2, 9, dtype=torch.float64)
    w[:, 6:] = 0
    c = product_of_gaussians(mu, var, w)
    d = product_of_gaussians(mu[:, :6], var[:, :6])
    assert all(torch.allclose(x, y) for x, y in zip(c, d))


def test_kl_to_standard_normal_closed_form():
    mean = torch.tensor([[0.5, -1.0], [0.0, 0.0]], dtype=torch.float64)
    var = torch.tensor([[0.25, 2.0], [1.0, 1.0]], dtype=torch.float64)
    got = kl_to_standard_normal(mean, var)
    q = torch.distributions.Normal(mean, var.sqrt())
    p = torch.distributions.Normal(torch.zeros_like(mean), torch.ones_like(var))
    assert torch.allclose(got, torch.distributions.kl_divergence(q, p).sum(-1))
    assert float(got[1]) == 0.0


def test_tanh_gaussian_log_prob_against_torch_transformed_distribution():
    torch.manual_seed(2)
    mean, log_std = torch.randn(5, 3, dtype=torch.float64), 0.3 * torch.randn(5, 3, dtype=torch.float64)
    dist = TanhGaussian(mean, log_std)
    noise = torch.randn(5, 3, dtype=torch.float64)
    action, logp = dist.rsample_with_log_prob(noise)
    ref = torch.distributions.TransformedDistribution(
        torch.distributions.Normal(mean, log_std.exp()), [torch.distributions.TanhTransform()])
    assert torch.allclose(action, torch.tanh(mean + noise * log_std.exp()))
    assert torch.allclose(logp, ref.log_prob(action).sum(-1), atol=1e-6)
    assert torch.allclose(dist.log_prob(action), logp, atol=1e-6)
    assert torch.equal(dist.sample_from_noise(noise), action)
    assert torch.equal(dist.mode(), torch.tanh(mean))


# ------------------------------------------------------------------------------------------ SAC pieces
def test_soft_q_target_formula():
    r = torch.tensor([1.0, -2.0])
    done = torch.tensor([False, True])
    q1, q2, logp = torch.tensor([3.0, 5.0]), torch.tensor([4.0, 1.0]), torch.tensor([-1.0, 0.5])
    y = soft_q_target(r, done, q1, q2, logp, alpha=0.2, gamma=0.9, reward_scale=5.0)
    assert torch.allclose(y, torch.tensor([5.0 + 0.9 * (3.0 + 0.2), -10.0]))


@pytest.mark.parametrize("log_prob, grows", [(2.0, True), (-5.0, False)])
def test_temperature_rises_when_entropy_is_below_target(log_prob, grows):
    log_alpha = torch.zeros((), requires_grad=True)
    opt = torch.optim.SGD([log_alpha], lr=0.1)
    opt.zero_grad()
    alpha_loss(log_alpha, torch.full((4,), log_prob), target_entropy=-1.0).backward()
    opt.step()
    # entropy -log_prob: -2 (below the target -1) raises alpha; 5 (above) lowers it
    assert (float(log_alpha.detach()) > 0) == grows


def test_polyak_update():
    src, tgt = torch.nn.Linear(2, 1), torch.nn.Linear(2, 1)
    before = [p.detach().clone() for p in tgt.parameters()]
    polyak_update(tgt, src, 0.1)
    for b, s, t in zip(before, src.parameters(), tgt.parameters()):
        assert torch.allclose(t, 0.9 * b + 0.1 * s)


# ------------------------------------------------------------------------------------------ buffers
def _transitions(values, obs_dim=1, act_dim=1):
    v = torch.as_tensor(values, dtype=torch.float32)
    n = len(values)
    return {"obs": v.unsqueeze(1).expand(n, obs_dim), "actions": -v.unsqueeze(1).expand(n, act_dim), "rewards": v,
            "next_obs": v.unsqueeze(1) + 0.5, "terminals": torch.zeros(n, dtype=torch.bool)}


def test_buffer_wraps_around_and_keeps_the_newest():
    buf = TaskReplayBuffers(num_tasks=3, capacity=5, obs_dim=1, act_dim=1)
    # interleaved tasks in one add: each task's transitions keep their order
    buf.add(torch.tensor([0, 2, 0, 0]), _transitions([1, 100, 2, 3]))
    buf.add(torch.tensor([0, 0, 0, 0]), _transitions([4, 5, 6, 7]))
    assert buf.size.tolist() == [5, 0, 1] and buf.next.tolist() == [2, 0, 1]
    # slots 0, 1 were overwritten by 6, 7: the newest five are 3..7
    assert buf.data["rewards"][0].tolist() == [6, 7, 3, 4, 5]
    assert buf.data["rewards"][2, 0] == 100
    with pytest.raises(ValueError, match="exceed the buffer capacity 5"):
        buf.add(torch.zeros(6, dtype=torch.long), _transitions(list(range(6))))
    buf.clear(torch.tensor([0]))
    assert buf.size.tolist() == [0, 0, 1]
    with pytest.raises(ValueError, match=r"empty buffers of tasks \[0\]"):
        buf.sample(torch.tensor([0, 2]), 4, torch.Generator().manual_seed(0))


def test_buffer_samples_uniformly_from_filled_entries_only():
    buf = TaskReplayBuffers(num_tasks=2, capacity=10, obs_dim=1, act_dim=1)
    buf.add(torch.tensor([0, 0, 0, 1]), _transitions([1, 2, 3, 9]))
    s = buf.sample(torch.tensor([0, 1, 0]), 3000, torch.Generator().manual_seed(0))
    assert s["rewards"].shape == (3, 3000) and s["obs"].shape == (3, 3000, 1)
    assert set(s["rewards"][0].tolist()) == {1.0, 2.0, 3.0} and set(s["rewards"][1].tolist()) == {9.0}
    # fields stay aligned within a transition
    assert torch.equal(s["actions"][..., 0], -s["rewards"]) and torch.equal(s["next_obs"][..., 0], s["rewards"] + 0.5)
    counts = torch.bincount(s["rewards"][[0, 2]].long().reshape(-1), minlength=4)[1:].double()
    assert torch.all((counts / 6000 - 1 / 3).abs() < 0.03)  # 5 standard errors of a uniform draw


def test_buffer_state_round_trip_and_memory_bound():
    buf = TaskReplayBuffers(num_tasks=2, capacity=4, obs_dim=3, act_dim=2)
    assert buf.nbytes == 2 * 4 * TaskReplayBuffers.bytes_per_transition(3, 2) == 2 * 4 * (4 * 9 + 1)
    t = _transitions([1, 2, 3, 4, 5], obs_dim=3, act_dim=2)
    buf.add(torch.tensor([1, 1, 1, 1, 0]), t)
    other = TaskReplayBuffers(num_tasks=2, capacity=4, obs_dim=3, act_dim=2)
    other.load_state_dict(buf.state_dict())
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    a, b = buf.sample(torch.tensor([0, 1]), 7, g1), other.sample(torch.tensor([0, 1]), 7, g2)
    assert all(torch.equal(a[k], b[k]) for k in a)


def _filled_entries(buf):
    return {k: [v[i, : int(buf.size[i])].clone() for i in range(buf.num_tasks)] for k, v in buf.data.items()}


def test_buffer_state_holds_the_filled_entries_only():
    # one task full and wrapped, one with 2 entries, one empty: the state holds 6 + 2 transitions, not 3 x 6
    buf = TaskReplayBuffers(num_tasks=3, capacity=6, obs_dim=2, act_dim=1)
    buf.add(torch.tensor([0] * 6 + [1, 1]), _transitions(list(range(8)), obs_dim=2))
    buf.add(torch.tensor([0, 0, 0]), _transitions([10, 11, 12], obs_dim=2))
    state = buf.state_dict()
    assert {k: v.shape[0] for k, v in state["data"].items()} == {k: 8 for k in FIELDS}
    stored = sum(v.numel() * v.element_size() for v in state["data"].values())
    assert stored == 8 * TaskReplayBuffers.bytes_per_transition(2, 1)
    other = TaskReplayBuffers(num_tasks=3, capacity=6, obs_dim=2, act_dim=1)
    other.load_state_dict(state)
    assert other.size.tolist() == [6, 2, 0] and other.next.tolist() == buf.next.tolist()
    assert all(torch.equal(x, y) for k in FIELDS for x, y in zip(_filled_entries(other)[k], _filled_entries(buf)[k]))
    # the padded form that older checkpoints hold ([tasks, largest size, ...]) still loads
    padded = dict(state, data={k: v[:, :6].clone() for k, v in buf.data.items()})
    old = TaskReplayBuffers(num_tasks=3, capacity=6, obs_dim=2, act_dim=1)
    old.load_state_dict(padded)
    assert all(torch.equal(x, y) for k in FIELDS for x, y in zip(_filled_entries(old)[k], _filled_entries(buf)[k]))


# ------------------------------------------------------------------------------------------ bad input
def test_bad_input_is_one_clear_line():
    from metarl.experiment import RunError, build_experiment, load_config

    with pytest.raises(ConfigError, match="eval_prior_episodes = 0 is out of range: must be >= 1"):
        load_config(None, TINY + ["pearl.eval_prior_episodes=0"])
    with pytest.raises(ConfigError, match="prior_episodes = 0 is out of range"):
        load_config(None, TINY + ["pearl.prior_episodes=0"])
    with pytest.raises(ConfigError, match=r"eval_prior_episodes = 2 is out of range: must be < eval_episodes \(2\)"):
        load_config(None, TINY + ["pearl.eval_prior_episodes=2"])
    cfg = load_config(None, TINY + ["env.id=metarl/Bandit-v0", "env.horizon=null"])
    with pytest.raises(RunError, match=r"^algo pearl \(SAC\) needs a continuous \(Box\) action space; "
                                       r"metarl/Bandit-v0 has Discrete"):
        build_experiment(cfg)
    cfg = load_config(None, TINY + ["pearl.replay_capacity=15"])
    with pytest.raises(ValueError, match="replay_capacity = 15 cannot hold one collection of a task"):
        build_experiment(cfg)


# ------------------------------------------------------------------------------------------ the algorithm
def _tiny(extra=()):
    from metarl.experiment import build_experiment, load_config

    return build_experiment(load_config(None, TINY + list(extra)))


def test_collection_fills_buffers_and_encoder_buffer_holds_recent_data_only():
    exp = _tiny()
    algo, cfg = exp.algo, exp.cfg.pearl
    stats = algo.train_iteration(exp.task_rng)
    H = 10
    # initial: 2 episodes for each of the 6 tasks; then 2 tasks x (1 prior + 1 extra posterior) episodes
    assert stats["env_steps"] <= H * (6 * 2 + 2 * 2) and stats["replay/transitions"] == stats["env_steps"]
    assert algo.encoder_buffer.capacity == H * 2
    before = algo.encoder_buffer.size.clone()
    algo.train_iteration(exp.task_rng)
    changed = (algo.encoder_buffer.size != before).nonzero().flatten()
    # a collected task's encoder buffer was cleared and holds only its one new prior episode
    assert all(int(algo.encoder_buffer.size[i]) <= H for i in changed)
    assert int((algo.encoder_buffer.size <= H).sum()) >= cfg.tasks_per_iteration
    for v in stats.values():
        assert math.isfinite(v)


def test_gradient_steps_descend_the_critic_and_kl_losses():
    # the same meta-batch every step (generator reset): the critic's loss falls with the Q-functions'
    # steps, and the KL term with the encoder's (the other learning rates are made negligible)
    def repeated_steps(overrides, stat):
        """``stat`` of 30 gradient steps, each on the same meta-batch (the generator is reset before each)."""
        exp = _tiny(["pearl.gradient_steps=0", *overrides])
        algo = exp.algo
        algo.train_iteration(exp.task_rng)
        g_state = algo.generator.get_state()
        values = []
        for _ in range(30):
            algo.generator.set_state(g_state)
            values.append(algo.gradient_step()[stat])
        return values

    q_losses = repeated_steps(["pearl.q_lr=0.01", "pearl.policy_lr=1e-9", "pearl.encoder_lr=1e-9"], "loss/q")
    assert q_losses[-1] < 0.3 * q_losses[0]
    kls = repeated_steps(["pearl.kl_lambda=100", "pearl.q_lr=1e-9", "pearl.encoder_lr=0.01"], "kl")
    assert kls[-1] < 0.5 * kls[0]


def test_adaptation_curve_shape_and_prior_then_posterior():
    from dataclasses import replace

    from metarl.evaluation.curves import eval_collector

    exp = _tiny(["pearl.eval_episodes=3"])
    exp.algo.train_iteration(exp.task_rng)
    ev = replace(exp.cfg.eval, tasks=4, episodes_per_task=6)
    col = eval_collector(exp.cfg, ev)
    tasks = col.sample_tasks(4, np.random.default_rng(ev.seed))
    curve = exp.algo.adaptation_curve(tasks, col, ev)
    assert curve.shape == (3, 4) and np.all(np.isfinite(curve))
    again = exp.algo.adaptation_curve(tasks, eval_collector(exp.cfg, ev), ev)
    np.testing.assert_array_equal(curve, again)  # own seeded streams: the same numbers every time


def test_checkpoint_holds_the_buffers_and_resume_is_exact(tmp_path):
    from metarl.common.checkpoint import load_latest_checkpoint
    from metarl.experiment import load_config
    from metarl.train import train

    cfg = load_config(None, TINY + ["train.iterations=4", "train.checkpoint_every=2", "train.keep_checkpoints=5"])
    full = train(cfg, tmp_path / "full")
    half_cfg = load_config(None, TINY + ["train.iterations=2", "train.checkpoint_every=2"])
    half = train(half_cfg, tmp_path / "half")
    state2 = load_latest_checkpoint(half)["algo"]
    assert int(state2["replay"]["size"].sum()) > 0 and state2["train_tasks"] is not None
    train(cfg, half, resume=True)
    a, b = load_latest_checkpoint(full), load_latest_checkpoint(half)
    assert a["iteration"] == b["iteration"] == 4 and a["env_steps"] == b["env_steps"]

    def flat(x):
        if isinstance(x, dict):
            return [y for k in sorted(x, key=str) for y in flat(x[k])]
        if isinstance(x, (list, tuple)):
            return [y for v in x for y in flat(v)]
        return [x]

    for key in ("policy", "encoder", "q1", "q2_target", "replay", "encoder_buffer", "q_opt", "log_alpha", "generator"):
        for x, y in zip(flat(a["algo"][key]), flat(b["algo"][key])):
            if torch.is_tensor(x):
                assert torch.equal(x, y), key
            else:
                assert x == y, key
    def rows(run):
        import csv

        with open(run / "progress.csv", newline="") as f:
            return [{k: v for k, v in r.items() if not k.startswith("time/")} for r in csv.DictReader(f)]

    assert len(rows(full)) == 4 and rows(full) == rows(half)


# ------------------------------------------------------------------------------------------ learning
#: two navigation goals told apart by one reward (-0.06 next to the origin, -0.57 far from it), with
#: opposite best behaviours: stay, or run to the far corner. Acting with z from the prior cannot know
#: which; acting with z from the posterior of one episode of context can.
NEAR_FAR = (NavigationTask((0.0, 0.05)), NavigationTask((0.4, 0.4)))


@pytest.mark.slow
def test_pearl_learns_to_infer_the_task_from_context(monkeypatch):
    from dataclasses import replace

    import metarl.envs.navigation as navigation
    from metarl.evaluation.curves import eval_collector
    from metarl.experiment import build_experiment, load_config

    monkeypatch.setattr(navigation.Navigation2DEnv, "sample_tasks",
                        lambda self, n, rng: [NEAR_FAR[i] for i in rng.integers(2, size=n)])
    cfg = load_config(None, [
        "algo=pearl", f"env.id={NAV}", "env.horizon=10", "pearl.num_train_tasks=4", "pearl.initial_episodes=4",
        "pearl.tasks_per_iteration=2", "pearl.prior_episodes=1", "pearl.extra_posterior_episodes=1",
        "pearl.gradient_steps=100", "pearl.hidden_sizes=[32,32]", "pearl.encoder_hidden_sizes=[32]",
        "pearl.meta_batch=4", "pearl.batch_size=64", "pearl.context_batch_size=16", "pearl.replay_capacity=2000",
        "pearl.reward_scale=10", "pearl.init_alpha=0.1", "pearl.policy_lr=0.001", "pearl.q_lr=0.001",
        "pearl.encoder_lr=0.001", "pearl.alpha_lr=0.001", "pearl.eval_episodes=2", "pearl.eval_prior_episodes=1"])
    exp = build_experiment(cfg)
    ev = replace(cfg.eval, tasks=20, episodes_per_task=4)

    def curve():
        collector = eval_collector(cfg, ev)
        tasks = collector.sample_tasks(ev.tasks, np.random.default_rng(ev.seed))
        return exp.algo.adaptation_curve(tasks, collector, ev).mean(1)  # [prior-z episode, posterior episode]

    untrained = curve()
    for _ in range(20):
        exp.algo.train_iteration(exp.task_rng)
    trained = curve()
    print("untrained", untrained, "trained", trained)
    # the posterior episode beats the prior-z episode (task inference) and the untrained agent (learning)
    assert trained[1] > trained[0] + 0.5
    assert trained[1] > untrained[1] + 1.0


def test_bench_pearl_reports_rates_and_the_memory_bound():
    from metarl.bench import bench_pearl

    out = bench_pearl(None, 2, TINY[1:])
    assert out["env_steps"] == 6 * 2 * 10  # every training task's initial episodes, H = 10, no termination needed
    assert out["env_steps_per_s"] > 0 and out["gradient_steps_per_s"] > 0
    # the counted matmul FLOPs of a step are the layer-shape formula's (an extra pass, or gradients through
    # the frozen Q-functions or the targets, would add to them)
    from metarl.algos.pearl import gradient_step_flops
    from metarl.experiment import load_config

    assert round(out["gflop_per_step"] * 1e9) == gradient_step_flops(load_config(None, TINY).pearl, 2, 2)
    assert out["matmul_gflops"] > 0 and out["fraction_of_matmul_rate"] > 0
    assert out["bytes_per_transition"] == 4 * (2 * 2 + 2 + 1) + 1
    # RL buffers 6 x 200 and encoder buffers 6 x (H x 2 initial episodes)
    assert out["replay_bound_bytes"] == 6 * (200 + 20) * out["bytes_per_transition"]


# ------------------------------------------------------------------------------------------ diagnostics
def test_explained_variance_against_its_formula():
    from metarl.algos.pearl.diagnostics import explained_variance

    g = torch.Generator().manual_seed(0)
    x = torch.randn(40, 3, generator=g)
    y = x @ torch.randn(3, 2, generator=g) + torch.tensor([0.5, -1.0])
    assert explained_variance(x, y) == pytest.approx(1.0, abs=1e-9)  # an exact affine relation
    # features that say nothing: the fit is the first half's mean, scored around the second half's mean
    y = torch.randn(40, 2, generator=g, dtype=torch.float64)
    first, second = y[:20], y[20:]
    expected = 1 - ((second - first.mean(0)) ** 2).sum() / ((second - second.mean(0)) ** 2).sum()
    assert explained_variance(torch.zeros(40, 1), y) == pytest.approx(float(expected), abs=1e-9)
    with pytest.raises(ValueError, match="same number"):
        explained_variance(torch.zeros(5, 1), y)


def test_task_inference_follows_the_evaluation_protocol():
    from dataclasses import replace

    from metarl.algos.pearl.diagnostics import explained_variance, task_inference
    from metarl.evaluation.curves import eval_collector

    exp = _tiny(["pearl.eval_episodes=3"])
    exp.algo.train_iteration(exp.task_rng)
    ev = replace(exp.cfg.eval, tasks=8)
    tasks = eval_collector(exp.cfg, ev).sample_tasks(8, np.random.default_rng(ev.seed))
    out = task_inference(exp.algo, eval_collector(exp.cfg, ev), tasks, ev)
    posteriors: list = []
    curve = exp.algo.adaptation_curve(tasks, eval_collector(exp.cfg, ev), ev, posteriors)
    assert out["return"] == curve.mean(1).tolist() and len(posteriors) == 2  # episodes 1 and 2 use the posterior
    goals = torch.tensor([t.goal for t in tasks])
    assert out["r2"] == [explained_variance(m, goals) for m, _ in posteriors]
    assert all(k > 0 and math.isfinite(k) for k in out["kl"])


def test_pearl_diagnostics_runner(tmp_path, capsys):
    from metarl.experiment import load_config
    from metarl.pearl_diagnostics import main
    from metarl.train import train

    run = train(load_config(None, TINY + ["train.iterations=1"]), tmp_path / "run")
    main([str(run), "--tasks", "6"])
    out = capsys.readouterr().out
    assert "episode 0 (0 of context, z from the prior)" in out and "episode 1 (1 of context, z from the posterior)" in out
    assert "R² of the task from the posterior mean" in out
    with pytest.raises(SystemExit, match="pearl_diagnostics: error: .*not a run directory"):
        main([str(tmp_path / "nothing")])


def test_cpu_sized_cheetah_config_changes_only_what_it_states():
    """halfcheetah_vel_pearl_cpu.yaml is the paper config with the widths, SAC steps and schedule it names changed."""
    from dataclasses import asdict

    from metarl.experiment import load_config

    paper, cpu = load_config("experiments/halfcheetah_vel_pearl.yaml"), load_config("experiments/halfcheetah_vel_pearl_cpu.yaml")
    p, c = asdict(paper.pearl), asdict(cpu.pearl)
    changed = {k for k in p if p[k] != c[k]}
    assert changed == {"hidden_sizes", "encoder_hidden_sizes", "gradient_steps"}
    assert c["hidden_sizes"] == c["encoder_hidden_sizes"] == (128, 128, 128) and c["gradient_steps"] == 500
    assert paper.env == cpu.env and paper.seed == cpu.seed and asdict(paper.eval) == asdict(cpu.eval)
    # 1.0M env steps: the initial collection on every training task plus 160 iterations of 5 tasks x 5 episodes
    per_iteration = c["tasks_per_iteration"] * (c["prior_episodes"] + c["posterior_episodes"] + c["extra_posterior_episodes"]) * 200
    assert c["num_train_tasks"] * c["initial_episodes"] * 200 + cpu.train.iterations * per_iteration == 1_000_000
