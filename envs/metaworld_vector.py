"""Meta-World sub-environments stepped together: metaworld's per-step Python done once per batch with numpy.

A metaworld step spends about two thirds of its time in Python (setting the mocap, assembling the
observation, the shaped reward with its tolerance and Hamacher-product helpers) and a third in MuJoCo
(cProfile of one push-v3 env with metarl's fast paths: ~430 µs a step, ``mj_step`` ~100-120 µs of it). A
lock-step collection runs the same class of env in many columns, so :class:`~metarl.envs.metaworld.MetaWorldVectorEnv`
keeps one Python loop over the envs for what must be done per env (writing the mocap and the gripper
control, MuJoCo's step and forward pass, reading body, site and geom positions) and does the rest for all of
them at once (:func:`step_batch`), with the same arithmetic as metaworld's code:

* the same elementwise float64 operations in the same order, and float32 ones where metaworld's caging
  rewards (push, pick-place) mix in the float32 gripper action (NumPy 2 computes ``python_float +
  np.float32`` in float32);
* every vector norm as metaworld takes it, ``sqrt(v.dot(v))`` on a contiguous vector: ``np.linalg.norm``
  calls BLAS ``ddot``, whose kernel may fuse multiply-adds, so a numpy row sum would differ in the last bit
  (about one norm in ten on this x86-64 machine); every scalar ``** 2`` through libm's ``pow``
  (:func:`_squares`);
* the object quaternion with :func:`~metarl.envs.metaworld_fast.quat_from_matrix`'s arithmetic, vectorized.

So a batched episode gives the single env's observations, rewards and successes bit for bit, on whatever
machine both run (tests/test_metaworld_vector.py replays episodes on both). Classes with a batched step:
:data:`BATCHED_CLASSES` (reach-v3, push-v3 and pick-place-v3, the ML1 tasks of our configs), v2 rewards
only; the vector env steps any other class, and the v1 rewards, one env at a time through metaworld's own
``step``. It returns what the collector records (``MetaWorldEnv.info_scalars``: ``success``) on both paths.
"""

from __future__ import annotations

import itertools
import math
from typing import Callable

import mujoco
import numpy as np

from metarl.envs.metaworld_fast import _ATOL, _RTOL, quat_from_matrix

#: metaworld's mocap orientation, written at every step (``set_xyz_action``)
_MOCAP_QUAT = np.array([1.0, 0.0, 1.0, 0.0])
#: bodies, sites and the geom read after each step, in this order (``_BODIES[i]`` is row i of ``xpos``)
_BODIES = ("hand", "rightclaw", "leftclaw", "obj", "leftpad", "rightpad")
_SITES = ("rightEndEffector", "leftEndEffector")
_OBJ_GEOM = "objGeom"
#: reward_utils.tolerance's long-tail sigmoid at its default value_at_margin 0.1, computed as metaworld does
_LONG_TAIL_SCALE = np.sqrt(1 / 0.1 - 1)


def row_norms(v: np.ndarray) -> np.ndarray:
    """``np.linalg.norm`` of every row of ``v`` [n, k], as metaworld takes each one (BLAS ddot, then sqrt)."""
    v = np.ascontiguousarray(v)
    return np.sqrt(np.fromiter((r.dot(r) for r in v), dtype=np.float64, count=len(v)))


def quats_from_matrices(mats: np.ndarray) -> np.ndarray:
    """:func:`quat_from_matrix` of every row of ``mats`` [n, 9] (row-major 3x3): [n, 4], scalar last.

    The same operations in the same order on float64 arrays (IEEE elementwise, no fused multiply-adds),
    so the same floats; the matrices scipy would refuse or orthogonalise go to the scalar function."""
    m00, m01, m02, m10, m11, m12, m20, m21, m22 = mats.T
    gram = (m00 * m00 + m01 * m01 + m02 * m02, m10 * m10 + m11 * m11 + m12 * m12,
            m20 * m20 + m21 * m21 + m22 * m22)
    off = (m00 * m10 + m01 * m11 + m02 * m12, m00 * m20 + m01 * m21 + m02 * m22, m10 * m20 + m11 * m21 + m12 * m22)
    det = m00 * (m11 * m22 - m12 * m21) - m01 * (m10 * m22 - m12 * m20) + m02 * (m10 * m21 - m11 * m20)
    ok = det > 0.0
    for x in gram:
        ok &= np.abs(x - 1.0) <= _ATOL + _RTOL
    for x in off:
        ok &= np.abs(x) <= _ATOL
    trace = m00 + m11 + m22
    choice = np.argmax(np.stack((m00, m11, m22, trace), 1), 1)  # the first maximum, as the scalar code
    cases = (
        (1 - trace + 2 * m00, m10 + m01, m20 + m02, m21 - m12),
        (m10 + m01, 1 - trace + 2 * m11, m21 + m12, m02 - m20),
        (m20 + m02, m21 + m12, 1 - trace + 2 * m22, m10 - m01),
        (m21 - m12, m02 - m20, m10 - m01, 1 + trace),
    )
    q = np.stack([np.choose(choice, [c[j] for c in cases]) for j in range(4)], 1)
    norm = np.sqrt(q[:, 0] * q[:, 0] + q[:, 1] * q[:, 1] + q[:, 2] * q[:, 2] + q[:, 3] * q[:, 3])
    q = q / norm[:, None]
    for i in np.flatnonzero(~ok):
        q[i] = quat_from_matrix(mats[i].reshape(3, 3))
    return q


def _squares(x: np.ndarray) -> np.ndarray:
    """``v ** 2`` of every entry as a NumPy float64 *scalar* computes it: libm's ``pow(v, 2.0)``, which differs
    from ``v * v`` (what an array's ``** 2`` computes) in the last bit for about one value in a thousand."""
    return np.fromiter(map(math.pow, x.ravel().tolist(), itertools.repeat(2.0)), np.float64, x.size).reshape(x.shape)


def tolerance(x: np.ndarray, lower: float, upper: float, margin: np.ndarray) -> np.ndarray:
    """``reward_utils.tolerance(x, bounds=(lower, upper), margin=margin, sigmoid="long_tail")`` per row."""
    if np.any(margin < 0):
        raise ValueError(f"`margin` must be non-negative. Current value: {margin[margin < 0][0]}")
    in_bounds = (lower <= x) & (x <= upper)
    with np.errstate(divide="ignore", invalid="ignore"):  # margin 0 rows take the in_bounds branch
        d = np.where(x < lower, lower - x, x - upper) / margin
        sig = 1 / (_squares(d * _LONG_TAIL_SCALE) + 1)
    return np.where(in_bounds, 1.0, np.where(margin == 0, 0.0, sig))


def hamacher(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``reward_utils.hamacher_product`` per row (float32 rows stay float32, as metaworld's scalars do)."""
    if not (np.all((0.0 <= a) & (a <= 1.0)) and np.all((0.0 <= b) & (b <= 1.0))):
        raise ValueError("a and b must range between 0 and 1")
    ab = a * b
    den = a + b - ab
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0, ab / den, np.zeros((), ab.dtype))


def _reach_v2(b: _Batch) -> tuple[np.ndarray, np.ndarray]:
    """``SawyerReachEnvV3.compute_reward`` (v2) and its success: reward, success."""
    target = b.const("_target_pos")
    tcp_to_target = row_norms(b.tcp - target)
    in_place_margin = row_norms(b.const("hand_init_pos") - target)
    in_place = tolerance(tcp_to_target, 0, 0.05, in_place_margin)
    return 10 * in_place, (tcp_to_target <= 0.05).astype(np.float64)


def _gripper_caging_high_density(b: _Batch, obj: np.ndarray, obj_radius: float, pad_success_thresh: float,
                                 xz_thresh: float) -> tuple[np.ndarray, np.ndarray]:
    """``SawyerXYZEnv._gripper_caging_reward(..., high_density=True)`` with the default gripper effort 1.

    Its result is float32 where the gripper term enters (metaworld: ``min(max(0, a), 1.0) / 1.0`` keeps the
    float32 action, and NumPy 2 computes ``python_float + np.float32`` in float32), float64 elsewhere; it is
    returned as float64 holding those values, with a mask of the float32 rows."""
    obj_init = b.const("obj_init_pos")
    pad_y = np.stack((b.left_pad[:, 1], b.right_pad[:, 1]), 1)
    pad_to_obj = np.abs(pad_y - obj[:, 1:2])
    pad_to_objinit = np.abs(pad_y - obj_init[:, 1:2])
    caging_lr_margin = np.abs(pad_to_objinit - pad_success_thresh)
    caging_lr = tolerance(pad_to_obj, obj_radius, pad_success_thresh, caging_lr_margin)
    caging_y = hamacher(caging_lr[:, 0], caging_lr[:, 1])
    xz = [0, 2]
    caging_xz_margin = row_norms(obj_init[:, xz] - b.const("init_tcp")[:, xz]) - xz_thresh
    caging_xz = tolerance(row_norms(b.tcp[:, xz] - obj[:, xz]), 0, xz_thresh, caging_xz_margin)
    return _caging_and_gripping(hamacher(caging_y, caging_xz), b.actions[:, -1])


def _caging_and_gripping(caging: np.ndarray, g: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The end of both caging rewards: ``(hamacher(caging, gripping) + caging) / 2`` with ``gripping`` the
    gripper action ``g`` (float32) clipped to [0, 1] where ``caging > 0.97``, else 0. The clipping keeps the
    float32 action in (0, 1] (Python's ``min(max(0, a), 1)`` returns it), and then the rest is float32
    arithmetic; those rows are marked in the returned mask."""
    grip32 = (caging > 0.97) & (g > 0) & (g <= 1)
    grip64 = np.where((caging > 0.97) & (g > 1), 1.0, 0.0)
    out = (hamacher(caging, grip64) + caging) / 2
    if grip32.any():
        c32 = caging[grip32].astype(np.float32)
        cg32 = hamacher(c32, g[grip32])
        out[grip32] = (cg32 + c32) / np.float32(2)
    return out, grip32


def _push_v2(b: _Batch) -> tuple[np.ndarray, np.ndarray]:
    """``SawyerPushEnvV3.compute_reward`` (v2) and its success: reward, success."""
    radius = b.cls.TARGET_RADIUS
    obj, tcp_opened = b.obs[:, 4:7], b.obs[:, 3]
    target = b.const("_target_pos")
    tcp_to_obj = row_norms(obj - b.tcp)
    target_to_obj = row_norms(obj - target)
    target_to_obj_init = row_norms(b.const("obj_init_pos") - target)
    in_place = tolerance(target_to_obj, 0, radius, target_to_obj_init)
    grasped, f32 = _gripper_caging_high_density(b, obj, obj_radius=0.015, pad_success_thresh=0.05, xz_thresh=0.005)
    reward = 2 * grasped
    bonus = (tcp_to_obj < 0.02) & (tcp_opened > 0)
    reward = np.where(bonus, reward + (1.0 + reward + 5.0 * in_place), reward)
    both = bonus & f32
    if both.any():  # reward += 1.0 + reward + 5.0 * in_place, in float32 where reward is float32
        r32 = (2 * grasped[both]).astype(np.float32)  # exact: grasped holds float32 values
        reward[both] = r32 + ((np.float32(1.0) + r32) + (5.0 * in_place[both]).astype(np.float32))
    reward = np.where(target_to_obj < radius, 10.0, reward)
    return reward, (target_to_obj <= radius).astype(np.float64)


def _pick_place_caging(b: _Batch, obj: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``SawyerPickPlaceEnvV3._gripper_caging_reward`` (its own version); float32 rows as the push one's."""
    pad_margin, xz_margin, obj_radius = 0.05, 0.005, 0.015
    # metaworld's "initial" pads are views of the live body positions (get_body_com returns data.body().xpos),
    # so they are the current pads; a copy stored instead (not a view) is used as stored
    live = b.state.live_init_pads[b.rows][:, None]
    init_left = np.where(live, b.left_pad, b.const("init_left_pad"))
    init_right = np.where(live, b.right_pad, b.const("init_right_pad"))
    right_margin = np.abs(np.abs(obj[:, 1] - init_right[:, 1]) - pad_margin)
    left_margin = np.abs(np.abs(obj[:, 1] - init_left[:, 1]) - pad_margin)
    right = tolerance(obj[:, 1] - b.right_pad[:, 1], obj_radius, pad_margin, right_margin)
    left = tolerance(b.left_pad[:, 1] - obj[:, 1], obj_radius, pad_margin, left_margin)
    y_caging = hamacher(left, right)

    def xz(v):  # v + [0, -v_y, 0], as metaworld: 3-vectors with a zero middle, so the norms are its norms
        out = v.copy()
        out[:, 1] = v[:, 1] + -v[:, 1]
        return out

    tcp_obj_xz = row_norms(xz(b.tcp) - xz(obj))
    obj_init = b.const("obj_init_pos")
    margin = row_norms(xz(obj_init) - xz(b.const("init_tcp"))) - xz_margin
    x_z_caging = tolerance(tcp_obj_xz, 0, xz_margin, margin)
    return _caging_and_gripping(hamacher(y_caging, x_z_caging), b.actions[:, -1])


def _pick_place_v2(b: _Batch) -> tuple[np.ndarray, np.ndarray]:
    """``SawyerPickPlaceEnvV3.compute_reward`` (v2) and its success (within 0.07): reward, success."""
    obj, tcp_opened = b.obs[:, 4:7], b.obs[:, 3]
    target, obj_init = b.const("_target_pos"), b.const("obj_init_pos")
    obj_to_target = row_norms(obj - target)
    tcp_to_obj = row_norms(obj - b.tcp)
    in_place = tolerance(obj_to_target, 0, 0.05, row_norms(obj_init - target))
    grasped, f32 = _pick_place_caging(b, obj)
    reward = hamacher(grasped, in_place)
    bonus = (tcp_to_obj < 0.02) & (tcp_opened > 0) & (obj[:, 2] - 0.01 > obj_init[:, 2])
    reward = np.where(bonus, reward + (1.0 + 5.0 * in_place), reward)
    if f32.any():  # hamacher(float32, python float) and the bonus in float32
        r32 = hamacher(grasped[f32].astype(np.float32), in_place[f32].astype(np.float32))
        r32 = np.where(bonus[f32], r32 + (1.0 + 5.0 * in_place[f32]).astype(np.float32), r32)
        reward[f32] = r32
    reward = np.where(obj_to_target < 0.05, 10.0, reward)
    return reward, (obj_to_target <= 0.07).astype(np.float64)


def _batched_classes() -> dict[type, Callable[[_Batch], tuple[np.ndarray, np.ndarray]]]:
    from metaworld.envs.sawyer_pick_place_v3 import SawyerPickPlaceEnvV3
    from metaworld.envs.sawyer_push_v3 import SawyerPushEnvV3
    from metaworld.envs.sawyer_reach_v3 import SawyerReachEnvV3

    return {SawyerReachEnvV3: _reach_v2, SawyerPushEnvV3: _push_v2, SawyerPickPlaceEnvV3: _pick_place_v2}


#: env class -> its v2 reward and success on a batch (filled on first use: metaworld is an optional extra)
BATCHED_CLASSES: dict[type, Callable[[_Batch], tuple[np.ndarray, np.ndarray]]] = {}


def _reward_functions() -> dict[type, Callable[[_Batch], tuple[np.ndarray, np.ndarray]]]:
    if not BATCHED_CLASSES:
        BATCHED_CLASSES.update(_batched_classes())
    return BATCHED_CLASSES


def has_batched_step(env) -> bool:
    """Whether :func:`step_batch` can step this metaworld env (its class is batched, its rewards v2)."""
    return type(env) in _reward_functions() and env.reward_function_version == "v2"


class _ClassIds:
    """Body, site and geom ids of one env class's scene (the same model file for every instance)."""

    def __init__(self, env):
        model = env.model
        self.bodies = np.array([model.body(n).id for n in _BODIES])
        self.sites = np.array([model.site(n).id for n in _SITES])
        self.geom = model.geom(_OBJ_GEOM).id
        if model.nmocap != 1:  # set_xyz_action moves every mocap body and clips the first: one is assumed
            raise ValueError(f"{type(env).__name__}: a batched step needs one mocap body, the scene has {model.nmocap}")


_ids: dict[type, _ClassIds] = {}


class EpisodeState:
    """What the batched step of n metaworld envs reads that only their reset or task changes (targets, initial
    positions, bounds, the hidden or shown goal), read once after the reset, and what it carries from step to
    step (mocap positions, the previous frame of the observation). Build a new one after every reset."""

    #: per-env constants of the rewards (None in a class that does not use it: NaN rows)
    CONSTANTS = ("_target_pos", "obj_init_pos", "init_tcp", "hand_init_pos", "init_left_pad", "init_right_pad")

    def __init__(self, envs: list):
        self.envs = list(envs)
        self.models = [e.model for e in envs]
        self.datas = [e.data for e in envs]
        nan3 = np.full(3, np.nan)
        self.constants = {name: np.stack([nan3 if getattr(e, name, None) is None else np.asarray(getattr(e, name),
                                                                                              dtype=np.float64)
                                          for e in envs]) for name in self.CONSTANTS}
        self.live_init_pads = np.array([all(np.shares_memory(getattr(e, name), d.xpos)
                                            for name in ("init_left_pad", "init_right_pad"))
                                        for e, d in zip(envs, self.datas)])
        self.mocap = np.stack([d.mocap_pos[0] for d in self.datas])
        self.mocap_low = np.stack([e.mocap_low for e in envs])
        self.mocap_high = np.stack([e.mocap_high for e in envs])
        self.obs_low = np.stack([e.sawyer_observation_space.low for e in envs])
        self.obs_high = np.stack([e.sawyer_observation_space.high for e in envs])
        self.goal = np.stack([np.zeros(3) if e._partially_observable else e._get_pos_goal() for e in envs])
        self.prev = np.stack([e._prev_obs for e in envs])


class _Batch:
    """One step's rows of one class after the physics: positions, observations, actions, constants."""

    def __init__(self, state: EpisodeState, rows: np.ndarray, cls: type, xpos: np.ndarray, site_xpos: np.ndarray,
                 obs: np.ndarray, actions: np.ndarray):
        self.state, self.rows, self.cls, self.obs, self.actions = state, rows, cls, obs, actions
        # the object's position is read from the (clipped) observation, as metaworld's rewards do
        self.left_pad, self.right_pad = xpos[:, 4], xpos[:, 5]
        self.tcp = (site_xpos[:, 0] + site_xpos[:, 1]) / 2.0  # SawyerXYZEnv.tcp_center

    def const(self, name: str) -> np.ndarray:
        return self.state.constants[name][self.rows]


def step_batch(state: EpisodeState, rows: np.ndarray, actions: np.ndarray) -> tuple[np.ndarray, ...]:
    """``SawyerXYZEnv.step`` for the envs ``rows`` of ``state`` (one class with :func:`has_batched_step`), the
    actions [len(rows), 4] as metaworld takes them (float32): obs [n, 39], reward [n], truncated [n], success [n]."""
    rows = np.asarray(rows)
    envs = [state.envs[i] for i in rows.tolist()]
    n, cls = len(envs), type(envs[0])
    if any(type(e) is not cls for e in envs):
        raise ValueError(f"step_batch steps envs of one class, got {sorted({type(e).__name__ for e in envs})}")
    ids = _ids.get(cls) or _ids.setdefault(cls, _ClassIds(envs[0]))
    for e in envs:
        if e.curr_path_length >= e.max_path_length:
            raise ValueError(f"Meta-World episodes last at most {e.max_path_length} steps; use env.horizon <= "
                             f"{e.max_path_length}")
    a = np.asarray(actions, dtype=np.float32)
    # set_xyz_action: the clipped float32 action times the (Python float) scale stays float32
    pos_delta = np.clip(a[:, :3], -1, 1) * envs[0].action_scale
    mocap = np.clip(state.mocap[rows] + pos_delta, state.mocap_low[rows], state.mocap_high[rows])
    state.mocap[rows] = mocap
    xpos = np.empty((n, len(_BODIES), 3))
    site_xpos = np.empty((n, len(_SITES), 3))
    xmat = np.empty((n, 9))
    grip = a[:, 3].tolist()
    for k, i in enumerate(rows.tolist()):
        model, data = state.models[i], state.datas[i]
        data.mocap_pos[0] = mocap[k]
        data.mocap_quat[0] = _MOCAP_QUAT
        data.ctrl[0], data.ctrl[1] = grip[k], -grip[k]  # do_simulation([a, -a], frame_skip)
        mujoco.mj_step(model, data, nstep=envs[k].frame_skip)
        mujoco.mj_rnePostConstraint(model, data)
        # metaworld writes its target sites' xpos here; mj_forward recomputes every site_xpos from the
        # model, so that write never reaches a result and is left out
        mujoco.mj_forward(model, data)
        xpos[k] = data.xpos[ids.bodies]
        site_xpos[k] = data.site_xpos[ids.sites]
        xmat[k] = data.geom_xmat[ids.geom]
    # _get_obs: [hand, gripper opening, object position and quaternion, zero padding, previous frame, goal]
    curr = np.zeros((n, 18))
    curr[:, :3] = xpos[:, 0]
    curr[:, 3] = np.clip(row_norms(xpos[:, 1] - xpos[:, 2]) / 0.1, 0.0, 1.0)
    curr[:, 4:7] = xpos[:, 3]
    curr[:, 7:11] = quats_from_matrices(xmat)
    obs = np.concatenate([curr, state.prev[rows], state.goal[rows]], 1)
    obs = np.clip(obs, state.obs_low[rows], state.obs_high[rows])
    state.prev[rows] = curr
    truncated = np.empty(n, dtype=bool)
    for k, e in enumerate(envs):  # the env objects' own state, as metaworld's step leaves it
        e.curr_path_length += 1
        e._prev_obs = curr[k]
        e._last_stable_obs = obs[k]
        truncated[k] = e.curr_path_length == e.max_path_length
    reward, success = _reward_functions()[cls](_Batch(state, rows, cls, xpos, site_xpos, obs, a))
    return obs, reward, truncated, success
