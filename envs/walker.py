"""Walker2D with random physical parameters, PEARL's different-dynamics task distribution.

Definition from the authors' code (github.com/katerakelly/oyster, rlkit/envs/walker_rand_params_wrapper.py
over github.com/dennisl88/rand_param_envs, walker2d_rand_params.py and base.py ``RandomEnv``): a task
scales, element by element, every body's mass and the three principal inertias of every body by
1.5^u, every dof's damping by 1.3^u and the three friction coefficients of every geom by 1.5^u,
each u ~ U[-3, 3] independently (``log_scale_limit`` = 3). Reward and episode end are those of the
walker in every task: reward = v_x + 1 - 1e-3 ||a||^2 (survive bonus on every step, as in
rand_param_envs), terminated when the torso height leaves (0.8, 2) or its angle leaves (-1, 1).
Observation qpos[1:] ++ clip(qvel, -10, 10) (17), reset noise U[-0.005, 0.005] on qpos and qvel.

Model: Gymnasium's ``Walker2d-v5`` (walker2d_v5.xml, timestep 0.002, frame skip 4, dt = 0.008 s), like
our cheetahs on v5. rand_param_envs used gym's older walker2d.xml (timestep 0.004, frame skip 4,
dt = 0.016 s, right-foot friction 0.9 instead of 1.9), so returns are not on its scale; pass
``frame_skip=8`` for its dt. After scaling, ``mj_setConst`` recomputes the constants derived from
masses and inertias (e.g. the inverse weights the constraint solver uses), as MuJoCo documents for
edited models; rand_param_envs (MuJoCo 1.31) set the fields only.

The batched twin gives ``mujoco.rollout`` one model per row: a copy of the walker per distinct task
(what a meta-batch has: 40 tasks, 20 rows each). BENCHMARKS.md has its speed against one shared model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import gymnasium as gym
import mujoco
import numpy as np

from metarl.common.tasks import check_sample_tasks_args
from metarl.envs.mujoco_tasks import BatchedMujocoTaskEnv, MujocoTaskEnv, ctrl_cost, uniform_reset_state

def _log_bounds(sign: float) -> np.ndarray:
    values = np.concatenate([np.full(n, sign * LOG_SCALE_LIMIT * math.log(base))
                             for (_, base), n in zip(RAND_PARAMS, _V5_SIZES)])
    # rounded outward to float32, so float32 task arrays of sampled tasks always lie inside
    return np.nextafter(values.astype(np.float32), np.float32(sign * np.inf))


#: (model field, base of the multiplier, elements per row) in rand_param_envs' sampling order
RAND_PARAMS = (("body_mass", 1.5), ("body_inertia", 1.5), ("dof_damping", 1.3), ("geom_friction", 1.5))
LOG_SCALE_LIMIT = 3.0  # rand_param_envs default
HEALTHY_Z = (0.8, 2.0)  # open intervals, as rand_param_envs and Walker2d-v5
HEALTHY_ANGLE = (-1.0, 1.0)
# sizes of the v5 walker (nbody, nbody * 3, nv, ngeom * 3), for the oracle's task_space; a test checks them
_V5_SIZES = (8, 24, 9, 24)


@dataclass(frozen=True)
class Walker2DParamsTask:
    """Multipliers of the walker's model fields, flattened row-major (body_inertia and geom_friction: [n, 3]).

    An empty tuple leaves that field at the model's value (the default task is the unchanged walker).
    """

    body_mass: tuple[float, ...] = ()
    body_inertia: tuple[float, ...] = ()
    dof_damping: tuple[float, ...] = ()
    geom_friction: tuple[float, ...] = ()

    def __post_init__(self):
        for f in fields(self):
            value = getattr(self, f.name)
            arr = np.asarray(value)
            if arr.ndim != 1 or (arr.size and arr.dtype.kind not in "iuf") or isinstance(value, (str, bytes)):
                raise TypeError(f"Walker2DParamsTask.{f.name} must be a flat sequence of numbers, got {value!r}")
            arr = arr.astype(np.float64)
            if not (np.isfinite(arr).all() and (arr > 0).all()):
                raise ValueError(f"Walker2DParamsTask.{f.name} must hold finite positive multipliers, got {value!r}")
            object.__setattr__(self, f.name, tuple(float(v) for v in arr))


class Walker2DRandParamsEnv(MujocoTaskEnv):
    """Walker2d-v5 with mass, inertia, damping and friction scaled per task: reward = v_x + 1 - 1e-3 ||a||^2."""

    XML_FILE = "walker2d_v5.xml"
    FRAME_SKIP = 4
    RESET_NOISE_SCALE = 5e-3
    CTRL_COST_WEIGHT = 1e-3
    SURVIVE_REWARD = 1.0
    CHANGES_DYNAMICS = True
    POSITION_INFO = {"x_position": 0}  # qpos[1] is the height (rootz)
    task_type = Walker2DParamsTask
    default_task = Walker2DParamsTask()
    #: bounds of task_to_array (the log multipliers) for the v5 walker and log_scale_limit 3
    task_space = gym.spaces.Box(low=_log_bounds(-1.0), high=_log_bounds(1.0), dtype=np.float32)

    def __init__(self, log_scale_limit: float = LOG_SCALE_LIMIT, **kwargs):
        if isinstance(log_scale_limit, bool) or not isinstance(log_scale_limit, (int, float, np.number)) or not (
            math.isfinite(log_scale_limit) and log_scale_limit >= 0
        ):
            raise ValueError(f"log_scale_limit must be a finite non-negative number, got {log_scale_limit!r}")
        self.log_scale_limit = float(log_scale_limit)
        super().__init__(**kwargs)
        gym.utils.EzPickle.__init__(self, log_scale_limit, **kwargs)

    def sample_tasks(self, n: int, rng: np.random.Generator) -> list[Walker2DParamsTask]:
        check_sample_tasks_args(n, rng)
        lim = self.log_scale_limit
        tasks = []
        for _ in range(int(n)):  # rand_param_envs' order: per task, the fields in RAND_PARAMS order
            scales = {name: base ** rng.uniform(-lim, lim, size=getattr(self.model, name).size)
                      for name, base in RAND_PARAMS}
            tasks.append(Walker2DParamsTask(**scales))
        return tasks

    @staticmethod
    def task_to_array(task: Walker2DParamsTask) -> np.ndarray:
        """log of every multiplier, concatenated in RAND_PARAMS order; an unset field counts as the v5
        walker's size of ones (log 0), so the default task has the sampled tasks' length."""
        parts = [getattr(task, name) or np.ones(n) for (name, _), n in zip(RAND_PARAMS, _V5_SIZES)]
        return np.log(np.concatenate(parts)).astype(np.float32)

    @staticmethod
    def task_params(task: Walker2DParamsTask) -> np.ndarray:
        return np.zeros(0)  # the task lives in the model, not in the reward

    @staticmethod
    def check_task(task: Walker2DParamsTask, model: mujoco.MjModel) -> None:
        for name, _ in RAND_PARAMS:
            value, size = getattr(task, name), getattr(model, name).size
            if value and len(value) != size:
                raise ValueError(
                    f"Walker2DParamsTask.{name} has {len(value)} multipliers; this model's {name} has {size}"
                )

    @staticmethod
    def model_defaults(model: mujoco.MjModel) -> dict[str, np.ndarray]:
        return {name: getattr(model, name).copy() for name, _ in RAND_PARAMS}

    @staticmethod
    def apply_task_to_model(model, defaults, task, scratch) -> None:
        for name, _ in RAND_PARAMS:
            scale = getattr(task, name)
            default = defaults[name]
            target = getattr(model, name)
            target[:] = default * np.reshape(scale, default.shape) if scale else default
        mujoco.mj_setConst(model, scratch)

    reset_state = staticmethod(uniform_reset_state)  # Walker2d-v5's (and rand_param_envs') reset_model draws

    @staticmethod
    def observation(qpos, qvel):
        return np.concatenate([qpos[..., 1:], np.clip(qvel, -10, 10)], axis=-1)

    @classmethod
    def reward(cls, qpos_before, qpos_after, qvel_after, action, task_params, dt, ctrl_cost_weight):
        vx = (qpos_after[..., 0] - qpos_before[..., 0]) / dt
        ctrl = ctrl_cost(ctrl_cost_weight, action)
        z, angle = qpos_after[..., 1], qpos_after[..., 2]
        healthy = (HEALTHY_Z[0] < z) & (z < HEALTHY_Z[1]) & (HEALTHY_ANGLE[0] < angle) & (angle < HEALTHY_ANGLE[1])
        info = {"x_velocity": vx, "reward_forward": vx, "reward_ctrl": -ctrl,
                "reward_survive": np.full_like(vx, cls.SURVIVE_REWARD)}
        return vx + cls.SURVIVE_REWARD - ctrl, healthy, info


class BatchedWalker2DRandParams(BatchedMujocoTaskEnv):
    """Batched :class:`Walker2DRandParamsEnv`: one model copy per distinct task, a model per rollout row."""

    single_env_class = Walker2DRandParamsEnv
    task_to_array = staticmethod(Walker2DRandParamsEnv.task_to_array)
    task_space = Walker2DRandParamsEnv.task_space

    def __init__(self, num_envs: int, log_scale_limit: float = LOG_SCALE_LIMIT, **kwargs):
        # sampling happens in the single env; accepted so both take the registered kwargs
        self.log_scale_limit = float(log_scale_limit)
        super().__init__(num_envs, **kwargs)


Walker2DRandParamsEnv.batched_env_class = BatchedWalker2DRandParams
