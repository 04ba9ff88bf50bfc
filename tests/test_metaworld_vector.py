"""envs/metaworld_vector.py: Meta-World envs stepped together give the single envs' results bit for bit
(reach-v3, push-v3 and pick-place-v3, the classes with a batched step).

The batched step does metaworld's per-step arithmetic with numpy in the same order (and takes every norm
through the same BLAS call as metaworld, every ``** 2`` through the same libm ``pow``), so on one machine the
two paths agree exactly; both are compared here on the same machine. Runs with the metaworld extra."""

from __future__ import annotations

import importlib.util

import gymnasium as gym
import numpy as np
import pytest

pytestmark = pytest.mark.skipif(importlib.util.find_spec("metaworld") is None, reason="needs the metaworld extra")

import metarl  # noqa: E402, F401  (registers metarl/...)

ML1, ML10 = "metarl/MetaWorldML1-v0", "metarl/MetaWorldML10-v0"


def _scripted_actions(singles, t: int, rng) -> np.ndarray:
    """Reach the goal (reach-v3), or grasp the object and carry it to the goal (the others), with noise:
    so the episodes succeed, close the gripper around the object and earn the push reward's bonus."""
    acts = []
    for env in singles:
        inner = env._env
        obj, tcp = inner._get_pos_objects()[:3], inner.tcp_center
        if inner.__class__.__name__.startswith("SawyerReach"):
            target, grip = inner._target_pos, 0.0
        else:
            target, grip = (obj, -1.0) if t < 40 else (obj, 1.0) if t < 60 else (inner._target_pos + [0, 0, 0.02], 1.0)
        a = np.concatenate([np.clip(10 * (target - tcp), -1, 1), [grip]]) + rng.normal(0, 0.3, 4)
        acts.append(np.clip(a, -1, 1).astype(np.float32))
    return np.stack(acts)


def _replay(env_id: str, tasks, steps: int, **kwargs):
    """The same actions through the vector env and through one single env per task: both results."""
    from metarl.envs.metaworld import MetaWorldVectorEnv

    venv = MetaWorldVectorEnv(len(tasks), **gym.spec(env_id).kwargs, **kwargs)
    venv.set_tasks(tasks)
    singles = []
    for task in tasks:
        env = gym.make(env_id, **kwargs).unwrapped
        env.set_task(task)
        singles.append(env)
    v_obs, _ = venv.reset()
    s_obs = np.stack([env.reset()[0] for env in singles])
    batched, single = [(v_obs,)], [(s_obs,)]
    rng = np.random.default_rng(1)
    for t in range(steps):
        actions = _scripted_actions(singles, t, rng)
        results = [env.step(a) for env, a in zip(singles, actions)]
        single.append((np.stack([r[0] for r in results]), np.array([r[1] for r in results]),
                       np.array([r[3] for r in results]), np.array([r[4]["success"] for r in results])))
        obs, reward, terminated, truncated, info = venv.step(actions)
        assert not terminated.any() and set(info) == {"success"}
        batched.append((obs, reward, truncated, info["success"]))
    return venv, singles, batched, single


@pytest.mark.parametrize("env_name", ["reach-v3", "push-v3", "pick-place-v3"])
def test_batched_steps_equal_the_single_envs_bit_for_bit(env_name, monkeypatch):
    from metarl.envs import metaworld_vector

    float32_rows = []  # rows where the caging reward's gripper term is float32 arithmetic
    caging = metaworld_vector._caging_and_gripping

    def counted(*args, **kwargs):
        out, f32 = caging(*args, **kwargs)
        float32_rows.append(int(f32.sum()))
        return out, f32

    monkeypatch.setattr(metaworld_vector, "_caging_and_gripping", counted)
    env = gym.make(ML1, env_name=env_name).unwrapped
    tasks = env.sample_tasks(6, np.random.default_rng(0))
    venv, _, batched, single = _replay(ML1, tasks, 150, env_name=env_name)
    assert metaworld_vector.has_batched_step(venv.envs[0]._env)
    for t, (b, s) in enumerate(zip(batched, single)):
        for name, x, y in zip(("obs", "reward", "truncated", "success"), b, s):
            assert np.array_equal(x, y), (t, name, x, y)
    success = np.stack([s[3] for s in single[1:]])
    rewards = np.stack([s[1] for s in single[1:]])
    assert success.any(0).sum() >= 4 and (rewards == 10).any()  # the scripted episodes succeed
    if env_name != "reach-v3":  # grasped (float32 rows), and the bonus for the object at the gripper
        assert sum(float32_rows) > 100 and ((rewards > 1) & (rewards < 10)).any()
    obs = np.stack([b[0] for b in batched])
    assert np.ptp(obs[:, :, 7:11], axis=0).max() > 0  # the object's quaternion moved (push) or is read (reach)


def test_episode_end_and_the_step_past_it():
    env = gym.make(ML1, env_name="reach-v3").unwrapped
    tasks = env.sample_tasks(2, np.random.default_rng(0))
    from metarl.envs.metaworld import MetaWorldVectorEnv

    venv = MetaWorldVectorEnv(2, benchmark="ML1", env_name="reach-v3")
    venv.set_tasks(tasks)
    venv.reset()
    for e in venv.envs:
        e._env.max_path_length = 5
    zero = np.zeros((2, 4), dtype=np.float32)
    truncated = [venv.step(zero)[3].tolist() for _ in range(5)]
    assert truncated == [[False, False]] * 4 + [[True, True]]
    # finished episodes are not stepped again (the collector masks them); a direct batched step past the end is refused
    obs_before = venv.step(zero)[0]
    assert np.array_equal(venv.step(zero)[0], obs_before) and all(e._env.curr_path_length == 5 for e in venv.envs)
    from metarl.envs.metaworld_vector import step_batch

    with pytest.raises(ValueError, match="episodes last at most 5 steps"):
        step_batch(venv._state, np.array([0]), zero[:1])


def test_other_classes_and_v1_rewards_take_metaworlds_own_step():
    """ML10 mixes batched classes (reach, push, pick-place) with others in one vector env; v1 rewards are never
    batched. Both paths in one step give the single envs' results."""
    from metarl.envs import metaworld_vector

    env = gym.make(ML10).unwrapped
    tasks = env.sample_tasks(40, np.random.default_rng(3))
    names = [t.env_name for t in tasks]
    batched = ("reach-v3", "push-v3", "pick-place-v3")
    picked = [names.index("reach-v3"), names.index("push-v3")] + [i for i, n in enumerate(names) if n not in batched][:2]
    tasks = [tasks[i] for i in picked]
    venv, _, batched, single = _replay(ML10, tasks, 60)
    assert [metaworld_vector.has_batched_step(e._env) for e in venv.envs] == [True, True, False, False]
    for t, (b, s) in enumerate(zip(batched, single)):
        for name, x, y in zip(("obs", "reward", "truncated", "success"), b, s):
            assert np.array_equal(x, y), (t, name)
    v1 = gym.make(ML1, env_name="push-v3", reward_function_version="v1").unwrapped
    v1.set_task(v1.sample_tasks(1, np.random.default_rng(0))[0])
    assert not metaworld_vector.has_batched_step(v1._env)


def test_vectorized_quaternions_equal_the_scalar_ones_bit_for_bit():
    from scipy.spatial.transform import Rotation

    from metarl.envs.metaworld_fast import quat_from_matrix
    from metarl.envs.metaworld_vector import quats_from_matrices

    rng = np.random.default_rng(0)
    axes = rng.normal(size=(2000, 3))
    axes /= np.linalg.norm(axes, axis=1, keepdims=True)
    mats = np.concatenate([
        Rotation.random(5000, random_state=1).as_matrix(),
        Rotation.from_rotvec(axes * np.pi).as_matrix(),  # half turns: a diagonal entry is chosen
        np.eye(3)[None], np.diag([1.0, -1.0, -1.0])[None],
        Rotation.random(random_state=3).as_matrix()[None] + 1e-6,  # not orthogonal: the scalar code goes to scipy
    ])
    ours = quats_from_matrices(mats.reshape(-1, 9))
    assert np.array_equal(ours, np.stack([quat_from_matrix(m) for m in mats]))
    decision = np.stack([mats[:, 0, 0], mats[:, 1, 1], mats[:, 2, 2], np.trace(mats, axis1=1, axis2=2)], axis=1)
    assert set(np.argmax(decision, axis=1).tolist()) == {0, 1, 2, 3}


def test_tolerance_and_hamacher_equal_metaworlds_scalar_helpers():
    from metaworld.utils import reward_utils

    from metarl.envs.metaworld_vector import hamacher, tolerance

    rng = np.random.default_rng(0)
    x = np.concatenate([rng.uniform(0, 0.5, 3000), [0.0, 0.05, 0.0500001]])
    margin = np.concatenate([rng.uniform(0, 0.4, 3000), [0.0, 0.0, 0.0]])
    ours = tolerance(x, 0, 0.05, margin)
    theirs = [reward_utils.tolerance(float(v), bounds=(0, 0.05), margin=float(m), sigmoid="long_tail")
              for v, m in zip(x, margin)]
    assert np.array_equal(ours, np.array(theirs))
    with pytest.raises(ValueError, match="margin"):
        tolerance(x[:2], 0, 0.05, np.array([0.1, -0.1]))
    a, b = rng.uniform(0, 1, 1000), np.concatenate([rng.uniform(0, 1, 998), [0.0, 1.0]])
    assert np.array_equal(hamacher(a, b), np.array([reward_utils.hamacher_product(p, q) for p, q in zip(a, b)]))
    with pytest.raises(ValueError, match="between 0 and 1"):
        hamacher(np.array([1.5]), np.array([0.5]))


def test_pick_place_initial_pads_stored_as_copies_are_used_as_stored(monkeypatch):
    """metaworld 3.1's "initial" pads of pick-place are views of the current pads; were they copies taken at
    reset (the name's meaning), the batched step would use them as stored: both paths still agree, and the
    rewards differ from the live-view episodes, so the branch is exercised."""
    from metaworld.envs.sawyer_pick_place_v3 import SawyerPickPlaceEnvV3

    env = gym.make(ML1, env_name="pick-place-v3").unwrapped
    tasks = env.sample_tasks(3, np.random.default_rng(0))
    _, _, _, live = _replay(ML1, tasks, 80, env_name="pick-place-v3")
    reset_model = SawyerPickPlaceEnvV3.reset_model

    def reset_with_copies(self):
        obs = reset_model(self)
        self.init_left_pad, self.init_right_pad = self.init_left_pad.copy(), self.init_right_pad.copy()
        return obs

    monkeypatch.setattr(SawyerPickPlaceEnvV3, "reset_model", reset_with_copies)
    venv, _, batched, single = _replay(ML1, tasks, 80, env_name="pick-place-v3")
    assert not venv._state.live_init_pads.any()
    for t, (b, s) in enumerate(zip(batched, single)):
        for name, x, y in zip(("obs", "reward", "truncated", "success"), b, s):
            assert np.array_equal(x, y), (t, name)
    assert not all(np.array_equal(a[1], b[1]) for a, b in zip(live[1:], single[1:]))
