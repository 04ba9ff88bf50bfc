"""The oracle (task-in-observation) wrappers."""

import re
import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env as gym_check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import metarl  # noqa: F401  (registers the metarl/ ids)
from metarl.sampling.oracle_env import BatchedTaskInObservation, TaskInObservation, make_oracle_env, make_oracle_vector_env
from metarl.common.tasks import BatchedTaskEnv
from metarl.sampling.vector import horizon, make_vector_env

IDS = ["metarl/Sinusoid-v0", "metarl/Navigation2D-v0", "metarl/Bandit-v0", "metarl/TabularMDP-v0"]
# see tests/test_envs_simple.py: advisory warnings about deliberate space choices
ALLOWED_WARNINGS = re.compile(r"normalized|infinity|different from the unwrapped version")


def _run_checker(checker, env):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        checker(env)
    unexpected = [str(w.message) for w in caught if not ALLOWED_WARNINGS.search(str(w.message))]
    assert not unexpected, unexpected


def _obs_dim(env_id):
    return gym.make(env_id).observation_space.shape[0]


@pytest.mark.parametrize("env_id", IDS)
@pytest.mark.parametrize("resample", [False, True])
def test_check_env(env_id, resample):
    # SB3's checker on the full gymnasium.make stack (time limit included) wrapped by the oracle.
    _run_checker(sb3_check_env, make_oracle_env(env_id, resample_tasks_on_reset=resample))
    # Gymnasium's checker fails any H = 1 env made with its time limit ("truncates after 1 step"), so
    # the sinusoid is checked without it; every other env is checked as make_oracle_env builds it.
    if horizon(env_id) > 1:
        _run_checker(gym_check_env, make_oracle_env(env_id, resample_tasks_on_reset=resample))
    _run_checker(gym_check_env, TaskInObservation(gym.make(env_id).unwrapped, resample_tasks_on_reset=resample))


@pytest.mark.parametrize("env_id", IDS)
def test_appended_features_equal_task_to_array(env_id):
    plain = gym.make(env_id)
    oracle = make_oracle_env(env_id)
    base = oracle.unwrapped
    n = _obs_dim(env_id)
    tasks = base.sample_tasks(3, np.random.default_rng(0))
    for i, task in enumerate(tasks):
        oracle.set_task(task)
        plain.unwrapped.set_task(task)
        assert oracle.get_task() == task and base.get_task() == task
        obs, _ = oracle.reset(seed=i)
        ref, _ = plain.reset(seed=i)
        features = type(base).task_to_array(task)
        assert obs.dtype == np.float32 and obs.shape == (n + features.shape[0],)
        np.testing.assert_array_equal(obs[:n], ref)
        np.testing.assert_array_equal(obs[n:], features)
        assert oracle.observation_space.contains(obs) or not base.task_space.contains(features)
        action = oracle.action_space.sample()
        obs, r, term, trunc, _ = oracle.step(action)
        ref, r_ref, term_ref, trunc_ref, _ = plain.step(action)
        np.testing.assert_array_equal(obs[:n], ref)
        np.testing.assert_array_equal(obs[n:], features)
        assert (r, term, trunc) == (r_ref, term_ref, trunc_ref)
    # a task set on the unwrapped env directly is picked up too
    base.set_task(tasks[0])
    obs, _ = oracle.reset(seed=0)
    np.testing.assert_array_equal(obs[n:], type(base).task_to_array(tasks[0]))


@pytest.mark.parametrize("env_id", IDS)
def test_observation_space(env_id):
    oracle = make_oracle_env(env_id)
    inner = gym.make(env_id).observation_space
    task_space = oracle.unwrapped.task_space
    space = oracle.observation_space
    assert isinstance(space, gym.spaces.Box) and space.dtype == np.float32
    assert space.shape == (inner.shape[0] + task_space.shape[0],)
    np.testing.assert_array_equal(space.low, np.concatenate([inner.low, task_space.low]))
    np.testing.assert_array_equal(space.high, np.concatenate([inner.high, task_space.high]))
    assert oracle.action_space == gym.make(env_id).action_space


def test_sinusoid_oracle_space_bounds():
    space = make_oracle_env("metarl/Sinusoid-v0").observation_space
    np.testing.assert_allclose(space.low, [-5.0, 0.1, 0.0], rtol=1e-6)
    np.testing.assert_allclose(space.high, [5.0, 5.0, np.pi], rtol=1e-6)


@pytest.mark.parametrize("env_id", ["metarl/Navigation2D-v0", "metarl/Bandit-v0"])
def test_resample_tasks_on_reset(env_id):
    env = make_oracle_env(env_id, resample_tasks_on_reset=True)
    n = _obs_dim(env_id)
    # seeded resets are reproducible and the seed picks the task
    a, _ = env.reset(seed=3)
    task_a = env.get_task()
    b, _ = env.reset(seed=3)
    np.testing.assert_array_equal(a, b)
    assert env.get_task() == task_a
    c, _ = env.reset(seed=4)
    assert env.get_task() != task_a and not np.array_equal(a[n:], c[n:])
    # unseeded resets keep drawing new tasks from the task generator, each one shown in the obs
    seen = set()
    for _ in range(5):
        obs, _ = env.reset()
        seen.add(env.get_task())
        np.testing.assert_array_equal(obs[n:], type(env.unwrapped).task_to_array(env.get_task()))
    assert len(seen) == 5
    # an explicit task_rng: the same generator seed gives the same task sequence
    seqs = []
    for _ in range(2):
        e = make_oracle_env(env_id, resample_tasks_on_reset=True, task_rng=np.random.default_rng(9))
        seqs.append([(e.reset(), e.get_task())[1] for _ in range(3)])
    assert seqs[0] == seqs[1] and len(set(seqs[0])) == 3
    # ...namely one sample_tasks(1, task_rng) call per reset
    rng = np.random.default_rng(9)
    assert seqs[0] == [e.sample_tasks(1, rng)[0] for _ in range(3)]


def test_without_resampling_the_task_stays():
    env = make_oracle_env("metarl/Bandit-v0")
    task = env.sample_tasks(1, np.random.default_rng(0))[0]
    env.set_task(task)
    for seed in range(3):
        env.reset(seed=seed)
        assert env.get_task() == task


def test_wrapper_errors():
    with pytest.raises(TypeError, match="is not a task distribution"):
        TaskInObservation(gym.make("CartPole-v1"))
    with pytest.raises(TypeError, match="task_rng must be a numpy.random.Generator or None, got int"):
        make_oracle_env("metarl/Bandit-v0", task_rng=0)
    with pytest.raises(ValueError, match="unknown environment id 'metarl/Nope-v0'"):
        make_oracle_env("metarl/Nope-v0")
    with pytest.raises(TypeError, match="wraps a BatchedTaskEnv, got Navigation2DEnv"):
        BatchedTaskInObservation(gym.make("metarl/Navigation2D-v0").unwrapped)


@pytest.mark.parametrize("env_id", IDS)
@pytest.mark.parametrize("backend", ["native", "gym"])
def test_batched_wrapper_equals_single_wrappers(env_id, backend):
    B = 3
    H = horizon(env_id)
    venv = make_oracle_vector_env(env_id, B, backend=backend)
    singles = [make_oracle_env(env_id) for _ in range(B)]
    n = _obs_dim(env_id)
    task_dim = singles[0].observation_space.shape[0] - n
    assert venv.single_observation_space == singles[0].observation_space
    assert venv.single_action_space == singles[0].action_space
    assert venv.task_space.shape == (task_dim,)
    tasks = singles[0].sample_tasks(B, np.random.default_rng(2))
    seeds = [40, 41, 42]
    venv.seed(seeds)
    venv.set_tasks(tasks)
    assert venv.get_tasks() == tasks
    for env, task in zip(singles, tasks):
        env.set_task(task)
    obs_b, _ = venv.reset()
    obs_s = np.stack([env.reset(seed=s)[0] for env, s in zip(singles, seeds)])
    np.testing.assert_array_equal(obs_b, obs_s)
    expected_features = np.stack([type(singles[0].unwrapped).task_to_array(t) for t in tasks])
    np.testing.assert_array_equal(obs_b[:, n:], expected_features)
    space = venv.single_action_space
    space.seed(0)
    alive = np.ones(B, dtype=bool)
    for _ in range(min(H, 15)):
        actions = np.stack([space.sample() for _ in range(B)])
        obs_b, rew_b, term_b, _, _ = venv.step(actions)
        for i, env in enumerate(singles):
            if not alive[i]:
                continue
            obs, r, term, trunc, _ = env.step(actions[i])
            np.testing.assert_array_equal(obs_b[i], obs)
            assert rew_b[i] == r and term_b[i] == term
            alive[i] = not (term or trunc)
        if not alive.any():
            break


def test_batched_wrapper_forwards_state():
    inner = make_vector_env("metarl/Bandit-v0", 2, backend="native")
    venv = BatchedTaskInObservation(inner)
    assert isinstance(venv, BatchedTaskEnv) and venv.num_envs == 2
    venv.seed([5, 6])
    assert venv.rngs is inner.rngs  # no generators of its own
    assert venv.get_rng_state() == inner.get_rng_state()
    # before any set_tasks the inner env's default tasks are shown
    obs, _ = venv.reset()
    np.testing.assert_array_equal(obs[:, 1:], np.full((2, 10), 0.5, np.float32))
    sin = make_oracle_vector_env("metarl/Sinusoid-v0", 2)
    assert sin.supervised_loss is not None
    assert sin.supervised_loss is type(gym.make("metarl/Sinusoid-v0").unwrapped).supervised_loss


class _ImageBatched(BatchedTaskEnv):
    """A BatchedTaskEnv with a non-flat observation space, which the oracle cannot extend."""

    def __init__(self):
        super().__init__(2)
        self.single_observation_space = gym.spaces.Box(0, 1, shape=(3, 3), dtype=np.float32)
        self.single_action_space = gym.spaces.Discrete(2)
        self.tasks = [0, 1]
        self.task_to_array = lambda t: np.array([t], dtype=np.float32)

    def reset(self):
        return np.zeros((2, 3, 3), np.float32), {}

    def step(self, actions):
        raise NotImplementedError


def test_batched_wrapper_rejects_non_flat_observations():
    with pytest.raises(TypeError, match=r"flat Box observation space \(shape \(n,\)\)"):
        BatchedTaskInObservation(_ImageBatched())


def test_sb3_ppo_trains_on_oracle_env():
    from stable_baselines3 import PPO

    env = make_oracle_env(
        "metarl/Navigation2D-v0", resample_tasks_on_reset=True, task_rng=np.random.default_rng(0)
    )
    model = PPO("MlpPolicy", env, n_steps=64, batch_size=32, n_epochs=1, seed=0, device="cpu")
    model.learn(total_timesteps=64)
    assert model.num_timesteps == 64
    assert model.observation_space.shape == (4,)  # position (2) + goal (2)
