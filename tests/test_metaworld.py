"""Meta-World task distributions (envs/metaworld.py) and their configs. Everything but the first test
needs the extra, ``pip install -e ".[metaworld]"`` (CI runs them in a second venv: .ci/run)."""

from __future__ import annotations

import importlib.util
import json
import pickle
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

import metarl  # noqa: F401  (registers metarl/...)
from metarl.cli import main
from metarl.sampling.collector import Collector

ROOT = Path(__file__).resolve().parents[1]
ML1, ML10 = "metarl/MetaWorldML1-v0", "metarl/MetaWorldML10-v0"
needs_metaworld = pytest.mark.skipif(importlib.util.find_spec("metaworld") is None,
                                     reason='Meta-World is not installed: pip install -e ".[metaworld]"')


def test_without_the_extra_the_error_names_the_pip_command(monkeypatch, capsys, tmp_path):
    monkeypatch.setitem(sys.modules, "metaworld", None)  # import metaworld now fails, installed or not
    with pytest.raises(ModuleNotFoundError, match=r'^Meta-World needs the metaworld package: pip install -e "\.\[metaworld\]"$'):
        gym.make(ML1)
    code = main(["train", str(ROOT / "experiments" / "metaworld_ml1_reach_maml.yaml"), "--run-dir",
                 str(tmp_path / "run")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err == ['metarl: error: Meta-World needs the metaworld package: pip install -e ".[metaworld]"']
    assert not (tmp_path / "run").exists()  # a run that could not start leaves nothing behind


@needs_metaworld
def test_bad_names_are_one_line_listing_the_valid_ones():
    import metaworld

    with pytest.raises(ValueError) as info:
        gym.make(ML1, env_name="reach-v9")
    message = str(info.value)
    assert "\n" not in message and "'reach-v9'" in message
    assert all(name in message for name in metaworld.ML1.ENV_NAMES) and len(metaworld.ML1.ENV_NAMES) == 50
    with pytest.raises(ValueError, match="env_name applies to ML1 only"):
        gym.make(ML10, env_name="reach-v3")
    with pytest.raises(ValueError, match="reward_function_version must be one of v2, v1, got 'v3'"):
        gym.make(ML1, reward_function_version="v3")


@needs_metaworld
def test_ml1_tasks_are_the_benchmarks_and_behave_as_metaworlds_own_env():
    import metaworld

    env = gym.make(ML1, env_name="push-v3").unwrapped
    bench = metaworld.ML1("push-v3", seed=0)
    rng_a, rng_b = np.random.default_rng(5), np.random.default_rng(5)
    tasks = env.sample_tasks(30, rng_a)
    # uniform draws of training task indices from the generator given, nothing else
    assert [t.index for t in tasks] == rng_b.integers(0, 50, size=30).tolist()
    assert all(t.split == "train" and t.data == bench.train_tasks[t.index].data for t in tasks)
    test = env.sample_test_tasks(10, np.random.default_rng(5))
    assert all(t.split == "test" and t.data == bench.test_tasks[t.index].data for t in test)
    train_goals = {pickle.loads(t.data)["rand_vec"].tobytes() for t in bench.train_tasks}
    assert not any(pickle.loads(t.data)["rand_vec"].tobytes() in train_goals for t in test)  # held out
    assert pickle.loads(pickle.dumps(tasks[0])) == tasks[0]  # small, picklable, comparable

    # the same observations, rewards and success as metaworld's own env with the same task and actions
    ref = bench.train_classes["push-v3"]()
    ref.set_task(bench.train_tasks[tasks[0].index])
    env.set_task(tasks[0])
    assert env.get_task() == tasks[0]
    o1, _ = env.reset(seed=0)
    o2, _ = ref.reset()
    np.testing.assert_array_equal(o1, o2)
    actions = np.random.default_rng(0).uniform(-1, 1, (40, 4)).astype(np.float32)
    for a in actions:
        o1, r1, te1, tr1, i1 = env.step(a)
        o2, r2, te2, tr2, i2 = ref.step(a)
        np.testing.assert_array_equal(o1, o2)
        assert (r1, te1, tr1, i1["success"]) == (r2, te2, tr2, i2["success"])
    assert env.observation_space.shape == o1.shape == (39,) and env.action_space.shape == (4,)


@needs_metaworld
def test_reward_versions_differ_and_horizon_is_capped():
    rewards = {}
    for version in ("v1", "v2"):
        env = gym.make(ML1, env_name="reach-v3", reward_function_version=version).unwrapped
        env.set_task(env.sample_tasks(1, np.random.default_rng(0))[0])
        env.reset(seed=0)
        rewards[version] = env.step(np.full(4, 0.5, dtype=np.float32))[1]
    assert rewards["v1"] != rewards["v2"]
    for _ in range(499):
        env.step(np.zeros(4, dtype=np.float32))
    with pytest.raises(ValueError, match="at most 500 steps; use env.horizon <= 500"):
        env.step(np.zeros(4, dtype=np.float32))


@needs_metaworld
def test_held_out_tasks_are_spread_evenly():
    """Evaluation scores every held-out position once before any twice, and ML10's classes in turn."""
    from collections import Counter

    env = gym.make(ML1).unwrapped
    test = env.sample_test_tasks(50, np.random.default_rng(3))
    assert sorted(t.index for t in test) == list(range(50))  # each held-out goal exactly once
    counts = Counter(t.index for t in env.sample_test_tasks(120, np.random.default_rng(3)))
    assert len(counts) == 50 and set(counts.values()) == {2, 3}  # two full rounds, then 20 of a third
    again = env.sample_test_tasks(50, np.random.default_rng(3))
    assert [t.index for t in again] == [t.index for t in test]  # a function of the generator only
    assert [t.index for t in env.sample_test_tasks(50, np.random.default_rng(4))] != [t.index for t in test]

    env = gym.make(ML10).unwrapped
    test = env.sample_test_tasks(42, np.random.default_rng(0))
    per_class = Counter(t.env_name for t in test)
    assert len(per_class) == 5 and sorted(per_class.values()) == [8, 8, 8, 9, 9]
    assert len({(t.env_name, t.index) for t in test}) == 42  # no position twice within a round


@needs_metaworld
def test_ml10_switches_classes_and_holds_out_five():
    import metaworld.env_dict as ed

    env = gym.make(ML10).unwrapped
    train = env.sample_tasks(40, np.random.default_rng(0))
    test = env.sample_test_tasks(40, np.random.default_rng(0))
    assert {t.env_name for t in train} <= set(ed.ML10_V3["train"]) and len({t.env_name for t in train}) > 5
    assert {t.env_name for t in test} == set(ed.ML10_V3["test"])  # 40 draws hit all 5 classes
    for task in (train[0], test[0], train[1]):
        env.set_task(task)
        assert type(env._env) is ed.ML10_V3["test" if task.split == "test" else "train"][task.env_name]
        obs, _ = env.reset(seed=0)
        assert obs.shape == (39,)
        env.step(np.zeros(4, dtype=np.float32))
    assert env.task_group(test[0]) == test[0].env_name


@needs_metaworld
def test_a_process_pool_collects_metaworld_as_in_process():
    """Meta-World on collector.backend=process_pool (each worker steps its share with metaworld's Python
    envs): the same episodes to rounding, success recorded through the workers' pipes."""
    from metarl.common.policies import make_policy
    from metarl.sampling.process_pool import ProcessPoolCollector

    kwargs = dict(seed=2, env_kwargs={"env_name": "reach-v3"}, horizon=30)
    local, pool = Collector(ML1, backend="gym", **kwargs), ProcessPoolCollector(ML1, num_workers=2, **kwargs)
    try:
        torch.manual_seed(0)
        policy = make_policy(local.observation_space, local.action_space, False, (16,))
        tasks = local.sample_tasks(4, np.random.default_rng(0))
        a, b = local.collect(policy, tasks, 3), pool.collect(policy, tasks, 3)
    finally:
        local.close()
        pool.close()
    assert set(b.infos) == {"success"} and torch.equal(a.valid, b.valid)
    for name in ("obs", "actions", "rewards", "log_probs"):
        torch.testing.assert_close(getattr(b, name), getattr(a, name), atol=1e-4, rtol=1e-4, msg=name)
    # success is a threshold on a distance: a last-bit difference could flip a step sitting on it (an
    # untrained policy seldom succeeds in 30 steps; test_collector_records_success_on_every_backend
    # replays the recorded success against metaworld's own)
    assert b.infos["success"].shape == a.infos["success"].shape
    assert (a.infos["success"] != b.infos["success"]).float().mean() <= 0.05

@needs_metaworld
def test_collector_records_success_on_every_backend():
    batches = {}
    for backend in ("gym", "subproc"):
        c = Collector(ML1, seed=2, backend=backend, env_kwargs={"env_name": "reach-v3"}, horizon=30, num_workers=2)
        torch.manual_seed(0)
        from metarl.common.policies import make_policy

        policy = make_policy(c.observation_space, c.action_space, False, (16,))
        tasks = c.sample_tasks(2, np.random.default_rng(0))
        batches[backend] = c.collect(policy, tasks, 3)
        c.close()
    a, b = batches["gym"], batches["subproc"]
    assert set(a.infos) == {"success"}
    for name in ("obs", "actions", "rewards", "valid"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    assert torch.equal(a.infos["success"], b.infos["success"])
    # the recorded success is metaworld's info["success"] of the same steps, replayed on a single env
    env = gym.make(ML1, env_name="reach-v3").unwrapped
    env.set_task(Collector(ML1, env_kwargs={"env_name": "reach-v3"}).sample_tasks(2, np.random.default_rng(0))[0])
    env.reset(seed=0)
    replayed = [env.step(act.numpy())[4]["success"] for act in a.actions[:, 0].clamp(-1, 1)]
    assert a.infos["success"][:, 0].tolist() == [float(s) for s in replayed]


@needs_metaworld
@pytest.mark.parametrize("config", sorted(p.name for p in (ROOT / "experiments").glob("metaworld_*.yaml")))
def test_configs_load_and_run_a_tiny_iteration(config, tmp_path, capsys):
    """Each Meta-World config trains one tiny iteration (2 tasks, short episodes) and evaluates: success
    rates in progress.csv and beside the returns in eval/ (per held-out class for ML10)."""
    algo = "rl2" if config.endswith("_rl2.yaml") else "maml"
    tiny = ["env.horizon=20", "train.iterations=1", "train.checkpoint_every=1", "train.show_progress=false"]
    tiny += (["rl2.trials_per_iteration=2", "rl2.minibatches=1", "rl2.ppo_epochs=1", "rl2.episodes_per_trial=2"]
             if algo == "rl2" else ["maml.meta_batch_size=2", "maml.episodes_per_task=2"])
    run = tmp_path / "run"
    args = ["train", str(ROOT / "experiments" / config), "--run-dir", str(run)]
    for item in tiny:
        args += ["--set", item]
    assert main(args) == 0, capsys.readouterr().err
    header = (run / "progress.csv").read_text().splitlines()[0].split(",")
    wanted = ["pre_update/success_rate", "post_update/success_rate"] if algo == "maml" else \
        ["success_rate/episode_0", "success_rate/episode_1"]
    assert all(col in header for col in wanted), header
    assert main(["evaluate", str(run), "--tasks", "5", "--steps", "1"]) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert "success_rate by step" in out
    summary = json.loads((run / "eval" / "summary.json").read_text())
    rates = summary["success_rate"][algo]
    assert all(0.0 <= r["mean"] <= 1.0 and r["n_tasks"] == 5 for r in rates)
    assert (run / "eval" / "success_rate.png").is_file()
    if "ml10" in config:
        groups = summary["success_rate_by_group"]
        assert set(groups) <= {"drawer-open-v3", "door-close-v3", "shelf-place-v3", "sweep-into-v3", "lever-pull-v3"}
        assert sum(rows[algo][0]["n_tasks"] for rows in groups.values()) == 5
        assert (run / "eval" / "success_rate_by_group.png").is_file()


@needs_metaworld
def test_ray_actors_collect_metaworld_as_the_local_collector():
    """Beyond one machine: Ray actors step Meta-World shares (Gymnasium loop each) and return the same
    batch as local collection, success signal included."""
    ray = pytest.importorskip("ray")
    from metarl.common.policies import make_policy
    from metarl.sampling.ray_collector import RayCollector

    kwargs = dict(seed=4, env_kwargs={"env_name": "push-v3"}, horizon=15)
    ray.init(address="local", num_cpus=2, include_dashboard=False, ignore_reinit_error=True, log_to_driver=False)
    try:
        local = Collector(ML1, **kwargs)
        remote = RayCollector(ML1, num_workers=2, **kwargs)
        torch.manual_seed(0)
        policy = make_policy(local.observation_space, local.action_space, False, (16,))
        tasks = local.sample_tasks(3, np.random.default_rng(1))
        a, b = local.collect(policy, tasks, 2), remote.collect(policy, tasks, 2)
        remote.close()
        local.close()
    finally:
        ray.shutdown()
    for name in ("obs", "actions", "rewards", "valid", "log_probs"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    assert set(b.infos) == {"success"} and torch.equal(a.infos["success"], b.infos["success"])


@needs_metaworld
def test_bench_collect_on_an_ml1_id(capsys):
    assert main(["bench", "collect", "--env", ML1, "--env-kwarg", "env_name=reach-v3", "--tasks", "2", "--episodes",
                 "1", "--backend", "subproc", "--repeats", "1", "--threads", "1"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["env"] == ML1 and result["horizon"] == 500 and result["workers"] == 2
    assert result["gymnasium_single_env_steps_per_s"] > 0 and result["ratio_vs_single_env"] > 0
    own = result["metaworld_own_code_single_env_steps_per_s"]  # metaworld's own per-step code, timed too
    assert own > 0 and result["ratio_vs_metaworld_own_single_env"] == pytest.approx(result["collector_steps_per_s"] / own)
    from metaworld.sawyer_xyz_env import SawyerXYZEnv

    from metarl.envs import metaworld_fast
    assert SawyerXYZEnv.touching_object is metaworld_fast.touching_object  # the fast paths are back on afterwards


@needs_metaworld
@pytest.mark.slow  # metaworld builds ML45's 2,500 task records: about 100 s on a busy 2-core machine
def test_ml45_holds_out_five_classes():
    import metaworld.env_dict as ed

    env = gym.make("metarl/MetaWorldML45-v0").unwrapped
    train = env.sample_tasks(200, np.random.default_rng(0))
    test = env.sample_test_tasks(40, np.random.default_rng(0))
    assert {t.env_name for t in train} <= set(ed.ML45_V3["train"]) and len(ed.ML45_V3["train"]) == 45
    assert {t.env_name for t in test} == set(ed.ML45_V3["test"]) and len(ed.ML45_V3["test"]) == 5
    env.set_task(test[0])
    assert env.reset(seed=0)[0].shape == (39,)


@needs_metaworld
def test_a_pooled_instance_behaves_as_a_fresh_one():
    """Changing class hands the old instance to a per-process pool; whoever takes it next, after it ran
    another task's episode, sees exactly what a fresh instance shows."""
    env = gym.make(ML10).unwrapped
    train = env.sample_tasks(60, np.random.default_rng(3))
    a = next(t for t in train if t.env_name == train[0].env_name and t != train[0])
    b = next(t for t in train if t.env_name != a.env_name)
    env.set_task(train[0])
    used = env._env
    env.reset(seed=0)
    for _ in range(30):
        env.step(np.random.default_rng(1).uniform(-1, 1, 4).astype(np.float32))
    env.set_task(b)  # gives `used` back
    other = gym.make(ML10).unwrapped
    other.set_task(a)
    assert other._env is used  # reused, not built
    fresh = gym.make(ML10).unwrapped
    fresh._env = type(used)()  # a new instance, outside the pool
    fresh.set_task(a)
    actions = np.random.default_rng(2).uniform(-1, 1, (20, 4)).astype(np.float32)
    np.testing.assert_array_equal(other.reset(seed=0)[0], fresh.reset(seed=0)[0])
    for act in actions:
        o1, r1, *_ = other.step(act)
        o2, r2, *_ = fresh.step(act)
        np.testing.assert_array_equal(o1, o2)
        assert r1 == r2
