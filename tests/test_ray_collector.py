"""The Ray collector backend (``collector.backend: ray``).

Without Ray: the local Collector's randomness is partition-independent (the action noise of a whole
collection is drawn up front and sliced; column b's env stream depends only on (seed, B, b)), so any
split of the columns collected apart gives the same batch. With Ray (2 local actors, skipped when
ray is not installed): same seed, same batch as the local backend for Gaussian, categorical,
supervised and recurrent policies and per-task (MAML post-update) parameters; a share whose actor
dies mid-collection is re-collected identically; RNG states move between the backends; a MAML
iteration gives the same parameters; an unreachable cluster is one clear line.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from gymnasium.utils import seeding

from metarl.collector import Collector, EpisodeBatch
from metarl.distributions import Categorical, DiagGaussian, draw_noise
from metarl.envs.navigation import NavigationTask
from metarl.policies import RecurrentPolicy, make_policy, stack_params

FIELDS = ("obs", "actions", "rewards", "valid", "dones", "log_probs", "timesteps", "task_index", "targets",
          "policy_inputs")
NAV = "metarl/Navigation2D-v0"
BANDIT = "metarl/Bandit-v0"
NAV_TASKS = [NavigationTask((0.1, 0.0)), NavigationTask((0.3, -0.2)), NavigationTask((-0.4, 0.45)),
             NavigationTask((0.2, 0.4)), NavigationTask((-0.3, -0.1))]


def _assert_batches_equal(a: EpisodeBatch, b: EpisodeBatch):
    assert (a.num_tasks, a.horizon, a.episodes_per_trial) == (b.num_tasks, b.horizon, b.episodes_per_trial)
    for name in FIELDS:
        x, y = getattr(a, name), getattr(b, name)
        if x is None or y is None:
            assert x is None and y is None, name
        else:
            assert x.shape == y.shape and torch.equal(x, y), name


def _policy(collector, hidden=(16,), init_log_std=-0.5, seed=0):
    torch.manual_seed(seed)
    return make_policy(collector.observation_space, collector.action_space, collector.supervised, hidden,
                       init_log_std=init_log_std)


def _per_task_params(policy, num_tasks, scale=0.3):
    g = torch.Generator().manual_seed(1)
    return stack_params([{k: v.detach() + scale * torch.randn(v.shape, generator=g) for k, v in policy.params().items()}
                         for _ in range(num_tasks)])


# ------------------------------------------------------------------------------ without Ray


def test_sample_from_noise_is_sample():
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    gauss = DiagGaussian(torch.randn(5, 2), torch.full((2,), -0.5))
    assert torch.equal(gauss.sample(g1), gauss.sample_from_noise(draw_noise("normal", (5, 2), g2)))
    cat = Categorical(torch.randn(5, 4))
    assert torch.equal(cat.sample(g1), cat.sample_from_noise(draw_noise("uniform", (5, 4), g2)))
    # Gumbel-max on a slice of the noise is the sample of that slice's columns
    u = draw_noise("uniform", (5, 4), g1)
    assert torch.equal(cat.sample_from_noise(u)[2:], Categorical(cat.logits[2:]).sample_from_noise(u[2:]))
    with pytest.raises(ValueError, match=r"DiagGaussian.sample_from_noise needs normal noise of shape \(5, 2\), got \(5, 3\)"):
        gauss.sample_from_noise(torch.zeros(5, 3))
    with pytest.raises(ValueError, match="got None"):
        cat.sample_from_noise(None)


def _collect_in_shares(collector: Collector, policy, tasks, episodes_per_task, bounds, env_states=None, **kwargs):
    """One collection, its tasks split at ``bounds``, each share collected by collect_columns."""
    cols = episodes_per_task // kwargs.get("episodes_per_trial", 1)
    B = len(tasks) * cols
    noise = collector.action_noise(collector.horizon * kwargs.get("episodes_per_trial", 1), B,
                                   kwargs.get("deterministic", False))
    if env_states is None:
        env_states = [seeding.np_random(s)[0].bit_generator.state for s in collector.column_seeds(B)]
    params = kwargs.pop("params", None)
    batches, states = [], []
    for m0, m1 in zip(bounds[:-1], bounds[1:]):
        c0, c1 = m0 * cols, m1 * cols
        share_params = params
        if params is not None and kwargs.get("per_task_params"):
            share_params = {k: v[m0:m1] for k, v in params.items()}
        batch, after = collector.collect_columns(
            policy, tasks[m0:m1], episodes_per_task, params=share_params,
            noise=None if noise is None else noise[:, c0:c1], env_states=env_states[c0:c1],
            first_task=m0, total_tasks=len(tasks), **kwargs)
        assert torch.equal(batch.task_index, torch.arange(m1 - m0).repeat_interleave(cols))
        batches.append(batch)
        states += after
    cat = {name: torch.cat([getattr(b, name) for b in batches], 1) if getattr(batches[0], name) is not None else None
           for name in FIELDS if name != "task_index"}
    merged = EpisodeBatch(**cat, task_index=torch.arange(len(tasks)).repeat_interleave(cols), num_tasks=len(tasks),
                          horizon=batches[0].horizon, episodes_per_trial=batches[0].episodes_per_trial)
    return merged, states


@pytest.mark.parametrize("env_id,horizon", [(NAV, 20), ("metarl/Bandit-v0", None), ("metarl/Sinusoid-v0", None)])
def test_columns_collected_apart_equal_the_whole_collection(env_id, horizon):
    whole = Collector(env_id, seed=5, horizon=horizon)
    policy = _policy(whole)
    tasks = NAV_TASKS if env_id == NAV else whole.sample_tasks(5, np.random.default_rng(0))
    params = _per_task_params(policy, 5)
    expected = [whole.collect(policy, tasks, 4), whole.collect(policy, tasks, 4, params=params, per_task_params=True)]

    apart = Collector(env_id, seed=5, horizon=horizon)
    first, states = _collect_in_shares(apart, policy, tasks, 4, [0, 2, 5])
    # the env streams continue from the returned states, exactly as in the whole vector env
    second, _ = _collect_in_shares(apart, policy, tasks, 4, [0, 1, 3, 5], env_states=states,
                                   params=params, per_task_params=True)
    _assert_batches_equal(expected[0], first)
    _assert_batches_equal(expected[1], second)
    if env_id != "metarl/Sinusoid-v0":  # the equality above is not that of two constant batches
        assert not torch.equal(first.actions, second.actions)


def test_collect_columns_checks_noise_and_states():
    c = Collector(NAV, seed=0, horizon=5)
    policy = _policy(c)
    noise = c.action_noise(5, 4)
    states = [seeding.np_random(s)[0].bit_generator.state for s in c.column_seeds(4)]
    with pytest.raises(ValueError, match=r"noise must be \(5, 4, 2\), got \(5, 3, 2\)"):
        c.collect_columns(policy, NAV_TASKS[:2], 2, noise=noise[:, :3], env_states=states)
    with pytest.raises(ValueError, match="4 columns need 4 env RNG states, got 3"):
        c.collect_columns(policy, NAV_TASKS[:2], 2, noise=noise, env_states=states[:3])
    with pytest.raises(ValueError, match="2 tasks from first_task=4 do not fit in total_tasks=5"):
        c.collect_columns(policy, NAV_TASKS[:2], 2, noise=noise, env_states=states, first_task=4, total_tasks=5)


class _RecordingPolicy(torch.nn.Module):
    """Wraps a feedforward policy and records every observation batch it is evaluated on."""

    def __init__(self, policy):
        super().__init__()
        self.policy, self.seen = policy, []

    def forward(self, obs):
        self.seen.append(obs.clone())
        return self.policy(obs)

    def distribution(self, out):
        return self.policy.distribution(out)


def test_a_share_evaluates_the_policy_at_the_whole_collections_shape():
    # What makes a share bit-identical to the whole collection on any BLAS: its policy calls have the
    # whole shape, with its own rows in place (rows of another shape may be rounded differently).
    whole = Collector(NAV, seed=1, horizon=4)
    policy = _RecordingPolicy(_policy(whole))
    whole.collect(policy, NAV_TASKS, 2)
    whole_calls, policy.seen = policy.seen, []
    _collect_in_shares(Collector(NAV, seed=1, horizon=4), policy, NAV_TASKS, 2, [0, 2, 5])
    share_calls = policy.seen
    assert len(whole_calls) == 4 and len(share_calls) == 8  # 4 steps, 2 shares
    for k, (c0, c1) in enumerate([(0, 4), (4, 10)]):
        for t in range(4):
            seen = share_calls[4 * k + t]
            assert seen.shape == whole_calls[t].shape == (10, 2)
            assert torch.equal(seen[c0:c1], whole_calls[t][c0:c1])
            assert not seen[:c0].any() and not seen[c1:].any()


def test_missing_ray_names_the_extra(monkeypatch):
    from metarl.ray_collector import RayCollector

    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    with pytest.raises(ValueError, match=r"needs the optional package ray, which is not installed: pip install 'metarl\[ray\]'"):
        RayCollector(NAV)


# --------------------------------------------------------------------------------- with Ray


@pytest.fixture(scope="module")
def ray():
    ray = pytest.importorskip("ray")
    from simulated_blas import ray_runtime_env

    # address="local": a fresh Ray for these tests even when a cluster runs on this machine
    ray.init(address="local", num_cpus=2, include_dashboard=False, ignore_reinit_error=True, log_to_driver=False,
             runtime_env=ray_runtime_env())
    yield ray
    ray.shutdown()


def _ray_collector(env_id, seed, horizon=None, num_workers=2):
    from metarl.ray_collector import RayCollector

    return RayCollector(env_id, seed=seed, horizon=horizon, num_workers=num_workers)


def test_same_seed_same_batches_as_local(ray):
    local = Collector(NAV, seed=3, horizon=25)
    remote = _ray_collector(NAV, seed=3, horizon=25)
    try:
        policy = _policy(local)
        params = _per_task_params(policy, 5)
        shared = {k: v[0] for k, v in params.items()}
        calls = [  # 5 tasks on 2 actors: shares of 3 and 2 tasks
            dict(episodes_per_task=4),
            dict(episodes_per_task=4, params=params, per_task_params=True),  # MAML post-update sampling
            dict(episodes_per_task=4, params=shared),
            dict(episodes_per_task=4, deterministic=True),
            dict(episodes_per_task=4),  # the env streams went on across the calls above
            dict(episodes_per_task=2),  # another batch size: streams of their own
        ]
        batches = []
        for kwargs in calls:
            expected = local.collect(policy, NAV_TASKS, **kwargs)
            got = remote.collect(policy, NAV_TASKS, **kwargs)
            _assert_batches_equal(expected, got)
            batches.append(got)
        assert not torch.equal(batches[0].actions, batches[4].actions)
        assert len(set(remote.worker_pids())) == 2
        # one task, one actor used; more actors than tasks is fine
        _assert_batches_equal(local.collect(policy, NAV_TASKS[:1], 3), remote.collect(policy, NAV_TASKS[:1], 3))
        # and another seed really gives other episodes
        other = Collector(NAV, seed=4, horizon=25).collect(policy, NAV_TASKS, 4)
        assert not torch.equal(other.actions, batches[0].actions)
    finally:
        remote.close()
    assert ray.is_initialized()  # the collector did not start this Ray, so it leaves it running


@pytest.mark.parametrize("env_id", ["metarl/Bandit-v0", "metarl/Sinusoid-v0"])
def test_categorical_recurrent_and_supervised_as_local(ray, env_id):
    local = Collector(env_id, seed=8)
    remote = _ray_collector(env_id, seed=8)
    try:
        tasks = local.sample_tasks(4, np.random.default_rng(0))
        policy = _policy(local)
        _assert_batches_equal(local.collect(policy, tasks, 6), remote.collect(policy, tasks, 6))
        if env_id == "metarl/Bandit-v0":  # RL² trials: the hidden state lives inside one share's collect
            torch.manual_seed(0)
            rnn = RecurrentPolicy(local.observation_space.shape[0], local.action_space, hidden_size=8)
            for _ in range(2):
                expected = local.collect(rnn, tasks, 6, episodes_per_trial=3)
                got = remote.collect(rnn, tasks, 6, episodes_per_trial=3)
                _assert_batches_equal(expected, got)
                assert got.policy_inputs is not None
        else:
            assert remote.collect(policy, tasks, 6).targets.shape == (1, 24, 1)
    finally:
        remote.close()


def test_dead_actor_share_is_recollected_identically(ray):
    # Bernoulli bandits: rewards come from the env streams, so a restarted actor must resume those
    # streams where the dead one started its share (navigation's dynamics draw nothing)
    local = Collector(BANDIT, seed=6)
    remote = _ray_collector(BANDIT, seed=6)
    tasks = local.sample_tasks(5, np.random.default_rng(0))
    try:
        policy = _policy(local)
        _assert_batches_equal(local.collect(policy, tasks, 4), remote.collect(policy, tasks, 4))
        pids = remote.worker_pids()
        # worker 1's process exits at env step 5 of its share (mid-collection, env streams advanced)
        remote._exit_next[1] = 5
        got = remote.collect(policy, tasks, 4)
        _assert_batches_equal(local.collect(policy, tasks, 4), got)
        assert remote.retries == 1
        new_pids = remote.worker_pids()
        assert new_pids[0] == pids[0] and new_pids[1] != pids[1]
        # an actor killed between collections (e.g. its node went away) is replaced too
        ray.kill(remote._actors[0], no_restart=True)
        _assert_batches_equal(local.collect(policy, tasks, 4), remote.collect(policy, tasks, 4))
        assert remote.retries == 2
        # a share that keeps killing its actor gives up with one line
        remote.max_retries = 1

        def die_again(k, policy_ref, share):  # worker 0's share kills every actor it is sent to
            if k == 0:
                remote._exit_next[0] = 0
            return submit(k, policy_ref, share)

        submit, remote._submit = remote._submit, die_again
        with pytest.raises(RuntimeError, match=r"^Ray collector: actors died 2 times in one collection \(max_retries=1\); last: worker 0: "):
            remote.collect(policy, tasks, 4)
    finally:
        remote.close()


def test_rng_state_moves_between_backends(ray):
    local = Collector(BANDIT, seed=2)
    remote = _ray_collector(BANDIT, seed=2)
    tasks = local.sample_tasks(3, np.random.default_rng(0))
    try:
        policy = _policy(local)
        local.collect(policy, tasks, 2)
        remote.set_rng_state(local.get_rng_state())  # a local run resumed on Ray
        _assert_batches_equal(local.collect(policy, tasks, 2), remote.collect(policy, tasks, 2))
        state = remote.get_rng_state()
        expected = remote.collect(policy, tasks, 2)
        fresh = Collector(BANDIT, seed=2)  # and a Ray run resumed locally
        fresh.set_rng_state(state)
        _assert_batches_equal(expected, fresh.collect(policy, tasks, 2))
    finally:
        remote.close()


def test_maml_iteration_on_ray_equals_local(ray):
    from metarl.config import load_config
    from metarl.ray_collector import RayCollector
    from metarl.train import build_experiment

    overrides = ["env.horizon=20", "maml.meta_batch_size=4", "maml.episodes_per_task=4", "policy.hidden_sizes=[16]",
                 "collector.num_workers=2"]
    params = {}
    for backend in ("auto", "ray"):
        exp = build_experiment(load_config("experiments/navigation2d_maml.yaml", overrides + [f"collector.backend={backend}"]))
        try:
            assert isinstance(exp.collector, RayCollector) == (backend == "ray")
            exp.algo.train_iteration(exp.task_rng)
            params[backend] = {k: v.detach().clone() for k, v in exp.policy.params().items()}
        finally:
            exp.collector.close()
    for k in params["auto"]:
        assert torch.equal(params["auto"][k], params["ray"][k]), k


def test_unreachable_cluster_is_one_line(tmp_path):
    pytest.importorskip("ray")
    beside = Path(sys.executable).with_name("metarl")
    script = str(beside) if beside.exists() else shutil.which("metarl")
    proc = subprocess.run(
        [script, "train", "experiments/navigation2d_maml.yaml", "--run-dir", str(tmp_path / "run"),
         "--set", "collector.backend=ray", "--set", "collector.address=127.0.0.1:1"],
        capture_output=True, text=True, timeout=120, cwd=Path(__file__).resolve().parents[1])
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("metarl: error: collector.address '127.0.0.1:1': cannot reach a Ray cluster there (")
    assert "ray start --head" in lines[0]
