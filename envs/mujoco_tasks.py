"""Shared machinery of the batched MuJoCo task distributions (half cheetah, ant, walker, humanoid).

A distribution is one :class:`MujocoTaskEnv` subclass (a Gymnasium ``MujocoEnv`` with the task API)
plus its natively batched twin, a :class:`BatchedMujocoTaskEnv` subclass that steps B copies with
``mujoco.rollout`` on a thread pool. Both call the same numpy functions of the subclass on the
state arrays (observation from (qpos, qvel), reward and health from (qpos before, qpos after,
action, task)), so they return bit-identical observations, rewards and terminations for the same
seeds, tasks and actions. Everything the reward needs is read from the state MuJoCo integrates
(qpos, qvel): positions are the root joint's qpos, never ``xpos``, which is one integrator stage
behind after ``mj_step`` (Gymnasium v5's changelog, google-deepmind/mujoco#889).

One deliberate difference from Gymnasium's v5 envs, needed for that equality: every env step starts
the constraint solver from a zero warm start (``qacc_warmstart = 0``), because ``mujoco.rollout`` takes
the warm start as an input but never returns it, so the batched env cannot carry it from one env step
to the next. The solver still converges to its tolerance, so the physics is the same up to
floating-point noise, and the transition becomes a function of (qpos, qvel, action) alone. These
bodies are chaotic, though: perturbations of 1e-15 grow to O(1) state differences over ~150 steps, so
a trajectory of ours and one of stock v5 from the same seed and actions drift apart late in an
episode, as they would under any floating-point reordering.

Different-dynamics distributions (Walker2DRandParams) change model fields per task: the single env
edits its own model in :meth:`MujocoTaskEnv.set_task`; the batched env keeps one model copy per
distinct task and gives ``rollout`` a model per row (the list form of its ``model`` argument, in
MuJoCo 3.3.0 and 4.0 alike). Reward-only distributions share one model across rows.

Episodes that terminate (an unhealthy ant, walker or humanoid) are not stepped again by the batched
env until the next reset: it reports the last observation, reward 0, no termination and zero infos
for them, exactly what the Gymnasium loop fallback (metarl/sampling/vector.py) reports for a finished
sub-env, and it spends no physics on them.
"""

from __future__ import annotations

import copy
import inspect
import math
import os
from typing import Any, ClassVar

import gymnasium as gym
import mujoco
import mujoco.rollout  # a submodule that `import mujoco` does not load
import numpy as np
from gymnasium import spaces, utils
from gymnasium.envs.mujoco.mujoco_env import MujocoEnv, expand_model_path

from metarl.common.tasks import BatchedTaskEnv, TaskEnv, check_sample_tasks_args, check_task_type

# MujocoEnv's own keyword arguments (rendering); any other extra keyword argument is refused, since the
# task distribution defines the reward, observation and termination.
_MUJOCO_ENV_KWARGS = tuple(
    n for n in inspect.signature(MujocoEnv.__init__).parameters
    if n not in ("self", "model_path", "frame_skip", "observation_space")
)


def load_model(xml_file: str) -> mujoco.MjModel:
    """Compile a MuJoCo model file (bare names resolve to Gymnasium's assets, as MujocoEnv does).

    Gymnasium's half_cheetah.xml sets ``settotalmass``, which MuJoCo 4.0 compiles with a deprecation
    warning (and a MUJOCO_LOG.TXT in the working directory) on every load (3.3.0, metaworld's pin,
    does not warn; the result is the same under both). This applies it the way the warning asks
    instead, after compiling: ``mj_setTotalmass`` then ``mj_setConst``. Every array of the resulting
    model equals the one the compiler attribute gives (tests/test_half_cheetah.py).
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


def check_params(ctrl_cost_weight: Any, reset_noise_scale: Any, frame_skip: Any, terminate_when_unhealthy: Any) -> None:
    for name, value in (("ctrl_cost_weight", ctrl_cost_weight), ("reset_noise_scale", reset_noise_scale)):
        if isinstance(value, bool) or not isinstance(value, (int, float, np.number)) or not (
            math.isfinite(value) and value >= 0
        ):
            raise ValueError(f"{name} must be a finite non-negative number, got {value!r}")
    if isinstance(frame_skip, bool) or not isinstance(frame_skip, (int, np.integer)) or frame_skip < 1:
        raise ValueError(f"frame_skip must be a positive integer, got {frame_skip!r}")
    if not isinstance(terminate_when_unhealthy, (bool, np.bool_)):
        raise ValueError(f"terminate_when_unhealthy must be True or False, got {terminate_when_unhealthy!r}")


def real_number(value: Any, where: str) -> float:
    """A finite real task value as a plain float (tasks compare, hash and pickle alike whatever came in)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.number)):
        raise TypeError(f"{where} must be a real number, got {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"{where} must be finite, got {value!r}")
    return float(value)


def ctrl_cost(weight: float, actions: np.ndarray) -> np.ndarray:
    """weight * ||a||^2 over the last axis, in float64; single and batched envs share the summation order."""
    return weight * np.sum(np.square(actions), axis=-1)


class MujocoTaskEnv(MujocoEnv, utils.EzPickle, TaskEnv):
    """A Gymnasium MuJoCo env whose observation, reward and health are numpy functions of the state.

    Subclasses set the class constants and implement the static hooks, each vectorized over leading
    axes so the batched twin calls them on [B, ...] arrays:

    * ``observation(qpos, qvel) -> obs``
    * ``reset_state(rng, init_qpos, init_qvel, scale) -> (qpos, qvel)``: one env's reset draws, in the
      reference env's order
    * ``reward(qpos_before, qpos_after, qvel_after, action, task_params, dt, ctrl_cost_weight) -> (reward,
      healthy, info)``: ``task_params`` is ``task_params(task)`` (float64), stacked over rows in the batched env
    * ``check_task(task, model)``: beyond the type check (e.g. array sizes against the model)
    * for different dynamics (``CHANGES_DYNAMICS``), ``model_defaults(model)`` (the unscaled fields) and
      ``apply_task_to_model(model, defaults, task, scratch)`` (edits ``model`` in place; ``scratch`` is an
      MjData for ``mj_setConst``)
    """

    XML_FILE: ClassVar[str]
    FRAME_SKIP: ClassVar[int]
    RESET_NOISE_SCALE: ClassVar[float]
    CTRL_COST_WEIGHT: ClassVar[float]
    #: False for distributions that never terminate (AntGoal): terminate_when_unhealthy is then ignored
    HAS_HEALTH: ClassVar[bool] = True
    #: True for distributions whose tasks change the model (apply_task_to_model)
    CHANGES_DYNAMICS: ClassVar[bool] = False
    #: info entries reporting positions: name -> qpos index (the root joint's coordinates)
    POSITION_INFO: ClassVar[dict[str, int]] = {"x_position": 0, "y_position": 1}
    task_type: ClassVar[type]
    default_task: ClassVar[Any]
    metadata = {"render_modes": ["human", "rgb_array", "depth_array", "rgbd_tuple"]}

    def __init__(
        self,
        ctrl_cost_weight: float | None = None,
        reset_noise_scale: float | None = None,
        frame_skip: int | None = None,
        terminate_when_unhealthy: bool = True,
        xml_file: str | None = None,
        **mujoco_env_kwargs: Any,
    ):
        ctrl_cost_weight = self.CTRL_COST_WEIGHT if ctrl_cost_weight is None else ctrl_cost_weight
        reset_noise_scale = self.RESET_NOISE_SCALE if reset_noise_scale is None else reset_noise_scale
        frame_skip = self.FRAME_SKIP if frame_skip is None else frame_skip
        xml_file = self.XML_FILE if xml_file is None else xml_file
        check_params(ctrl_cost_weight, reset_noise_scale, frame_skip, terminate_when_unhealthy)
        unknown = sorted(set(mujoco_env_kwargs) - set(_MUJOCO_ENV_KWARGS))
        if unknown:
            raise ValueError(
                f"{type(self).__name__} does not accept {', '.join(unknown)}: the task distribution defines "
                f"the reward, observation and termination (extra keyword arguments accepted: "
                f"{', '.join(_MUJOCO_ENV_KWARGS)})"
            )
        utils.EzPickle.__init__(
            self, ctrl_cost_weight, reset_noise_scale, frame_skip, terminate_when_unhealthy, xml_file,
            **mujoco_env_kwargs,
        )
        self._ctrl_cost_weight = float(ctrl_cost_weight)
        self._reset_noise_scale = float(reset_noise_scale)
        self._terminate_when_unhealthy = bool(terminate_when_unhealthy) and self.HAS_HEALTH
        MujocoEnv.__init__(self, xml_file, int(frame_skip), observation_space=None, **mujoco_env_kwargs)
        self.metadata = {**self.metadata, "render_fps": int(np.round(1.0 / self.dt))}
        obs_size = self.observation(self.init_qpos, self.init_qvel).shape[0]
        self.observation_space = spaces.Box(-np.inf, np.inf, shape=(obs_size,), dtype=np.float64)
        if self.CHANGES_DYNAMICS:
            self._defaults = self.model_defaults(self.model)
            self._scratch = mujoco.MjData(self.model)  # mj_setConst's workspace, so set_task keeps the state
        self._task = None
        self.set_task(self.default_task)

    def _initialize_simulation(self):
        # MujocoEnv's own, with the model compiled by load_model (no settotalmass deprecation warning)
        model = load_model(self.fullpath)
        model.vis.global_.offwidth = max(model.vis.global_.offwidth, self.width)
        model.vis.global_.offheight = max(model.vis.global_.offheight, self.height)
        return model, mujoco.MjData(model)

    # -- hooks ----------------------------------------------------------------------------------

    @staticmethod
    def observation(qpos: np.ndarray, qvel: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    @staticmethod
    def reset_state(rng: np.random.Generator, init_qpos, init_qvel, scale: float):
        raise NotImplementedError

    @staticmethod
    def reward(qpos_before, qpos_after, qvel_after, action, task_params, dt, ctrl_cost_weight):
        raise NotImplementedError

    @staticmethod
    def task_params(task) -> np.ndarray:
        raise NotImplementedError

    @staticmethod
    def model_defaults(model: mujoco.MjModel) -> dict[str, np.ndarray]:
        raise NotImplementedError

    @staticmethod
    def apply_task_to_model(model: mujoco.MjModel, defaults: dict[str, np.ndarray], task, scratch) -> None:
        raise NotImplementedError

    @staticmethod
    def check_task(task, model: mujoco.MjModel) -> None:
        """Beyond the type: e.g. a task's arrays must fit ``model``. Raises ValueError."""

    # -- task API -------------------------------------------------------------------------------

    def set_task(self, task) -> None:
        check_task_type(task, self.task_type, type(self).__name__)
        self.check_task(task, self.model)
        if self.CHANGES_DYNAMICS:
            self.apply_task_to_model(self.model, self._defaults, task, self._scratch)
        self._task = task
        self._params = np.asarray(self.task_params(task), dtype=np.float64)

    def get_task(self):
        return self._task

    def __getstate__(self):
        return {**super().__getstate__(), "_metarl_task": self._task}

    def __setstate__(self, state):
        state = dict(state)
        task = state.pop("_metarl_task", self.default_task)
        super().__setstate__(state)
        self.set_task(task)

    # -- dynamics -------------------------------------------------------------------------------

    def reset_model(self):
        qpos, qvel = self.reset_state(self.np_random, self.init_qpos, self.init_qvel, self._reset_noise_scale)
        self.set_state(qpos, qvel)
        return self.observation(self.data.qpos, self.data.qvel)

    def _get_reset_info(self):
        return self.position_info(self.data.qpos)

    @classmethod
    def position_info(cls, qpos: np.ndarray) -> dict[str, np.ndarray]:
        return {name: np.array(qpos[..., i]) for name, i in cls.POSITION_INFO.items()}

    def step(self, action):
        action64 = np.asarray(action, dtype=np.float64)
        if action64.shape != (self.model.nu,):
            raise ValueError(f"action must have shape ({self.model.nu},), got {np.shape(action)}")
        if not np.all(np.isfinite(action64)):
            raise ValueError(f"action must be finite, got {action!r}")
        qpos_before = self.data.qpos.copy()
        self.data.qacc_warmstart[:] = 0.0  # as the batched twin; see the module docstring
        self.do_simulation(action64, self.frame_skip)
        reward, healthy, info = self.reward(
            qpos_before, self.data.qpos, self.data.qvel, action64, self._params, self.dt, self._ctrl_cost_weight
        )
        terminated = bool(self._terminate_when_unhealthy and not healthy)
        if self.render_mode == "human":
            self.render()
        obs = self.observation(self.data.qpos, self.data.qvel)
        info = {**self.position_info(self.data.qpos), **{k: float(v) for k, v in info.items()}}
        return obs, float(reward), terminated, False, info


class BatchedMujocoTaskEnv(BatchedTaskEnv):
    """B copies of a :class:`MujocoTaskEnv` stepped by ``mujoco.rollout``; no Python loop per sub-env per step.

    ``self._state`` [B, nstate] holds each sub-env's mjSTATE_FULLPHYSICS vector (time, qpos, qvel; these
    bodies have no actuator activations or other state). One :meth:`step` is one ``rollout`` call of
    ``frame_skip`` physics steps with the action held, over the running sub-envs only.
    """

    single_env_class: ClassVar[type[MujocoTaskEnv]]

    def __init__(
        self,
        num_envs: int,
        ctrl_cost_weight: float | None = None,
        reset_noise_scale: float | None = None,
        frame_skip: int | None = None,
        terminate_when_unhealthy: bool = True,
        xml_file: str | None = None,
        num_threads: int | None = None,
        chunk_size: int | None = None,
    ):
        super().__init__(num_envs)
        cls = self.single_env_class
        ctrl_cost_weight = cls.CTRL_COST_WEIGHT if ctrl_cost_weight is None else ctrl_cost_weight
        reset_noise_scale = cls.RESET_NOISE_SCALE if reset_noise_scale is None else reset_noise_scale
        frame_skip = cls.FRAME_SKIP if frame_skip is None else frame_skip
        check_params(ctrl_cost_weight, reset_noise_scale, frame_skip, terminate_when_unhealthy)
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
        self.terminate_when_unhealthy = bool(terminate_when_unhealthy) and cls.HAS_HEALTH
        self.num_threads = int(num_threads)
        self.chunk_size = None if chunk_size is None else int(chunk_size)

        self.model = load_model(cls.XML_FILE if xml_file is None else xml_file)
        m = self.model
        self.dt = m.opt.timestep * self.frame_skip  # the expression MujocoEnv.dt uses
        data = mujoco.MjData(m)
        self.init_qpos = data.qpos.ravel().copy()
        self.init_qvel = data.qvel.ravel().copy()
        if cls.CHANGES_DYNAMICS:
            self._defaults = cls.model_defaults(m)
            self._scratch = data

        self.nstate = mujoco.mj_stateSize(m, mujoco.mjtState.mjSTATE_FULLPHYSICS)
        # mj_getState concatenates the components in bit order: time, qpos, qvel, act, ...
        n_time = mujoco.mj_stateSize(m, mujoco.mjtState.mjSTATE_TIME)
        if self.nstate != n_time + m.nq + m.nv:
            raise ValueError(f"{type(self).__name__} supports models whose physics state is (time, qpos, qvel) only")
        self._qpos = slice(n_time, n_time + m.nq)
        self._qvel = slice(n_time + m.nq, n_time + m.nq + m.nv)
        self._time = 0 if n_time else None

        obs_size = cls.observation(self.init_qpos, self.init_qvel).shape[0]
        self.single_observation_space = spaces.Box(-np.inf, np.inf, shape=(obs_size,), dtype=np.float64)
        low, high = m.actuator_ctrlrange.copy().astype(np.float32).T
        self.single_action_space = spaces.Box(low=low, high=high, dtype=np.float32)

        B = self.num_envs
        self._state = np.zeros((B, self.nstate))  # current states
        self._ctrl = np.zeros((B, self.frame_skip, m.nu))  # action held over the substeps
        self._out = np.zeros((B, self.frame_skip, self.nstate))  # rollout's state output
        # compact copies of the running rows' inputs, used once some sub-envs have terminated
        self._state_c = np.zeros_like(self._state)
        self._ctrl_c = np.zeros_like(self._ctrl)
        self._running = np.ones(B, dtype=bool)
        self._obs = np.zeros((B, obs_size))
        self._reset_done = False

        # Rollout(nthread=0) runs on the calling thread; a pool of 1 would only add a hand-off.
        self._rollout = mujoco.rollout.Rollout(nthread=self.num_threads if self.num_threads > 1 else 0)
        self._datas = [mujoco.MjData(m) for _ in range(self.num_threads)]
        self._control_spec = mujoco.mjtState.mjSTATE_CTRL.value

        self.tasks = [cls.default_task] * B
        self._tasks_changed()

    # -- tasks ----------------------------------------------------------------------------------

    def set_tasks(self, tasks) -> None:
        cls = self.single_env_class
        for task in tasks:
            check_task_type(task, cls.task_type, type(self).__name__)
            cls.check_task(task, self.model)
        super().set_tasks(tasks)

    def _tasks_changed(self) -> None:
        cls = self.single_env_class
        self._params = np.stack([np.asarray(cls.task_params(t), dtype=np.float64) for t in self.tasks])
        if cls.CHANGES_DYNAMICS:
            # one model per distinct task (tasks are hashable values); rows point at their task's model
            models: dict = {}
            for task in self.tasks:
                if task not in models:
                    models[task] = copy.copy(self.model)
                    cls.apply_task_to_model(models[task], self._defaults, task, self._scratch)
            rows = [models[t] for t in self.tasks]
        else:
            rows = [self.model] * self.num_envs
        self._models = np.empty(self.num_envs, dtype=object)  # object array: running rows pick in C
        self._models[:] = rows
        self._model_list = rows  # with skip_checks rollout indexes one model per row: the full list

    # -- episodes -------------------------------------------------------------------------------

    def reset(self):
        cls = self.single_env_class
        self._state[:] = 0.0  # time = 0, as after mj_resetData
        for i, rng in enumerate(self.rngs):
            # the single env's reset_model draws, in its order, from sub-env i's stream
            qpos, qvel = cls.reset_state(rng, self.init_qpos, self.init_qvel, self.reset_noise_scale)
            self._state[i, self._qpos] = qpos
            self._state[i, self._qvel] = qvel
        self._running[:] = True
        self._reset_done = True
        self._obs = cls.observation(self._state[:, self._qpos], self._state[:, self._qvel])
        return self._obs.copy(), cls.position_info(self._state[:, self._qpos])

    def step(self, actions):
        if self._rollout is None:
            raise RuntimeError(f"{type(self).__name__}.step() called after close()")
        if not self._reset_done:
            raise RuntimeError(f"{type(self).__name__}.step() called before reset()")
        actions = np.asarray(actions)
        expected = (self.num_envs, self.model.nu)
        if actions.shape != expected:
            raise ValueError(f"actions must have shape {expected}, got {actions.shape}")
        np.copyto(self._ctrl, actions[:, None, :], casting="same_kind")
        run = self._running
        bad = run & ~np.isfinite(self._ctrl[:, 0]).all(axis=1)
        if bad.any():
            idx = np.flatnonzero(bad)
            raise ValueError(f"actions must be finite; sub-envs {idx.tolist()} got {actions[idx].tolist()}")

        all_running = bool(run.all())
        if all_running:
            n, state0, ctrl, models = self.num_envs, self._state, self._ctrl, self._model_list
        else:
            idx = np.flatnonzero(run)
            n = idx.size
            state0, ctrl = self._state_c[:n], self._ctrl_c[:n]
            np.take(self._state, idx, axis=0, out=state0)
            np.take(self._ctrl, idx, axis=0, out=ctrl)
            models = self._models[idx].tolist()
        out = self._out[:n]
        if n:
            self._rollout.rollout(
                models, self._datas, state0, ctrl, control_spec=self._control_spec, skip_checks=True,
                nstep=self.frame_skip, state=out, chunk_size=self.chunk_size,
            )
        final = out[:, -1]
        if self._time is not None and self.frame_skip > 1 and n:
            # rollout stops stepping a row after a MuJoCo warning (e.g. diverging physics) and repeats
            # its last state; a single env would have reset its data and carried on, so refuse.
            stalled = final[:, self._time] == out[:, -2, self._time]
            if stalled.any():
                rows = np.flatnonzero(run)[stalled] if not all_running else np.flatnonzero(stalled)
                raise RuntimeError(
                    f"MuJoCo stopped the simulation of sub-envs {rows.tolist()} (a physics warning, e.g. "
                    f"unstable accelerations); their states are invalid"
                )
        cls = self.single_env_class
        params = self._params if all_running else self._params[run]
        reward_r, healthy_r, info_r = cls.reward(
            state0[:, self._qpos], final[:, self._qpos], final[:, self._qvel], ctrl[:, 0], params, self.dt,
            self.ctrl_cost_weight,
        )
        obs_r = cls.observation(final[:, self._qpos], final[:, self._qvel])
        terminated_r = ~np.asarray(healthy_r, dtype=bool) if self.terminate_when_unhealthy else np.zeros(n, bool)

        if all_running:  # the common case (and the only one for distributions that never terminate)
            self._obs = obs_r
            np.copyto(self._state, final)
            self._running = ~terminated_r
            info = {**cls.position_info(final[:, self._qpos]), **info_r}
            return obs_r.copy(), reward_r, terminated_r, np.zeros(n, dtype=bool), info
        # finished sub-envs: last observation, zero reward and infos, no termination (as GymLoopVectorEnv)
        B = self.num_envs
        reward = np.zeros(B)
        terminated = np.zeros(B, dtype=bool)
        info = {k: np.zeros(B) for k in (*cls.POSITION_INFO, *info_r)}
        reward[run] = reward_r
        terminated[run] = terminated_r
        self._obs[run] = obs_r
        for k, v in {**cls.position_info(final[:, self._qpos]), **info_r}.items():
            info[k][run] = v
        self._state[run] = final
        self._running = run & ~terminated
        return self._obs.copy(), reward, terminated, np.zeros(B, dtype=bool), info

    def get_state(self) -> np.ndarray:
        """A copy of the physics states [B, nstate] (mjSTATE_FULLPHYSICS)."""
        return self._state.copy()

    def close(self) -> None:
        if self._rollout is not None:
            self._rollout.close()
            self._rollout = None


class DirectionTasks:
    """Mixin of the direction-on-the-plane task distributions (AntDir, HumanoidDir): a task is an angle
    theta ~ U[0, 2 pi) held by ``task_type(angle)``; its array and reward parameters are (cos, sin)."""

    task_space = gym.spaces.Box(-1.0, 1.0, shape=(2,), dtype=np.float32)  #: bounds of task_to_array

    def sample_tasks(self, n: int, rng: np.random.Generator) -> list:
        check_sample_tasks_args(n, rng)
        return [self.task_type(float(a)) for a in rng.uniform(0.0, 2.0 * np.pi, size=int(n))]

    @staticmethod
    def task_to_array(task) -> np.ndarray:
        return np.array([math.cos(task.angle), math.sin(task.angle)], dtype=np.float32)

    @staticmethod
    def task_params(task) -> np.ndarray:
        return np.array([math.cos(task.angle), math.sin(task.angle)])

    @staticmethod
    def planar_velocity(qpos_before, qpos_after, task_params, dt):
        """(v_x, v_y, v_xy . (cos theta, sin theta)): the root's displacement over the env step / dt."""
        vx = (qpos_after[..., 0] - qpos_before[..., 0]) / dt
        vy = (qpos_after[..., 1] - qpos_before[..., 1]) / dt
        return vx, vy, vx * task_params[..., 0] + vy * task_params[..., 1]


def normal_velocity_reset_state(rng: np.random.Generator, init_qpos, init_qvel, scale: float):
    """Gymnasium's HalfCheetah-v5 / Ant-v5 reset: qpos + U[-scale, scale], then qvel + scale N(0, 1), in that order."""
    qpos = init_qpos + rng.uniform(low=-scale, high=scale, size=init_qpos.shape[0])
    qvel = init_qvel + scale * rng.standard_normal(init_qvel.shape[0])
    return qpos, qvel


def uniform_reset_state(rng: np.random.Generator, init_qpos, init_qvel, scale: float):
    """Gymnasium's Humanoid-v5 / Walker2d-v5 reset: qpos then qvel, each plus U[-scale, scale] noise, in that order."""
    qpos = init_qpos + rng.uniform(low=-scale, high=scale, size=init_qpos.shape[0])
    qvel = init_qvel + rng.uniform(low=-scale, high=scale, size=init_qvel.shape[0])
    return qpos, qvel
