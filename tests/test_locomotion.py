"""PEARL's locomotion task distributions (AntDir, AntGoal, HumanoidDir, Walker2DRandParams) and their batched twins."""

from __future__ import annotations

import math
import pickle
import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env as gym_check_env

import metarl.envs  # noqa: F401  (registers metarl/...)
from metarl.envs.ant import AntDirEnv, AntDirTask, AntGoalEnv, AntGoalTask, BatchedAntDir, BatchedAntGoal
from metarl.envs.humanoid import BatchedHumanoidDir, HumanoidDirEnv, HumanoidDirTask
from metarl.envs.walker import BatchedWalker2DRandParams, Walker2DParamsTask, Walker2DRandParamsEnv
from metarl.sampling.vector import make_vector_env

ANT_DIR, ANT_GOAL, WALKER = "metarl/AntDir-v0", "metarl/AntGoal-v0", "metarl/Walker2DRandParams-v0"
HUMANOID = "metarl/HumanoidDir-v0"
IDS = [ANT_DIR, ANT_GOAL, HUMANOID, WALKER]
#: id -> (observation size, action size, dt, single class, batched class)
SHAPES = {
    ANT_DIR: (27, 8, 0.05, AntDirEnv, BatchedAntDir),
    ANT_GOAL: (29, 8, 0.05, AntGoalEnv, BatchedAntGoal),
    HUMANOID: (45, 17, 0.015, HumanoidDirEnv, BatchedHumanoidDir),
    WALKER: (17, 6, 0.008, Walker2DRandParamsEnv, BatchedWalker2DRandParams),
}


def _actions(rng, shape):
    # beyond the bounds on purpose: MuJoCo clamps ctrl, the control cost sees the raw action
    return rng.uniform(-1.3, 1.3, size=shape).astype(np.float32)


def _expected(env_id, task, qpos_before, qpos_after, action, dt):
    """(reward, healthy) written out from PEARL's definitions (see the module docstrings)."""
    a2 = float(np.sum(np.asarray(action, np.float64) ** 2))
    if env_id == ANT_DIR:
        v = (qpos_after[:2] - qpos_before[:2]) / dt
        forward = v[0] * math.cos(task.angle) + v[1] * math.sin(task.angle)
        return forward - 0.5 * a2 + 1.0, 0.2 <= qpos_after[2] <= 1.0
    if env_id == HUMANOID:
        v = (qpos_after[:2] - qpos_before[:2]) / dt
        forward = 1.25 * (v[0] * math.cos(task.angle) + v[1] * math.sin(task.angle))
        return forward - 0.1 * a2 + 5.0, 1.0 <= qpos_after[2] <= 2.0
    if env_id == ANT_GOAL:
        return -(abs(qpos_after[0] - task.x) + abs(qpos_after[1] - task.y)) - 0.1 * a2, True
    v = (qpos_after[0] - qpos_before[0]) / dt
    return v + 1.0 - 1e-3 * a2, 0.8 < qpos_after[1] < 2.0 and -1.0 < qpos_after[2] < 1.0


@pytest.fixture(scope="module")
def single_envs():
    envs = {env_id: gym.make(env_id) for env_id in IDS}
    yield envs
    for env in envs.values():
        env.close()


# ------------------------------------------------------------------------------------ registration


@pytest.mark.parametrize("env_id", IDS)
def test_registered_with_horizon_200_and_spaces(env_id, single_envs):
    env = single_envs[env_id]
    obs_size, act_size, dt, cls, batched = SHAPES[env_id]
    assert env.spec.max_episode_steps == 200
    assert env.observation_space.shape == (obs_size,) and env.observation_space.dtype == np.float64
    assert env.action_space.shape == (act_size,)
    assert type(env.unwrapped) is cls and cls.batched_env_class is batched
    assert env.unwrapped.dt == pytest.approx(dt)
    venv = make_vector_env(env_id, 3)
    assert isinstance(venv, batched) and venv.single_observation_space == env.observation_space
    assert venv.single_action_space == env.action_space
    venv.close()


@pytest.mark.parametrize("env_id", IDS)
def test_gymnasium_and_sb3_check_env(env_id):
    from stable_baselines3.common.env_checker import check_env as sb3_check_env

    env = gym.make(env_id)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # advice (e.g. on unbounded float64 boxes) is not failure
        gym_check_env(env.unwrapped, skip_render_check=True)
        sb3_check_env(env, warn=False, skip_render_check=True)
    env.close()


# ----------------------------------------------------------------------------------------- tasks


@pytest.mark.parametrize("env_id", IDS)
def test_sample_tasks_reproducible_distinct_hashable(env_id, single_envs):
    base = single_envs[env_id].unwrapped
    a = base.sample_tasks(30, np.random.default_rng(3))
    assert a == base.sample_tasks(30, np.random.default_rng(3))
    assert a != base.sample_tasks(30, np.random.default_rng(4))
    assert base.sample_tasks(0, np.random.default_rng(0)) == []
    assert all(isinstance(t, base.task_type) for t in a)
    assert pickle.loads(pickle.dumps(a)) == a
    assert len({hash(t) for t in a}) == 30
    arrays = np.stack([base.task_to_array(t) for t in a])
    assert arrays.dtype == np.float32 and base.task_space.contains(arrays[0])
    assert np.all(arrays >= base.task_space.low) and np.all(arrays <= base.task_space.high)
    with pytest.raises(ValueError, match="-1"):
        base.sample_tasks(-1, np.random.default_rng(0))
    with pytest.raises(TypeError, match="Generator"):
        base.sample_tasks(3, 0)


@pytest.mark.parametrize("env_id", [ANT_DIR, HUMANOID])
def test_directions_uniform_on_the_circle(env_id, single_envs):
    angles = np.array([t.angle for t in single_envs[env_id].unwrapped.sample_tasks(4000, np.random.default_rng(0))])
    assert angles.min() >= 0 and angles.max() < 2 * np.pi
    counts = np.histogram(angles, bins=8, range=(0, 2 * np.pi))[0]
    assert counts.min() > 400 and counts.max() < 600  # 500 expected per bin
    task = single_envs[env_id].unwrapped.task_type(np.pi / 2)
    np.testing.assert_allclose(single_envs[env_id].unwrapped.task_to_array(task), [0, 1], atol=1e-7)


def test_ant_goals_uniform_on_the_disc_of_radius_3(single_envs):
    tasks = single_envs[ANT_GOAL].unwrapped.sample_tasks(4000, np.random.default_rng(0))
    xy = np.array([[t.x, t.y] for t in tasks])
    r = np.linalg.norm(xy, axis=1)
    assert r.max() <= 3.0 and r.max() > 2.95
    # uniform on the disc: P(r < 1.5) = 1/4, P(r < 3/sqrt 2) = 1/2
    assert abs((r < 1.5).mean() - 0.25) < 0.03 and abs((r < 3 / np.sqrt(2)).mean() - 0.5) < 0.03
    assert abs(xy.mean(axis=0)).max() < 0.1


def test_walker_multipliers_log_uniform_in_pearl_ranges(single_envs):
    base = single_envs[WALKER].unwrapped
    tasks = base.sample_tasks(300, np.random.default_rng(0))
    m = base.model
    for name, size, b in (("body_mass", m.nbody, 1.5), ("body_inertia", 3 * m.nbody, 1.5),
                          ("dof_damping", m.nv, 1.3), ("geom_friction", 3 * m.ngeom, 1.5)):
        u = np.log(np.array([getattr(t, name) for t in tasks])) / np.log(b)  # the uniform exponents
        assert u.shape == (300, size), name
        assert u.min() >= -3 - 1e-12 and u.max() <= 3 + 1e-12, name
        assert u.min() < -2.9 and u.max() > 2.9 and abs(u.mean()) < 0.1, name
        assert abs(u.std() - np.sqrt(3)) < 0.05, name  # U[-3, 3] has std sqrt(3)
        # elements vary independently, not one multiplier for the whole field
        assert abs(np.corrcoef(u[:, 0], u[:, -1])[0, 1]) < 0.2, name
    assert Walker2DRandParamsEnv.task_space.shape == (m.nbody * 4 + m.nv + 3 * m.ngeom,)


def test_task_values_are_checked(single_envs):
    with pytest.raises(ValueError, match="nan"):
        AntDirTask(float("nan"))
    with pytest.raises(TypeError, match="'east'"):
        AntDirTask("east")
    with pytest.raises(TypeError, match="True"):
        AntGoalTask(True, 0.0)
    with pytest.raises(ValueError, match="inf"):
        HumanoidDirTask(float("inf"))
    with pytest.raises(ValueError, match="positive"):
        Walker2DParamsTask(body_mass=(1.0, -2.0))
    with pytest.raises(TypeError, match="flat sequence"):
        Walker2DParamsTask(dof_damping=((1.0,),))
    assert AntGoalTask(np.float32(0.5), 1) == AntGoalTask(0.5, 1.0)
    walker = single_envs[WALKER].unwrapped
    with pytest.raises(ValueError, match="body_mass has 2 multipliers; this model's body_mass has 8"):
        walker.set_task(Walker2DParamsTask(body_mass=(1.0, 2.0)))
    venv = make_vector_env(WALKER, 2)
    with pytest.raises(ValueError, match="dof_damping has 1 multipliers"):
        venv.set_tasks([Walker2DParamsTask(), Walker2DParamsTask(dof_damping=(2.0,))])
    with pytest.raises(TypeError, match="expected a Walker2DParamsTask"):
        venv.set_tasks([Walker2DParamsTask(), AntDirTask(0.0)])
    venv.close()
    default = Walker2DRandParamsEnv.task_to_array(Walker2DParamsTask())
    assert default.shape == Walker2DRandParamsEnv.task_space.shape and not default.any()  # unscaled: log 1
    with pytest.raises(ValueError, match="log_scale_limit"):
        Walker2DRandParamsEnv(log_scale_limit=-1)
    with pytest.raises(ValueError, match="terminate_when_unhealthy"):
        AntDirEnv(terminate_when_unhealthy="yes")
    with pytest.raises(ValueError, match="num_threads"):
        BatchedAntDir(2, num_threads=0)


@pytest.mark.parametrize("env_id", IDS)
def test_set_get_task_and_pickle(env_id, single_envs):
    base = single_envs[env_id].unwrapped
    task = base.sample_tasks(2, np.random.default_rng(9))[1]
    base.set_task(task)
    assert base.get_task() == task
    with pytest.raises(TypeError, match=type(base).__name__):
        base.set_task(AntGoalTask(0, 0) if env_id != ANT_GOAL else AntDirTask(0))
    clone = pickle.loads(pickle.dumps(base))
    assert type(clone) is type(base) and clone.get_task() == task
    o1, _ = base.reset(seed=3)
    o2, _ = clone.reset(seed=3)
    np.testing.assert_array_equal(o1, o2)
    a = np.linspace(-1, 1, base.action_space.shape[0], dtype=np.float32)
    assert base.step(a)[1] == clone.step(a)[1]
    clone.close()


# ------------------------------------------------------------------------- single-env dynamics


@pytest.mark.parametrize("env_id", IDS)
def test_reward_and_termination_match_pearl_formulas(env_id, single_envs):
    env = single_envs[env_id]
    base = env.unwrapped
    dt = SHAPES[env_id][2]
    rng = np.random.default_rng(2)
    terminated_seen = 0
    for task in base.sample_tasks(3, np.random.default_rng(1)):
        base.set_task(task)
        base.reset(seed=5)
        for _ in range(200):
            qpos_before = base.data.qpos.copy()
            a = _actions(rng, base.action_space.shape[0])
            obs, r, term, trunc, info = base.step(a)
            want_r, healthy = _expected(env_id, task, qpos_before, base.data.qpos, a, dt)
            assert r == pytest.approx(want_r, rel=1e-12, abs=1e-12)
            assert term == (not healthy) and not trunc
            assert info["x_position"] == base.data.qpos[0]
            if env_id == WALKER:
                want_obs = np.concatenate([base.data.qpos[1:], np.clip(base.data.qvel, -10, 10)])
            elif env_id in (ANT_DIR, HUMANOID):
                want_obs = np.concatenate([base.data.qpos[2:], base.data.qvel])
            else:
                want_obs = np.concatenate([base.data.qpos, base.data.qvel])
            np.testing.assert_array_equal(obs, want_obs)
            if term:
                terminated_seen += 1
                break
    if env_id == ANT_GOAL:
        assert terminated_seen == 0
    else:
        assert terminated_seen > 0  # the health check was exercised, not only the healthy branch


def test_unhealthy_terminates_unless_switched_off():
    for kwargs, want in (({}, True), ({"terminate_when_unhealthy": False}, False)):
        # torso far too high for the ant (healthy: 0.2 <= z <= 1), too low for the humanoid (1 <= z <= 2)
        # and the walker (0.8 < z < 2)
        for env, index, z in ((AntDirEnv(**kwargs), 2, 1.5), (HumanoidDirEnv(**kwargs), 2, 0.5),
                              (Walker2DRandParamsEnv(**kwargs), 1, 0.1)):
            env.reset(seed=0)
            qpos = env.data.qpos.copy()
            qpos[index] = z
            env.set_state(qpos, env.data.qvel.copy())
            assert env.step(np.zeros(env.action_space.shape, np.float32))[2] is want
            env.close()
    goal = AntGoalEnv()  # never terminates (oyster: done = False)
    goal.reset(seed=0)
    qpos = goal.data.qpos.copy()
    qpos[2] = 1.5
    goal.set_state(qpos, goal.data.qvel.copy())
    assert goal.step(np.zeros(8, np.float32))[2] is False
    goal.close()


@pytest.mark.parametrize("env_id,stock_id,kwargs", [
    (ANT_DIR, "Ant-v5", {"include_cfrc_ext_in_observation": False}),
    (WALKER, "Walker2d-v5", {}),
    (HUMANOID, "Humanoid-v5", {f"include_{k}_in_observation": False
                               for k in ("cinert", "cvel", "qfrc_actuator", "cfrc_ext")}),
])
def test_default_task_is_the_gymnasium_v5_physics(env_id, stock_id, kwargs):
    """Bit-identical observations to stock v5 when its solver warm start is also zeroed per step."""
    ours = gym.make(env_id).unwrapped
    stock = gym.make(stock_id, **kwargs).unwrapped
    rng = np.random.default_rng(0)
    o1, _ = ours.reset(seed=11)
    o2, _ = stock.reset(seed=11)
    np.testing.assert_array_equal(o1, o2)
    for _ in range(30):
        a = rng.uniform(-1, 1, ours.action_space.shape).astype(np.float32)
        stock.data.qacc_warmstart[:] = 0.0
        o1, *_ = ours.step(a)
        o2, *_ = stock.step(a)
        np.testing.assert_array_equal(o1, o2)
    ours.close()
    stock.close()


def test_walker_tasks_change_the_dynamics(single_envs):
    env = Walker2DRandParamsEnv()
    names = ("body_mass", "body_inertia", "dof_damping", "geom_friction")
    defaults = {n: getattr(env.model, n).copy() for n in names}
    t1, t2 = env.sample_tasks(2, np.random.default_rng(0))
    actions = _actions(np.random.default_rng(1), (40, 6))

    def trajectory(task):
        env.set_task(task)
        rows = [env.reset(seed=4)[0]]
        rows += [env.step(a)[0] for a in actions]
        return np.array(rows)

    first = trajectory(t1)
    np.testing.assert_array_equal(env.model.body_mass, defaults["body_mass"] * np.array(t1.body_mass))
    friction = defaults["geom_friction"] * np.reshape(t1.geom_friction, (-1, 3))
    np.testing.assert_array_equal(env.model.geom_friction, friction)
    np.testing.assert_array_equal(env.model.dof_damping, defaults["dof_damping"] * np.array(t1.dof_damping))
    # mj_setConst recomputed the constants derived from the masses (e.g. the world's subtree mass)
    assert env.model.body_subtreemass[0] == pytest.approx(env.model.body_mass.sum(), rel=1e-12)
    assert abs(env.model.body_subtreemass[0] - defaults["body_mass"].sum()) > 1e-3
    second = trajectory(t2)
    np.testing.assert_array_equal(first[0], second[0])  # same start: only the dynamics differ
    assert np.abs(first[-1] - second[-1]).max() > 0.1
    np.testing.assert_array_equal(trajectory(t1), first)  # a task's dynamics are a function of the task
    env.set_task(Walker2DParamsTask())  # the default task restores the model
    for name, value in defaults.items():
        np.testing.assert_array_equal(getattr(env.model, name), value)
    # set_task mid-episode edits the model, not the state
    env.reset(seed=0)
    env.step(actions[0])
    qpos = env.data.qpos.copy()
    env.set_task(t2)
    np.testing.assert_array_equal(env.data.qpos, qpos)
    env.close()


# --------------------------------------------------------------------------- batched == single


def _run_pair(env_id, tasks, seeds, steps, rng, **native_kwargs):
    venvs = [make_vector_env(env_id, len(seeds), backend="gym"),
             make_vector_env(env_id, len(seeds), backend="native", **native_kwargs)]
    traj = [[], []]
    for venv in venvs:
        venv.seed(seeds)
        venv.set_tasks(tasks)
    for _ in range(2):  # the second reset continues each sub-env's stream and restarts finished ones
        for venv, out in zip(venvs, traj):
            out.append(("reset", *venv.reset()))
        for _ in range(steps):
            a = _actions(rng, (len(seeds), venvs[0].single_action_space.shape[0]))
            for venv, out in zip(venvs, traj):
                out.append(("step", *venv.step(a)))
    for venv in venvs:
        venv.close()
    return traj


@pytest.mark.parametrize("env_id", IDS)
def test_batched_env_equals_gymnasium_loop_exactly(env_id, single_envs):
    base = single_envs[env_id].unwrapped
    B = 6
    tasks = base.sample_tasks(B - 1, np.random.default_rng(7))
    tasks.append(tasks[0])  # two rows share a task (and, for the walker, a model)
    seeds = [100 + 17 * i for i in range(B)]
    gym_traj, native_traj = _run_pair(env_id, tasks, seeds, 80, np.random.default_rng(8))
    terminations, mixed_steps = 0, 0
    finished = np.zeros(B, dtype=bool)
    for g, n in zip(gym_traj, native_traj):
        assert g[0] == n[0]
        np.testing.assert_array_equal(n[1], g[1])  # observations
        assert n[1].dtype == np.float64 and n[1].shape == (B, SHAPES[env_id][0])
        if g[0] == "step":
            for k in (2, 3, 4):  # rewards, terminated, truncated
                np.testing.assert_array_equal(n[k], g[k])
            terminations += n[3].sum()
            mixed_steps += 0 < finished.sum() < B
            finished |= n[3]
            infos_g, infos_n = g[5], n[5]
        else:
            finished[:] = False
            infos_g, infos_n = g[2], n[2]
        if infos_g:  # the loop returns no infos once every sub-env has finished
            assert set(infos_n) == set(infos_g)
            for key in infos_g:
                np.testing.assert_array_equal(infos_n[key], infos_g[key], err_msg=key)
    if env_id != ANT_GOAL:
        # episodes ended early at different steps: running and finished rows were compared side by side
        assert terminations > 0 and mixed_steps > 10
    rewards = np.array([n[2] for n in native_traj[1:40]])
    assert np.ptp(rewards[0]) > 0  # rewards depend on the task (or the dynamics)


@pytest.mark.parametrize("env_id", [ANT_DIR, WALKER])
def test_batched_env_independent_of_thread_count_and_chunking(env_id, single_envs):
    tasks = single_envs[env_id].unwrapped.sample_tasks(5, np.random.default_rng(0))
    results = []
    for kwargs in ({"num_threads": 1}, {"num_threads": 3, "chunk_size": 1}):
        venv = make_vector_env(env_id, 5, backend="native", **kwargs)
        venv.seed([1, 2, 3, 4, 5])
        venv.set_tasks(tasks)
        rng = np.random.default_rng(1)
        rows = [venv.reset()[0]]
        for _ in range(30):
            obs, r, term, *_ = venv.step(_actions(rng, (5, venv.single_action_space.shape[0])))
            rows += [obs, r[:, None], term[:, None]]
        venv.close()
        results.append(np.concatenate(rows, axis=1))
    np.testing.assert_array_equal(results[0], results[1])


def test_batched_walker_rows_use_their_own_tasks_model():
    env = Walker2DRandParamsEnv()
    t1, t2 = env.sample_tasks(2, np.random.default_rng(5))
    venv = BatchedWalker2DRandParams(3, num_threads=1, terminate_when_unhealthy=False)
    venv.seed([0, 0, 0])
    venv.set_tasks([t1, t2, t1])
    assert venv._model_list[0] is venv._model_list[2] and venv._model_list[0] is not venv._model_list[1]
    np.testing.assert_array_equal(venv._model_list[1].body_mass, venv.model.body_mass * np.array(t2.body_mass))
    obs, _ = venv.reset()
    rng = np.random.default_rng(0)
    for _ in range(30):
        a = np.repeat(_actions(rng, (1, 6)), 3, axis=0)
        obs, *_ = venv.step(a)
    np.testing.assert_array_equal(obs[0], obs[2])  # same seed, task and actions
    assert np.abs(obs[0] - obs[1]).max() > 0.05  # another task: other dynamics
    venv.close()
    env.close()


def test_batched_step_checks_inputs():
    venv = BatchedAntGoal(3, num_threads=1)
    with pytest.raises(RuntimeError, match="before reset"):
        venv.step(np.zeros((3, 8)))
    venv.reset()
    with pytest.raises(ValueError, match=r"\(3, 8\).*\(2, 8\)"):
        venv.step(np.zeros((2, 8)))
    bad = np.zeros((3, 8))
    bad[1, 4] = np.nan
    with pytest.raises(ValueError, match=r"sub-envs \[1\]"):
        venv.step(bad)
    venv.close()
    with pytest.raises(RuntimeError, match="after close"):
        venv.step(np.zeros((3, 8)))


@pytest.mark.parametrize("env_id", [ANT_DIR, WALKER])
def test_oracle_collection_appends_the_task(env_id):
    from metarl.common.policies import make_policy
    from metarl.sampling.collector import Collector

    collector = Collector(env_id, seed=0, oracle=True)
    tasks = collector.sample_tasks(2, np.random.default_rng(0))
    policy = make_policy(collector.observation_space, collector.action_space, collector.supervised, (8,))
    batch = collector.collect(policy, tasks, 1)
    features = np.stack([SHAPES[env_id][3].task_to_array(t) for t in tasks])
    assert batch.obs.shape[-1] == SHAPES[env_id][0] + features.shape[1]
    np.testing.assert_array_equal(batch.obs[0, :, SHAPES[env_id][0]:].numpy(), features)
    collector.close()
