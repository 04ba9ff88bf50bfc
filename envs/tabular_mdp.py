"""Random tabular MDPs (Duan et al. 2016, "RL^2", section 3.2).

The paper's distribution: |S| = 10 states, |A| = 5 actions, transition rows P[s, a, :] from a flat
Dirichlet(1, ..., 1), rewards Gaussian with unit variance around means R[s, a] that are themselves
drawn from Normal(1, 1), episodes of T = 10 steps that "always start on the first state".

* Initial state: state 0, deterministically, because that is the paper's setup (the first state).
* Reward means: ``reward_mean_distribution="normal"`` (default) draws R[s, a] ~ Normal(1, 1) as in
  the paper (a random policy then earns about 1 per step, 100 over 10 episodes, which is the
  paper's "Random" column); ``"uniform"`` draws R[s, a] ~ U[0, 1] instead.
* A step from state s with action a pays R[s, a] + z with z ~ Normal(0, 1) and moves to s' ~ P[s, a].
  The next state is drawn by inverse CDF with one uniform u: s' = the first index whose cumulative
  probability exceeds u. Per step the env makes exactly two generator calls, ``standard_normal()``
  then ``random()``, and the batched env makes the same two calls on sub-env i's generator.
* The observation is the one-hot encoding of the state; episodes never terminate, the env
  truncates after ``horizon`` steps itself (the registered ``max_episode_steps`` is the same 10).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from numbers import Real

import gymnasium as gym
import numpy as np

from metarl.common.tasks import BatchedTaskEnv, TaskEnv, check_sample_tasks_args, check_task_type, discrete_action, discrete_actions

REWARD_MEAN_DISTRIBUTIONS = ("normal", "uniform")
#: tolerance on each transition row summing to 1
_ROW_SUM_TOL = 1e-6


def _is_real(x) -> bool:
    return isinstance(x, Real) and not isinstance(x, bool) and math.isfinite(x)


@dataclass(frozen=True)
class TabularMDPTask:
    """``transitions[s][a][s']`` = P(s' | s, a) and ``reward_means[s][a]`` = E[r | s, a], as nested tuples
    (so tasks are hashable, comparable with ==, and picklable)."""

    transitions: tuple[tuple[tuple[float, ...], ...], ...]
    reward_means: tuple[tuple[float, ...], ...]

    def __post_init__(self):
        try:
            P = np.array(self.transitions, dtype=np.float64)
            R = np.array(self.reward_means, dtype=np.float64)
        except (TypeError, ValueError):
            raise ValueError(
                "TabularMDPTask: transitions must be a rectangular [S][A][S] and reward_means an [S][A] "
                f"nested sequence of numbers, got {self.transitions!r} and {self.reward_means!r}"
            ) from None
        if P.ndim != 3 or P.shape[0] != P.shape[2] or P.shape[0] < 1 or P.shape[1] < 1:
            raise ValueError(f"TabularMDPTask.transitions must have shape [S, A, S], got shape {P.shape}")
        if R.shape != P.shape[:2]:
            raise ValueError(
                f"TabularMDPTask.reward_means must have shape [S, A] = {P.shape[:2]}, got shape {R.shape}"
            )
        if not np.all(np.isfinite(R)):
            raise ValueError("TabularMDPTask.reward_means must be finite")
        if not np.all(P >= 0) or not np.all(np.abs(P.sum(-1) - 1.0) <= _ROW_SUM_TOL):
            bad = np.argwhere(~((P >= 0).all(-1) & (np.abs(P.sum(-1) - 1.0) <= _ROW_SUM_TOL)))[0]
            raise ValueError(
                f"TabularMDPTask.transitions[{bad[0]}][{bad[1]}] must be a probability vector "
                f"(non-negative, summing to 1), got {P[bad[0], bad[1]].tolist()}"
            )
        # Canonical nested tuples of Python floats so equal tasks compare and hash equal.
        object.__setattr__(self, "transitions", _nested_tuple(P))
        object.__setattr__(self, "reward_means", _nested_tuple(R))

    @property
    def n_states(self) -> int:
        return len(self.transitions)

    @property
    def n_actions(self) -> int:
        return len(self.reward_means[0])


def _nested_tuple(a: np.ndarray):
    return tuple(_nested_tuple(x) for x in a) if a.ndim > 1 else tuple(float(x) for x in a)


def _transition_cdf(P: np.ndarray) -> np.ndarray:
    """Cumulative transition probabilities along the last axis, last entry exactly 1.

    Forcing the last entry to 1 means a uniform u in [0, 1) always finds a next state even when the
    row's float sum is a hair below 1. Shared by both envs so their next-state draws are identical.
    """
    cdf = np.cumsum(P, axis=-1)
    cdf[..., -1] = 1.0
    return cdf


def _positive_int(value, name: str, cls: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{cls}: {name} must be a positive integer, got {value!r}")
    return int(value)


def _check_config(cls: str, n_states, n_actions, horizon, reward_mean_distribution) -> tuple[int, int, int, str]:
    n_states = _positive_int(n_states, "n_states", cls)
    n_actions = _positive_int(n_actions, "n_actions", cls)
    horizon = _positive_int(horizon, "horizon", cls)
    if reward_mean_distribution not in REWARD_MEAN_DISTRIBUTIONS:
        raise ValueError(
            f"{cls}: reward_mean_distribution must be one of {REWARD_MEAN_DISTRIBUTIONS}, "
            f"got {reward_mean_distribution!r}"
        )
    return n_states, n_actions, horizon, reward_mean_distribution


def _check_task(task, n_states: int, n_actions: int, cls: str) -> None:
    check_task_type(task, TabularMDPTask, cls)
    if (task.n_states, task.n_actions) != (n_states, n_actions):
        raise ValueError(
            f"{cls}: task has {task.n_states} states and {task.n_actions} actions, this environment has "
            f"n_states={n_states}, n_actions={n_actions}"
        )


def _default_task(n_states: int, n_actions: int) -> TabularMDPTask:
    # Uniform transitions and zero-mean rewards: a neutral placeholder until set_task is called.
    P = np.full((n_states, n_actions, n_states), 1.0 / n_states)
    return TabularMDPTask(transitions=P, reward_means=np.zeros((n_states, n_actions)))


def _spaces(n_states: int, n_actions: int, reward_mean_distribution: str):
    obs_space = gym.spaces.Box(0.0, 1.0, shape=(n_states,), dtype=np.float32)
    n_p, n_r = n_states * n_actions * n_states, n_states * n_actions
    r_low, r_high = (-np.inf, np.inf) if reward_mean_distribution == "normal" else (0.0, 1.0)
    task_space = gym.spaces.Box(
        low=np.concatenate([np.zeros(n_p), np.full(n_r, r_low)]).astype(np.float32),
        high=np.concatenate([np.ones(n_p), np.full(n_r, r_high)]).astype(np.float32),
        dtype=np.float32,
    )
    return obs_space, gym.spaces.Discrete(n_actions), task_space


def _sample(n: int, rng: np.random.Generator, n_states: int, n_actions: int, dist: str) -> list[TabularMDPTask]:
    P = rng.dirichlet(np.ones(n_states), size=(n, n_states, n_actions))
    if dist == "normal":
        R = rng.normal(1.0, 1.0, size=(n, n_states, n_actions))
    else:
        R = rng.uniform(0.0, 1.0, size=(n, n_states, n_actions))
    return [TabularMDPTask(transitions=_nested_tuple(P[i]), reward_means=_nested_tuple(R[i])) for i in range(n)]


class TabularMDPEnv(TaskEnv):
    """Random finite MDP with one-hot state observations; episodes start in state 0."""

    task_type = TabularMDPTask
    metadata = {"render_modes": []}

    def __init__(
        self, n_states: int = 10, n_actions: int = 5, horizon: int = 10, reward_mean_distribution: str = "normal"
    ):
        self.n_states, self.n_actions, self.horizon, self.reward_mean_distribution = _check_config(
            type(self).__name__, n_states, n_actions, horizon, reward_mean_distribution
        )
        self.observation_space, self.action_space, self.task_space = _spaces(
            self.n_states, self.n_actions, self.reward_mean_distribution
        )
        self._eye = np.eye(self.n_states, dtype=np.float32)
        self._state = 0
        self._t = 0
        self.set_task(_default_task(self.n_states, self.n_actions))

    def sample_tasks(self, n: int, rng: np.random.Generator) -> list[TabularMDPTask]:
        check_sample_tasks_args(n, rng)
        return _sample(n, rng, self.n_states, self.n_actions, self.reward_mean_distribution)

    def set_task(self, task: TabularMDPTask) -> None:
        _check_task(task, self.n_states, self.n_actions, type(self).__name__)
        self._task = task
        self._cdf = _transition_cdf(np.array(task.transitions, dtype=np.float64))
        self._R = np.array(task.reward_means, dtype=np.float64)

    def get_task(self) -> TabularMDPTask:
        return self._task

    @staticmethod
    def task_to_array(task: TabularMDPTask) -> np.ndarray:
        """Flattened P (S*A*S entries) followed by flattened R (S*A entries)."""
        return np.concatenate(
            [np.ravel(task.transitions), np.ravel(task.reward_means)]
        ).astype(np.float32)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self._state = 0
        self._t = 0
        return self._eye[0].copy(), {}

    def step(self, action):
        a = discrete_action(action, self.n_actions, "TabularMDPEnv.step")
        z = self.np_random.standard_normal()
        u = self.np_random.random()
        reward = float(self._R[self._state, a] + z)
        self._state = int(np.argmax(self._cdf[self._state, a] > u))
        self._t += 1
        return self._eye[self._state].copy(), reward, False, self._t >= self.horizon, {}


class BatchedTabularMDPEnv(BatchedTaskEnv):
    """``num_envs`` random MDPs. Per step, the only per-sub-env Python work is drawing each sub-env's
    (normal, uniform) pair from its own generator; rewards and transitions are vectorized.

    A sub-environment whose episode has been truncated is not advanced until ``reset()``; further
    steps return its last observation, reward 0 and no flags and draw nothing, as the loop fallback
    does.
    """

    task_to_array = staticmethod(TabularMDPEnv.task_to_array)

    def __init__(
        self,
        num_envs: int,
        n_states: int = 10,
        n_actions: int = 5,
        horizon: int = 10,
        reward_mean_distribution: str = "normal",
    ):
        super().__init__(num_envs)
        self.n_states, self.n_actions, self.horizon, self.reward_mean_distribution = _check_config(
            type(self).__name__, n_states, n_actions, horizon, reward_mean_distribution
        )
        self.single_observation_space, self.single_action_space, self.task_space = _spaces(
            self.n_states, self.n_actions, self.reward_mean_distribution
        )
        self._eye = np.eye(self.n_states, dtype=np.float32)
        self._state = np.zeros(self.num_envs, dtype=np.int64)
        self._t = np.zeros(self.num_envs, dtype=np.int64)
        self._done = np.ones(self.num_envs, dtype=bool)
        self._was_reset = False
        self.set_tasks([_default_task(self.n_states, self.n_actions)] * self.num_envs)

    def _tasks_changed(self) -> None:
        for task in self.tasks:
            _check_task(task, self.n_states, self.n_actions, type(self).__name__)
        self._cdf = _transition_cdf(np.array([t.transitions for t in self.tasks], dtype=np.float64))
        self._R = np.array([t.reward_means for t in self.tasks], dtype=np.float64)

    def reset(self):
        self._state[:] = 0
        self._t[:] = 0
        self._done[:] = False
        self._was_reset = True
        return self._eye[self._state], {}

    def step(self, actions):
        if not self._was_reset:
            raise RuntimeError("BatchedTabularMDPEnv.step called before reset()")
        active = ~self._done
        a = discrete_actions(actions, self.num_envs, self.n_actions, active, "BatchedTabularMDPEnv.step")
        z = np.zeros(self.num_envs)
        u = np.zeros(self.num_envs)
        for i in np.flatnonzero(active):
            rng = self.rngs[i]
            z[i] = rng.standard_normal()
            u[i] = rng.random()
        idx = np.arange(self.num_envs)
        reward = np.where(active, self._R[idx, self._state, a] + z, 0.0)
        next_state = np.argmax(self._cdf[idx, self._state, a] > u[:, None], axis=1)
        self._state = np.where(active, next_state, self._state)
        self._t += active
        truncated = active & (self._t >= self.horizon)
        self._done |= truncated
        terminated = np.zeros(self.num_envs, dtype=bool)
        return self._eye[self._state], reward, terminated, truncated, {}


TabularMDPEnv.batched_env_class = BatchedTabularMDPEnv
