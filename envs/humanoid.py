"""HumanoidDir, PEARL's humanoid direction task distribution.

Definition from the authors' code (github.com/katerakelly/oyster, rlkit/envs/humanoid_dir.py, over
gym's Humanoid): direction theta ~ U[0, 2 pi), reward = 1.25 v_xy . (cos theta, sin theta)
- 0.1 ||a||^2 + 5 (alive bonus on every step); the episode ends when the torso height leaves [1, 2].
(oyster writes the velocity term as 0.25 d . (p_after - p_before) / opt.timestep; with frame skip 5
that is 1.25 d . v over the env step, Humanoid-v5's forward_reward_weight.) Model, frame skip 5
(dt = 0.015 s) and reset noise U[-0.01, 0.01] on qpos and qvel are Gymnasium's ``Humanoid-v5``.

Departures, each stated because the batched twin computes everything from (qpos, qvel), the state
``mujoco.rollout`` returns:

* v_xy is the torso's (the free root joint's) velocity over the env step; oyster uses the centre of
  mass of all bodies (from ``xipos``, which after ``mj_step`` is one integrator stage stale). Both
  move together on average; per step they differ by the limbs' swing.
* The observation is qpos[2:] ++ qvel (45), Humanoid-v5 with every ``include_*_in_observation``
  off. oyster also appends cinert, cvel and qfrc_actuator (functions of the state and action that the
  policy would otherwise have to learn) and cfrc_ext.
* No contact cost: oyster's min(0.5e-6 ||cfrc_ext||^2, 10) was zero in its runs, since mujoco-py on
  MuJoCo 2.0 (its README) never computes cfrc_ext (openai/gym#1541); see envs/ant.py.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from metarl.envs.mujoco_tasks import (
    BatchedMujocoTaskEnv, DirectionTasks, MujocoTaskEnv, ctrl_cost, real_number, uniform_reset_state,
)

HEALTHY_Z = (1.0, 2.0)  # oyster: done = z < 1 or z > 2


@dataclass(frozen=True)
class HumanoidDirTask:
    """Walk in the direction at ``angle`` radians from +x on the plane."""

    angle: float

    def __post_init__(self):
        object.__setattr__(self, "angle", real_number(self.angle, "HumanoidDirTask.angle"))


class HumanoidDirEnv(DirectionTasks, MujocoTaskEnv):
    """Walk in direction theta ~ U[0, 2 pi): reward = 1.25 v_xy . (cos theta, sin theta) - 0.1 ||a||^2 + 5."""

    XML_FILE = "humanoid.xml"  # Gymnasium's Humanoid-v5 model
    FRAME_SKIP = 5
    RESET_NOISE_SCALE = 1e-2
    CTRL_COST_WEIGHT = 0.1
    FORWARD_REWARD_WEIGHT = 1.25
    ALIVE_BONUS = 5.0
    task_type = HumanoidDirTask
    default_task = HumanoidDirTask(0.0)
    # sample_tasks, task_to_array (cos theta, sin theta), task_params, task_space: DirectionTasks
    reset_state = staticmethod(uniform_reset_state)  # Humanoid-v5's reset_model draws, in its order

    @staticmethod
    def observation(qpos, qvel):
        return np.concatenate([qpos[..., 2:], qvel], axis=-1)

    @classmethod
    def reward(cls, qpos_before, qpos_after, qvel_after, action, task_params, dt, ctrl_cost_weight):
        vx, vy, along = cls.planar_velocity(qpos_before, qpos_after, task_params, dt)
        forward = cls.FORWARD_REWARD_WEIGHT * along
        ctrl = ctrl_cost(ctrl_cost_weight, action)
        z = qpos_after[..., 2]
        healthy = (z >= HEALTHY_Z[0]) & (z <= HEALTHY_Z[1])
        info = {"x_velocity": vx, "y_velocity": vy, "reward_forward": forward, "reward_ctrl": -ctrl,
                "reward_alive": np.full_like(forward, cls.ALIVE_BONUS)}
        return forward - ctrl + cls.ALIVE_BONUS, healthy, info


class BatchedHumanoidDir(BatchedMujocoTaskEnv):
    """Batched :class:`HumanoidDirEnv`."""

    single_env_class = HumanoidDirEnv
    task_to_array = staticmethod(HumanoidDirEnv.task_to_array)
    task_space = HumanoidDirEnv.task_space


HumanoidDirEnv.batched_env_class = BatchedHumanoidDir
