"""k-armed Bernoulli bandits (Duan et al. 2016, "RL^2", section 3.1).

A task is the vector of arm means, each drawn from U[0, 1]. Pulling arm i pays 1 with probability
means[i] and 0 otherwise, drawn from the environment's own generator. The environment is stateless,
so the observation is a constant ``zeros(1)``: an RL^2 policy feeds itself the previous action and
reward. One episode is ``n_pulls`` pulls; the env truncates after ``n_pulls`` steps itself so that a
custom number of pulls works whatever ``max_episode_steps`` says. (The paper counts each pull as an
"episode" of a trial; the total reward over the pulls is the same quantity, e.g. about 6.7 for
10 arms and 10 pulls.)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from numbers import Real

import gymnasium as gym
import numpy as np

from metarl.common.tasks import BatchedTaskEnv, TaskEnv, check_sample_tasks_args, check_task_type, discrete_action, discrete_actions


@dataclass(frozen=True)
class BanditTask:
    """Success probability of each arm."""

    means: tuple[float, ...]

    def __post_init__(self):
        means = tuple(self.means) if isinstance(self.means, (tuple, list, np.ndarray)) else None
        if not means or not all(
            isinstance(m, Real) and not isinstance(m, bool) and math.isfinite(m) and 0.0 <= m <= 1.0 for m in means
        ):
            raise ValueError(
                f"BanditTask.means must be a non-empty sequence of probabilities in [0, 1], got {self.means!r}"
            )
        object.__setattr__(self, "means", tuple(float(m) for m in means))


def _positive_int(value, name: str, cls: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{cls}: {name} must be a positive integer, got {value!r}")
    return int(value)


def _check_task(task, n_arms: int, cls: str) -> None:
    check_task_type(task, BanditTask, cls)
    if len(task.means) != n_arms:
        raise ValueError(f"{cls}: task has {len(task.means)} arms, this environment has n_arms={n_arms}")


def _spaces(n_arms: int) -> tuple[gym.spaces.Box, gym.spaces.Discrete, gym.spaces.Box]:
    # The observation carries no information; its Box is [0, 1] rather than [0, 0] because
    # Gymnasium's checker warns about a Box whose low equals its high.
    obs_space = gym.spaces.Box(0.0, 1.0, shape=(1,), dtype=np.float32)
    task_space = gym.spaces.Box(0.0, 1.0, shape=(n_arms,), dtype=np.float32)
    return obs_space, gym.spaces.Discrete(n_arms), task_space


class BanditEnv(TaskEnv):
    """Bernoulli bandit with ``n_arms`` arms and ``n_pulls`` pulls per episode."""

    task_type = BanditTask
    metadata = {"render_modes": []}

    def __init__(self, n_arms: int = 10, n_pulls: int = 10):
        self.n_arms = _positive_int(n_arms, "n_arms", type(self).__name__)
        self.n_pulls = _positive_int(n_pulls, "n_pulls", type(self).__name__)
        self.observation_space, self.action_space, self.task_space = _spaces(self.n_arms)
        self._task = BanditTask(means=(0.5,) * self.n_arms)
        self._means = np.array(self._task.means)
        self._t = 0

    def sample_tasks(self, n: int, rng: np.random.Generator) -> list[BanditTask]:
        check_sample_tasks_args(n, rng)
        means = rng.uniform(0.0, 1.0, size=(n, self.n_arms))
        return [BanditTask(means=tuple(row.tolist())) for row in means]

    def set_task(self, task: BanditTask) -> None:
        _check_task(task, self.n_arms, type(self).__name__)
        self._task = task
        self._means = np.array(task.means, dtype=np.float64)

    def get_task(self) -> BanditTask:
        return self._task

    @staticmethod
    def task_to_array(task: BanditTask) -> np.ndarray:
        return np.array(task.means, dtype=np.float32)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self._t = 0
        return np.zeros(1, dtype=np.float32), {}

    def step(self, action):
        arm = discrete_action(action, self.n_arms, "BanditEnv.step")
        # One uniform per pull; reward = 1[u < p] is a Bernoulli(p) draw. The batched env makes the
        # same single call on sub-env i's generator.
        u = self.np_random.random()
        reward = 1.0 if u < self._means[arm] else 0.0
        self._t += 1
        return np.zeros(1, dtype=np.float32), reward, False, self._t >= self.n_pulls, {}


class BatchedBanditEnv(BatchedTaskEnv):
    """``num_envs`` bandits. Per step, the only per-sub-env Python work is drawing each sub-env's
    uniform from its own generator; the rest is vectorized.

    A sub-environment whose episode has been truncated (after ``n_pulls`` pulls) is not advanced
    until ``reset()``; further steps return reward 0 and no flags and draw nothing, as the loop
    fallback does, so its random stream stays aligned with a single env's.
    """

    task_to_array = staticmethod(BanditEnv.task_to_array)

    def __init__(self, num_envs: int, n_arms: int = 10, n_pulls: int = 10):
        super().__init__(num_envs)
        self.n_arms = _positive_int(n_arms, "n_arms", type(self).__name__)
        self.n_pulls = _positive_int(n_pulls, "n_pulls", type(self).__name__)
        self.single_observation_space, self.single_action_space, self.task_space = _spaces(self.n_arms)
        self._t = np.zeros(self.num_envs, dtype=np.int64)
        self._done = np.ones(self.num_envs, dtype=bool)
        self._was_reset = False
        self.set_tasks([BanditTask(means=(0.5,) * self.n_arms)] * self.num_envs)

    def _tasks_changed(self) -> None:
        for task in self.tasks:
            _check_task(task, self.n_arms, type(self).__name__)
        self._means = np.array([t.means for t in self.tasks], dtype=np.float64)

    def reset(self):
        self._t[:] = 0
        self._done[:] = False
        self._was_reset = True
        return np.zeros((self.num_envs, 1), dtype=np.float32), {}

    def step(self, actions):
        if not self._was_reset:
            raise RuntimeError("BatchedBanditEnv.step called before reset()")
        active = ~self._done
        arms = discrete_actions(actions, self.num_envs, self.n_arms, active, "BatchedBanditEnv.step")
        u = np.ones(self.num_envs)  # u = 1 never pays out; only active entries are used anyway
        for i in np.flatnonzero(active):
            u[i] = self.rngs[i].random()
        p = self._means[np.arange(self.num_envs), arms]
        reward = np.where(active & (u < p), 1.0, 0.0)
        self._t += active
        truncated = active & (self._t >= self.n_pulls)
        self._done |= truncated
        terminated = np.zeros(self.num_envs, dtype=bool)
        return np.zeros((self.num_envs, 1), dtype=np.float32), reward, terminated, truncated, {}


BanditEnv.batched_env_class = BatchedBanditEnv
