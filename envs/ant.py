"""Ant task distributions of PEARL (Rakelly et al., ICML 2019): direction on the plane and 2-D goal.

Definitions from the authors' code (github.com/katerakelly/oyster, rlkit/envs/ant_dir.py and
ant_goal.py), on Gymnasium's ``Ant-v5`` model (ant.xml: RK4, timestep 0.01, gear 150, frame skip 5 so
dt = 0.05 s, the values of oyster's ant) and its reset noise (qpos + U[-0.1, 0.1], qvel + 0.1 N(0, 1)):

* ``metarl/AntDir-v0``: direction theta ~ U[0, 2 pi), reward = v_xy . (cos theta, sin theta)
  - 0.5 ||a||^2 + 1 (survive bonus, every step as in oyster); terminates when the torso height
  leaves [0.2, 1] or the state is not finite. Observation qpos[2:] ++ qvel (27).
* ``metarl/AntGoal-v0``: goal g = r (cos a, sin a) with a ~ U[0, 2 pi), r = 3 sqrt(U[0, 1]) (uniform
  on the disc of radius 3), reward = -||xy - g||_1 - 0.1 ||a||^2; never terminates. Observation
  qpos ++ qvel (29): the ant sees where it is.

v_xy is the torso's displacement over the env step divided by dt, and xy its position after the step,
both from the free joint's qpos (oyster reads ``xpos`` through ``get_body_com``, one integrator stage
behind; see envs/mujoco_tasks.py). Departures from oyster, both because its contact forces were zero:
oyster's code also charges 0.5e-3 ||clip(cfrc_ext, -1, 1)||^2 and AntGoal appends clip(cfrc_ext) to
the observation, but its README has the ant run on MuJoCo 2.0 through mujoco-py, where ``cfrc_ext`` is
never computed and stays zero (openai/gym#1541), so the published runs had neither; we leave both out.
"""

from __future__ import annotations

from dataclasses import dataclass

import gymnasium as gym
import numpy as np

from metarl.common.tasks import check_sample_tasks_args
from metarl.envs.mujoco_tasks import (
    BatchedMujocoTaskEnv,
    DirectionTasks,
    MujocoTaskEnv,
    ctrl_cost,
    normal_velocity_reset_state,
    real_number,
)

HEALTHY_Z = (0.2, 1.0)  # oyster ant_dir.py: 0.2 <= torso z <= 1.0, closed at both ends


@dataclass(frozen=True)
class AntDirTask:
    """Run in the direction at ``angle`` radians from +x on the plane."""

    angle: float

    def __post_init__(self):
        object.__setattr__(self, "angle", real_number(self.angle, "AntDirTask.angle"))


@dataclass(frozen=True)
class AntGoalTask:
    """Reach the point (``x``, ``y``) on the plane."""

    x: float
    y: float

    def __post_init__(self):
        object.__setattr__(self, "x", real_number(self.x, "AntGoalTask.x"))
        object.__setattr__(self, "y", real_number(self.y, "AntGoalTask.y"))


class _AntTaskEnv(MujocoTaskEnv):
    XML_FILE = "ant.xml"  # Gymnasium's Ant-v5 model
    FRAME_SKIP = 5
    RESET_NOISE_SCALE = 0.1

    reset_state = staticmethod(normal_velocity_reset_state)  # Ant-v5's reset_model draws, in its order


class AntDirEnv(DirectionTasks, _AntTaskEnv):
    """Run in direction theta ~ U[0, 2 pi): reward = v_xy . (cos theta, sin theta) - 0.5 ||a||^2 + 1."""

    CTRL_COST_WEIGHT = 0.5  # oyster ant_dir.py
    SURVIVE_REWARD = 1.0
    task_type = AntDirTask
    default_task = AntDirTask(0.0)  # +x, like Ant-v5
    # sample_tasks, task_to_array (cos theta, sin theta), task_params, task_space: DirectionTasks

    @staticmethod
    def observation(qpos, qvel):
        return np.concatenate([qpos[..., 2:], qvel], axis=-1)

    @classmethod
    def reward(cls, qpos_before, qpos_after, qvel_after, action, task_params, dt, ctrl_cost_weight):
        vx, vy, forward = cls.planar_velocity(qpos_before, qpos_after, task_params, dt)
        ctrl = ctrl_cost(ctrl_cost_weight, action)
        z = qpos_after[..., 2]
        healthy = (
            np.isfinite(qpos_after).all(axis=-1) & np.isfinite(qvel_after).all(axis=-1)
            & (z >= HEALTHY_Z[0]) & (z <= HEALTHY_Z[1])
        )
        info = {"x_velocity": vx, "y_velocity": vy, "reward_forward": forward, "reward_ctrl": -ctrl,
                "reward_survive": np.full_like(forward, cls.SURVIVE_REWARD)}
        return forward - ctrl + cls.SURVIVE_REWARD, healthy, info


class AntGoalEnv(_AntTaskEnv):
    """Reach g uniform on the disc of radius 3: reward = -||xy - g||_1 - 0.1 ||a||^2; never terminates."""

    CTRL_COST_WEIGHT = 0.1  # oyster ant_goal.py
    GOAL_RADIUS = 3.0
    HAS_HEALTH = False  # oyster ant_goal.py: done = False
    task_type = AntGoalTask
    default_task = AntGoalTask(0.0, 0.0)
    task_space = gym.spaces.Box(-GOAL_RADIUS, GOAL_RADIUS, shape=(2,), dtype=np.float32)

    def sample_tasks(self, n: int, rng: np.random.Generator) -> list[AntGoalTask]:
        check_sample_tasks_args(n, rng)
        a = rng.random(int(n)) * 2 * np.pi  # oyster's draws: all angles, then all radii
        r = self.GOAL_RADIUS * rng.random(int(n)) ** 0.5
        return [AntGoalTask(float(x), float(y)) for x, y in zip(r * np.cos(a), r * np.sin(a))]

    @staticmethod
    def task_to_array(task: AntGoalTask) -> np.ndarray:
        return np.array([task.x, task.y], dtype=np.float32)

    @staticmethod
    def task_params(task: AntGoalTask) -> np.ndarray:
        return np.array([task.x, task.y])

    @staticmethod
    def observation(qpos, qvel):
        return np.concatenate([qpos, qvel], axis=-1)

    @staticmethod
    def reward(qpos_before, qpos_after, qvel_after, action, task_params, dt, ctrl_cost_weight):
        goal = -(np.abs(qpos_after[..., 0] - task_params[..., 0]) + np.abs(qpos_after[..., 1] - task_params[..., 1]))
        ctrl = ctrl_cost(ctrl_cost_weight, action)
        info = {"reward_goal": goal, "reward_ctrl": -ctrl}
        return goal - ctrl, np.ones_like(goal, dtype=bool), info


class BatchedAntDir(BatchedMujocoTaskEnv):
    """Batched :class:`AntDirEnv`."""

    single_env_class = AntDirEnv
    task_to_array = staticmethod(AntDirEnv.task_to_array)
    task_space = AntDirEnv.task_space


class BatchedAntGoal(BatchedMujocoTaskEnv):
    """Batched :class:`AntGoalEnv`."""

    single_env_class = AntGoalEnv
    task_to_array = staticmethod(AntGoalEnv.task_to_array)
    task_space = AntGoalEnv.task_space


AntDirEnv.batched_env_class = BatchedAntDir
AntGoalEnv.batched_env_class = BatchedAntGoal
