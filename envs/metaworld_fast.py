"""Faster stand-ins for pieces of metaworld's per-step Python, with the same results.

Profiled on ML1 collections, a metaworld step spends more time in its own Python helpers than in MuJoCo:

* **Object orientation.** 22 of the 50 env classes (reach, push and pick-place among them) put an object's
  quaternion in every observation as ``Rotation.from_matrix(geom_xmat).as_quat()``. scipy validates and
  converts one 3×3 matrix in about 110 µs: 1.1 s of 4.8 in a reach collection, as much as ``mj_step``.
  :func:`quat_from_matrix` does it in about 4 µs with plain floats and scipy's arithmetic: the same case
  choice (the first largest of the diagonal entries and the trace, Markley's method), the same sums in the
  same order, the same normalisation, scalar last, not canonicalised. On x86-64 that gives scipy's
  quaternion bit for bit; a scipy build that fuses multiply-adds (e.g. on ARM) can differ in the last
  place, which the tests allow (2 ulp). A matrix
  scipy would reject (determinant ≤ 0) or orthogonalise (Gram matrix off the identity by more than its
  tolerance, to the last bit of that test) goes to scipy itself.
* **Observation assembly.** ``_get_curr_obs_combined_no_goal`` interleaves object positions and
  quaternions with ``np.split`` and nested ``np.hstack`` calls on every step; :func:`curr_obs_combined_no_goal`
  copies the same floats into their slots of one array.
* **Gripper contact.** ``SawyerXYZEnv.touching_object``, called by every step's ``evaluate_state`` in the
  grasping tasks (push among them), walks ``data.contact`` twice in Python, one contact object at a
  time: 0.36 s of 1.07 in a push episode. :func:`touching_object` selects the same contacts with array
  masks and adds their constraint forces in the same order, so the same floats decide the same answer.

:func:`use_fast_paths` installs them: metaworld's modules only ever call ``Rotation.from_matrix(m).as_quat()``,
so the name ``Rotation`` in them is pointed at :class:`FastRotation`, and the two methods are replaced on
the base class (no env class overrides them). ``use_fast_paths(False)`` restores metaworld's own code,
for timing one against the other (experiments/metaworld_fast_bench.py). :func:`metarl.envs.metaworld.import_metaworld` turns them on.
tests/test_metaworld_fast.py checks 30,000 rotations across every case against scipy, and whole episodes
of reach-v3, push-v3, pick-place-v3 and stick-pull-v3 (two objects) against metaworld's own code
(observations, rewards, every info entry).
"""

from __future__ import annotations

import math
import sys

import numpy as np
from scipy.spatial.transform import Rotation as ScipyRotation

#: scipy's orthogonality test: Gram matrix close to the identity, isclose(atol=1e-12, rtol=1e-5)
_ATOL, _RTOL = 1e-12, 1e-5


def quat_from_matrix(matrix) -> np.ndarray:
    """scipy's ``Rotation.from_matrix(matrix).as_quat()`` for one 3×3 rotation matrix: [x, y, z, w]."""
    (m00, m01, m02), (m10, m11, m12), (m20, m21, m22) = np.asarray(matrix, dtype=np.float64).reshape(3, 3).tolist()
    gram_diag = (m00 * m00 + m01 * m01 + m02 * m02, m10 * m10 + m11 * m11 + m12 * m12,
                 m20 * m20 + m21 * m21 + m22 * m22)
    gram_off = (m00 * m10 + m01 * m11 + m02 * m12, m00 * m20 + m01 * m21 + m02 * m22,
                m10 * m20 + m11 * m21 + m12 * m22)
    det = m00 * (m11 * m22 - m12 * m21) - m01 * (m10 * m22 - m12 * m20) + m02 * (m10 * m21 - m11 * m20)
    if (det <= 0.0 or any(not abs(x - 1.0) <= _ATOL + _RTOL for x in gram_diag)
            or any(not abs(x) <= _ATOL for x in gram_off)):
        return ScipyRotation.from_matrix(matrix).as_quat()  # scipy raises, or orthogonalises first
    trace = m00 + m11 + m22
    decision = (m00, m11, m22, trace)
    choice = max(range(4), key=decision.__getitem__)  # the first maximum, as argmax
    if choice == 0:
        q = (1 - trace + 2 * m00, m10 + m01, m20 + m02, m21 - m12)
    elif choice == 1:
        q = (m10 + m01, 1 - trace + 2 * m11, m21 + m12, m02 - m20)
    elif choice == 2:
        q = (m20 + m02, m21 + m12, 1 - trace + 2 * m22, m10 - m01)
    else:
        q = (m21 - m12, m02 - m20, m10 - m01, 1 + trace)
    norm = math.sqrt(q[0] * q[0] + q[1] * q[1] + q[2] * q[2] + q[3] * q[3])
    return np.array([q[0] / norm, q[1] / norm, q[2] / norm, q[3] / norm])


class FastRotation:
    """The part of scipy's ``Rotation`` that metaworld uses: ``from_matrix(m).as_quat()``."""

    __slots__ = ("_quat",)

    def __init__(self, quat: np.ndarray):
        self._quat = quat

    @classmethod
    def from_matrix(cls, matrix) -> FastRotation:
        return cls(quat_from_matrix(matrix))

    def as_quat(self) -> np.ndarray:
        return self._quat.copy()


def touching_object(self, object_geom_id: int) -> bool:
    """``SawyerXYZEnv.touching_object``: both gripper pads push on the object (positive summed contact force)."""
    data = self.data
    contact = data.contact
    geom1, geom2 = contact.geom1, contact.geom2
    with_object = (geom1 == object_geom_id) | (geom2 == object_geom_id)
    forces = data.efc_force

    def pad_force(pad_name: str) -> float:
        pad = data.geom(pad_name).id
        rows = contact.efc_address[with_object & ((geom1 == pad) | (geom2 == pad))]
        return sum(forces[rows].tolist())  # metaworld's sum: from 0, in contact order

    return 0 < pad_force("leftpad_geom") and 0 < pad_force("rightpad_geom")


def curr_obs_combined_no_goal(self) -> np.ndarray:
    """``SawyerXYZEnv._get_curr_obs_combined_no_goal``: hand position, gripper opening, then each object's
    position and quaternion, zero-padded; the same array, filled by slicing instead of split and hstack."""
    pos_hand = self.get_endeff_pos()
    finger_right, finger_left = self.data.body("rightclaw"), self.data.body("leftclaw")
    gripper_distance_apart = np.clip(np.linalg.norm(finger_right.xpos - finger_left.xpos) / 0.1, 0.0, 1.0)
    obj_pos, obj_quat = self._get_pos_objects(), self._get_quat_objects()
    n = len(obj_pos) // 3
    if len(obj_pos) != 3 * n or len(obj_quat) != 4 * n or 7 * n > self._obs_obj_max_len:
        return _originals["_get_curr_obs_combined_no_goal"](self)  # metaworld's own code asserts or raises
    out = np.zeros(4 + self._obs_obj_max_len)
    out[:3] = pos_hand
    out[3] = gripper_distance_apart
    objects = out[4 : 4 + 7 * n].reshape(n, 7)
    objects[:, :3] = np.reshape(obj_pos, (n, 3))
    objects[:, 3:] = np.reshape(obj_quat, (n, 4))
    return out


_originals: dict = {}
#: SawyerXYZEnv methods replaced (no metaworld env class overrides them)
_METHODS = {"touching_object": touching_object, "_get_curr_obs_combined_no_goal": curr_obs_combined_no_goal}


#: what use_fast_paths can leave out (experiments/metaworld_fast_bench.py --leave-out: each one's share)
PIECES = ("Rotation", *_METHODS)


def use_fast_paths(enabled: bool = True, leave_out: tuple[str, ...] = ()) -> int:
    """Install (or remove) the stand-ins in the loaded metaworld modules, all but those named in
    ``leave_out`` (from :data:`PIECES`), which get metaworld's own code. Returns how many modules'
    ``Rotation`` was switched."""
    from metaworld.sawyer_xyz_env import SawyerXYZEnv

    unknown = set(leave_out) - set(PIECES)
    if unknown:
        raise ValueError(f"leave_out must name pieces among {', '.join(PIECES)}, got {sorted(unknown)}")
    for name, fast in _METHODS.items():
        _originals.setdefault(name, SawyerXYZEnv.__dict__[name])
        setattr(SawyerXYZEnv, name, fast if enabled and name not in leave_out else _originals[name])
    enabled = enabled and "Rotation" not in leave_out
    new, old = (FastRotation, ScipyRotation) if enabled else (ScipyRotation, FastRotation)
    switched = 0
    for name, module in list(sys.modules.items()):
        if (name == "metaworld" or name.startswith("metaworld.")) and getattr(module, "Rotation", None) is old:
            module.Rotation = new
            switched += 1
    return switched
