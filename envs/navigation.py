"""2D point navigation (Finn et al. 2017, "Model-Agnostic Meta-Learning", section 5.2).

A task is a goal position drawn uniformly from [-0.5, 0.5]^2. Every episode starts at the origin
(no randomness at all in the dynamics). The action is a velocity command, clipped to [-0.1, 0.1] per
coordinate inside ``step``; the new position is position + clipped action, the reward is minus the
Euclidean distance from the new position to the goal, and the episode terminates once that distance
is below 0.01. The observation is the current position. The horizon H = 100 is the registered
``max_episode_steps``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from numbers import Real

import gymnasium as gym
import numpy as np

from metarl.common.tasks import BatchedTaskEnv, TaskEnv, check_sample_tasks_args, check_task_type

GOAL_RANGE = (-0.5, 0.5)
MAX_STEP = 0.1
GOAL_RADIUS = 0.01


@dataclass(frozen=True)
class NavigationTask:
    """The goal position (x, y)."""

    goal: tuple[float, float]

    def __post_init__(self):
        goal = tuple(self.goal) if isinstance(self.goal, (tuple, list, np.ndarray)) else None
        if goal is None or len(goal) != 2 or not all(
            isinstance(g, Real) and not isinstance(g, bool) and math.isfinite(g) for g in goal
        ):
            raise ValueError(f"NavigationTask.goal must be two finite real numbers (x, y), got {self.goal!r}")
        # Python floats so equal goals compare and hash equal whatever numeric type built them.
        object.__setattr__(self, "goal", (float(goal[0]), float(goal[1])))


DEFAULT_TASK = NavigationTask(goal=(0.0, 0.0))


def _move(position: np.ndarray, goal: np.ndarray, action: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """New positions and their distances to the goals, for arrays shaped [..., 2].

    Shared by the single and the batched env (the distance is written out rather than calling
    ``np.linalg.norm``, whose 1-D and batched code paths need not round identically).
    """
    new_position = position + np.clip(action, -MAX_STEP, MAX_STEP)
    diff = new_position - goal
    distance = np.sqrt(diff[..., 0] * diff[..., 0] + diff[..., 1] * diff[..., 1])
    return new_position, distance


def _action_array(action, shape: tuple[int, ...], where: str, active: np.ndarray | None = None) -> np.ndarray:
    try:
        a = np.asarray(action, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{where}: expected a numeric action of shape {shape}, got {action!r}") from None
    if a.shape != shape:
        raise ValueError(f"{where}: expected an action of shape {shape}, got shape {a.shape}")
    checked = a if active is None else a[active]
    if not np.all(np.isfinite(checked)):
        # A NaN action would silently poison the position for the rest of the episode.
        raise ValueError(f"{where}: actions must be finite, got {checked[~np.isfinite(checked).all(-1)]!r}")
    return a


def _observation_space() -> gym.spaces.Box:
    # Unbounded: the point is free to leave the goal square (at most 0.1 per step, for H steps).
    return gym.spaces.Box(-np.inf, np.inf, shape=(2,), dtype=np.float32)


def _action_space() -> gym.spaces.Box:
    return gym.spaces.Box(-MAX_STEP, MAX_STEP, shape=(2,), dtype=np.float32)


def _task_space() -> gym.spaces.Box:
    return gym.spaces.Box(GOAL_RANGE[0], GOAL_RANGE[1], shape=(2,), dtype=np.float32)


class Navigation2DEnv(TaskEnv):
    """Point agent in the plane that must reach a task-specific goal."""

    task_type = NavigationTask
    metadata = {"render_modes": []}

    def __init__(self):
        self.observation_space = _observation_space()
        self.action_space = _action_space()
        #: bounds of ``task_to_array`` over the training distribution (used by the oracle wrapper)
        self.task_space = _task_space()
        self._task = DEFAULT_TASK
        self._goal = np.array(DEFAULT_TASK.goal)
        self._position = np.zeros(2)

    def sample_tasks(self, n: int, rng: np.random.Generator) -> list[NavigationTask]:
        check_sample_tasks_args(n, rng)
        goals = rng.uniform(*GOAL_RANGE, size=(n, 2))
        return [NavigationTask(goal=(float(g[0]), float(g[1]))) for g in goals]

    def set_task(self, task: NavigationTask) -> None:
        check_task_type(task, NavigationTask, type(self).__name__)
        self._task = task
        self._goal = np.array(task.goal, dtype=np.float64)

    def get_task(self) -> NavigationTask:
        return self._task

    @staticmethod
    def task_to_array(task: NavigationTask) -> np.ndarray:
        return np.array(task.goal, dtype=np.float32)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self._position = np.zeros(2)  # deterministic start at the origin, as in the MAML paper
        return self._position.astype(np.float32), {}

    def step(self, action):
        a = _action_array(action, (2,), "Navigation2DEnv.step")
        # Same [B, 2] code path as the batched env so results are bit-identical.
        new_position, distance = _move(self._position[None], self._goal[None], a[None])
        self._position = new_position[0]
        d = float(distance[0])
        return self._position.astype(np.float32), -d, bool(d < GOAL_RADIUS), False, {}


class BatchedNavigation2DEnv(BatchedTaskEnv):
    """``num_envs`` navigation tasks stepped as one [B, 2] numpy computation.

    A sub-environment whose episode has terminated stays where it is until ``reset()``: further
    steps return its last position, reward 0 and terminated False, as the loop fallback does.
    """

    task_to_array = staticmethod(Navigation2DEnv.task_to_array)

    def __init__(self, num_envs: int):
        super().__init__(num_envs)
        self.single_observation_space = _observation_space()
        self.single_action_space = _action_space()
        self.task_space = _task_space()
        self._position = np.zeros((self.num_envs, 2))
        self._done = np.ones(self.num_envs, dtype=bool)
        self._was_reset = False
        self.set_tasks([DEFAULT_TASK] * self.num_envs)

    def _tasks_changed(self) -> None:
        for task in self.tasks:
            check_task_type(task, NavigationTask, type(self).__name__)
        self._goal = np.array([t.goal for t in self.tasks], dtype=np.float64)

    def reset(self):
        self._position = np.zeros((self.num_envs, 2))
        self._done[:] = False
        self._was_reset = True
        return self._position.astype(np.float32), {}

    def step(self, actions):
        if not self._was_reset:
            raise RuntimeError("BatchedNavigation2DEnv.step called before reset()")
        active = ~self._done
        a = _action_array(actions, (self.num_envs, 2), "BatchedNavigation2DEnv.step", active)
        new_position, distance = _move(self._position, self._goal, a)
        self._position = np.where(active[:, None], new_position, self._position)
        reward = np.where(active, -distance, 0.0)
        terminated = active & (distance < GOAL_RADIUS)
        self._done |= terminated
        truncated = np.zeros(self.num_envs, dtype=bool)
        return self._position.astype(np.float32), reward, terminated, truncated, {}


Navigation2DEnv.batched_env_class = BatchedNavigation2DEnv
