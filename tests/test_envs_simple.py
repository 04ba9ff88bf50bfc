"""The four simple task distributions: sinusoid, 2D navigation, Bernoulli bandits, tabular MDPs."""

import dataclasses
import math
import pickle
import re
import warnings

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env as gym_check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import metarl  # noqa: F401  (registers the metarl/ ids)
from metarl.envs.bandit import BanditEnv, BanditTask, BatchedBanditEnv
from metarl.envs.navigation import BatchedNavigation2DEnv, Navigation2DEnv, NavigationTask
from metarl.envs.sinusoid import BatchedSinusoidEnv, SinusoidEnv, SinusoidTask, mse_loss
from metarl.envs.tabular_mdp import BatchedTabularMDPEnv, TabularMDPEnv, TabularMDPTask
from metarl.common.tasks import BatchedTaskEnv
from metarl.sampling.vector import horizon, make_vector_env

IDS = ["metarl/Sinusoid-v0", "metarl/Navigation2D-v0", "metarl/Bandit-v0", "metarl/TabularMDP-v0"]
STOCHASTIC_STEP_IDS = ["metarl/Bandit-v0", "metarl/TabularMDP-v0"]

# Advisory warnings the checkers give for deliberate choices: the sinusoid prediction box and the
# navigation step box are not [-1, 1] (the MAML paper's units), and navigation positions are unbounded.
ALLOWED_WARNINGS = re.compile(r"normalized|infinity")


def _run_checker(checker, env):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        checker(env)
    # Anything else (e.g. "obs is not within the observation space") would be a real defect.
    unexpected = [str(w.message) for w in caught if not ALLOWED_WARNINGS.search(str(w.message))]
    assert not unexpected, unexpected


@pytest.mark.parametrize("env_id", IDS)
def test_gymnasium_check_env(env_id):
    _run_checker(gym_check_env, gym.make(env_id).unwrapped)


@pytest.mark.parametrize("env_id", IDS)
def test_sb3_check_env(env_id):
    _run_checker(sb3_check_env, gym.make(env_id).unwrapped)


@pytest.mark.parametrize("env_id", IDS)
def test_registration_classes(env_id):
    env = gym.make(env_id).unwrapped
    cls = type(env)
    assert issubclass(cls.batched_env_class, BatchedTaskEnv)
    assert isinstance(env.get_task(), cls.task_type)  # a default task is set in __init__
    assert env.observation_space.dtype == np.float32


# --------------------------------------------------------------------------- sample_tasks


@pytest.mark.parametrize("env_id", IDS)
def test_sample_tasks_reproducible_distinct_picklable_comparable(env_id):
    env = gym.make(env_id).unwrapped
    a = env.sample_tasks(5, np.random.default_rng(3))
    b = env.sample_tasks(5, np.random.default_rng(3))
    c = env.sample_tasks(5, np.random.default_rng(4))
    assert a == b
    assert a != c
    assert len(set(a)) == 5  # hashable, and distinct draws give distinct tasks
    assert all(isinstance(t, env.task_type) for t in a)
    assert pickle.loads(pickle.dumps(a)) == a
    assert env.sample_tasks(0, np.random.default_rng(0)) == []
    arrays = [env.task_to_array(t) for t in a]
    assert all(x.dtype == np.float32 and x.shape == arrays[0].shape and x.ndim == 1 for x in arrays)
    assert env.task_space.shape == arrays[0].shape
    with pytest.raises(dataclasses.FrozenInstanceError):  # tasks are immutable values
        setattr(a[0], dataclasses.fields(a[0])[0].name, None)


@pytest.mark.parametrize("env_id", IDS)
@pytest.mark.parametrize(
    "n, rng, err, msg",
    [
        (-1, np.random.default_rng(0), ValueError, "non-negative integer, got -1"),
        (2.0, np.random.default_rng(0), ValueError, "non-negative integer, got 2.0"),
        (True, np.random.default_rng(0), ValueError, "non-negative integer, got True"),
        (2, 0, TypeError, "numpy.random.Generator.*got int"),
        (2, np.random.RandomState(0), TypeError, "got RandomState"),
    ],
)
def test_sample_tasks_bad_args(env_id, n, rng, err, msg):
    with pytest.raises(err, match=msg):
        gym.make(env_id).unwrapped.sample_tasks(n, rng)


@pytest.mark.parametrize("env_id", IDS)
def test_set_task_wrong_type(env_id):
    env = gym.make(env_id).unwrapped
    with pytest.raises(TypeError, match="set_task expected a"):
        env.set_task((1.0, 2.0))


def test_sinusoid_task_ranges():
    tasks = SinusoidEnv().sample_tasks(2000, np.random.default_rng(0))
    amp = np.array([t.amplitude for t in tasks])
    phase = np.array([t.phase for t in tasks])
    assert amp.min() >= 0.1 and amp.max() <= 5.0
    assert phase.min() >= 0.0 and phase.max() <= math.pi
    # uniform, not a constant or a narrower range: the extremes and the mean are where U[a, b] puts them
    assert amp.min() < 0.2 and amp.max() > 4.9 and abs(amp.mean() - 2.55) < 0.15
    assert phase.min() < 0.05 and phase.max() > math.pi - 0.05 and abs(phase.mean() - math.pi / 2) < 0.1
    np.testing.assert_array_equal(SinusoidEnv.task_to_array(tasks[0]), np.float32([amp[0], phase[0]]))


def test_navigation_task_ranges():
    goals = np.array([t.goal for t in Navigation2DEnv().sample_tasks(2000, np.random.default_rng(0))])
    assert goals.shape == (2000, 2)
    assert goals.min() >= -0.5 and goals.max() <= 0.5
    assert (goals.min(0) < -0.48).all() and (goals.max(0) > 0.48).all()
    assert np.abs(goals.mean(0)).max() < 0.03


def test_bandit_task_ranges():
    env = BanditEnv(n_arms=7)
    means = np.array([t.means for t in env.sample_tasks(1000, np.random.default_rng(0))])
    assert means.shape == (1000, 7)
    assert means.min() >= 0.0 and means.max() <= 1.0
    assert means.min() < 0.01 and means.max() > 0.99 and abs(means.mean() - 0.5) < 0.02


@pytest.mark.parametrize("dist", ["normal", "uniform"])
def test_tabular_task_ranges(dist):
    S, A = 6, 3
    env = TabularMDPEnv(n_states=S, n_actions=A, reward_mean_distribution=dist)
    tasks = env.sample_tasks(500, np.random.default_rng(0))
    P = np.array([t.transitions for t in tasks])
    R = np.array([t.reward_means for t in tasks])
    assert P.shape == (500, S, A, S) and R.shape == (500, S, A)
    assert P.min() >= 0.0
    np.testing.assert_allclose(P.sum(-1), 1.0, atol=1e-12)
    # A flat Dirichlet's marginal is Beta(1, S - 1): mean 1/S, variance (S - 1) / (S^2 (S + 1)).
    assert abs(P.mean() - 1 / S) < 1e-9  # exact: every row sums to 1
    assert abs(P.var() - (S - 1) / (S**2 * (S + 1))) < 0.003
    if dist == "normal":  # the RL² paper: R[s, a] ~ Normal(1, 1)
        assert abs(R.mean() - 1.0) < 0.05 and abs(R.std() - 1.0) < 0.05
    else:
        assert R.min() >= 0.0 and R.max() <= 1.0 and abs(R.mean() - 0.5) < 0.02
    arr = TabularMDPEnv.task_to_array(tasks[0])
    assert arr.shape == (S * A * S + S * A,)
    np.testing.assert_array_equal(arr, np.concatenate([P[0].ravel(), R[0].ravel()]).astype(np.float32))


def test_task_validation_errors():
    with pytest.raises(ValueError, match="amplitude must be a finite real number, got nan"):
        SinusoidTask(float("nan"), 0.0)
    with pytest.raises(ValueError, match="goal must be two finite real numbers"):
        NavigationTask(goal=(0.1,))
    with pytest.raises(ValueError, match=r"probabilities in \[0, 1\], got \(0.5, 1.5\)"):
        BanditTask(means=(0.5, 1.5))
    with pytest.raises(ValueError, match=r"transitions\[0\]\[0\] must be a probability vector"):
        TabularMDPTask(transitions=(((0.5, 0.6),), ((0.5, 0.5),)), reward_means=((0.0,), (0.0,)))
    with pytest.raises(ValueError, match="reward_means must have shape"):
        TabularMDPTask(transitions=(((0.5, 0.5),), ((0.5, 0.5),)), reward_means=((0.0,),))
    with pytest.raises(ValueError, match="task has 3 arms, this environment has n_arms=10"):
        BanditEnv().set_task(BanditTask(means=(0.1, 0.2, 0.3)))
    small = TabularMDPEnv(n_states=2, n_actions=1).sample_tasks(1, np.random.default_rng(0))[0]
    with pytest.raises(ValueError, match="n_states=10, n_actions=5"):
        TabularMDPEnv().set_task(small)
    # numerically equal tasks built from different numeric types are the same task
    assert SinusoidTask(np.float32(2.0), 1) == SinusoidTask(2.0, 1.0)
    assert hash(BanditTask(means=np.array([0.25, 0.5]))) == hash(BanditTask(means=(0.25, 0.5)))


def test_constructor_kwarg_errors():
    with pytest.raises(ValueError, match="n_arms must be a positive integer, got 0"):
        BanditEnv(n_arms=0)
    with pytest.raises(ValueError, match="n_pulls must be a positive integer, got 2.5"):
        BatchedBanditEnv(2, n_pulls=2.5)
    with pytest.raises(ValueError, match="reward_mean_distribution must be one of .* got 'beta'"):
        TabularMDPEnv(reward_mean_distribution="beta")
    with pytest.raises(ValueError, match="horizon must be a positive integer, got -3"):
        BatchedTabularMDPEnv(2, horizon=-3)


# --------------------------------------------------------------------------- dynamics vs formulas


def test_sinusoid_reward_and_target_formula():
    env = SinusoidEnv()
    task = SinusoidTask(amplitude=3.0, phase=0.7)
    env.set_task(task)
    xs = []
    for seed in range(50):
        x, info = env.reset(seed=seed)
        assert x.shape == (1,) and x.dtype == np.float32 and info == {}
        y = 3.0 * math.sin(float(x[0]) - 0.7)
        pred = np.array([1.25], dtype=np.float32)
        obs, reward, terminated, truncated, info = env.step(pred)
        assert terminated is True and truncated is False
        assert info["target"].shape == (1,) and info["target"].dtype == np.float32
        assert info["target"][0] == pytest.approx(y, rel=1e-6, abs=1e-6)
        assert reward == pytest.approx(-((1.25 - y) ** 2), rel=1e-5, abs=1e-6)
        np.testing.assert_array_equal(obs, x)
        xs.append(float(x[0]))
    assert min(xs) >= -5.0 and max(xs) <= 5.0
    # reset draws from the env's own seeded generator: same seed, same input
    assert env.reset(seed=7)[0][0] == env.reset(seed=7)[0][0]
    # x ~ U[-5, 5]: the spread of 2000 unseeded resets reaches both ends and centres on 0
    env.reset(seed=123)
    many = np.array([env.reset()[0][0] for _ in range(2000)])
    assert many.min() < -4.9 and many.max() > 4.9 and abs(many.mean()) < 0.3


def test_sinusoid_bad_prediction_shape():
    env = SinusoidEnv()
    env.reset(seed=0)
    with pytest.raises(ValueError, match=r"shape \(1,\), got shape \(3,\)"):
        env.step(np.zeros(3))


def test_sinusoid_supervised_loss_is_differentiable_mse():
    pred = torch.tensor([[1.0, 2.0], [0.0, -1.0], [3.0, 3.0]], requires_grad=True)
    target = torch.tensor([[0.0, 0.0], [0.0, 1.0], [3.0, 1.0]])
    loss = SinusoidEnv.supervised_loss(pred, target)
    torch.testing.assert_close(loss, torch.tensor([2.5, 2.0, 2.0]))  # (1+4)/2, (0+4)/2, (0+4)/2
    loss.sum().backward()
    torch.testing.assert_close(pred.grad, (pred - target).detach())  # d/dp mean((p-t)^2) = 2(p-t)/2
    assert SinusoidEnv().supervised_loss is mse_loss  # not bound as a method on instances
    assert make_vector_env("metarl/Sinusoid-v0", 2, backend="native").supervised_loss is mse_loss
    with pytest.raises(ValueError, match="prediction shape"):
        mse_loss(torch.zeros(3, 1), torch.zeros(3))


def test_navigation_clipping_position_reward_and_termination():
    env = Navigation2DEnv()
    env.set_task(NavigationTask(goal=(0.205, 0.0)))
    obs, _ = env.reset(seed=0)
    np.testing.assert_array_equal(obs, np.zeros(2, np.float32))
    # Both coordinates exceed the 0.1 limit and are clipped to it.
    obs, reward, terminated, truncated, _ = env.step(np.array([0.5, -0.3]))
    np.testing.assert_allclose(obs, [0.1, -0.1], rtol=0, atol=1e-7)
    assert reward == pytest.approx(-math.hypot(0.1 - 0.205, -0.1))
    assert not terminated and not truncated
    # Within the limit: applied as given.
    obs, reward, terminated, _, _ = env.step(np.array([0.1, 0.1]))
    np.testing.assert_allclose(obs, [0.2, 0.0], rtol=0, atol=1e-7)
    assert reward == pytest.approx(-0.005)
    assert terminated  # distance 0.005 < 0.01

    env.set_task(NavigationTask(goal=(0.211, 0.0)))
    env.reset()
    env.step(np.array([0.1, 0.0]))
    obs, reward, terminated, _, _ = env.step(np.array([0.1, 0.0]))
    assert reward == pytest.approx(-0.011) and not terminated  # 0.011 is not < 0.01

    env.reset()
    obs, reward, _, _, _ = env.step(np.array([-0.04, 0.03]))
    np.testing.assert_allclose(obs, [-0.04, 0.03], rtol=0, atol=1e-7)
    assert reward == pytest.approx(-math.hypot(-0.04 - 0.211, 0.03))
    with pytest.raises(ValueError, match="actions must be finite"):
        env.step(np.array([np.nan, 0.0]))
    with pytest.raises(ValueError, match=r"shape \(2,\), got shape \(3,\)"):
        env.step(np.zeros(3))


def test_bandit_empirical_means():
    means = (0.1, 0.35, 0.6, 0.9)
    env = BanditEnv(n_arms=4, n_pulls=100_000)
    env.set_task(BanditTask(means=means))
    obs, _ = env.reset(seed=0)
    np.testing.assert_array_equal(obs, np.zeros(1, np.float32))
    n = 4000
    for arm, p in enumerate(means):
        rewards = [env.step(arm)[1] for _ in range(n)]
        assert set(rewards) <= {0.0, 1.0}
        # the standard error is at most sqrt(0.25 / 4000) = 0.008; a wrong arm or 1 - p is >= 0.25 off
        assert abs(np.mean(rewards) - p) < 0.03, (arm, p, np.mean(rewards))


def test_bandit_truncates_after_n_pulls():
    env = gym.make("metarl/Bandit-v0", n_pulls=3)  # TimeLimit says 10; the env's own 3 wins
    env.reset(seed=0)
    flags = [env.step(0)[2:4] for _ in range(3)]
    assert flags == [(False, False), (False, False), (False, True)]
    with pytest.raises(ValueError, match=r"integer action in \[0, 10\), got 10"):
        env.unwrapped.step(10)


def test_tabular_mdp_empirical_transitions_and_rewards():
    # Hand-made 3-state, 2-action MDP with distinct rows, so a transposed table or an off-by-one in
    # the inverse-CDF draw shows up as a wrong frequency.
    P = np.array(
        [
            [[0.7, 0.2, 0.1], [0.0, 0.5, 0.5]],
            [[0.3, 0.3, 0.4], [0.9, 0.0, 0.1]],
            [[0.1, 0.1, 0.8], [0.25, 0.5, 0.25]],
        ]
    )
    R = np.array([[0.5, -1.0], [2.0, 0.0], [1.0, 3.0]])
    task = TabularMDPTask(transitions=P.tolist(), reward_means=R.tolist())  # lists become tuples
    assert task == TabularMDPTask(transitions=P, reward_means=R) and isinstance(task.transitions[0][0], tuple)
    env = TabularMDPEnv(n_states=3, n_actions=2, horizon=100_000)
    env.set_task(task)
    obs, _ = env.reset(seed=0)
    np.testing.assert_array_equal(obs, [1.0, 0.0, 0.0])  # episodes start in state 0
    counts = np.zeros((3, 2, 3))
    rewards = [[[] for _ in range(2)] for _ in range(3)]
    action_rng = np.random.default_rng(1)
    s = 0
    for _ in range(30_000):
        a = int(action_rng.integers(2))
        obs, r, terminated, truncated, _ = env.step(a)
        assert obs.dtype == np.float32 and obs.sum() == 1.0 and not terminated and not truncated
        s2 = int(np.argmax(obs))
        counts[s, a, s2] += 1
        rewards[s][a].append(r)
        s = s2
    n = counts.sum(-1, keepdims=True)
    assert n.min() > 1500
    freq = counts / n
    tol = 5 * np.sqrt(P * (1 - P) / n) + 1e-9  # 5 standard errors (0 exactly where P is 0 or 1)
    assert np.all(np.abs(freq - P) <= tol), (freq, P)
    for si in range(3):
        for ai in range(2):
            rs = np.array(rewards[si][ai])
            assert abs(rs.mean() - R[si, ai]) < 5 / math.sqrt(len(rs))  # unit-variance noise
            assert abs(rs.std() - 1.0) < 0.1


def test_tabular_mdp_truncates_after_horizon():
    env = gym.make("metarl/TabularMDP-v0").unwrapped
    env.set_task(env.sample_tasks(1, np.random.default_rng(0))[0])
    env.reset(seed=0)
    flags = [env.step(1)[2:4] for _ in range(10)]
    assert flags == [(False, False)] * 9 + [(False, True)]
    with pytest.raises(ValueError, match=r"integer action in \[0, 5\), got -1"):
        env.step(-1)


# --------------------------------------------------------------------------- batched == loop fallback


def _actions_for(env_id, venv, obs, goals, rng):
    B = venv.num_envs
    if env_id == "metarl/Sinusoid-v0":
        return rng.normal(0.0, 3.0, size=(B, 1)).astype(np.float32)
    if env_id == "metarl/Navigation2D-v0":
        # Half the sub-envs head for their goal (unclipped commands, so clipping is exercised and they
        # terminate at different steps), the rest wander.
        toward = (goals - obs) * 1.5
        wander = rng.uniform(-0.15, 0.15, size=(B, 2))
        return np.where((np.arange(B) % 2 == 0)[:, None], toward, wander)
    n = venv.single_action_space.n
    return rng.integers(n, size=B)


@pytest.mark.parametrize("env_id", IDS)
def test_batched_equals_loop_fallback(env_id):
    B = 5
    H = horizon(env_id)
    native = make_vector_env(env_id, B, backend="native")
    loop = make_vector_env(env_id, B, backend="gym")
    assert type(native).__name__.startswith("Batched")
    assert native.single_observation_space == loop.single_observation_space
    assert native.single_action_space == loop.single_action_space
    tasks = gym.make(env_id).unwrapped.sample_tasks(B, np.random.default_rng(11))
    goals = np.array([t.goal for t in tasks]) if env_id == "metarl/Navigation2D-v0" else None
    seeds = [1000 + 17 * i for i in range(B)]
    for venv in (native, loop):
        venv.seed(seeds)
        venv.set_tasks(tasks)
    rng = np.random.default_rng(5)
    terminations = 0
    for _episode in range(2):  # the second episode checks that the random streams continue alike
        obs_n, _ = native.reset()
        obs_l, _ = loop.reset()
        np.testing.assert_array_equal(obs_n, obs_l)
        assert obs_n.dtype == np.float32 and obs_n.shape == (B, *native.single_observation_space.shape)
        alive = np.ones(B, dtype=bool)
        for _t in range(H):
            actions = _actions_for(env_id, native, obs_n, goals, rng)
            obs_n, rew_n, term_n, trunc_n, info_n = native.step(actions)
            obs_l, rew_l, term_l, trunc_l, info_l = loop.step(actions)
            assert rew_n.dtype == np.float64 and rew_n.shape == (B,)
            assert term_n.dtype == bool and trunc_n.dtype == bool
            np.testing.assert_array_equal(obs_n[alive], obs_l[alive])
            np.testing.assert_array_equal(rew_n[alive], rew_l[alive])
            np.testing.assert_array_equal(term_n[alive], term_l[alive])
            if "target" in info_l:
                np.testing.assert_array_equal(info_n["target"][alive], info_l["target"][alive])
            terminations += int(term_l[alive].sum())
            alive &= ~(term_l | trunc_l)
            if not alive.any():
                break
        # after the episode has ended everywhere, extra steps of the native env must not crash
        native.step(_actions_for(env_id, native, obs_n, goals, rng))
    if env_id == "metarl/Navigation2D-v0":
        assert terminations >= 2 * len(range(0, B, 2))  # the goal-seeking sub-envs did terminate
    if env_id == "metarl/Sinusoid-v0":
        assert terminations == 2 * B


@pytest.mark.parametrize("env_id", IDS)
def test_batched_same_task_different_seeds(env_id):
    B = 4
    venv = make_vector_env(env_id, B, backend="native")
    task = gym.make(env_id).unwrapped.sample_tasks(1, np.random.default_rng(0))[0]
    venv.set_tasks([task] * B)
    venv.seed([1, 2, 3, 1])  # sub-envs 0 and 3 share a seed
    rng = np.random.default_rng(0)
    obs, _ = venv.reset()
    obs_hist, rew_hist = [obs], []
    goals = np.zeros((B, 2))  # only used to pick navigation actions
    for _ in range(min(horizon(env_id), 10)):
        # every sub-env gets the same action, so only the seed can make them differ
        actions = np.repeat(_actions_for(env_id, venv, obs, goals, rng)[:1], B, axis=0)
        obs, rew, _, _, _ = venv.step(actions)
        obs_hist.append(obs)
        rew_hist.append(rew)
    obs_hist, rew_hist = np.stack(obs_hist), np.stack(rew_hist)
    # same task, same seed, same actions: identical
    np.testing.assert_array_equal(obs_hist[:, 0], obs_hist[:, 3])
    np.testing.assert_array_equal(rew_hist[:, 0], rew_hist[:, 3])
    if env_id == "metarl/Navigation2D-v0":
        # deterministic dynamics: the seed does not matter
        np.testing.assert_array_equal(rew_hist[:, 0], rew_hist[:, 1])
    else:
        # stochastic (reset input or step outcome): different seeds give different draws
        for i in (1, 2):
            assert not np.array_equal(rew_hist[:, 0], rew_hist[:, i])
            if env_id != "metarl/Bandit-v0":
                assert not np.array_equal(obs_hist[:, 0], obs_hist[:, i])


def test_batched_bad_inputs():
    venv = BatchedBanditEnv(3, n_arms=4)
    with pytest.raises(RuntimeError, match="before reset"):
        venv.step(np.zeros(3, dtype=int))
    venv.reset()
    with pytest.raises(ValueError, match=r"integers in \[0, 4\), got array\(\[7\]\)"):
        venv.step(np.array([0, 7, 1]))
    with pytest.raises(ValueError, match=r"expected 3 integer actions, got shape \(2,\)"):
        venv.step(np.array([0, 1]))
    with pytest.raises(ValueError, match="task has 10 arms, this environment has n_arms=4"):
        venv.set_tasks([BanditTask(means=(0.5,) * 10)] * 3)
    with pytest.raises(TypeError, match="expected a BanditTask"):
        venv.set_tasks([None] * 3)
    with pytest.raises(ValueError, match=r"shape \(2, 2\), got shape \(2, 3\)"):
        nav = BatchedNavigation2DEnv(2)
        nav.reset()
        nav.step(np.zeros((2, 3)))
    mdp = BatchedTabularMDPEnv(2, n_states=3, n_actions=2)
    mdp.reset()
    with pytest.raises(ValueError, match=r"integers in \[0, 2\), got array\(\[0.5\]\)"):
        mdp.step(np.array([1.0, 0.5]))
    sin = BatchedSinusoidEnv(2)
    sin.reset()
    with pytest.raises(ValueError, match=r"shape \(2, 1\), got shape \(3,\)"):
        sin.step(np.zeros(3))


def test_batched_finished_subenvs_are_frozen():
    # Bandit with 2 pulls: after truncation, further steps draw nothing and pay nothing (the loop
    # fallback skips finished sub-envs, so drawing here would desynchronize the streams).
    venv = BatchedBanditEnv(2, n_arms=2, n_pulls=2)
    venv.set_tasks([BanditTask(means=(1.0, 1.0))] * 2)
    venv.seed([0, 1])
    venv.reset()
    assert venv.step(np.array([0, 1]))[1].tolist() == [1.0, 1.0]
    _, r, term, trunc, _ = venv.step(np.array([0, 1]))
    assert r.tolist() == [1.0, 1.0] and trunc.tolist() == [True, True] and not term.any()
    state = venv.get_rng_state()
    _, r, term, trunc, _ = venv.step(np.array([-5, 99]))  # filler actions for finished envs are fine
    assert r.tolist() == [0.0, 0.0] and not trunc.any() and not term.any()
    assert venv.get_rng_state() == state
