"""``algo: oracle``: SB3 PPO on task-in-observation envs behind metarl's Algorithm interface."""

from __future__ import annotations

import io
from dataclasses import replace

import numpy as np
import pytest
import torch

import metarl  # noqa: F401  (registers the environments)
from metarl.algos.oracle import oracle as oracle_train
from metarl.cli import main
from metarl.sampling.collector import Collector
from metarl.evaluation.config import EvalConfig
from metarl.experiment import ExperimentConfig, build_experiment, load_config
from metarl.sampling.config import EnvConfig
from metarl.algos.oracle.oracle import OracleError, OracleTrainer

NAV = "metarl/Navigation2D-v0"


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # Tiny networks on shared machines: more threads only add contention.
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _cfg() -> ExperimentConfig:
    return load_config("experiments/navigation2d_oracle.yaml", ["train.show_progress=false"])


def _trainer(cfg=None, num_envs=4, episodes_per_env=2) -> OracleTrainer:
    cfg = cfg or _cfg()
    return OracleTrainer(cfg, Collector(cfg.env.id, seed=0), num_envs=num_envs, episodes_per_env=episodes_per_env)


@pytest.fixture(scope="module")
def trained():
    """An oracle trained for 8 iterations of 4 envs x 2 episodes x H=100: 6400 env steps."""
    trainer = _trainer(load_config("experiments/navigation2d_oracle.yaml", ["rl2.lr=0.001"]))
    tasks = Collector(NAV, seed=7).sample_tasks(10, np.random.default_rng(7))
    ev = EvalConfig(tasks=10, steps=2, episodes_per_task=1)
    before = trainer.adaptation_curve(tasks, Collector(NAV, seed=7), ev)
    rng = np.random.default_rng(0)
    stats = [trainer.train_iteration(rng) for _ in range(8)]
    return trainer, stats, tasks, ev, before


def test_supervised_env_is_refused():
    cfg = ExperimentConfig(algo="oracle", env=EnvConfig(id="metarl/Sinusoid-v0"))
    with pytest.raises(OracleError, match="oracle is for RL task distributions"):
        build_experiment(cfg)


def test_trains_a_few_thousand_steps(trained):
    trainer, stats, tasks, ev, before = trained
    assert sum(s["env_steps"] for s in stats) == 6400 == trainer.model.num_timesteps
    for s in stats:
        assert np.isfinite(s["train/return"]) and s["train/episodes"] >= 8
        assert {"ppo/approx_kl", "ppo/value_loss", "ppo/std"} <= set(s)
    # With the goal in view PPO learns quickly (returns start near -90; about -25 after 6400 steps
    # for several seeds), and the mean action gets much closer to the held-out goals.
    train_returns = [s["train/return"] for s in stats]
    assert np.mean(train_returns[-2:]) > train_returns[0] + 20, train_returns
    after = trainer.adaptation_curve(tasks, Collector(NAV, seed=7), ev)
    assert after[0].mean() > before[0].mean() + 10, (before[0].mean(), after[0].mean())


def test_curve_is_constant_and_measured_with_the_oracle_collector(trained):
    trainer, _, tasks, ev, _ = trained
    curve = trainer.adaptation_curve(tasks, Collector(NAV, seed=7), ev)
    assert curve.shape == (ev.steps + 1, len(tasks))
    assert np.all(curve == curve[0])
    # Independently: our collector on the task-in-observation env, with sampled actions, as every
    # other method is scored (not the mean action).
    batch = Collector(NAV, seed=7, oracle=True).collect(trainer.policy, tasks, 1)
    np.testing.assert_array_equal(curve[0], batch.mean_return_per_task().numpy())
    # eval.deterministic: the mean action, for the oracle as for every method.
    mean_curve = trainer.adaptation_curve(tasks, Collector(NAV, seed=7), replace(ev, deterministic=True))
    det = Collector(NAV, seed=7, oracle=True).collect(trainer.policy, tasks, 1, deterministic=True)
    np.testing.assert_array_equal(mean_curve[0], det.mean_return_per_task().numpy())
    assert not np.array_equal(mean_curve[0], curve[0])
    # The wrapper's distribution is SB3's: its mode, mapped and clipped as the collector does, is
    # the action SB3 takes with deterministic=True.
    obs = det.obs[:5].reshape(-1, det.obs.shape[-1]).numpy()
    sb3_actions, _ = trainer.model.predict(obs, deterministic=True)
    with torch.no_grad():
        dist = trainer.policy.distribution(trainer.policy(torch.from_numpy(obs)))
        ours = dist.mode().numpy()
    np.testing.assert_allclose(np.clip(ours, -1, 1), sb3_actions, rtol=1e-6, atol=1e-7)
    # and a sampled action is drawn around SB3's unclipped mean with SB3's standard deviation
    with torch.no_grad():
        sb3_dist = trainer.model.policy.get_distribution(torch.from_numpy(obs)).distribution
    np.testing.assert_allclose(dist.mean.numpy(), sb3_dist.mean.numpy(), rtol=1e-6, atol=1e-7)


def test_on_a_process_pool_the_oracle_twin_is_a_pool_that_scores_as_in_process(trained, monkeypatch):
    """A process_pool run's evaluation: the oracle's task-in-observation twin is a pool of as many
    workers and threads (the SB3 policy travels to the workers), and scores as the in-process one."""
    from metarl.sampling.process_pool import ProcessPoolCollector

    trainer, _, tasks, ev, _ = trained
    twins = []
    real_twin = trainer.oracle_collector

    def spy(collector):
        twins.append(real_twin(collector))
        return twins[-1]

    monkeypatch.setattr(trainer, "oracle_collector", spy)
    pool = ProcessPoolCollector(NAV, seed=7, num_workers=2, num_threads=1)
    try:
        on_pool = trainer.adaptation_curve(tasks, pool, ev)
    finally:
        pool.close()
    (twin,) = twins
    assert isinstance(twin, ProcessPoolCollector) and twin.oracle
    assert (twin.num_workers, twin.worker_threads, twin.seed) == (2, 1, 7)
    in_process = trainer.adaptation_curve(tasks, Collector(NAV, seed=7), ev)
    np.testing.assert_allclose(on_pool, in_process, rtol=1e-4, atol=1e-4)

def test_state_round_trip_and_exact_continuation(trained):
    trainer, _, tasks, _, _ = trained
    rng = np.random.default_rng(3)
    buf = io.BytesIO()
    torch.save({"algo": trainer.state_dict(), "rng": rng.bit_generator.state}, buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=False)
    clone = _trainer(trainer.cfg)
    obs = torch.randn(32, 4)
    with torch.no_grad():
        assert not torch.equal(clone.policy(obs)[0], trainer.policy(obs)[0])
        clone.load_state_dict(state["algo"])
        assert torch.equal(clone.policy(obs)[0], trainer.policy(obs)[0])
        assert torch.equal(clone.policy(obs)[1], trainer.policy(obs)[1])
    assert clone.model.num_timesteps == trainer.model.num_timesteps
    # One more iteration from the saved state gives the same update in both (exact resume).
    rng_clone = np.random.default_rng()
    rng_clone.bit_generator.state = state["rng"]
    a, b = trainer.train_iteration(rng), clone.train_iteration(rng_clone)
    a.pop("time/iteration_s"), b.pop("time/iteration_s")
    assert a == b
    sa, sb = trainer.model.policy.state_dict(), clone.model.policy.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_training_leaves_global_rng_alone():
    trainer = _trainer(num_envs=2, episodes_per_env=1)
    torch.manual_seed(123)
    np.random.seed(123)
    t, n = torch.get_rng_state(), np.random.get_state()
    trainer.train_iteration(np.random.default_rng(0))
    assert torch.equal(t, torch.get_rng_state())
    assert all(np.array_equal(x, y) for x, y in zip(n, np.random.get_state()))


def test_cli_train_and_evaluate_oracle(tmp_path, monkeypatch):
    # Smaller rollouts than the module defaults, so the wiring test stays quick.
    monkeypatch.setattr(oracle_train, "NUM_ENVS", 2)
    monkeypatch.setattr(oracle_train, "EPISODES_PER_ENV", 1)
    run = tmp_path / "oracle"
    assert main(["train", "experiments/navigation2d_oracle.yaml", "--run-dir", str(run), "--set", "train.iterations=2",
                 "--set", "train.show_progress=false", "--set", "collector.num_threads=1"]) == 0
    assert main(["evaluate", str(run), "--steps", "2", "--tasks", "4", "--set", "eval.episodes_per_task=1"]) == 0
    import csv

    rows = list(csv.DictReader(open(run / "eval" / "adaptation.csv")))
    assert [(r["method"], r["step"]) for r in rows] == [("oracle", "0"), ("oracle", "1"), ("oracle", "2")]
    assert len({r["mean"] for r in rows}) == 1
    progress = list(csv.DictReader(open(run / "progress.csv")))
    assert [float(r["env_steps_total"]) for r in progress] == [200.0, 400.0]


def test_ppo_acts_on_the_collectors_action_scale():
    # The oracle's PPO must see [-1, 1] actions mapped exactly as the collector maps the
    # meta-learners' actions (navigation: 0.1 per unit), or the comparison is not like for like.
    cfg = _cfg()
    trainer = _trainer(cfg, num_envs=1, episodes_per_env=1)
    try:
        space = trainer.venv.action_space
        np.testing.assert_array_equal(space.low, [-1.0, -1.0])
        np.testing.assert_array_equal(space.high, [1.0, 1.0])
        env = trainer.venv.envs[0]
        obs, _ = env.reset(seed=0)
        obs2, _, _, _, _ = env.step(np.array([0.5, -3.0], dtype=np.float32))
        np.testing.assert_allclose(obs2[:2] - obs[:2], [0.05, -0.1], atol=1e-6)  # position moved; clipped in y
    finally:
        trainer.close()
    # The same clipping on a [-1, 1] space: PPO's env charges the cheetah's control cost on the
    # torque applied, so torques 10 and 1 get the same reward (Collector.env_action, as the others).
    cheetah = OracleTrainer(load_config("experiments/halfcheetah_vel_oracle.yaml"),
                            Collector("metarl/HalfCheetahVel-v0", seed=0), num_envs=1, episodes_per_env=1)
    try:
        env = cheetah.venv.envs[0]
        rewards = []
        for torque in (1.0, 10.0):
            env.reset(seed=0)
            rewards.append(env.step(np.full(6, torque, dtype=np.float32))[1])
        assert rewards[0] == rewards[1]
    finally:
        cheetah.close()
    raw = OracleTrainer(load_config("experiments/navigation2d_oracle.yaml", ["env.rescale_actions=false"]),
                        Collector(NAV, seed=0, rescale_actions=False), num_envs=1, episodes_per_env=1)
    try:
        np.testing.assert_allclose(raw.venv.action_space.high, [0.1, 0.1])
    finally:
        raw.close()
