"""The "oracle" comparison: a policy that sees the task in its observation.

The MAML paper compares meta-learned adaptation against an oracle policy that receives the task
parameters (goal position, target velocity, ...) as extra inputs and therefore needs no adaptation.
This module appends ``task_to_array(task)`` to every observation:

* :class:`TaskInObservation` wraps one Gymnasium task environment. With
  ``resample_tasks_on_reset=True`` it draws a fresh task from the distribution at every reset, so an
  ordinary RL library (e.g. stable-baselines3 PPO) can train one policy across the distribution.
* :class:`BatchedTaskInObservation` wraps any :class:`metarl.common.tasks.BatchedTaskEnv`, concatenating a
  [B, task_dim] array precomputed in ``set_tasks`` (no per-step Python work per sub-env).
* :func:`make_oracle_env` / :func:`make_oracle_vector_env` build either from a registered id.

The bounds of the appended features come from the base environment's optional ``task_space``
attribute (a Box bounding ``task_to_array`` over the training distribution); without one they are
unbounded.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import gymnasium as gym
import numpy as np
from gymnasium.utils import seeding

from metarl.common.tasks import BatchedTaskEnv, check_task_distribution
from metarl.sampling.vector import env_spec, make_vector_env

#: Mixed into the task generator's seed so that, for the same reset seed, the task stream is not the
#: very stream the environment itself draws from (``np_random(seed)`` and ``default_rng(seed)`` coincide).
_TASK_STREAM_SALT = 0x7A5C


def _task_space_for(space: Any, task_dim: int, where: str) -> gym.spaces.Box:
    """The declared bounds of the task features, or an unbounded Box when none were declared."""
    if space is None:
        return gym.spaces.Box(-np.inf, np.inf, shape=(task_dim,), dtype=np.float32)
    if not isinstance(space, gym.spaces.Box) or space.shape != (task_dim,):
        raise ValueError(
            f"{where}: task_space must be a Box of shape ({task_dim},) matching task_to_array, got {space!r}"
        )
    return space


def _concat_space(obs_space: gym.Space, task_space: gym.spaces.Box, where: str) -> gym.spaces.Box:
    if not isinstance(obs_space, gym.spaces.Box) or len(obs_space.shape) != 1:
        raise TypeError(
            f"{where}: the task can only be appended to a flat Box observation space (shape (n,)), "
            f"got {obs_space!r}"
        )
    return gym.spaces.Box(
        low=np.concatenate([obs_space.low.astype(np.float32), task_space.low.astype(np.float32)]),
        high=np.concatenate([obs_space.high.astype(np.float32), task_space.high.astype(np.float32)]),
        dtype=np.float32,
    )


def _first_not_none(*values: Any) -> Any:
    return next((v for v in values if v is not None), None)


def _as_features(arr: Any, where: str) -> np.ndarray:
    a = np.asarray(arr, dtype=np.float32)
    if a.ndim != 1:
        raise ValueError(f"{where}: task_to_array must return a 1-D array, got shape {a.shape}")
    return a


class TaskInObservation(gym.Wrapper, gym.utils.RecordConstructorArgs):
    """Append ``task_to_array(current task)`` to every observation of a task environment.

    Args:
        env: a task distribution (``sample_tasks`` / ``set_task`` / ``get_task`` and a static
            ``task_to_array`` on the unwrapped env) with a flat Box observation space.
        resample_tasks_on_reset: if True, every ``reset`` first sets a task drawn with
            ``sample_tasks(1, task_rng)``.
        task_rng: the generator those tasks are drawn from. ``reset(seed=s)`` replaces it with one
            seeded from ``s`` (so seeded resets are reproducible); if neither is given, the first
            resampling reset creates one from fresh OS entropy, like an unseeded Gymnasium env.
    """

    def __init__(
        self,
        env: gym.Env,
        *,
        resample_tasks_on_reset: bool = False,
        task_rng: np.random.Generator | None = None,
    ):
        # Recorded so env.spec can rebuild the wrapper (gymnasium.make(spec), check_env's close
        # check). task_rng is left out on purpose: a rebuilt env must not share this generator.
        gym.utils.RecordConstructorArgs.__init__(self, resample_tasks_on_reset=resample_tasks_on_reset)
        gym.Wrapper.__init__(self, env)
        check_task_distribution(env)
        base = env.unwrapped
        self._task_to_array: Callable | None = getattr(base, "task_to_array", None)
        if not callable(self._task_to_array):
            raise TypeError(
                f"TaskInObservation: {type(base).__name__} has no task_to_array(task); the oracle needs a "
                f"fixed-length float vector describing each task"
            )
        if task_rng is not None and not isinstance(task_rng, np.random.Generator):
            raise TypeError(
                "TaskInObservation: task_rng must be a numpy.random.Generator or None, "
                f"got {type(task_rng).__name__}"
            )
        self.resample_tasks_on_reset = bool(resample_tasks_on_reset)
        self.task_rng = task_rng
        self._cached_task: Any = None
        self._cached_features: np.ndarray | None = None
        try:
            features = self._features()
        except NotImplementedError:  # TaskEnv's placeholder task_to_array
            raise TypeError(
                f"TaskInObservation: {type(base).__name__}.task_to_array is not implemented; the oracle needs "
                f"a fixed-length float vector describing each task"
            ) from None
        declared = getattr(base, "task_space", None)
        task_space = _task_space_for(declared, features.shape[0], "TaskInObservation")
        self.observation_space = _concat_space(env.observation_space, task_space, "TaskInObservation")

    # --- the task-distribution interface, forwarded (gym.Wrapper does not forward attributes) ---
    def sample_tasks(self, n: int, rng: np.random.Generator) -> list:
        return self.env.unwrapped.sample_tasks(n, rng)

    def set_task(self, task) -> None:
        self.env.unwrapped.set_task(task)

    def get_task(self):
        return self.env.unwrapped.get_task()

    def task_to_array(self, task) -> np.ndarray:
        return _as_features(self._task_to_array(task), "TaskInObservation")

    def _features(self) -> np.ndarray:
        task = self.env.unwrapped.get_task()
        # Tasks are immutable, so the features only need recomputing when the task object changes
        # (set_task may also be called on the unwrapped env directly, hence no cache set in set_task).
        if self._cached_features is None or task is not self._cached_task:
            self._cached_features = self.task_to_array(task)
            self._cached_task = task
        return self._cached_features

    def _augment(self, obs) -> np.ndarray:
        return np.concatenate([np.asarray(obs, dtype=np.float32).ravel(), self._features()])

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        if self.resample_tasks_on_reset:
            if seed is not None:
                self.task_rng = np.random.default_rng([int(seed), _TASK_STREAM_SALT])
            elif self.task_rng is None:
                # Unseeded and no generator given: fresh OS entropy, exactly what an unseeded
                # Gymnasium env (and BatchedTaskEnv) does for its own stream.
                self.task_rng = seeding.np_random(None)[0]
            # The task is set before the inner reset so x1 ~ q(x1 | new task).
            self.env.unwrapped.set_task(self.env.unwrapped.sample_tasks(1, self.task_rng)[0])
        obs, info = self.env.reset(seed=seed, options=options)
        return self._augment(obs), info

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        return self._augment(obs), reward, terminated, truncated, info


def make_oracle_env(
    env_id: str,
    *,
    resample_tasks_on_reset: bool = False,
    task_rng: np.random.Generator | None = None,
    **make_kwargs: Any,
) -> TaskInObservation:
    """``gymnasium.make(env_id, **make_kwargs)`` (time limit included) wrapped in :class:`TaskInObservation`."""
    env_spec(env_id)  # a clear error listing the registered ids when env_id is unknown
    env = gym.make(env_id, **make_kwargs)
    return TaskInObservation(env, resample_tasks_on_reset=resample_tasks_on_reset, task_rng=task_rng)


class BatchedTaskInObservation(BatchedTaskEnv):
    """Append each sub-environment's task features to its observation, for any :class:`BatchedTaskEnv`.

    Seeding, tasks and RNG state are the wrapped env's own (this wrapper holds no randomness).
    ``task_to_array`` / ``task_space`` default to the wrapped env's attributes, or those of the first
    single env of a :class:`metarl.sampling.vector.GymLoopVectorEnv`.
    """

    def __init__(
        self,
        venv: BatchedTaskEnv,
        task_to_array: Callable | None = None,
        task_space: gym.spaces.Box | None = None,
    ):
        # BatchedTaskEnv.__init__ is not called: it would create generators of its own, whereas every
        # random draw belongs to the wrapped env.
        if not isinstance(venv, BatchedTaskEnv):
            raise TypeError(f"BatchedTaskInObservation wraps a BatchedTaskEnv, got {type(venv).__name__}")
        self.venv = venv
        self.num_envs = venv.num_envs
        self.supervised_loss = venv.supervised_loss
        first_env = venv.envs[0].unwrapped if getattr(venv, "envs", None) else None
        fn = _first_not_none(
            task_to_array, getattr(venv, "task_to_array", None), getattr(first_env, "task_to_array", None)
        )
        if not callable(fn):
            raise TypeError(
                f"BatchedTaskInObservation: cannot find task_to_array for {type(venv).__name__}; pass "
                f"task_to_array=... explicitly"
            )
        self._task_to_array = fn
        self._task_arr: np.ndarray | None = None
        tasks = list(venv.get_tasks())
        if any(t is None for t in tasks) and first_env is not None:
            tasks = [e.unwrapped.get_task() for e in venv.envs]  # the loop fallback's defaults
        if all(t is not None for t in tasks):
            self._task_arr = self._stack(tasks)
            task_dim = self._task_arr.shape[1]
        else:
            # No task known yet: the dimension comes from the declared task space, or set_tasks first.
            space = _first_not_none(task_space, getattr(venv, "task_space", None))
            if space is None:
                raise ValueError(
                    "BatchedTaskInObservation: the wrapped env has no tasks yet and no task_space; call "
                    "venv.set_tasks(...) before wrapping"
                )
            task_dim = space.shape[0]
        declared = _first_not_none(
            task_space, getattr(venv, "task_space", None), getattr(first_env, "task_space", None)
        )
        self.task_space = _task_space_for(declared, task_dim, "BatchedTaskInObservation")
        self.single_observation_space = _concat_space(
            venv.single_observation_space, self.task_space, "BatchedTaskInObservation"
        )
        self.single_action_space = venv.single_action_space

    def _stack(self, tasks: Sequence) -> np.ndarray:
        return np.stack([_as_features(self._task_to_array(t), "BatchedTaskInObservation") for t in tasks])

    # --- forwarded state: this wrapper owns no generators and no tasks of its own ---
    @property
    def rngs(self) -> list[np.random.Generator]:
        return self.venv.rngs

    @property
    def tasks(self) -> list:
        return self.venv.tasks

    def seed(self, seeds: Sequence[int]) -> None:
        self.venv.seed(seeds)

    def set_tasks(self, tasks: Sequence) -> None:
        self.venv.set_tasks(tasks)
        arr = self._stack(tasks)
        if arr.shape[1] != self.task_space.shape[0]:
            raise ValueError(
                f"BatchedTaskInObservation: task_to_array gave {arr.shape[1]} features, expected "
                f"{self.task_space.shape[0]}"
            )
        self._task_arr = arr

    def get_tasks(self) -> list:
        return self.venv.get_tasks()

    def get_rng_state(self) -> list[dict]:
        return self.venv.get_rng_state()

    def set_rng_state(self, states: list[dict]) -> None:
        self.venv.set_rng_state(states)

    def close(self) -> None:
        self.venv.close()

    def _augment(self, obs: np.ndarray) -> np.ndarray:
        if self._task_arr is None:
            raise RuntimeError("BatchedTaskInObservation: call set_tasks(...) before reset()/step()")
        obs = np.asarray(obs, dtype=np.float32).reshape(self.num_envs, -1)
        return np.concatenate([obs, self._task_arr], axis=1)

    def reset(self):
        obs, info = self.venv.reset()
        return self._augment(obs), info

    def step(self, actions):
        obs, reward, terminated, truncated, info = self.venv.step(actions)
        return self._augment(obs), reward, terminated, truncated, info


def make_oracle_vector_env(
    env_id: str, num_envs: int, backend: str = "auto", **env_kwargs: Any
) -> BatchedTaskInObservation:
    """:func:`metarl.sampling.vector.make_vector_env` wrapped in :class:`BatchedTaskInObservation`."""
    return BatchedTaskInObservation(make_vector_env(env_id, num_envs, backend=backend, **env_kwargs))
