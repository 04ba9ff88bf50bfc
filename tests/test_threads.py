"""The threaded vector env (collector backend ``threads``, and ``auto``'s choice for natively batched MuJoCo
on two threads): each share of the columns steps on its own Python thread, driven by its own step loop.
Its batches equal the whole-batch lock-step ones (backend ``native``) bit for bit, whatever the number of
shares: per-task parameters, early terminations, per-task physics and RL² trials included."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

import metarl  # noqa: F401  (registers metarl/...)
from metarl.common.policies import RecurrentPolicy, make_policy, stack_params
from metarl.common.tasks import BatchedTaskEnv
from metarl.sampling.collector import Collector
from metarl.sampling import vector
from metarl.sampling.vector import ThreadedVectorEnv, make_vector_env

from test_subproc import _assert_batches_equal
from test_vector import TINY_ID  # a third-party env stepped in a Python loop

CHEETAH_VEL, CHEETAH_DIR = "metarl/HalfCheetahVel-v0", "metarl/HalfCheetahDir-v0"
WALKER = "metarl/Walker2DRandParams-v0"  # per-task physics, and episodes that end when the walker falls


def _collect(env_id, backend, threads, *, tasks=3, episodes=3, horizon=25, per_task=False, recurrent=False,
             trial=1):
    c = Collector(env_id, seed=5, backend=backend, num_threads=threads, horizon=horizon)
    torch.manual_seed(0)
    if recurrent:
        policy = RecurrentPolicy(c.observation_space.shape[0], c.action_space, hidden_size=16)
    else:
        policy = make_policy(c.observation_space, c.action_space, False, (16,))
    task_list = c.sample_tasks(tasks, np.random.default_rng(2))
    kwargs = {}
    if per_task:  # as MAML's post-update collection: one parameter set per task
        g = torch.Generator().manual_seed(1)
        kwargs = dict(params=stack_params([{k: v.detach() + 0.3 * torch.randn(v.shape, generator=g)
                                            for k, v in policy.params().items()} for _ in task_list]),
                      per_task_params=True)
    batch = c.collect(policy, task_list, episodes * trial, episodes_per_trial=trial, **kwargs)
    venv_type = type(c._venv(tasks * episodes))
    states = c.get_rng_state()["envs"]
    c.close()
    return batch, states, venv_type


@pytest.mark.parametrize("env_id,options", [
    (CHEETAH_VEL, {}),
    (CHEETAH_DIR, {"per_task": True}),
    (WALKER, {"horizon": 60}),
    (CHEETAH_VEL, {"recurrent": True, "trial": 2, "episodes": 2}),
])
@pytest.mark.parametrize("threads,shares", [(2, 2), (3, 3)])
def test_threads_equal_the_whole_batch(env_id, options, threads, shares, monkeypatch):
    monkeypatch.setattr(vector, "THREAD_SHARES", shares)
    whole, whole_states, whole_type = _collect(env_id, "native", threads, **options)
    shared, shared_states, shared_type = _collect(env_id, "threads", threads, **options)
    assert shared_type is ThreadedVectorEnv and whole_type is not ThreadedVectorEnv
    _assert_batches_equal(whole, shared)
    assert whole_states == shared_states  # the sub-environments' streams continue identically
    assert not shared.log_probs.requires_grad  # no graph recorded on the share threads (grad mode is per thread)
    if env_id == WALKER:
        assert not bool(shared.valid.all())  # some walkers fell: the running masks were exercised


def test_auto_steps_mujoco_in_threads_and_everything_else_as_before():
    def venv_type(env_id, **kwargs):
        c = Collector(env_id, seed=0, horizon=3, **kwargs)
        c.collect(make_policy(c.observation_space, c.action_space, c.supervised, (4,)),
                  c.sample_tasks(2, np.random.default_rng(0)), 2)
        kind = type(c._venv(4))
        c.close()
        return kind

    assert venv_type(CHEETAH_VEL, num_threads=2) is ThreadedVectorEnv
    # many stepping threads: the per-step Python, which the shares cannot run at once, outweighs the physics
    assert venv_type(CHEETAH_VEL, num_threads=16) is not ThreadedVectorEnv
    # one stepping thread, the oracle's task-in-observation wrapper, or an env without native batching:
    # nothing to overlap, or a wrapper that steps in lock-step; the whole batch as before
    assert venv_type(CHEETAH_VEL, num_threads=1) is not ThreadedVectorEnv
    assert venv_type(CHEETAH_VEL, num_threads=2, oracle=True) is not ThreadedVectorEnv
    assert venv_type("metarl/Navigation2D-v0", num_threads=2) is not ThreadedVectorEnv
    # auto on two threads gives the lock-step batch
    a, _, _ = _collect(CHEETAH_VEL, "auto", 2)
    b, _, _ = _collect(CHEETAH_VEL, "native", 2)
    _assert_batches_equal(a, b)


def test_two_shares_split_the_stepping_threads():
    # two shares by default, whatever the cores: more would repeat the whole-shape policy call once more each
    venv = ThreadedVectorEnv(CHEETAH_VEL, 7, num_threads=16)
    assert venv.shares == [(0, 4), (4, 7)] and [v.num_threads for v in venv.venvs] == [8, 8]
    venv.close()
    venv = ThreadedVectorEnv(CHEETAH_VEL, 7, num_threads=3)
    assert [v.num_threads for v in venv.venvs] == [2, 1]
    venv.close()
    venv = ThreadedVectorEnv(CHEETAH_VEL, 7, num_threads=3, num_shares=3)
    assert venv.shares == [(0, 2), (2, 5), (5, 7)] and [v.num_envs for v in venv.venvs] == [2, 3, 2]
    assert all(v.num_threads == 1 for v in venv.venvs)  # the loop's thread steps its share; no pool
    venv.close()
    venv = ThreadedVectorEnv(CHEETAH_VEL, 7, num_threads=1)  # one thread: one share
    assert venv.shares == [(0, 7)]
    venv.close()


def test_lock_step_calls_equal_the_whole_batch():
    tasks = Collector(WALKER).sample_tasks(5, np.random.default_rng(0))
    whole, shared = make_vector_env(WALKER, 5), ThreadedVectorEnv(WALKER, 5, num_threads=2)
    rng = np.random.default_rng(0)
    for venv in (whole, shared):
        venv.seed(list(range(10, 15)))
        venv.set_tasks(tasks)
    for a, b in zip(whole.reset(), shared.reset()):
        assert np.array_equal(a, b) if isinstance(a, np.ndarray) else a.keys() == b.keys()
    for _ in range(30):
        actions = rng.uniform(-1, 1, (5, whole.single_action_space.shape[0]))
        x, y = whole.step(actions), shared.step(actions)
        for i in range(4):
            assert np.array_equal(x[i], y[i])
        assert x[4].keys() == y[4].keys() and all(np.array_equal(x[4][k], y[4][k]) for k in x[4])
    assert whole.get_rng_state() == shared.get_rng_state()
    whole.close()
    shared.close()


class _Counting(BatchedTaskEnv):
    """A minimal vector env: counts its steps; step ``fail_at`` raises ``error``."""

    def __init__(self, num_envs, fail_at=None, error=RuntimeError("share 1 broke")):
        super().__init__(num_envs)
        self.steps, self.fail_at, self.error = 0, fail_at, error
        self.threads = set()

    def reset(self):
        return np.zeros((self.num_envs, 1)), {}

    def step(self, actions):
        self.threads.add(threading.get_ident())
        self.steps += 1
        if self.steps == self.fail_at:
            raise self.error
        return np.zeros((self.num_envs, 1)), np.zeros(self.num_envs), np.zeros(self.num_envs, bool), \
            np.zeros(self.num_envs, bool), {}


def _loop(n, steps):
    yield "reset", None
    for _ in range(steps):
        yield "step", np.zeros((n, 1))
    return steps


def _threaded(envs) -> ThreadedVectorEnv:
    venv = ThreadedVectorEnv(TINY_ID, sum(v.num_envs for v in envs), num_threads=len(envs), num_shares=len(envs))
    venv.close()
    venv.venvs = list(envs)
    return venv


def test_share_loops_run_on_threads_of_their_own():
    envs = [_Counting(2), _Counting(3)]
    assert _threaded(envs).run_share_loops([_loop(2, 50), _loop(3, 50)]) == [50, 50]
    assert envs[0].threads == {threading.get_ident()}  # share 0 on the caller's thread
    assert len(envs[1].threads) == 1 and envs[1].threads != envs[0].threads


@pytest.mark.parametrize("error", [RuntimeError("share 1 broke"), KeyboardInterrupt()])
def test_an_error_in_one_share_stops_the_others(error):
    # share 1 fails at its 5th step; share 0, whose loop would take a million steps, stops at its next call
    envs = [_Counting(2), _Counting(2, fail_at=5, error=error)]
    with pytest.raises(type(error)):
        _threaded(envs).run_share_loops([_loop(2, 10**6), _loop(2, 10)])
    assert envs[0].steps < 10**6


def test_bad_arguments():
    with pytest.raises(ValueError, match=r"num_threads must be a positive integer, got 0"):
        ThreadedVectorEnv(CHEETAH_VEL, 4, num_threads=0)
    with pytest.raises(ValueError, match=r"num_shares must be a positive integer, got 0"):
        ThreadedVectorEnv(CHEETAH_VEL, 4, num_shares=0)
    venv = ThreadedVectorEnv(CHEETAH_VEL, 4, num_threads=2)
    with pytest.raises(ValueError, match=r"needs one loop per share \(2\), got 1"):
        venv.run_share_loops([_loop(4, 1)])
    venv.set_tasks(Collector(CHEETAH_VEL).sample_tasks(4, np.random.default_rng(0)))
    venv.reset()
    with pytest.raises(ValueError, match=r"actions must have 4 rows, got shape \(3, 6\)"):
        venv.step(np.zeros((3, 6)))
    venv.close()


def test_subproc_shares_equal_the_whole_batch_with_per_task_parameters():
    # The same construction in worker processes: a share's zero-padded policy input is a fresh tensor, and
    # so is the whole batch's (MKL rounds by operand alignment; a view into the step buffer at row t did not
    # match in the last bit here before the step loop copied it)
    whole, whole_states, _ = _collect(CHEETAH_DIR, "native", 2, per_task=True)
    shared, shared_states, _ = _collect(CHEETAH_DIR, "subproc", 2, per_task=True)
    _assert_batches_equal(whole, shared)
    assert whole_states == shared_states


def test_bench_collect_steps_on_the_threads_asked(bench_collect_untimed):
    # `metarl bench collect --threads N` steps MuJoCo on N threads, and times the whole batch on the same N
    bench, seen = bench_collect_untimed
    out = bench.bench_collect(CHEETAH_VEL, num_tasks=2, episodes_per_task=2, repeats=1, backend="threads", num_threads=3)
    assert seen == [("threads", 3), ("native", 3)]
    assert out["open_loop_steps_per_s"] == 3.0  # the open-loop reference on the same 3 threads
    assert out["shares_over_whole_batch"] == out["collector_steps_per_s"] / out["whole_batch_collector_steps_per_s"]
