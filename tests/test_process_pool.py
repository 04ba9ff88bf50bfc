"""The process-pool collector (``collector.backend: process_pool``): the whole step loop, policy included,
in forked worker processes, each on a contiguous share of the tasks.

Each worker evaluates the policy at its share's own shape, so batches equal the local backend's to
rounding (not to the bit, which another shape's BLAS kernels need not give); the randomness is the
driver's, so the same seed gives the same episodes on any number of workers, and a collector's RNG
state resumes exactly. Bad input and a dead worker are one clear line each.
"""

from __future__ import annotations

import os
import signal
import time

import numpy as np
import pytest
import torch

from metarl.common.policies import RecurrentPolicy, make_policy
from metarl.sampling.collector import Collector, EpisodeBatch
from metarl.sampling.process_pool import ProcessPoolCollector
# the Ray backend's tasks, policies, calls and training-iteration scaffold
from test_ray_collector import NAV_TASKS, SMALL, _policy, nav_calls, one_iteration

NAV = "metarl/Navigation2D-v0"
CHEETAH = "metarl/HalfCheetahVel-v0"
BANDIT = "metarl/Bandit-v0"
FLOAT_FIELDS = ("obs", "actions", "rewards", "log_probs", "policy_inputs", "final_obs")
EXACT_FIELDS = ("valid", "dones", "timesteps", "task_index", "targets")


def _assert_close(a: EpisodeBatch, b: EpisodeBatch, atol=1e-4):
    """Equal to rounding: float fields within atol (relative 1e-4), masks and indices exactly."""
    assert (a.num_tasks, a.horizon, a.episodes_per_trial) == (b.num_tasks, b.horizon, b.episodes_per_trial)
    for name in FLOAT_FIELDS + EXACT_FIELDS:
        x, y = getattr(a, name), getattr(b, name)
        if x is None or y is None:
            assert x is None and y is None, name
        elif name in EXACT_FIELDS:
            assert torch.equal(x, y), name
        else:
            torch.testing.assert_close(x, y, atol=atol, rtol=1e-4, msg=lambda m, name=name: f"{name}: {m}")
    assert a.infos.keys() == b.infos.keys()


def _assert_equal(a: EpisodeBatch, b: EpisodeBatch):
    for name in FLOAT_FIELDS + EXACT_FIELDS:
        x, y = getattr(a, name), getattr(b, name)
        assert (x is None and y is None) or torch.equal(x, y), name


def _obs_plus(space, extra: int):
    """``space`` widened by ``extra`` dimensions (the policy's input with per-task inputs appended)."""
    import gymnasium as gym

    return gym.spaces.Box(-np.inf, np.inf, (space.shape[0] + extra,), np.float32)


def test_same_seed_same_episodes_as_local_to_rounding():
    local = Collector(NAV, seed=3, horizon=25)
    pool = ProcessPoolCollector(NAV, seed=3, horizon=25, num_workers=2)
    try:
        assert len(set(pool.worker_pids())) == 2 and os.getpid() not in pool.worker_pids()
        policy = _policy(local)
        calls = nav_calls(policy)  # 5 tasks on 2 workers: shares of 3 and 2 tasks
        batches = []
        for kwargs in calls:
            got = pool.collect(policy, NAV_TASKS, **kwargs)
            _assert_close(local.collect(policy, NAV_TASKS, **kwargs), got)
            batches.append(got)
        # the calls really differ: other noise, other parameters
        assert not torch.allclose(batches[0].actions, batches[4].actions)
        assert not torch.allclose(batches[0].actions, batches[1].actions)
        # per-task inputs (PEARL's z) appended to each task's observations, split with the tasks
        z = torch.randn(5, 3, generator=torch.Generator().manual_seed(2))
        torch.manual_seed(0)
        with_z = make_policy(_obs_plus(local.observation_space, 3), local.action_space, False, (16,))
        _assert_close(local.collect(with_z, NAV_TASKS, 2, task_inputs=z), pool.collect(with_z, NAV_TASKS, 2, task_inputs=z))
        # fewer tasks than workers: one share
        _assert_close(local.collect(policy, NAV_TASKS[:1], 3), pool.collect(policy, NAV_TASKS[:1], 3))
    finally:
        pool.close()
    assert pool.worker_pids() == []


def test_mujoco_workers_step_with_threads_and_clip_as_local():
    """HalfCheetahVel through the workers' native MuJoCo envs (two stepping threads each: two shares of
    threads inside each worker), actions clipped by the same Collector.env_action. A short horizon: the
    cheetah's contacts amplify a last-bit difference of an action (another BLAS's rounding by call shape,
    METARL_TEST_OTHER_BLAS=1) to 2e-3 in an observation by step 14."""
    local = Collector(CHEETAH, seed=5, horizon=6)
    pool = ProcessPoolCollector(CHEETAH, seed=5, horizon=6, num_workers=2, num_threads=2)
    try:
        assert pool.worker_threads == 2
        tasks = local.sample_tasks(4, np.random.default_rng(0))
        policy = _policy(local, hidden=(32, 32))
        with torch.no_grad():
            policy.log_std.fill_(0.5)  # wide enough that many sampled actions leave [-1, 1]: clipping matters
        for _ in range(2):
            expected, got = local.collect(policy, tasks, 3), pool.collect(policy, tasks, 3)
            _assert_close(expected, got)
            assert (got.actions.abs() > 1).any()
    finally:
        pool.close()


@pytest.mark.parametrize("env_id", [BANDIT, "metarl/Sinusoid-v0"])
def test_recurrent_categorical_and_supervised_as_local(env_id):
    local = Collector(env_id, seed=8)
    pool = ProcessPoolCollector(env_id, seed=8, num_workers=3)
    try:
        tasks = local.sample_tasks(4, np.random.default_rng(0))
        policy = _policy(local)
        _assert_close(local.collect(policy, tasks, 6), pool.collect(policy, tasks, 6))
        if env_id == BANDIT:  # RL² trials: the hidden state lives inside one share's collect
            torch.manual_seed(0)
            rnn = RecurrentPolicy(local.observation_space.shape[0], local.action_space, hidden_size=8)
            for _ in range(2):
                got = pool.collect(rnn, tasks, 6, episodes_per_trial=3)
                _assert_close(local.collect(rnn, tasks, 6, episodes_per_trial=3), got)
                assert got.policy_inputs is not None
        else:
            assert pool.collect(policy, tasks, 6).targets.shape == (1, 24, 1)
    finally:
        pool.close()


def test_worker_count_changes_rounding_only_and_a_split_repeats_bit_for_bit():
    tasks = NAV_TASKS
    batches = {}
    for workers in (1, 3, 3):
        pool = ProcessPoolCollector(NAV, seed=11, horizon=20, num_workers=workers)
        try:
            policy = _policy(pool)
            batches.setdefault(workers, []).append([pool.collect(policy, tasks, 4) for _ in range(2)])
        finally:
            pool.close()
    for one, three in zip(batches[1][0], batches[3][0]):
        _assert_close(one, three)
    for a, b in zip(*batches[3]):  # same shapes, same split, same machine: the same arithmetic
        _assert_equal(a, b)


def test_rng_state_resumes_exactly_and_moves_to_the_local_backend():
    pool = ProcessPoolCollector(NAV, seed=2, horizon=20, num_workers=2)
    try:
        policy = _policy(pool)
        pool.collect(policy, NAV_TASKS, 4)
        state = pool.get_rng_state()
        after = pool.collect(policy, NAV_TASKS, 4)
    finally:
        pool.close()
    resumed = ProcessPoolCollector(NAV, seed=99, horizon=20, num_workers=2)  # another seed: the state decides
    try:
        resumed.set_rng_state(state)
        _assert_equal(after, resumed.collect(policy, NAV_TASKS, 4))
    finally:
        resumed.close()
    local = Collector(NAV, seed=99, horizon=20)
    local.set_rng_state(state)
    _assert_close(after, local.collect(policy, NAV_TASKS, 4))


def test_a_workers_error_is_raised_in_the_driver_and_the_pool_goes_on():
    pool = ProcessPoolCollector(NAV, seed=0, horizon=10, num_workers=2)
    try:
        policy = _policy(pool)
        bad = {k: v[:, :1] if v.dim() == 2 else v for k, v in policy.params().items()}  # wrong shapes
        with pytest.raises(RuntimeError):
            pool.collect(policy, NAV_TASKS, 2, params=bad)
        assert pool.collect(policy, NAV_TASKS, 2).num_columns == 10  # the pipes stayed in step
    finally:
        pool.close()


def test_a_dead_worker_is_one_clear_error():
    pool = ProcessPoolCollector(NAV, seed=0, horizon=10, num_workers=2)
    try:
        policy = _policy(pool)
        pool.collect(policy, NAV_TASKS, 2)
        os.kill(pool.worker_pids()[1], signal.SIGKILL)
        time.sleep(0.2)
        with pytest.raises(ChildProcessError, match=r"process_pool collector worker of metarl/Navigation2D-v0 "
                                                    r"died .*killed by SIGKILL"):
            pool.collect(policy, NAV_TASKS, 2)
        with pytest.raises(RuntimeError, match="closed"):
            pool.collect(policy, NAV_TASKS, 2)
    finally:
        pool.close()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_a_cuda_policy_acts_on_the_cpu_in_the_workers():
    """collector.device=cuda: the workers act with a CPU copy (no CUDA in a forked child); the batch goes
    back to the policy's device and equals the CPU policy's to rounding."""
    pool = ProcessPoolCollector(CHEETAH, seed=4, horizon=6, num_workers=2)
    try:
        tasks = pool.sample_tasks(3, np.random.default_rng(0))
        policy = _policy(pool, hidden=(32, 32))
        state = pool.get_rng_state()
        on_cpu = pool.collect(policy, tasks, 2)
        pool.set_rng_state(state)
        on_gpu = pool.collect(policy.cuda(), tasks, 2, params={k: v.cuda() for k, v in policy.params().items()})
        assert on_gpu.obs.device.type == "cuda"
        _assert_close(on_cpu, on_gpu.to("cpu"))
    finally:
        pool.close()


@pytest.mark.parametrize("workers", [0, -1, 1.5, True])
def test_bad_num_workers_is_one_line(workers):
    with pytest.raises(ValueError, match=f"num_workers must be a positive integer, got {workers!r}"):
        ProcessPoolCollector(NAV, num_workers=workers)


def test_unknown_env_fails_before_forking():
    with pytest.raises(ValueError, match="unknown environment id 'metarl/Nope-v0'"):
        ProcessPoolCollector("metarl/Nope-v0", num_workers=2)


def test_a_training_iteration_on_the_pool_takes_autos_step():
    """collector.backend=process_pool through the config: a MAML iteration takes the in-process
    backend's step, up to what rounding does to a TRPO step."""
    overrides = ["env.horizon=20", "collector.num_workers=2", *SMALL["maml"]]
    params = {}
    for backend in ("auto", "process_pool"):
        before, params[backend] = one_iteration("navigation2d_maml", overrides, backend, ProcessPoolCollector)
        assert any(not torch.allclose(before[k], params[backend][k]) for k in before)  # the update moved θ
    # Not to rounding: truncated CG on an ill-conditioned Fisher turns last-bit differences of the batch
    # into steps a few percent apart (README, reproducibility; experiments/ulp_sensitivity.py). Both
    # backends must take the same step up to that: a small fraction of the step itself.
    for k in params["auto"]:
        step = (params["auto"][k] - before[k]).norm()
        gap = (params["process_pool"][k] - params["auto"][k]).norm()
        assert gap <= 0.2 * step, k


def test_an_error_that_cannot_be_pickled_reaches_the_driver_as_its_text():
    import pickle
    import threading

    from metarl.sampling.process_pool import _pickled_error

    err = ValueError("bad share")
    err.lock = threading.Lock()  # a lock cannot be pickled
    status, sent = pickle.loads(_pickled_error(err))
    assert status == "error" and isinstance(sent, RuntimeError) and str(sent) == "ValueError: bad share"
    status, sent = pickle.loads(_pickled_error(KeyError("k")))  # a picklable one goes as itself
    assert isinstance(sent, KeyError)


def test_bench_collect_times_the_pool_against_the_whole_batch_on_as_many_threads(bench_collect_untimed):
    # `metarl bench collect --backend process_pool --workers 2 --threads 2`: 2 workers x 2 stepping threads,
    # and both references (the in-process whole batch, the open-loop limit) on the same 4 threads
    bench, seen = bench_collect_untimed
    out = bench.bench_collect(CHEETAH, num_tasks=2, episodes_per_task=2, repeats=1, backend="process_pool",
                              num_workers=2, num_threads=2)
    assert seen == [("process_pool", 2), ("native", 4)]  # the pool's driver, then the in-process whole batch
    assert (out["workers"], out["threads_per_worker"]) == (2, 2)
    assert out["open_loop_steps_per_s"] == 4.0
    assert out["ratio"] == out["collector_steps_per_s"] / 4.0
    assert out["shares_over_whole_batch"] == out["collector_steps_per_s"] / out["whole_batch_collector_steps_per_s"]


def test_a_pool_run_evaluates_on_pools_that_score_as_auto(tmp_path, monkeypatch):
    """`metarl evaluate` of a process_pool run collects every method's episodes on a pool of the run's
    workers and threads (a Ray run's evaluation stays in this process), and its adaptation curves equal
    the in-process backend's to rounding: same tasks, same noise, same per-task numbers."""
    import csv

    from metarl.common.config import dump_yaml
    from metarl.evaluation.curves import eval_collector
    from metarl.experiment import evaluate_run, load_config, load_run

    pools = []
    real_init = ProcessPoolCollector.__init__

    def spy_init(self, *args, **kwargs):
        real_init(self, *args, **kwargs)
        pools.append((self.num_workers, self.worker_threads, self.seed))

    monkeypatch.setattr(ProcessPoolCollector, "__init__", spy_init)
    per_task = {}
    for backend in ("auto", "process_pool"):
        cfg = load_config("experiments/navigation2d_maml.yaml", [
            f"collector.backend={backend}", "collector.num_workers=2", "collector.num_threads=1",
            "maml.episodes_per_task=2", "eval.tasks=4", "eval.steps=1", "policy.hidden_sizes=[16]"])
        run_dir = tmp_path / backend
        run_dir.mkdir()
        (run_dir / "config.yaml").write_text(dump_yaml(cfg))
        summary = evaluate_run(run_dir)  # iteration 0: θ from the config's seed, as training starts
        assert set(summary["curves"]) == {"maml", "random"}
        with open(run_dir / "eval" / "adaptation_per_task.csv") as f:
            per_task[backend] = sorted((r["method"], int(r["step"]), int(r["task"]), float(list(r.values())[3]))
                                       for r in csv.DictReader(f))
    # the pools of the test-task draw and of each method: the run's workers and threads, the evaluation seed
    assert len(pools) == 3 and all(p == (2, 1, cfg.eval.seed) for p in pools)
    assert [r[:3] for r in per_task["auto"]] == [r[:3] for r in per_task["process_pool"]]
    np.testing.assert_allclose([r[3] for r in per_task["process_pool"]], [r[3] for r in per_task["auto"]],
                               rtol=1e-4, atol=1e-4)
    ray_cfg = load_config("experiments/navigation2d_maml.yaml", ["collector.backend=ray"])
    ray_eval = eval_collector(ray_cfg, ray_cfg.eval)
    try:
        assert type(ray_eval) is Collector and ray_eval.backend == "auto"  # no actors for an evaluation
    finally:
        ray_eval.close()
    # A loaded run's own collector never collects: in-process for a Ray run or a pool run alike.
    (tmp_path / "ray").mkdir()
    (tmp_path / "ray" / "config.yaml").write_text(dump_yaml(ray_cfg))
    for backend in ("ray", "process_pool"):
        cfg, exp, _ = load_run(tmp_path / backend, None)
        assert cfg.collector.backend == backend and type(exp.collector) is Collector, backend
