"""Vector-env construction: backends, registry errors, and third-party task environments that only
have the three task methods (gym-loop fallback) or lack them (clear TypeError)."""

from __future__ import annotations

from dataclasses import dataclass

import gymnasium as gym
import numpy as np
import pytest
import torch

import metarl  # noqa: F401  (registers metarl/...)
from metarl.sampling.collector import Collector
from metarl.envs.navigation import BatchedNavigation2DEnv
from metarl.common.policies import make_policy
from metarl.sampling.vector import GymLoopVectorEnv, env_spec, horizon, make_task_env, make_vector_env

# ------------------------------------------------------------------ a third-party task distribution


@dataclass(frozen=True)
class TinyTask:
    offset: float


class TinyTaskEnv(gym.Env):
    """1-D random walk towards a per-task offset; terminates when close. Not a metarl.TaskEnv, no
    batched twin: only the three task methods."""

    observation_space = gym.spaces.Box(-10.0, 10.0, shape=(1,), dtype=np.float32)
    action_space = gym.spaces.Box(-1.0, 1.0, shape=(1,), dtype=np.float32)

    def __init__(self):
        self._task = TinyTask(0.0)
        self._x = 0.0

    def sample_tasks(self, n, rng):
        return [TinyTask(float(o)) for o in rng.uniform(-2.0, 2.0, size=n)]

    def set_task(self, task):
        self._task = task

    def get_task(self):
        return self._task

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self._x = float(self.np_random.normal())
        return np.array([self._x], dtype=np.float32), {}

    def step(self, action):
        self._x += float(np.clip(action[0], -1.0, 1.0)) + 0.1 * float(self.np_random.normal())
        distance = abs(self._x - self._task.offset)
        return np.array([self._x], dtype=np.float32), -distance, distance < 0.2, False, {}


class NotATaskEnv(gym.Env):
    """A plain Gymnasium env: it has get_task but neither sample_tasks nor set_task."""

    observation_space = gym.spaces.Box(-1.0, 1.0, shape=(1,), dtype=np.float32)
    action_space = gym.spaces.Discrete(2)

    def get_task(self):
        return None

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return np.zeros(1, dtype=np.float32), {}

    def step(self, action):
        return np.zeros(1, dtype=np.float32), 0.0, False, False, {}


TINY_ID = "thirdparty/Tiny-v0"
NOT_TASK_ID = "thirdparty/NotATask-v0"
NO_HORIZON_ID = "thirdparty/NoHorizon-v0"
for _id, _entry, _steps in [(TINY_ID, TinyTaskEnv, 12), (NOT_TASK_ID, NotATaskEnv, 5), (NO_HORIZON_ID, TinyTaskEnv, None)]:
    if _id not in gym.registry:
        gym.register(_id, entry_point=_entry, max_episode_steps=_steps)


# ---------------------------------------------------------------------------------------- backends


def test_backends():
    assert isinstance(make_vector_env("metarl/Navigation2D-v0", 3), BatchedNavigation2DEnv)
    assert isinstance(make_vector_env("metarl/Navigation2D-v0", 3, backend="native"), BatchedNavigation2DEnv)
    loop = make_vector_env("metarl/Navigation2D-v0", 3, backend="gym")
    assert isinstance(loop, GymLoopVectorEnv) and loop.num_envs == 3 and len(loop.envs) == 3
    # a third-party env without a batched class: auto falls back to the loop, native refuses
    assert isinstance(make_vector_env(TINY_ID, 2), GymLoopVectorEnv)
    assert isinstance(make_vector_env(TINY_ID, 2, backend="gym"), GymLoopVectorEnv)
    with pytest.raises(ValueError, match=r"'thirdparty/Tiny-v0' has no native batched implementation"):
        make_vector_env(TINY_ID, 2, backend="native")
    # the supervised loss travels with both paths
    for backend in ("native", "gym"):
        assert make_vector_env("metarl/Sinusoid-v0", 2, backend=backend).supervised_loss is not None
    assert make_vector_env("metarl/Bandit-v0", 2, backend="gym").supervised_loss is None


def test_bad_backend_name():
    with pytest.raises(ValueError, match=r"one of auto, native, gym, subproc, threads; got 'numpy'"):
        make_vector_env("metarl/Navigation2D-v0", 2, backend="numpy")
    collector = Collector("metarl/Navigation2D-v0", backend="Native")
    policy = make_policy(collector.observation_space, collector.action_space, False, (4,))
    with pytest.raises(ValueError, match=r"one of auto, native, gym, subproc, threads; got 'Native'"):
        collector.collect(policy, collector.sample_tasks(1, np.random.default_rng(0)), 1)


@pytest.mark.parametrize("num_envs", [0, -1, 1.5, True])
def test_bad_num_envs(num_envs):
    with pytest.raises(ValueError, match="num_envs must be a positive integer"):
        make_vector_env("metarl/Navigation2D-v0", num_envs)


# --------------------------------------------------------------------------------------- registry


def test_unknown_env_id_lists_registered_ids():
    with pytest.raises(ValueError) as info:
        env_spec("metarl/Nope-v0")
    message = str(info.value)
    assert "unknown environment id 'metarl/Nope-v0'" in message
    for env_id in ("metarl/Sinusoid-v0", "metarl/Navigation2D-v0", "metarl/HalfCheetahVel-v0",
                   "metarl/HalfCheetahDir-v0", "metarl/Bandit-v0", "metarl/TabularMDP-v0"):
        assert env_id in message
    assert "--import" in message
    with pytest.raises(ValueError, match="unknown environment id"):
        Collector("Nope-v0")


def test_horizon():
    assert horizon("metarl/Navigation2D-v0") == 100
    assert horizon("metarl/Sinusoid-v0") == 1
    assert horizon(TINY_ID) == 12
    with pytest.raises(ValueError, match=r"'thirdparty/NoHorizon-v0' is registered without max_episode_steps"):
        horizon(NO_HORIZON_ID)
    # the collector needs H: without one registered it must be given explicitly
    with pytest.raises(ValueError, match="without max_episode_steps"):
        Collector(NO_HORIZON_ID)
    assert Collector(NO_HORIZON_ID, horizon=7).horizon == 7


# ------------------------------------------------------------------------------ third-party envs


def test_third_party_env_through_the_collector():
    collector = Collector(TINY_ID, seed=2)
    assert isinstance(collector._venv(6), GymLoopVectorEnv)
    tasks = collector.sample_tasks(3, np.random.default_rng(0))
    assert all(isinstance(t, TinyTask) for t in tasks)
    torch.manual_seed(0)
    policy = make_policy(collector.observation_space, collector.action_space, False, (8,))
    batch = collector.collect(policy, tasks, 2)
    assert batch.obs.shape == (12, 6, 1) and batch.actions.shape == (12, 6, 1)
    assert torch.equal(batch.task_index, torch.tensor([0, 0, 1, 1, 2, 2]))
    # the sub-envs hold their column's task
    venv = collector._venv(6)
    assert [env.unwrapped.get_task() for env in venv.envs] == [t for t in tasks for _ in range(2)]
    # rewards are -|x - offset| of the column's task, 0 after termination
    offsets = torch.tensor([t.offset for t in tasks]).repeat_interleave(2)
    valid = batch.valid.bool()
    expected = -(batch.obs[1:] - offsets[:, None]).abs()[..., 0]
    torch.testing.assert_close(batch.rewards[:-1][valid[1:]], expected[valid[1:]])
    assert torch.all(batch.rewards[~valid] == 0)
    # reproducible from the seed, like the native envs
    again = Collector(TINY_ID, seed=2).collect(policy, tasks, 2)
    assert torch.equal(batch.obs, again.obs) and torch.equal(batch.rewards, again.rewards)
    # and each episode ends exactly once
    assert torch.equal(batch.dones.sum(0), torch.ones(6, dtype=torch.long))


def test_env_without_task_methods_gives_clear_type_error():
    pattern = (r"environment 'thirdparty/NotATask-v0' \(.*NotATaskEnv\) is not a task distribution: "
               r"it lacks sample_tasks, set_task;")
    with pytest.raises(TypeError, match=pattern):
        make_vector_env(NOT_TASK_ID, 2)
    with pytest.raises(TypeError, match=pattern):
        make_task_env(NOT_TASK_ID)
    with pytest.raises(TypeError, match=pattern):
        Collector(NOT_TASK_ID)
