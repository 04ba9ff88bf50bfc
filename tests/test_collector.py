"""The Collector and EpisodeBatch: layout, masks, seeding, native vs gym-loop equality, per-task
parameters, trials of a recurrent policy, RNG state round trips and argument errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from metarl.sampling.collector import Collector, EpisodeBatch
from metarl.envs.bandit import BanditTask
from metarl.envs.half_cheetah import HalfCheetahVelTask
from metarl.envs.navigation import NavigationTask
from metarl.common.policies import (
    GaussianMLPPolicy,
    RecurrentPolicy,
    make_policy,
    policy_forward,
    stack_params,
)

FIELDS = ("obs", "actions", "rewards", "valid", "dones", "log_probs", "timesteps", "task_index")


def _policy(collector: Collector, hidden=(16,), init_log_std=0.0, seed=0):
    torch.manual_seed(seed)
    return make_policy(collector.observation_space, collector.action_space, collector.supervised, hidden,
                       init_log_std=init_log_std)


def _assert_batches_equal(a: EpisodeBatch, b: EpisodeBatch):
    for name in FIELDS + ("targets", "policy_inputs"):
        x, y = getattr(a, name), getattr(b, name)
        if x is None or y is None:
            assert x is None and y is None, name
        else:
            assert torch.equal(x, y), name


def _homing_policy(init_log_std=-8.0) -> GaussianMLPPolicy:
    """Navigation policy whose mean is the step (0.1, 0) whatever the position (policy action (1, 0),
    rescaled onto the ±0.1 bounds): goals at (0.1 k, 0) are reached (distance < 0.01) after k steps,
    so those episodes terminate early."""
    torch.manual_seed(0)
    policy = GaussianMLPPolicy(2, 2, hidden_sizes=(8,), init_log_std=init_log_std)
    with torch.no_grad():
        last = policy.mean_net[-1]
        last.weight.normal_(0.0, 1e-4)  # a little dependence on the observation, still homing
        last.bias.copy_(torch.tensor([1.0, 0.0]))
    return policy


NAV_TASKS = [NavigationTask((0.1, 0.0)), NavigationTask((0.3, 0.0)), NavigationTask((-0.4, 0.45))]


def _goal_margin(batch: EpisodeBatch) -> float:
    """Navigation: the smallest |distance to the goal - GOAL_RADIUS| after any valid step (the reward is
    minus that distance). Trajectories perturbed by less than this end at the same steps."""
    from metarl.envs.navigation import GOAL_RADIUS

    distance = -batch.rewards[batch.valid.bool()].double()
    return float((distance - GOAL_RADIUS).abs().min())


# ------------------------------------------------------------------------- the paper's cheetah batch


def _cheetah_batch_checks(horizon):
    """40 tasks x 20 episodes of HalfCheetahVel, as one meta-batch of the MAML paper."""
    collector = Collector("metarl/HalfCheetahVel-v0", seed=7, horizon=horizon)
    policy = _policy(collector, hidden=(32,), init_log_std=-0.5)
    tasks = collector.sample_tasks(40, np.random.default_rng(0))
    batch = collector.collect(policy, tasks, episodes_per_task=20)
    collector.close()
    T, B = horizon, 40 * 20
    assert batch.obs.shape == (T, B, 17) and batch.obs.dtype == torch.float32
    assert batch.actions.shape == (T, B, 6)
    for name in ("rewards", "valid", "dones", "log_probs", "timesteps"):
        assert getattr(batch, name).shape == (T, B), name
    assert batch.targets is None and batch.policy_inputs is None
    assert (batch.num_tasks, batch.horizon, batch.columns_per_task) == (40, horizon, 20)
    # the cheetah never terminates: every step is valid, every episode ends at the last row
    assert torch.all(batch.valid == 1) and batch.num_steps == T * B
    assert torch.all(batch.dones[-1]) and not batch.dones[:-1].any()
    assert torch.equal(batch.timesteps[:, 0], torch.arange(T))
    # task-major layout: columns 20k .. 20k+19 belong to task k
    assert torch.equal(batch.task_index, torch.arange(40).repeat_interleave(20))
    # every column is its own episode (own reset noise)
    assert torch.unique(batch.obs[0], dim=0).shape[0] == B
    # reward = -|v - v*| - ctrl: tasks with faster goals get lower returns. With the layout wrong
    # (e.g. task b % 40) this correlation would vanish.
    goals = np.array([t.goal_velocity for t in tasks])
    per_task = batch.mean_return_per_task().numpy()
    assert np.unique(per_task).size == 40
    assert np.corrcoef(goals, per_task)[0, 1] < -0.9
    # the forward term -|v - v*| of every step is <= 0: reward <= -0.05 |a|^2, a the applied (clipped) torque
    ctrl = 0.05 * batch.actions.double().clamp(-1, 1).pow(2).sum(-1)
    assert torch.all(batch.rewards.double() + ctrl <= 1e-4)


def test_cheetah_meta_batch_full_horizon():
    # The MAML paper's meta-batch at its real horizon: 40 tasks x 20 episodes x 200 steps (~15 s on 2 cores)
    _cheetah_batch_checks(horizon=200)


# --------------------------------------------------------------------------------- reproducibility


@pytest.mark.parametrize("env_id,horizon", [("metarl/HalfCheetahVel-v0", 15), ("metarl/Bandit-v0", None),
                                            ("metarl/Navigation2D-v0", 20)])
def test_same_seed_same_batch_other_seed_differs(env_id, horizon):
    def collect(seed):
        c = Collector(env_id, seed=seed, horizon=horizon)
        policy = _policy(c)
        tasks = c.sample_tasks(4, np.random.default_rng(1))
        return c.collect(policy, tasks, 3)

    a, b, other = collect(5), collect(5), collect(6)
    _assert_batches_equal(a, b)
    assert not torch.equal(a.actions, other.actions)
    assert not torch.equal(a.rewards, other.rewards)


def test_sub_environments_never_share_random_streams():
    # one task in every column: the columns may only differ through their own random streams
    cheetah = Collector("metarl/HalfCheetahVel-v0", seed=0, horizon=2)
    batch = cheetah.collect(_policy(cheetah), [HalfCheetahVelTask(1.0)], episodes_per_task=12)
    assert torch.unique(batch.obs[0], dim=0).shape[0] == 12  # initial observations (reset noise)
    for backend in ("native", "gym"):
        bandit = Collector("metarl/Bandit-v0", seed=0, backend=backend, env_kwargs={"n_pulls": 40}, horizon=40)
        task = BanditTask(means=(0.5,) * 10)
        # the same arm every pull: rewards differ across columns only through the env streams
        # (40 fair coin flips per column: equal sequences by chance are out of the question)
        batch = bandit.collect(_policy(bandit), [task], episodes_per_task=16, deterministic=True)
        assert torch.unique(batch.actions).numel() == 1
        assert torch.unique(batch.rewards.T, dim=0).shape[0] == 16, backend


# ----------------------------------------------------------------------------- native == gym loop


def _tasks_for(collector: Collector, env_id: str):
    if env_id == "metarl/Navigation2D-v0":
        return NAV_TASKS
    return collector.sample_tasks(3, np.random.default_rng(2))


@pytest.mark.parametrize("env_id,horizon", [
    ("metarl/Navigation2D-v0", None),
    ("metarl/Navigation2D-v0", 130),  # a horizon beyond the registered max_episode_steps (100)
    ("metarl/Bandit-v0", None),
    ("metarl/TabularMDP-v0", None),
    ("metarl/Sinusoid-v0", None),
    ("metarl/HalfCheetahVel-v0", 8),
    ("metarl/HalfCheetahDir-v0", 8),
])
@pytest.mark.parametrize("episodes_per_trial", [1, 2])
def test_native_equals_gym_loop(env_id, horizon, episodes_per_trial):
    batches = {}
    for backend in ("native", "gym"):
        c = Collector(env_id, seed=11, backend=backend, horizon=horizon)
        policy = _homing_policy() if env_id == "metarl/Navigation2D-v0" else _policy(c)
        batches[backend] = c.collect(policy, _tasks_for(c, env_id), 4, episodes_per_trial=episodes_per_trial)
        c.close()
    native, gym_ = batches["native"], batches["gym"]
    valid = native.valid.bool()
    for name in ("valid", "dones", "rewards", "timesteps", "task_index"):
        assert torch.equal(getattr(native, name), getattr(gym_, name)), name
    for name in ("obs", "actions", "log_probs"):
        assert torch.equal(getattr(native, name)[valid], getattr(gym_, name)[valid]), name
    if native.targets is not None or gym_.targets is not None:
        assert torch.equal(native.targets[valid], gym_.targets[valid])
    assert torch.all(native.rewards[~valid] == 0)
    if env_id == "metarl/Navigation2D-v0":
        H = native.horizon
        # goal (0.1, 0) is reached at the first step of every episode, goal (0.3, 0) at the third,
        # the far goal never; each episode's slot is masked after its termination
        per_task = native.valid.reshape(episodes_per_trial, H, 3, -1)
        assert torch.all(per_task[:, 0, 0] == 1) and torch.all(per_task[:, 1:, 0] == 0)
        assert torch.all(per_task[:, :3, 1] == 1) and torch.all(per_task[:, 3:, 1] == 0)
        assert torch.all(per_task[:, :, 2] == 1)
        dones = native.dones.reshape(episodes_per_trial, H, 3, -1)
        assert torch.all(dones[:, 0, 0]) and torch.all(dones[:, 2, 1]) and torch.all(dones[:, H - 1, 2])
        assert int(native.dones.sum()) == native.num_columns * episodes_per_trial  # one done per episode


def test_supervised_targets():
    c = Collector("metarl/Sinusoid-v0", seed=0)
    tasks = c.sample_tasks(5, np.random.default_rng(0))
    batch = c.collect(_policy(c), tasks, 10)
    assert batch.targets.shape == (1, 50, 1)
    amplitude = torch.tensor([t.amplitude for t in tasks]).repeat_interleave(10)
    phase = torch.tensor([t.phase for t in tasks]).repeat_interleave(10)
    expected = amplitude * torch.sin(batch.obs[0, :, 0].double() - phase)
    torch.testing.assert_close(batch.targets[0, :, 0].double(), expected, rtol=0, atol=1e-5)
    # reward = -(prediction - target)^2 and the action is the prediction
    torch.testing.assert_close(batch.rewards[0], -((batch.actions[0] - batch.targets[0]) ** 2).mean(-1))


# -------------------------------------------------------------------------------- per-task params


def test_per_task_params_equal_separate_runs():
    c = Collector("metarl/Navigation2D-v0", seed=3, horizon=25)
    policy = _policy(c, hidden=(16,), init_log_std=-1.0)
    g = torch.Generator().manual_seed(0)
    per_task = [{k: v.detach() + 0.3 * torch.randn(v.shape, generator=g) for k, v in policy.params().items()}
                for _ in NAV_TASKS]
    stacked = stack_params(per_task)
    batch = c.collect(policy, NAV_TASKS, 4, params=stacked, per_task_params=True)

    # the collecting log-probs equal the vmapped evaluation and a loop over tasks (functional_call)
    out = policy_forward(policy, batch.obs, stacked, num_tasks=3)
    torch.testing.assert_close(policy.distribution(out).log_prob(batch.actions), batch.log_probs)
    for m, params in enumerate(per_task):
        cols = batch.task_index == m
        out_m = policy_forward(policy, batch.obs[:, cols], params)
        torch.testing.assert_close(policy.distribution(out_m).log_prob(batch.actions[:, cols]), batch.log_probs[:, cols])
    # with the mean action, each task's columns are what that task's parameters alone give
    # (navigation dynamics are deterministic, so separate collections are comparable). Alone is another
    # call shape, so the actions may differ in the last bits and the positions by ~1e-7 after 25 steps;
    # a trajectory that came within that of the goal radius could end a step earlier in one of them,
    # so the comparison first checks that every step stays clear of the radius.
    det = c.collect(policy, NAV_TASKS, 4, params=stacked, per_task_params=True, deterministic=True)
    assert _goal_margin(det) > 1e-4
    for m, params in enumerate(per_task):
        alone = c.collect(policy, [NAV_TASKS[m]], 4, params=params, deterministic=True)
        cols = det.task_index == m
        assert torch.equal(det.valid[:, cols], alone.valid)
        torch.testing.assert_close(det.obs[:, cols], alone.obs)
        torch.testing.assert_close(det.actions[:, cols], alone.actions)
        torch.testing.assert_close(det.rewards[:, cols], alone.rewards)
    # and the tasks' parameters really differ in effect
    assert not torch.allclose(det.actions[:, det.task_index == 0], det.actions[:, det.task_index == 1])


def _constant_policy(action, init_log_std=-30.0) -> GaussianMLPPolicy:
    """A policy whose mean is ``action`` everywhere."""
    policy = GaussianMLPPolicy(2, 2, hidden_sizes=(4,), init_log_std=init_log_std)
    with torch.no_grad():
        policy.mean_net[-1].weight.zero_()
        policy.mean_net[-1].bias.copy_(torch.tensor(action))
    return policy


def test_action_rescaling_maps_policy_units_onto_the_bounds():
    from gymnasium import spaces

    from metarl.sampling.collector import action_rescaling

    center, half = action_rescaling(spaces.Box(np.array([-0.5, 0.0], np.float32), np.array([0.5, 4.0], np.float32)))
    np.testing.assert_allclose(center, [0.0, 2.0])
    np.testing.assert_allclose(half, [0.5, 2.0])
    # nothing to rescale: already [-1, 1], unbounded, discrete
    assert action_rescaling(spaces.Box(-1.0, 1.0, (3,))) is None
    assert action_rescaling(spaces.Box(-np.inf, np.inf, (1,))) is None
    assert action_rescaling(spaces.Discrete(4)) is None
    assert Collector("metarl/HalfCheetahVel-v0").action_rescaling is None
    assert Collector("metarl/Sinusoid-v0").action_rescaling is None  # supervised: the action is the prediction

    # Navigation (bounds ±0.1): policy action u moves the point by 0.1 * clip(u, -1, 1); the batch
    # keeps the policy's own actions (their log-probs are what the algorithms differentiate).
    goal = [NavigationTask((0.5, 0.5))]
    u = [0.3, -2.0]
    scaled = Collector("metarl/Navigation2D-v0", seed=0, horizon=3)
    assert scaled.rescale_actions
    batch = scaled.collect(_constant_policy(u), goal, 1, deterministic=True)
    torch.testing.assert_close(batch.actions[:, 0], torch.tensor([u] * 3))
    torch.testing.assert_close(batch.obs[1:, 0], torch.tensor([[0.03, -0.1], [0.06, -0.2]]))
    d = np.hypot(0.5 - np.array([0.03, 0.06, 0.09]), 0.5 - np.array([-0.1, -0.2, -0.3]))
    np.testing.assert_allclose(batch.rewards[:, 0].numpy(), -d, rtol=1e-6)
    # switched off: the action is the velocity itself, clipped to the ±0.1 bounds
    raw = Collector("metarl/Navigation2D-v0", seed=0, horizon=3, rescale_actions=False)
    assert not raw.rescale_actions
    batch = raw.collect(_constant_policy(u), goal, 1, deterministic=True)
    torch.testing.assert_close(batch.obs[1:, 0], torch.tensor([[0.1, -0.1], [0.2, -0.2]]))


def _cheetah_constant_policy(obs_dim: int, mean: float) -> GaussianMLPPolicy:
    policy = GaussianMLPPolicy(obs_dim, 6, hidden_sizes=(4,), init_log_std=0.0)
    with torch.no_grad():
        policy.mean_net[-1].weight.zero_()
        policy.mean_net[-1].bias.fill_(mean)
    return policy


@pytest.mark.parametrize("backend,oracle", [("native", False), ("gym", False), ("native", True)])
def test_actions_are_clipped_to_the_bounds_before_the_env(backend, oracle):
    """HalfCheetahVel torques are in [-1, 1] and the env charges 0.05 |a|^2 on the action it is given:
    mean 10 and mean 1.5 both apply torque 1 and must get the same rewards (and control cost 0.3 per
    step), on the native and the Gymnasium-loop backends and the oracle's env; the batch keeps the
    policy's own actions, whose log-probabilities the algorithms use. (Means past the bound, not at it:
    a policy output of 1 may round to 1 - 1ulp on another BLAS and then apply a different torque.)"""
    tasks = [HalfCheetahVelTask(0.5), HalfCheetahVelTask(1.5)]
    batches = {}
    for mean in (1.5, 10.0):
        c = Collector("metarl/HalfCheetahVel-v0", seed=3, horizon=12, backend=backend, oracle=oracle)
        policy = _cheetah_constant_policy(c.observation_space.shape[0], mean)
        batches[mean] = c.collect(policy, tasks, 2, deterministic=True)
        c.close()
        torch.testing.assert_close(batches[mean].actions, torch.full_like(batches[mean].actions, mean))
    assert torch.equal(batches[1.5].rewards, batches[10.0].rewards)
    assert torch.equal(batches[1.5].obs, batches[10.0].obs)
    # reward = -|v - v*| - 0.05 * 6: below -0.3, above -0.3 - (a speed error the cheetah cannot reach)
    assert torch.all(batches[10.0].rewards <= -0.3 + 1e-6) and torch.all(batches[10.0].rewards > -20)
    # sampled actions are clipped too: the policy's samples stay in the batch, unclipped
    c = Collector("metarl/HalfCheetahVel-v0", seed=3, horizon=12, backend=backend, oracle=oracle)
    batch = c.collect(_cheetah_constant_policy(c.observation_space.shape[0], 10.0), tasks, 2)
    assert torch.all(batch.actions > 5) and torch.equal(batch.rewards, batches[10.0].rewards)


def test_deterministic_gives_the_mean_action():
    # The collector evaluated the policy once per step on that step's [B, obs] rows (one thread); the
    # same calls here give the same bits. One call on all [T, B] rows would be another shape, which
    # some BLAS round differently in the last bit (tests/simulated_blas.py): equal only to ~1e-7.
    c = Collector("metarl/Navigation2D-v0", seed=0, horizon=10)
    policy = _policy(c, init_log_std=0.5)
    batch = c.collect(policy, NAV_TASKS, 2, deterministic=True)
    with torch.no_grad():
        mean = torch.stack([policy(obs)[0] for obs in batch.obs])
        assert torch.equal(batch.actions, mean)
        torch.testing.assert_close(batch.actions, policy(batch.obs)[0], rtol=1e-6, atol=1e-6)
    assert batch.actions.std() > 0.01  # not a constant policy
    bandit = Collector("metarl/Bandit-v0", seed=0)
    policy = _policy(bandit)
    batch = bandit.collect(policy, bandit.sample_tasks(2, np.random.default_rng(0)), 3, deterministic=True)
    with torch.no_grad():
        assert torch.equal(batch.actions, torch.stack([policy(obs).argmax(-1) for obs in batch.obs]))


# ------------------------------------------------------------------------------------------ trials


def _replay_log_probs(policy: RecurrentPolicy, batch: EpisodeBatch, reset_every_episode=False) -> torch.Tensor:
    """Log-probs recomputed by stepping the GRU through policy_inputs from a zero state."""
    T, B = batch.valid.shape
    state = policy.initial_state(B)
    out = torch.zeros(T, B)
    with torch.no_grad():
        for t in range(T):
            if reset_every_episode and t % batch.horizon == 0:
                state = policy.initial_state(B)
            dist_out, new_state = policy.step(batch.policy_inputs[t], state)
            out[t] = policy.distribution(dist_out).log_prob(batch.actions[t])
            state = torch.where(batch.valid[t].bool().unsqueeze(-1), new_state, state)
    return out


@pytest.mark.parametrize("env_id", ["metarl/Bandit-v0", "metarl/Navigation2D-v0"])
def test_recurrent_trials(env_id):
    horizon = None if env_id == "metarl/Bandit-v0" else 6
    c = Collector(env_id, seed=4, horizon=horizon)
    torch.manual_seed(0)
    obs_dim = c.observation_space.shape[0]
    policy = RecurrentPolicy(obs_dim, c.action_space, hidden_size=16, init_log_std=-8.0)
    if env_id == "metarl/Navigation2D-v0":
        with torch.no_grad():  # home towards +x, so the goal (0.1, 0) ends its episodes at step 1
            policy.head.weight.mul_(1e-4)
            policy.head.bias.copy_(torch.tensor([1.0, 0.0]))  # policy units: the step +0.1
        tasks = NAV_TASKS
    else:
        tasks = c.sample_tasks(3, np.random.default_rng(0))
    N, H = 3, c.horizon
    batches = [c.collect(policy, tasks, 2 * N, episodes_per_trial=N) for _ in range(2)]
    for batch in batches:
        T, B = H * N, 3 * 2
        assert batch.valid.shape == (T, B) and batch.policy_inputs.shape[:2] == (T, B)
        assert batch.episodes_per_trial == N
        assert torch.equal(batch.timesteps[:, 0], torch.arange(T) % H)
        # every episode of the trial ends exactly once, within its own slot of H rows
        assert torch.equal(batch.dones.reshape(N, H, B).sum(1), torch.ones(N, B, dtype=torch.long))
        if env_id == "metarl/Bandit-v0":
            assert torch.equal(batch.dones.nonzero()[:, 0].unique(), torch.tensor([H - 1, 2 * H - 1, 3 * H - 1]))
            # done flag of the input: 1 at the first step after each episode end
            assert torch.equal(batch.policy_inputs[:, :, -1].nonzero()[:, 0].unique(), torch.tensor([H, 2 * H]))
        else:
            assert batch.valid[1:H, 0].sum() == 0  # early termination: the slot is masked
            assert batch.valid[H, 0] == 1  # the next episode of the trial starts on time
        # the reward input is the last valid step's reward (at an episode start: the previous
        # episode's last reward; 0 at the start of the trial)
        valid = batch.valid.bool()
        last_valid_reward = torch.zeros(B)
        expected = torch.zeros(T, B)
        for t in range(T):
            expected[t] = last_valid_reward
            last_valid_reward = torch.where(valid[t], batch.rewards[t], last_valid_reward)
        torch.testing.assert_close(batch.policy_inputs[:, :, -2][valid], expected[valid])

        # hidden state: zero at the start of each collect, carried across the episodes of the trial
        replay = _replay_log_probs(policy, batch)
        torch.testing.assert_close(replay[valid], batch.log_probs[valid], rtol=1e-5, atol=1e-5)
        reset_each = _replay_log_probs(policy, batch, reset_every_episode=True)
        assert not torch.allclose(reset_each[valid], batch.log_probs[valid], rtol=1e-5, atol=1e-5)


# --------------------------------------------------------------------------------- batch helpers


def test_episode_returns_and_mean_return_per_task():
    c = Collector("metarl/Navigation2D-v0", seed=0, horizon=12)
    batch = c.collect(_homing_policy(), NAV_TASKS, 4, episodes_per_trial=2)
    N, H, B = 2, 12, 6
    r = batch.rewards.numpy()
    hand = np.zeros((N, B))
    for k in range(N):
        for b in range(B):
            hand[k, b] = sum(r[t, b] for t in range(k * H, (k + 1) * H) if batch.valid[t, b])
    np.testing.assert_allclose(batch.episode_returns().numpy(), hand, rtol=1e-6)
    per_task = [hand[:, batch.task_index.numpy() == m].mean() for m in range(3)]
    np.testing.assert_allclose(batch.mean_return_per_task().numpy(), per_task, rtol=1e-6)
    # the task that is reached at once has a short, small-cost episode
    assert per_task[0] > per_task[1] > per_task[2]


# ------------------------------------------------------------------------------------ RNG state


@pytest.mark.parametrize("backend", ["native", "gym"])
def test_rng_state_round_trip(backend):
    c = Collector("metarl/Bandit-v0", seed=9, backend=backend)
    policy = _policy(c)
    tasks = c.sample_tasks(3, np.random.default_rng(0))
    c.collect(policy, tasks, 2)  # streams of this batch size exist and have advanced
    state = c.get_rng_state()
    first = c.collect(policy, tasks, 2)
    c.set_rng_state(state)
    _assert_batches_equal(first, c.collect(policy, tasks, 2))
    # a new collector given the state continues exactly (what --resume does)
    fresh = Collector("metarl/Bandit-v0", seed=9, backend=backend)
    fresh.set_rng_state(state)
    _assert_batches_equal(first, fresh.collect(policy, tasks, 2))
    assert not torch.equal(first.rewards, c.collect(policy, tasks, 2).rewards)


def test_rng_state_round_trip_before_first_collect():
    c = Collector("metarl/Bandit-v0", seed=9)
    policy = _policy(c)
    tasks = c.sample_tasks(3, np.random.default_rng(0))
    state = c.get_rng_state()
    first = c.collect(policy, tasks, 2)
    c.set_rng_state(state)
    _assert_batches_equal(first, c.collect(policy, tasks, 2))


# -------------------------------------------------------------------------------------- errors


def test_argument_errors():
    c = Collector("metarl/Bandit-v0", seed=0)
    policy = _policy(c)
    tasks = c.sample_tasks(2, np.random.default_rng(0))
    with pytest.raises(ValueError, match="at least one task"):
        c.collect(policy, [], 2)
    with pytest.raises(ValueError, match=r"episodes_per_task \(5\) must be a positive multiple of episodes_per_trial \(2\)"):
        c.collect(policy, tasks, 5, episodes_per_trial=2)
    with pytest.raises(ValueError, match="positive multiple"):
        c.collect(policy, tasks, 0)
    recurrent = RecurrentPolicy(1, c.action_space, hidden_size=4)
    with pytest.raises(ValueError, match=r"recurrent policies .*\(params must be None\)"):
        c.collect(recurrent, tasks, 2, params=recurrent.params())
    with pytest.raises(ValueError, match="horizon must be >= 1"):
        Collector("metarl/Bandit-v0", horizon=0)
