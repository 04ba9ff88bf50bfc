"""The subprocess vector env (collector backend ``subproc``): the same batches as in-process
collection, bit for bit, whatever the number of workers, early terminations and RL² trials included."""

from __future__ import annotations

import os
import time
from dataclasses import fields

import gymnasium as gym
import numpy as np
import pytest
import torch

import metarl  # noqa: F401  (registers metarl/...)
from metarl.common.policies import GaussianMLPPolicy, RecurrentPolicy, make_policy
from metarl.envs.navigation import NavigationTask
from metarl.sampling.collector import Collector
from metarl.sampling.vector import SubprocVectorEnv, make_vector_env

from test_vector import TINY_ID, TinyTask, TinyTaskEnv  # registers a third-party env (gym loop inside the workers)

NAV = "metarl/Navigation2D-v0"
NAV_TASKS = [NavigationTask((0.1, 0.0)), NavigationTask((0.3, -0.2)), NavigationTask((-0.4, 0.45))]


def _batch(backend, env_id, tasks, workers=2, episodes_per_trial=1, horizon=None):
    c = Collector(env_id, seed=7, backend=backend, num_workers=workers, horizon=horizon)
    torch.manual_seed(0)
    policy = make_policy(c.observation_space, c.action_space, False, (8,))
    batch = c.collect(policy, tasks, 4, episodes_per_trial=episodes_per_trial)
    states = c.get_rng_state()["envs"]
    c.close()
    return batch, states


@pytest.mark.parametrize("env_id", [NAV, TINY_ID])
@pytest.mark.parametrize("workers,episodes_per_trial", [(2, 1), (3, 2)])
def test_subproc_equals_in_process(env_id, workers, episodes_per_trial):
    tasks = NAV_TASKS if env_id == NAV else Collector(env_id).sample_tasks(3, np.random.default_rng(1))
    local, local_states = _batch("auto", env_id, tasks, episodes_per_trial=episodes_per_trial, horizon=20)
    sub, sub_states = _batch("subproc", env_id, tasks, workers, episodes_per_trial, horizon=20)
    for name in ("obs", "actions", "rewards", "valid", "dones", "log_probs", "timesteps", "task_index"):
        assert torch.equal(getattr(local, name), getattr(sub, name)), name
    assert local_states == sub_states  # the sub-environments' streams continue identically
    if env_id == TINY_ID:
        assert not bool(local.valid.all())  # some episodes terminated early: the masking was exercised


def _assert_batches_equal(a, b):
    for f in fields(a):
        x, y = getattr(a, f.name), getattr(b, f.name)
        if isinstance(x, torch.Tensor):
            assert torch.equal(x, y), f.name
        elif f.name == "infos":
            assert x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x), f.name
        else:
            assert x == y, f.name


def test_every_batch_field_as_in_process_with_shares_that_split_tasks():
    """The collector drives each worker's share on its own (no lock-step); shares that split a task's
    columns still give the in-process batch bit for bit: RL² trials of a recurrent policy (state carried
    over the episodes), per-task (adapted) parameters, and per-task policy inputs (PEARL's z)."""
    def both(env_id, collect, workers):
        out = []
        for backend in ("auto", "subproc"):
            c = Collector(env_id, seed=5, backend=backend, num_workers=workers, horizon=15)
            out.append(collect(c))
            c.close()
        return out

    torch.manual_seed(0)
    rnn = RecurrentPolicy(2, gym.spaces.Box(-0.1, 0.1, (2,), np.float32), hidden_size=6)
    local, sub = both(NAV, lambda c: c.collect(rnn, NAV_TASKS, 4, episodes_per_trial=2), 4)  # 6 columns in 4 shares
    assert sub.policy_inputs is not None and sub.final_obs.shape == (2, 6, 2)
    _assert_batches_equal(local, sub)

    policy = make_policy(gym.spaces.Box(-1, 1, (2,)), gym.spaces.Box(-0.1, 0.1, (2,)), False, (8,))
    adapted = {n: p.detach() + 0.1 * torch.randn(3, *p.shape) for n, p in policy.named_parameters()}
    local, sub = both(NAV, lambda c: c.collect(policy, NAV_TASKS, 5, params=adapted, per_task_params=True), 2)
    _assert_batches_equal(local, sub)

    conditioned = GaussianMLPPolicy(1 + 3, 1, hidden_sizes=(8,))
    tasks = [TinyTask(-1.0), TinyTask(0.5), TinyTask(1.5)]
    z = torch.randn(3, 3)
    local, sub = both(TINY_ID, lambda c: c.collect(conditioned, tasks, 3, task_inputs=z), 2)
    _assert_batches_equal(local, sub)
    assert not bool(local.valid.all())  # early terminations, masked alike


class TaskPacedWalk(TinyTaskEnv):
    """test_vector's walk, 50 ms a step for tasks with a positive offset; refuses a NaN action."""

    def step(self, action):
        if np.isnan(action).any():
            raise ValueError(f"TaskPacedWalk got a NaN action: {action}")
        if self._task.offset > 0:
            time.sleep(0.05)
        return super().step(action)


PACED_ID = "thirdparty/TaskPacedWalk-v0"
if PACED_ID not in gym.registry:
    gym.register(PACED_ID, entry_point=TaskPacedWalk, max_episode_steps=100)


def _steps(share: int, events: list, steps: int = 10):
    """A step loop as the collector writes them: a reset, then ``steps`` steps; logs each answer."""
    yield "reset", None
    for t in range(steps):
        yield "step", np.zeros((1, 1), dtype=np.float32)
        events.append((share, t))
    return share


def test_share_loops_run_apart():
    """A worker whose envs are slow does not hold the others back: the fast share finishes all its steps
    while the slow one is still in its first few (lock-step would interleave them one to one)."""
    venv = make_vector_env(PACED_ID, 2, backend="subproc", num_workers=2)
    try:
        venv.set_tasks([TinyTask(5.0), TinyTask(-5.0)])  # far offsets: no episode ends in 10 steps
        events = []
        assert venv.run_share_loops([_steps(0, events), _steps(1, events)]) == [0, 1]
        assert [e for e in events if e[0] == 1] == [(1, t) for t in range(10)]
        assert events.index((1, 9)) < events.index((0, 2)), events
        assert len(events) == 20
    finally:
        venv.close()


def test_share_loops_keep_the_pipes_in_step_after_an_error():
    venv = make_vector_env(PACED_ID, 2, backend="subproc", num_workers=2)
    try:
        venv.set_tasks([TinyTask(5.0), TinyTask(-5.0)])

        def failing():
            yield "reset", None
            raise RuntimeError("the policy failed")

        def bad_action():
            yield "reset", None
            yield "step", np.full((1, 1), np.nan, dtype=np.float32)

        with pytest.raises(RuntimeError, match="the policy failed"):  # the slow worker's step was under way
            venv.run_share_loops([_steps(0, []), failing()])
        with pytest.raises(ValueError, match=r"TaskPacedWalk got a NaN action: \[nan\]"):
            venv.run_share_loops([_steps(0, []), bad_action()])  # a worker's own error, with its type
        with pytest.raises(ValueError, match="one loop per worker"):
            venv.run_share_loops([_steps(0, [])])
        obs, _ = venv.reset()  # every answer was read: the next calls get their own
        assert obs.shape == (2, 1)
        assert venv.step(np.zeros((2, 1), dtype=np.float32))[1].shape == (2,)
    finally:
        venv.close()


def test_subproc_shares_and_errors():
    venv = make_vector_env(NAV, 5, backend="subproc", num_workers=2)
    try:
        assert isinstance(venv, SubprocVectorEnv) and venv.shares == [(0, 2), (2, 5)]
        venv.set_tasks(NAV_TASKS[:2] + NAV_TASKS)
        venv.seed(list(range(5)))
        obs, _ = venv.reset()
        assert obs.shape == (5, 2)
        # an error in a worker is raised in the parent, with its own type and message
        with pytest.raises(ValueError, match=r"expected an action of shape \(2, 2\), got shape \(2, 3\)"):
            venv.step(np.zeros((5, 3)))
        obs, reward, term, trunc, _ = venv.step(np.zeros((5, 2), dtype=np.float32))  # the pipes stay in step
        assert reward.shape == term.shape == (5,)
    finally:
        venv.close()
    with pytest.raises(ValueError, match="num_workers must be a positive integer, got 0"):
        make_vector_env(NAV, 2, backend="subproc", num_workers=0)


def test_bench_collect_reports_the_ratio_to_one_gymnasium_env(capsys):
    import json

    from metarl.cli import main

    assert main(["bench", "collect", "--env", NAV, "--tasks", "2", "--episodes", "3", "--backend", "subproc",
                 "--workers", "2", "--repeats", "1", "--threads", "1"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["workers"] == 2 and result["batch"] == 6
    assert result["ratio_vs_single_env"] == result["collector_steps_per_s"] / result["gymnasium_single_env_steps_per_s"]
    # the ceiling the cores give: two single-env loops at once
    assert result["parallel_single_env_steps_per_s"] > 0
    assert result["fraction_of_parallel_limit"] == result["collector_steps_per_s"] / result["parallel_single_env_steps_per_s"]


def test_bench_collect_interleaves_its_rounds(monkeypatch):
    """Each figure is timed once per round, rounds interleaved, and each reports its best round: the ratios
    are taken between figures timed side by side (a host that slows down midway moves both sides)."""
    from metarl import bench

    calls = []
    original_collect = Collector.collect

    def collect(self, *args, **kwargs):
        calls.append("whole" if self.backend == "native" else "collector")
        return original_collect(self, *args, **kwargs)

    def single(env_id, horizon, kw, **options):
        calls.append("single")
        return {1: 100.0, 2: 300.0}[calls.count("single")]  # the second round is the better one

    def open_loop(venv, horizon, repeats):
        calls.append("open_loop")
        assert venv.num_envs == 4 and horizon == 200 and repeats == 1
        return 50.0 * calls.count("open_loop")

    monkeypatch.setattr(Collector, "collect", collect)
    monkeypatch.setattr(bench, "_single_env_rate", single)
    monkeypatch.setattr(bench, "_open_loop_limit", open_loop)
    monkeypatch.setattr(os, "cpu_count", lambda: 2)  # auto then steps the cheetahs in one share per thread
    out = bench.bench_collect("metarl/HalfCheetahVel-v0", num_tasks=2, episodes_per_task=2, repeats=2)
    # warm-ups (the collector, then the same collection as one whole-batch rollout), then the rounds
    assert calls == ["collector", "whole"] + ["collector", "single", "whole", "open_loop"] * 2
    assert out["rounds"] == 2 and out["batch"] == 4 and out["horizon"] == 200
    assert out["gymnasium_single_env_steps_per_s"] == 300.0 and out["open_loop_steps_per_s"] == 100.0
    assert out["ratio_vs_single_env"] == out["collector_steps_per_s"] / 300.0
    assert out["ratio"] == out["collector_steps_per_s"] / 100.0
    whole = out["whole_batch_collector_steps_per_s"]
    assert out["whole_batch_ratio"] == whole / 100.0 and out["shares_over_whole_batch"] == out["collector_steps_per_s"] / whole


def test_parallel_single_env_loops_each_count_their_steps(monkeypatch, tmp_path):
    """The parallel ceiling is the sum of what each process measured, and a failing loop names its error."""
    from metarl import bench

    monkeypatch.setattr(bench, "_single_env_rate", lambda env_id, horizon, kw, barrier=None: (barrier.wait(), 100.0)[1])
    assert bench._parallel_single_env_rate(NAV, 100, {}, 3) == 300.0

    def broken(env_id, horizon, kw, barrier=None):
        barrier.wait()
        raise ValueError("no such task")
    monkeypatch.setattr(bench, "_single_env_rate", broken)
    with pytest.raises(RuntimeError, match="a parallel single-env loop failed: ValueError: no such task"):
        bench._parallel_single_env_rate(NAV, 100, {}, 2)

    # one loop fails before the barrier (its env cannot be built): the others are released, not left waiting
    def one_fails_to_build(env_id, horizon, kw, barrier=None):
        try:  # exactly one process creates the marker file and fails
            os.close(os.open(marker, os.O_CREAT | os.O_EXCL))
        except FileExistsError:
            barrier.wait()
            return 1.0
        raise ValueError("cannot build env")
    marker = str(tmp_path / "first")
    monkeypatch.setattr(bench, "_single_env_rate", one_fails_to_build)
    with pytest.raises(RuntimeError, match="a parallel single-env loop failed: ValueError: cannot build env"):
        bench._parallel_single_env_rate(NAV, 100, {}, 3)

    # a loop hit by the abort reports BrokenBarrierError before the loop that failed: the root error is named
    def broken_after_abort(env_id, horizon, kw, barrier=None):
        import threading
        import time
        try:
            os.close(os.open(marker2, os.O_CREAT | os.O_EXCL))
        except FileExistsError:
            time.sleep(0.5)
            raise ValueError("the root error")
        raise threading.BrokenBarrierError
    marker2 = str(tmp_path / "second")
    monkeypatch.setattr(bench, "_single_env_rate", broken_after_abort)
    with pytest.raises(RuntimeError, match="a parallel single-env loop failed: ValueError: the root error"):
        bench._parallel_single_env_rate(NAV, 100, {}, 2)


def test_rng_state_moves_between_local_and_subproc():
    """A checkpoint's collector state taken in-process continues identically on subproc (exact resume)."""
    def make(backend):
        c = Collector(TINY_ID, seed=9, backend=backend, num_workers=2)
        torch.manual_seed(0)
        return c, make_policy(c.observation_space, c.action_space, False, (8,))

    local, policy = make("auto")
    tasks = local.sample_tasks(3, np.random.default_rng(4))
    local.collect(policy, tasks, 2)
    state = local.get_rng_state()
    expected = local.collect(policy, tasks, 2)
    sub, _ = make("subproc")
    sub.set_rng_state(state)
    got = sub.collect(policy, tasks, 2)
    sub.close()
    local.close()
    for name in ("obs", "actions", "rewards", "valid"):
        assert torch.equal(getattr(expected, name), getattr(got, name)), name


def test_a_dead_worker_is_one_clear_error():
    import os
    import signal

    venv = make_vector_env(NAV, 4, backend="subproc", num_workers=2)
    venv.set_tasks(NAV_TASKS[:2] * 2)
    venv.reset()
    victim = venv._procs[1]
    os.kill(victim.pid, signal.SIGKILL)  # a worker this test started
    victim.join(timeout=10)
    with pytest.raises(ChildProcessError, match=r"a subproc worker of metarl/Navigation2D-v0 died .*-9\)\]\); killed by SIGKILL; if it ran "
                                                 r"out of memory, collect fewer columns"):
        venv.step(np.zeros((4, 2), dtype=np.float32))
    venv.close()  # closing again is harmless


def test_workers_ignore_ctrl_c_meant_for_the_parent():
    """Ctrl-C in a terminal sends SIGINT to the whole process group; the workers must keep stepping, so
    that `metarl train` can finish its iteration with them and checkpoint (tests/test_resume.py has the
    whole run)."""
    import signal
    import time

    venv = make_vector_env(NAV, 4, backend="subproc", num_workers=2)
    venv.set_tasks(NAV_TASKS[:2] * 2)
    venv.seed(range(4))
    venv.reset()
    for proc in venv._procs:
        os.kill(proc.pid, signal.SIGINT)  # workers this test started
    time.sleep(0.3)
    assert all(p.is_alive() for p in venv._procs)
    obs, reward, *_ = venv.step(np.full((4, 2), 0.05, dtype=np.float32))
    assert obs.shape == (4, 2) and np.isfinite(reward).all()
    venv.close()
    assert not any(p.is_alive() for p in venv._procs)


def test_sigterm_ends_a_worker_whatever_handler_the_parent_had():
    """multiprocessing ends daemonic workers with SIGTERM at the parent's exit; a handler inherited from
    the parent (metarl train installs one) must not keep them alive. The error then names the signal."""
    import signal

    old = signal.signal(signal.SIGTERM, lambda *_: None)  # what a forked worker would inherit
    try:
        venv = make_vector_env(NAV, 4, backend="subproc", num_workers=2)
    finally:
        signal.signal(signal.SIGTERM, old)
    venv.set_tasks(NAV_TASKS[:2] * 2)
    venv.reset()
    victim = venv._procs[0]
    os.kill(victim.pid, signal.SIGTERM)
    victim.join(timeout=10)
    assert victim.exitcode == -signal.SIGTERM
    with pytest.raises(ChildProcessError, match=r"died \(pid, exit code: \[\(\d+, -15\)\]\); killed by SIGTERM$"):
        venv.step(np.zeros((4, 2), dtype=np.float32))


def test_a_worker_whose_parent_closed_the_pipe_exits_quietly(capfd):
    """A parent killed outright (SIGKILL, the out-of-memory killer) closes its pipe ends; the workers then
    exit at their next receive instead of waiting forever with every env's memory. Each worker must close
    the parent ends it inherited by fork, its own and those of workers forked before it."""
    venv = make_vector_env(NAV, 4, backend="subproc", num_workers=2)
    for conn in venv._conns:
        conn.close()  # as the kernel does when the parent dies
    for proc in venv._procs:
        proc.join(timeout=10)
        assert proc.exitcode == 0
    assert "Traceback" not in capfd.readouterr().err
