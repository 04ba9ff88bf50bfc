"""Half-cheetah task distributions from the MAML paper: goal velocity and goal direction.

Both are Gymnasium's ``HalfCheetah-v5`` (same MuJoCo model, frame skip 5 so dt = 0.05 s, same
observation ``qpos[1:] ++ qvel`` as float64, same reset noise, never terminates) with the reward
replaced by the task's:

* ``metarl/HalfCheetahVel-v0``: goal velocity v* ~ U[0, 2], reward = -|v_x - v*| - 0.05 ||a||^2
* ``metarl/HalfCheetahDir-v0``: direction d = ±1 (prob 1/2 each), reward = d v_x - 0.05 ||a||^2

where v_x = (x_after - x_before) / dt, measured as v5 measures it. The MAML paper's rllab cheetah
steps the physics once per env step; this one steps it 5 times, so returns are not comparable.

Each class has a natively batched twin (``batched_env_class``) that steps B cheetahs with
``mujoco.rollout`` on a thread pool; both are built on envs/mujoco_tasks.py, which computes
observations and rewards with the same numpy functions on the state arrays, so the two give
bit-identical observations and rewards for the same seeds, tasks and actions. Like every env there,
each env step starts the constraint solver from a zero warm start (see that module), the one
deliberate difference from stock v5.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import gymnasium as gym
import numpy as np

from metarl.common.tasks import check_sample_tasks_args
from metarl.envs.mujoco_tasks import (
    BatchedMujocoTaskEnv,
    MujocoTaskEnv,
    ctrl_cost,
    load_model,  # noqa: F401  (re-exported: the model loader the cheetah tests compare)
    normal_velocity_reset_state,
)

CTRL_COST_WEIGHT = 0.05  # MAML paper: -0.05 ||a||^2 for both cheetah tasks
RESET_NOISE_SCALE = 0.1  # v5 default
FRAME_SKIP = 5  # v5 default
XML_FILE = "half_cheetah.xml"  # v5's bundled model


# --------------------------------------------------------------------------------------------- tasks


@dataclass(frozen=True)
class HalfCheetahVelTask:
    """Run at ``goal_velocity`` (m/s along +x)."""

    goal_velocity: float

    def __post_init__(self):
        if isinstance(self.goal_velocity, bool) or not isinstance(self.goal_velocity, (int, float, np.number)):
            raise TypeError(f"HalfCheetahVelTask.goal_velocity must be a real number, got {self.goal_velocity!r}")
        if not math.isfinite(self.goal_velocity):
            raise ValueError(f"HalfCheetahVelTask.goal_velocity must be finite, got {self.goal_velocity!r}")
        # store a plain float so tasks compare, hash and pickle the same whatever type came in
        object.__setattr__(self, "goal_velocity", float(self.goal_velocity))


@dataclass(frozen=True)
class HalfCheetahDirTask:
    """Run in ``direction`` (+1 forward, -1 backward)."""

    direction: int

    def __post_init__(self):
        if isinstance(self.direction, bool) or self.direction not in (-1, 1):
            raise ValueError(f"HalfCheetahDirTask.direction must be -1 or +1, got {self.direction!r}")
        object.__setattr__(self, "direction", int(self.direction))


# --------------------------------------------------------------------------------------- single envs


class _HalfCheetahTaskEnv(MujocoTaskEnv):
    """HalfCheetah-v5's model, frame skip, reset and observation; the reward is the task's forward term
    minus 0.05 ||a||^2, on the action as given (MuJoCo clamps ctrl to ctrlrange; the collector clips
    before the env sees it)."""

    XML_FILE = XML_FILE
    FRAME_SKIP = FRAME_SKIP
    RESET_NOISE_SCALE = RESET_NOISE_SCALE
    CTRL_COST_WEIGHT = CTRL_COST_WEIGHT
    HAS_HEALTH = False  # never terminates; the horizon H is the TimeLimit the env is registered with
    POSITION_INFO = {"x_position": 0}  # rootx
    reset_state = staticmethod(normal_velocity_reset_state)  # HalfCheetah-v5's reset_model draws

    @staticmethod
    def observation(qpos, qvel):
        return np.concatenate([qpos[..., 1:], qvel], axis=-1)  # v5: qpos[1:] ++ qvel

    @classmethod
    def reward(cls, qpos_before, qpos_after, qvel_after, action, task_params, dt, ctrl_cost_weight):
        x_velocity = (qpos_after[..., 0] - qpos_before[..., 0]) / dt  # as v5 measures it
        forward = cls.forward_reward(x_velocity, task_params[..., 0])
        ctrl = ctrl_cost(ctrl_cost_weight, action)
        info = {"x_velocity": x_velocity, "reward_forward": forward, "reward_ctrl": -ctrl}
        return forward - ctrl, np.ones_like(forward, dtype=bool), info

    @staticmethod
    def forward_reward(x_velocity, param):
        """The task term of the reward, vectorized over rows."""
        raise NotImplementedError


class HalfCheetahVelEnv(_HalfCheetahTaskEnv):
    """Run at a goal velocity v* ~ U[0, 2]: reward = -|v_x - v*| - 0.05 ||a||^2."""

    task_type = HalfCheetahVelTask
    #: used until set_task is called (the middle of the task range)
    default_task = HalfCheetahVelTask(1.0)
    GOAL_LOW, GOAL_HIGH = 0.0, 2.0
    #: bounds of task_to_array (the oracle's extra observation features)
    task_space = gym.spaces.Box(GOAL_LOW, GOAL_HIGH, shape=(1,), dtype=np.float32)

    def sample_tasks(self, n: int, rng: np.random.Generator) -> list[HalfCheetahVelTask]:
        check_sample_tasks_args(n, rng)
        return [HalfCheetahVelTask(float(v)) for v in rng.uniform(self.GOAL_LOW, self.GOAL_HIGH, size=int(n))]

    @staticmethod
    def task_to_array(task: HalfCheetahVelTask) -> np.ndarray:
        return np.array([task.goal_velocity], dtype=np.float32)

    @staticmethod
    def task_params(task: HalfCheetahVelTask) -> np.ndarray:
        return np.array([task.goal_velocity])

    @staticmethod
    def forward_reward(x_velocity, goal_velocity):
        return -np.abs(x_velocity - goal_velocity)


class HalfCheetahDirEnv(_HalfCheetahTaskEnv):
    """Run forward (d = +1) or backward (d = -1), each with probability 1/2: reward = d v_x - 0.05 ||a||^2."""

    task_type = HalfCheetahDirTask
    #: used until set_task is called (forward, like v5)
    default_task = HalfCheetahDirTask(1)
    #: bounds of task_to_array (the oracle's extra observation features)
    task_space = gym.spaces.Box(-1.0, 1.0, shape=(1,), dtype=np.float32)

    def sample_tasks(self, n: int, rng: np.random.Generator) -> list[HalfCheetahDirTask]:
        check_sample_tasks_args(n, rng)
        return [HalfCheetahDirTask(int(d)) for d in 2 * rng.integers(0, 2, size=int(n)) - 1]

    @staticmethod
    def task_to_array(task: HalfCheetahDirTask) -> np.ndarray:
        return np.array([task.direction], dtype=np.float32)

    @staticmethod
    def task_params(task: HalfCheetahDirTask) -> np.ndarray:
        return np.array([float(task.direction)])

    @staticmethod
    def forward_reward(x_velocity, direction):
        return direction * x_velocity


# -------------------------------------------------------------------------------------- batched envs


class BatchedHalfCheetahVel(BatchedMujocoTaskEnv):
    """Batched :class:`HalfCheetahVelEnv`."""

    single_env_class = HalfCheetahVelEnv
    task_to_array = staticmethod(HalfCheetahVelEnv.task_to_array)
    task_space = HalfCheetahVelEnv.task_space


class BatchedHalfCheetahDir(BatchedMujocoTaskEnv):
    """Batched :class:`HalfCheetahDirEnv`."""

    single_env_class = HalfCheetahDirEnv
    task_to_array = staticmethod(HalfCheetahDirEnv.task_to_array)
    task_space = HalfCheetahDirEnv.task_space


HalfCheetahVelEnv.batched_env_class = BatchedHalfCheetahVel
HalfCheetahDirEnv.batched_env_class = BatchedHalfCheetahDir
