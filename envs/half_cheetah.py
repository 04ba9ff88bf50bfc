"""Half-cheetah task distributions from the MAML paper: goal velocity and goal direction.

Both are Gymnasium's ``HalfCheetah-v5`` (same MuJoCo model, frame skip 5 so dt = 0.05 s, same
observation ``qpos[1:] ++ qvel`` as float64, same reset noise, never terminates) with the reward
replaced by the task's:

* ``metarl/HalfCheetahVel-v0``: goal velocity v* ~ U[0, 2], reward = -|v_x - v*| - 0.05 ||a||^2
* ``metarl/HalfCheetahDir-v0``: direction d = ±1 (prob 1/2 each), reward = d v_x - 0.05 ||a||^2

where v_x = (x_after - x_before) / dt, measured as v5 measures it. The MAML paper's rllab cheetah
steps the physics once per env step; this one steps it 5 times, so returns are not comparable.

Each class has a natively batched twin (``batched_env_class``) that steps B cheetahs with
``mujoco.rollout`` on a thread pool and computes observations and rewards with numpy on the state
arrays. The two give bit-identical observations and rewards for the same seeds, tasks and actions.

One deliberate difference from stock v5, needed for that equality: every env step starts the
constraint solver from a zero warm start (``qacc_warmstart = 0``), because ``mujoco.rollout`` takes
the warm start as an input but never returns it, so the batched env cannot carry it from one env
step to the next. The solver still converges to its tolerance (1e-8), so the physics is the same up
to floating-point noise, and the transition becomes a function of (qpos, qvel, action) alone.
Cheetah dynamics are chaotic, though: perturbations of 1e-15 grow to O(1) differences in state over
~150 steps, so a trajectory of this env and one of stock v5 from the same seed and actions drift
apart late in an episode, as they would under any floating-point reordering.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any, ClassVar

import mujoco
import mujoco.rollout  # a submodule that `import mujoco` does not load
import gymnasium as gym
import numpy as np
from gymnasium import spaces, utils
from gymnasium.envs.mujoco.half_cheetah_v5 import HalfCheetahEnv
from gymnasium.envs.mujoco.mujoco_env import expand_model_path

from metarl.common.tasks import BatchedTaskEnv, TaskEnv, check_sample_tasks_args, check_task_type

CTRL_COST_WEIGHT = 0.05  # MAML paper: -0.05 ||a||^2 for both cheetah tasks
RESET_NOISE_SCALE = 0.1  # v5 default
FRAME_SKIP = 5  # v5 default
XML_FILE = "half_cheetah.xml"  # v5's bundled model

# v5 keyword arguments that would change what the task defines (reward or observation); refused.
_FIXED_V5_KWARGS = ("forward_reward_weight", "exclude_current_positions_from_observation")


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


# ------------------------------------------------------------------------------------- shared checks


def _check_params(ctrl_cost_weight: Any, reset_noise_scale: Any, frame_skip: Any) -> None:
    for name, value in (("ctrl_cost_weight", ctrl_cost_weight), ("reset_noise_scale", reset_noise_scale)):
        if isinstance(value, bool) or not isinstance(value, (int, float, np.number)) or not (
            math.isfinite(value) and value >= 0
        ):
            raise ValueError(f"{name} must be a finite non-negative number, got {value!r}")
    if isinstance(frame_skip, bool) or not isinstance(frame_skip, (int, np.integer)) or frame_skip < 1:
        raise ValueError(f"frame_skip must be a positive integer, got {frame_skip!r}")


def _ctrl_cost(weight: float, actions: np.ndarray) -> np.ndarray:
    """weight * ||a||^2 over the last axis, in float64 (the precision MuJoCo's ctrl has).

    Single and batched envs both call this, so the sums are formed in the same order and the
    rewards agree bit for bit.
    """
    return weight * np.sum(np.square(actions), axis=-1)


# --------------------------------------------------------------------------------------- single envs


def load_model(xml_file: str) -> mujoco.MjModel:
    """Compile a MuJoCo model file (bare names resolve to Gymnasium's assets, as MujocoEnv does).

    Gymnasium's half_cheetah.xml sets ``settotalmass``, which MuJoCo 4.0 compiles with a deprecation
    warning (and a MUJOCO_LOG.TXT in the working directory) on every load (3.3.0, metaworld's pin,
    does not warn; the result is the same under both). This applies it the way the
    warning asks instead, after compiling: ``mj_setTotalmass`` then ``mj_setConst``. Every array of
    the resulting model equals the one the compiler attribute gives (tests/test_half_cheetah.py).
    """
    spec = mujoco.MjSpec.from_file(expand_model_path(xml_file))
    total = spec.compiler.settotalmass
    if total > 0:
        spec.compiler.settotalmass = -1.0  # MuJoCo's "unset"
    model = spec.compile()
    if total > 0:
        mujoco.mj_setTotalmass(model, total)
        mujoco.mj_setConst(model, mujoco.MjData(model))
    return model


class _HalfCheetahTaskEnv(HalfCheetahEnv, TaskEnv):
    """HalfCheetah-v5 with a task-dependent forward reward and a zero solver warm start per step."""

    task_type: ClassVar[type]
    default_task: ClassVar[Any]

    def __init__(
        self,
        ctrl_cost_weight: float = CTRL_COST_WEIGHT,
        reset_noise_scale: float = RESET_NOISE_SCALE,
        frame_skip: int = FRAME_SKIP,
        xml_file: str = XML_FILE,
        **mujoco_env_kwargs: Any,
    ):
        _check_params(ctrl_cost_weight, reset_noise_scale, frame_skip)
        fixed = [k for k in _FIXED_V5_KWARGS if k in mujoco_env_kwargs]
        if fixed:
            raise ValueError(
                f"{type(self).__name__} does not accept {', '.join(fixed)}: the task defines the reward "
                f"and the observation is fixed to v5's default (qpos[1:], qvel)"
            )
        super().__init__(
            xml_file=xml_file,
            frame_skip=int(frame_skip),
            ctrl_cost_weight=float(ctrl_cost_weight),
            reset_noise_scale=float(reset_noise_scale),
            **mujoco_env_kwargs,
        )
        # HalfCheetahEnv's EzPickle records v5's positional arguments; record ours instead so that
        # unpickling rebuilds this class with the same settings.
        utils.EzPickle.__init__(
            self, ctrl_cost_weight, reset_noise_scale, frame_skip, xml_file, **mujoco_env_kwargs
        )
        self._task = self.default_task

    def _initialize_simulation(self):
        # MujocoEnv's own, with the model compiled by load_model (no deprecation warning).
        model = load_model(self.fullpath)
        model.vis.global_.offwidth = max(model.vis.global_.offwidth, self.width)
        model.vis.global_.offheight = max(model.vis.global_.offheight, self.height)
        return model, mujoco.MjData(model)

    # -- task API -------------------------------------------------------------------------------

    def set_task(self, task) -> None:
        check_task_type(task, self.task_type, type(self).__name__)
        self._task = task

    def get_task(self):
        return self._task

    # EzPickle rebuilds the env from its constructor arguments; carry the task across as well.
    def __getstate__(self):
        return {**super().__getstate__(), "_metarl_task": self._task}

    def __setstate__(self, state):
        state = dict(state)
        task = state.pop("_metarl_task", self.default_task)
        super().__setstate__(state)
        self._task = task

    # -- dynamics -------------------------------------------------------------------------------

    def step(self, action):
        action64 = np.asarray(action, dtype=np.float64)
        if action64.shape != (self.model.nu,):
            raise ValueError(f"action must have shape ({self.model.nu},), got {np.shape(action)}")
        if not np.all(np.isfinite(action64)):
            # MuJoCo would silently zero a non-finite ctrl and the batched twin would stop stepping;
            # neither is what the caller meant.
            raise ValueError(f"action must be finite, got {action!r}")
        x_before = self.data.qpos[0]
        # mujoco.rollout (the batched twin) cannot hand the warm start back, so start every env step
        # from zero here too; see the module docstring.
        self.data.qacc_warmstart[:] = 0.0
        # Out-of-range actions go to MuJoCo unchanged, as in v5: it clamps ctrl to ctrlrange
        # (ctrllimited), while the control cost below uses the action as given.
        self.do_simulation(action64, self.frame_skip)
        x_after = self.data.qpos[0]
        x_velocity = (x_after - x_before) / self.dt
        ctrl_cost = float(_ctrl_cost(self._ctrl_cost_weight, action64))
        reward_forward = float(self._forward_reward(np.float64(x_velocity), self._task_params()))
        info = {
            "x_position": x_after,
            "x_velocity": x_velocity,
            "reward_forward": reward_forward,
            "reward_ctrl": -ctrl_cost,
        }
        if self.render_mode == "human":
            self.render()
        # never terminates; the horizon H is the TimeLimit the env is registered with
        return self._get_obs(), reward_forward - ctrl_cost, False, False, info

    def _task_params(self) -> float:
        raise NotImplementedError

    @staticmethod
    def _forward_reward(x_velocity, param):
        """Task term of the reward; numpy-vectorized so the batched twin shares it."""
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

    def _task_params(self) -> float:
        return self._task.goal_velocity

    @staticmethod
    def _forward_reward(x_velocity, goal_velocity):
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

    def _task_params(self) -> float:
        return float(self._task.direction)

    @staticmethod
    def _forward_reward(x_velocity, direction):
        return direction * x_velocity


# -------------------------------------------------------------------------------------- batched envs


class _BatchedHalfCheetah(BatchedTaskEnv):
    """B half-cheetahs stepped together by ``mujoco.rollout``; no Python loop per sub-env per step.

    State: ``self._state`` [B, nstate] holds each sub-env's mjSTATE_FULLPHYSICS vector (time, qpos,
    qvel; the cheetah has no actuator, history, plugin or plasticity state). One :meth:`step` is one
    ``rollout`` call of ``frame_skip`` physics steps with the action held, written into preallocated
    buffers, on a persistent thread pool of ``num_threads`` threads (one MjData each). Observations,
    x velocity and rewards are then computed from the state arrays with numpy.
    """

    single_env_class: ClassVar[type[_HalfCheetahTaskEnv]]

    def __init__(
        self,
        num_envs: int,
        ctrl_cost_weight: float = CTRL_COST_WEIGHT,
        reset_noise_scale: float = RESET_NOISE_SCALE,
        frame_skip: int = FRAME_SKIP,
        xml_file: str = XML_FILE,
        num_threads: int | None = None,
        chunk_size: int | None = None,
    ):
        super().__init__(num_envs)
        _check_params(ctrl_cost_weight, reset_noise_scale, frame_skip)
        if num_threads is None:
            num_threads = os.cpu_count() or 1
        if isinstance(num_threads, bool) or not isinstance(num_threads, (int, np.integer)) or num_threads < 1:
            raise ValueError(f"num_threads must be a positive integer, got {num_threads!r}")
        if chunk_size is not None and (
            isinstance(chunk_size, bool) or not isinstance(chunk_size, (int, np.integer)) or chunk_size < 1
        ):
            raise ValueError(f"chunk_size must be a positive integer or None, got {chunk_size!r}")
        self.ctrl_cost_weight = float(ctrl_cost_weight)
        self.reset_noise_scale = float(reset_noise_scale)
        self.frame_skip = int(frame_skip)
        self.num_threads = int(num_threads)

        # The same model file the single env loads (MujocoEnv resolves bare names to its assets).
        self.model = load_model(xml_file)
        m = self.model
        self.dt = m.opt.timestep * self.frame_skip  # the expression MujocoEnv.dt uses
        data = mujoco.MjData(m)
        self.init_qpos = data.qpos.ravel().copy()
        self.init_qvel = data.qvel.ravel().copy()

        spec = mujoco.mjtState.mjSTATE_FULLPHYSICS
        self.nstate = mujoco.mj_stateSize(m, spec)
        # mj_getState concatenates the components in bit order: time, qpos, qvel, act, ...
        n_time = mujoco.mj_stateSize(m, mujoco.mjtState.mjSTATE_TIME)
        self._qpos = slice(n_time, n_time + m.nq)
        self._qvel = slice(n_time + m.nq, n_time + m.nq + m.nv)
        self._x = n_time  # rootx is qpos[0]
        # observation = qpos[1:] ++ qvel, which is one contiguous slice of the state
        self._obs = slice(n_time + 1, n_time + m.nq + m.nv)
        self._time = 0 if n_time else None

        self.single_observation_space = spaces.Box(-np.inf, np.inf, shape=(m.nq + m.nv - 1,), dtype=np.float64)
        low, high = m.actuator_ctrlrange.copy().astype(np.float32).T
        self.single_action_space = spaces.Box(low=low, high=high, dtype=np.float32)

        B = self.num_envs
        self._state = np.zeros((B, self.nstate))  # current state, rollout's initial_state
        self._ctrl = np.zeros((B, self.frame_skip, m.nu))  # action repeated over the substeps
        self._out = np.zeros((B, self.frame_skip, self.nstate))  # rollout's state output
        self._reset_done = False

        # Rollout(nthread=0) runs on the calling thread; a pool of 1 would only add a hand-off.
        self._rollout = mujoco.rollout.Rollout(nthread=self.num_threads if self.num_threads > 1 else 0)
        self._datas = [mujoco.MjData(m) for _ in range(self.num_threads)]
        # with skip_checks the C++ side indexes one model per rollout, so give it the full list
        self._models = [m] * B
        self._control_spec = mujoco.mjtState.mjSTATE_CTRL.value
        # rollout's own default is max(1, B // (10 * nthread)) jobs of that size; keep it unless asked
        self.chunk_size = None if chunk_size is None else int(chunk_size)

        self.tasks = [self.single_env_class.default_task] * B
        self._tasks_changed()

    # -- tasks ----------------------------------------------------------------------------------

    def set_tasks(self, tasks) -> None:
        for task in tasks:
            check_task_type(task, self.single_env_class.task_type, type(self).__name__)
        super().set_tasks(tasks)

    def _tasks_changed(self) -> None:
        self._task_param = np.array([self._param_of(t) for t in self.tasks], dtype=np.float64)

    @staticmethod
    def _param_of(task) -> float:
        raise NotImplementedError

    # -- episodes -------------------------------------------------------------------------------

    def reset(self):
        m = self.model
        lo, hi = -self.reset_noise_scale, self.reset_noise_scale
        self._state[:] = 0.0  # time = 0, as after mj_resetData
        for i, rng in enumerate(self.rngs):
            # exactly HalfCheetahEnv.reset_model's draws, in its order, from sub-env i's stream
            qpos = self.init_qpos + rng.uniform(low=lo, high=hi, size=m.nq)
            qvel = self.init_qvel + self.reset_noise_scale * rng.standard_normal(m.nv)
            self._state[i, self._qpos] = qpos
            self._state[i, self._qvel] = qvel
        self._reset_done = True
        return self._state[:, self._obs].copy(), {"x_position": self._state[:, self._x].copy()}

    def step(self, actions):
        if self._rollout is None:
            raise RuntimeError(f"{type(self).__name__}.step() called after close()")
        if not self._reset_done:
            raise RuntimeError(f"{type(self).__name__}.step() called before reset()")
        actions = np.asarray(actions)
        expected = (self.num_envs, self.model.nu)
        if actions.shape != expected:
            raise ValueError(f"actions must have shape {expected}, got {actions.shape}")
        # copy (and cast to float64) into every substep of the control buffer at once
        np.copyto(self._ctrl, actions[:, None, :], casting="same_kind")
        if not np.isfinite(self._ctrl[:, 0]).all():
            bad = np.flatnonzero(~np.isfinite(self._ctrl[:, 0]).all(axis=1))
            raise ValueError(f"actions must be finite; sub-envs {bad.tolist()} got {actions[bad].tolist()}")

        # Shapes, dtypes and contiguity are fixed by construction, so rollout's checks are skipped.
        self._rollout.rollout(
            self._models,
            self._datas,
            self._state,
            self._ctrl,
            control_spec=self._control_spec,
            skip_checks=True,
            nstep=self.frame_skip,
            state=self._out,
            chunk_size=self.chunk_size,
        )
        final = self._out[:, -1]
        if self._time is not None and self.frame_skip > 1:
            # rollout stops stepping a sub-env after a MuJoCo warning (e.g. diverging physics) and
            # repeats its last state; a single env would have carried on, so refuse to continue.
            stalled = final[:, self._time] == self._out[:, -2, self._time]
            if stalled.any():
                raise RuntimeError(
                    f"MuJoCo stopped the simulation of sub-envs {np.flatnonzero(stalled).tolist()} "
                    f"(a physics warning, e.g. unstable accelerations); their states are invalid"
                )
        x_after = final[:, self._x]
        x_velocity = (x_after - self._state[:, self._x]) / self.dt
        ctrl_cost = _ctrl_cost(self.ctrl_cost_weight, self._ctrl[:, 0])
        reward_forward = self.single_env_class._forward_reward(x_velocity, self._task_param)
        reward = reward_forward - ctrl_cost
        np.copyto(self._state, final)
        obs = final[:, self._obs].copy()
        info = {
            "x_position": x_after.copy(),
            "x_velocity": x_velocity,
            "reward_forward": reward_forward,
            "reward_ctrl": -ctrl_cost,
        }
        never = np.zeros(self.num_envs, dtype=bool)
        return obs, reward, never, never.copy(), info

    def get_state(self) -> np.ndarray:
        """A copy of the physics states [B, nstate] (mjSTATE_FULLPHYSICS)."""
        return self._state.copy()

    def close(self) -> None:
        if self._rollout is not None:
            self._rollout.close()
            self._rollout = None


class BatchedHalfCheetahVel(_BatchedHalfCheetah):
    """Batched :class:`HalfCheetahVelEnv`."""

    single_env_class = HalfCheetahVelEnv
    task_to_array = staticmethod(HalfCheetahVelEnv.task_to_array)
    task_space = HalfCheetahVelEnv.task_space

    @staticmethod
    def _param_of(task: HalfCheetahVelTask) -> float:
        return task.goal_velocity


class BatchedHalfCheetahDir(_BatchedHalfCheetah):
    """Batched :class:`HalfCheetahDirEnv`."""

    single_env_class = HalfCheetahDirEnv
    task_to_array = staticmethod(HalfCheetahDirEnv.task_to_array)
    task_space = HalfCheetahDirEnv.task_space

    @staticmethod
    def _param_of(task: HalfCheetahDirTask) -> float:
        return float(task.direction)


HalfCheetahVelEnv.batched_env_class = BatchedHalfCheetahVel
HalfCheetahDirEnv.batched_env_class = BatchedHalfCheetahDir
