"""envs/metaworld_fast.py: scipy's quaternions, and whole metaworld episodes unchanged by the fast paths.

The quaternion does scipy's operations in scipy's order, so on x86-64 (where these tests were written) the
results are equal bit for bit; but scipy's compiled code may fuse multiply-adds on another CPU or build, so
the comparisons with scipy allow two units in the last place (ULP2) and nothing more.

Runs where scipy is installed (it comes with the metaworld extra: make test-metaworld)."""

from __future__ import annotations

import importlib.util

import gymnasium as gym
import numpy as np
import pytest

pytest.importorskip("scipy")
from scipy.spatial.transform import Rotation  # noqa: E402

import metarl  # noqa: E402, F401  (registers metarl/...)
from metarl.envs.metaworld_fast import FastRotation, quat_from_matrix, use_fast_paths  # noqa: E402

ULP2 = 2 * np.finfo(np.float64).eps  # quaternion entries are at most 1 in magnitude


def assert_scipy_equal(ours, theirs) -> None:
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=ULP2)


def _matrices() -> np.ndarray:
    rng = np.random.default_rng(0)
    axes = rng.normal(size=(4000, 3))
    axes /= np.linalg.norm(axes, axis=1, keepdims=True)
    return np.concatenate([
        Rotation.random(20000, random_state=1).as_matrix(),
        Rotation.from_rotvec(rng.normal(size=(3000, 3)) * 1e-3).as_matrix(),  # near the identity
        Rotation.from_rotvec(axes * np.pi).as_matrix(),  # half turns: the trace is smallest, a diagonal entry chosen
        Rotation.from_rotvec(axes[:3000] * (np.pi - 1e-7)).as_matrix(),
        np.eye(3)[None], np.diag([1.0, -1.0, -1.0])[None], np.diag([-1.0, 1.0, -1.0])[None], np.diag([-1.0, -1.0, 1.0])[None],
    ])


def test_quaternions_equal_scipys_bit_for_bit_in_every_case():
    mats = _matrices()
    ours = np.stack([quat_from_matrix(m) for m in mats])
    theirs = np.stack([Rotation.from_matrix(m).as_quat() for m in mats])
    assert_scipy_equal(ours, theirs)
    # every branch of the case choice was taken (the largest of m00, m11, m22 and the trace)
    decision = np.stack([mats[:, 0, 0], mats[:, 1, 1], mats[:, 2, 2], np.trace(mats, axis1=1, axis2=2)], axis=1)
    assert set(np.argmax(decision, axis=1).tolist()) == {0, 1, 2, 3}
    assert_scipy_equal(FastRotation.from_matrix(mats[5]).as_quat(), theirs[5])
    assert_scipy_equal(quat_from_matrix(mats[7].ravel()), theirs[7])  # metaworld passes reshaped xmats


def test_matrices_scipy_would_fix_or_refuse_go_to_scipy():
    skewed = Rotation.random(random_state=3).as_matrix() + 1e-6  # not orthogonal: scipy orthogonalises first
    assert np.array_equal(quat_from_matrix(skewed), Rotation.from_matrix(skewed).as_quat())  # scipy's own answer
    with pytest.raises(ValueError, match="Non-positive determinant"):
        quat_from_matrix(np.diag([1.0, 1.0, -1.0]))  # a reflection


@pytest.mark.skipif(importlib.util.find_spec("metaworld") is None, reason="needs the metaworld extra")
@pytest.mark.parametrize("env_name", ["reach-v3", "push-v3", "pick-place-v3", "stick-pull-v3"])
def test_metaworld_episodes_are_unchanged_by_the_fast_paths(env_name):
    """The same episode with metaworld's own code and with the fast paths: every observation, reward and
    info entry equal. The actions drive the gripper down and closed onto the object, so contacts with both
    pads (touching_object) and a moving object quaternion are part of it."""
    import metaworld.envs.sawyer_push_v3 as push_module
    from metaworld.sawyer_xyz_env import SawyerXYZEnv

    from metarl.envs import metaworld_fast

    def episode(own_code: bool):
        env = gym.make("metarl/MetaWorldML1-v0", env_name=env_name).unwrapped  # installs the fast paths
        assert push_module.Rotation is FastRotation and SawyerXYZEnv.touching_object is metaworld_fast.touching_object
        if own_code:
            assert use_fast_paths(False) >= 20  # every metaworld module that uses Rotation
            assert push_module.Rotation is Rotation and SawyerXYZEnv.touching_object is not metaworld_fast.touching_object
        env.set_task(env.sample_tasks(1, np.random.default_rng(0))[0])
        obs, rewards, infos = [env.reset(seed=0)[0]], [], []
        rng = np.random.default_rng(1)
        for t in range(200):
            inner = env._env
            to_object = inner._get_pos_objects()[:3] - inner.tcp_center
            # scripted: above the object, down, then close the gripper on it, with noise
            a = np.concatenate([np.clip(10 * to_object, -1, 1), [1.0 if t > 60 else -1.0]]) + rng.normal(0, 0.3, 4)
            o, r, _, _, info = env.step(np.clip(a, -1, 1).astype(np.float32))
            obs.append(o), rewards.append(r), infos.append(info)
        # the code asked for was in force to the end (set_task and reset must not switch it)
        assert (push_module.Rotation is Rotation) == own_code
        assert (SawyerXYZEnv.touching_object is metaworld_fast.touching_object) != own_code
        assert (SawyerXYZEnv._get_curr_obs_combined_no_goal is metaworld_fast.curr_obs_combined_no_goal) != own_code
        return np.stack(obs), np.array(rewards), infos

    try:
        own = episode(own_code=True)
    finally:
        use_fast_paths(True)
    fast = episode(own_code=False)
    # the quaternion entries (7:11, and 14:18 for a second object) as scipy's, within ULP2; every other
    # observation entry, reward and info entry is the same arithmetic or a copy, so exactly equal
    np.testing.assert_allclose(fast[0], own[0], rtol=0, atol=ULP2)
    quat = np.zeros(fast[0].shape[1], dtype=bool)
    quat[[7, 8, 9, 10, 14, 15, 16, 17]] = True
    quat[18:36] = quat[:18]  # the previous frame's copy (36:39 is the goal, hidden)
    assert np.array_equal(fast[0][:, ~quat], own[0][:, ~quat]) and np.array_equal(fast[1], own[1])
    assert fast[2] == own[2]  # every info entry, grasp_success included
    assert np.ptp(fast[0][:, 7:11], axis=0).max() > 0  # the object's quaternion moved
    if env_name in ("push-v3", "pick-place-v3"):
        assert any(info["grasp_success"] for info in fast[2])  # both pads touched the object at some step


@pytest.mark.skipif(importlib.util.find_spec("metaworld") is None, reason="needs the metaworld extra")
def test_pieces_can_be_left_out_one_by_one():
    """experiments/metaworld_fast_bench.py --leave-out times the fast paths without one piece: only that one reverts."""
    import metaworld.envs.sawyer_reach_v3 as reach_module
    from metaworld.sawyer_xyz_env import SawyerXYZEnv

    from metarl.envs import metaworld_fast

    gym.make("metarl/MetaWorldML1-v0")  # imports metaworld, which installs the fast paths
    try:
        use_fast_paths(True, leave_out=("Rotation",))
        assert reach_module.Rotation is Rotation and SawyerXYZEnv.touching_object is metaworld_fast.touching_object
        use_fast_paths(True, leave_out=("touching_object",))
        assert reach_module.Rotation is FastRotation and SawyerXYZEnv.touching_object is not metaworld_fast.touching_object
        assert SawyerXYZEnv._get_curr_obs_combined_no_goal is metaworld_fast.curr_obs_combined_no_goal
        with pytest.raises(ValueError, match=r"leave_out must name pieces among Rotation, .*got \['rotation'\]"):
            use_fast_paths(True, leave_out=("rotation",))
    finally:
        use_fast_paths(True)
    assert reach_module.Rotation is FastRotation and SawyerXYZEnv.touching_object is metaworld_fast.touching_object
