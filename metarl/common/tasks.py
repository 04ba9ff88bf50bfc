"""The task definition: how a task distribution maps onto a Gymnasium environment.

A task is T = {loss L, initial-state distribution q(x1), transitions q(x_{t+1} | x_t, a_t), horizon H}.

* A *task distribution* is a ``gymnasium.Env`` that also has ``sample_tasks(n, rng)``,
  ``set_task(task)`` and ``get_task()``. ``reset()`` draws x1 ~ q(x1 | task), ``step()`` is the
  transition and returns reward = -L, and H is the ``max_episode_steps`` the env is registered with.
* A *task* is a small, typed, picklable, comparable value (a frozen dataclass), drawn only from the
  ``numpy.random.Generator`` passed in: no global random state anywhere.
* Supervised regression is H = 1: ``reset()`` returns the input x, the action is the model's
  prediction, ``step`` returns reward = -loss and ``info["target"]``, and the class names a
  differentiable torch loss in ``supervised_loss`` so an inner loop can backpropagate through it.

Any third-party environment with the three methods works everywhere ours do; :class:`TaskEnv` is
an optional convenience base class. Environments may also offer a natively batched implementation
(``batched_env_class``, a :class:`BatchedTaskEnv`) that the collector uses instead of stepping
single environments in a loop (metarl/sampling/vector.py).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Callable, ClassVar, Sequence

import gymnasium as gym
import numpy as np
from gymnasium.utils import seeding

REQUIRED_METHODS = ("sample_tasks", "set_task", "get_task")


class TaskEnv(gym.Env):
    """Optional base class for task distributions.

    Subclasses implement ``sample_tasks``, ``set_task`` / ``get_task`` and, for the oracle
    comparison, ``task_to_array`` (a fixed-length float vector describing the task).
    """

    #: The frozen dataclass type of this distribution's tasks.
    task_type: ClassVar[type]
    #: For supervised (H = 1) tasks: ``loss(prediction, target) -> per-sample loss`` (torch, differentiable).
    supervised_loss: ClassVar[Callable | None] = None
    #: A :class:`BatchedTaskEnv` subclass stepping many copies without Python per env.
    batched_env_class: ClassVar[type | None] = None

    def sample_tasks(self, n: int, rng: np.random.Generator) -> list:
        raise NotImplementedError

    def set_task(self, task) -> None:
        raise NotImplementedError

    def get_task(self):
        raise NotImplementedError

    @staticmethod
    def task_to_array(task) -> np.ndarray:
        """The task as a float32 vector (what the oracle policy sees)."""
        raise NotImplementedError


def check_task_distribution(env: gym.Env, env_id: str = "") -> None:
    """Raise a clear error if ``env`` lacks the task-distribution methods."""
    base = env.unwrapped
    missing = [m for m in REQUIRED_METHODS if not callable(getattr(base, m, None))]
    if missing:
        name = env_id or type(base).__name__
        raise TypeError(
            f"environment {name!r} ({type(base).__module__}.{type(base).__qualname__}) is not a task "
            f"distribution: it lacks {', '.join(missing)}; expected methods "
            f"sample_tasks(n, rng) -> list[Task], set_task(task), get_task()"
        )


def check_sample_tasks_args(n: int, rng: Any) -> None:
    """Shared argument check for ``sample_tasks`` implementations."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise ValueError(f"sample_tasks: n must be a non-negative integer, got {n!r}")
    if not isinstance(rng, np.random.Generator):
        raise TypeError(
            f"sample_tasks: rng must be a numpy.random.Generator (e.g. numpy.random.default_rng(0)), "
            f"got {type(rng).__name__}"
        )


def check_task_type(task: Any, expected: type, env_name: str) -> None:
    if not isinstance(task, expected):
        raise TypeError(f"{env_name}.set_task expected a {expected.__name__}, got {task!r}")


def tasks_to_array(env: gym.Env, tasks: Sequence) -> np.ndarray:
    """Stack ``task_to_array`` over tasks into a float32 array [n, task_dim]."""
    fn = getattr(env.unwrapped, "task_to_array", None)
    if fn is None:
        raise TypeError(
            f"{type(env.unwrapped).__name__} has no task_to_array(task); the oracle comparison needs it"
        )
    return np.stack([np.asarray(fn(t), dtype=np.float32) for t in tasks])


def discrete_action(action, n: int, where: str) -> int:
    """One discrete action as an int in [0, n), with a clear error otherwise."""
    a = np.asarray(action)
    # Integer-valued floats are accepted because a batched action array may be float-typed.
    if a.shape not in ((), (1,)) or a.dtype.kind not in "iuf":
        raise ValueError(f"{where}: expected an integer action in [0, {n}), got {action!r}")
    value = a.reshape(())
    if not (0 <= value < n and value == np.floor(value)):
        raise ValueError(f"{where}: expected an integer action in [0, {n}), got {action!r}")
    return int(value)


def discrete_actions(actions, num_envs: int, n: int, active: np.ndarray, where: str) -> np.ndarray:
    """A batch of discrete actions as int64 [num_envs]; only running sub-envs' actions must be valid."""
    a = np.asarray(actions)
    if a.shape == (num_envs, 1):
        a = a[:, 0]
    if a.shape != (num_envs,) or a.dtype.kind not in "iuf":
        raise ValueError(f"{where}: expected {num_envs} integer actions, got shape {a.shape} dtype {a.dtype}")
    # Finished sub-envs may be given filler actions by the collector.
    a_active = a[active]
    bad = ~((a_active >= 0) & (a_active < n) & (a_active == np.floor(a_active)))
    if np.any(bad):
        raise ValueError(f"{where}: actions must be integers in [0, {n}), got {a_active[bad]!r}")
    return np.where(active, a, 0).astype(np.int64)


class BatchedTaskEnv(ABC):
    """``num_envs`` copies of one task distribution, each holding its own task.

    Subclasses set ``single_observation_space`` and ``single_action_space`` and implement
    :meth:`set_tasks`, :meth:`reset` and :meth:`step`; they draw sub-environment i's randomness from
    ``self.rngs[i]`` in the same order the single environment draws from ``self.np_random``.
    """

    single_observation_space: gym.Space
    single_action_space: gym.Space
    #: for supervised (H = 1) distributions, the differentiable torch loss (copied from the env class)
    supervised_loss = None

    def __init__(self, num_envs: int):
        if isinstance(num_envs, bool) or not isinstance(num_envs, (int, np.integer)) or num_envs < 1:
            raise ValueError(f"num_envs must be a positive integer, got {num_envs!r}")
        self.num_envs = int(num_envs)
        self.rngs: list[np.random.Generator] = [seeding.np_random(None)[0] for _ in range(self.num_envs)]
        self.tasks: list = [None] * self.num_envs

    def seed(self, seeds: Sequence[int]) -> None:
        """Reseed each sub-environment as ``reset(seed=seeds[i])`` would seed a single env."""
        if len(seeds) != self.num_envs:
            raise ValueError(f"seed() needs {self.num_envs} seeds, got {len(seeds)}")
        self.rngs = [seeding.np_random(int(s))[0] for s in seeds]

    def set_tasks(self, tasks: Sequence) -> None:
        if len(tasks) != self.num_envs:
            raise ValueError(f"set_tasks() needs one task per sub-environment ({self.num_envs}), got {len(tasks)}")
        self.tasks = list(tasks)
        self._tasks_changed()

    def get_tasks(self) -> list:
        return list(self.tasks)

    def _tasks_changed(self) -> None:
        """Hook: rebuild per-task arrays after :meth:`set_tasks`."""

    @abstractmethod
    def reset(self) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Reset every sub-environment; return observations [B, ...] and an info dict of arrays."""

    @abstractmethod
    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict]:
        """Step every sub-environment: obs [B, ...], reward [B], terminated [B], truncated [B], info."""

    def get_rng_state(self) -> list[dict]:
        return [r.bit_generator.state for r in self.rngs]

    def set_rng_state(self, states: list[dict]) -> None:
        for r, s in zip(self.rngs, states, strict=True):
            r.bit_generator.state = s

    def close(self) -> None:
        pass
