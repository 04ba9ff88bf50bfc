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

import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from gymnasium.utils import seeding

from metarl.sampling.collector import Collector, EpisodeBatch
from metarl.common.distributions import Categorical, DiagGaussian, draw_noise
from metarl.envs.navigation import NavigationTask
from metarl.common.policies import RecurrentPolicy, make_policy, stack_params

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


def nav_calls(policy) -> list[dict]:
    """collect() arguments for NAV_TASKS, one of each kind, in an order whose later calls depend on the
    env streams the earlier ones left (also used by tests/test_process_pool.py)."""
    params = _per_task_params(policy, len(NAV_TASKS))
    shared = {k: v[0] for k, v in params.items()}
    return [
        dict(episodes_per_task=4),
        dict(episodes_per_task=4, params=params, per_task_params=True),  # MAML post-update sampling
        dict(episodes_per_task=4, params=shared),
        dict(episodes_per_task=4, deterministic=True),
        dict(episodes_per_task=4),  # the env streams went on across the calls above
        dict(episodes_per_task=2),  # another batch size: streams of their own
    ]


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
    from metarl.sampling.ray_collector import RayCollector

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
    from metarl.sampling.ray_collector import RayCollector

    return RayCollector(env_id, seed=seed, horizon=horizon, num_workers=num_workers)


def test_same_seed_same_batches_as_local(ray):
    local = Collector(NAV, seed=3, horizon=25)
    remote = _ray_collector(NAV, seed=3, horizon=25)
    try:
        policy = _policy(local)
        calls = nav_calls(policy)  # 5 tasks on 2 actors: shares of 3 and 2 tasks
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


def test_ray_actors_clip_actions_as_the_local_collector(ray):
    """HalfCheetahVel ([-1, 1] torques): policies with mean 10 and mean 1.5 apply the same torques in the
    actors too (they step through the same Collector.env_action), so their rewards are equal; sampled
    actions are clipped as the local collector clips them."""
    from metarl.envs.half_cheetah import HalfCheetahVelTask
    from metarl.common.policies import GaussianMLPPolicy

    env_id, tasks = "metarl/HalfCheetahVel-v0", [HalfCheetahVelTask(0.5), HalfCheetahVelTask(1.5)]
    remote = _ray_collector(env_id, seed=3, horizon=10)
    try:
        policies, rewards = [], []
        start = remote.get_rng_state()
        for mean in (1.5, 10.0):
            remote.set_rng_state(start)  # the same episodes (reset noise) for both policies
            policy = GaussianMLPPolicy(17, 6, hidden_sizes=(4,))
            with torch.no_grad():
                policy.mean_net[-1].weight.zero_()
                policy.mean_net[-1].bias.fill_(mean)
            batch = remote.collect(policy, tasks, 2, deterministic=True)
            # the batch keeps the policy's actions
            torch.testing.assert_close(batch.actions, torch.full_like(batch.actions, mean))
            policies.append(policy)
            rewards.append(batch.rewards)
        assert torch.equal(rewards[0], rewards[1])
        sampled = remote.collect(policies[1], tasks, 2)
    finally:
        remote.close()
    local = Collector(env_id, seed=3, horizon=10)
    local.collect(policies[1], tasks, 2, deterministic=True)  # the same env streams as the actors'
    _assert_batches_equal(sampled, local.collect(policies[1], tasks, 2))


@pytest.fixture
def bandits(ray):
    """A local and a Ray collector (2 actors) on 5 Bernoulli bandit tasks, one collection checked
    equal. Bandit rewards come from the env streams, so an actor that re-collects a share must resume
    those streams where the dead one started it (navigation's dynamics draw nothing)."""
    local = Collector(BANDIT, seed=6)
    remote = _ray_collector(BANDIT, seed=6)
    tasks = local.sample_tasks(5, np.random.default_rng(0))
    try:
        policy = _policy(local)
        _assert_batches_equal(local.collect(policy, tasks, 4), remote.collect(policy, tasks, 4))
        yield local, remote, tasks, policy
    finally:
        remote.close()


def test_dead_actor_share_is_recollected_identically(ray, bandits):
    local, remote, tasks, policy = bandits
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

    def die_again(k, policy_ref, share):  # share 0 kills every actor it is sent to
        if k == 0:
            remote._exit_next[0] = 0
        return submit(k, policy_ref, share)

    submit, remote._submit = remote._submit, die_again
    with pytest.raises(RuntimeError, match=r"^Ray collector: actors died 2 times in one collection "
                                           r"\(max_retries=1\); last: worker \d collecting share \d: "):
        remote.collect(policy, tasks, 4)


class _Unplaceable:
    """An actor class whose new actors need a resource no node has: Ray keeps them pending forever,
    as a replacement actor when the cluster lost a node and no other node has room."""

    def __init__(self, cls):
        self.cls = cls

    def options(self, **kwargs):
        return self.cls.options(resources={"no_such_node": 1}, **kwargs)


def _collect_or_fail(remote, *args, timeout=120):
    """remote.collect(*args) in a daemon thread, so that a collection that waits forever fails the test."""
    import threading

    out = {}
    thread = threading.Thread(target=lambda: out.update(batch=remote.collect(*args)), daemon=True)
    thread.start()
    thread.join(timeout)
    assert "batch" in out, f"the collection did not finish in {timeout} s"
    return out["batch"]


def test_share_of_a_replacement_that_cannot_start_is_collected_by_a_running_actor(ray, bandits, caplog):
    # A killed node leaves no room for the replacement of its actor: the lost share (and that
    # worker's share in later collections) is collected by the running actor, with the same result,
    # instead of waiting forever; once a replacement runs, it takes its share back.
    local, remote, tasks, policy = bandits
    pids = remote.worker_pids()
    remote._remote_cls = _Unplaceable(remote._remote_cls)
    remote._exit_next[1] = 5  # worker 1 dies mid-share; its replacement never starts
    with caplog.at_level("WARNING", logger="metarl.sampling.ray_collector"):
        _assert_batches_equal(local.collect(policy, tasks, 4), _collect_or_fail(remote, policy, tasks, 4))
        assert remote.retries == 1 and list(remote._starting) == [1]
        # 5 tasks on 2 workers: share 1 holds tasks 2-4, 3 tasks x 4 episodes = 12 columns
        lines = [r.getMessage() for r in caplog.records]
        assert len(lines) == 1 and re.fullmatch(
            r"Ray collector: worker 1 died collecting share 1 of 2 \(Actor\w+Error: .+\); "
            r"re-collecting its 12 columns on worker 0", lines[0]), lines
        # the next collection does not wait for the pending actor either
        _assert_batches_equal(local.collect(policy, tasks, 4), _collect_or_fail(remote, policy, tasks, 4))
        assert remote.retries == 1 and remote._worker_for(1) == 0
        # room again (a node joined): the next replacement starts and takes share 1 back
        remote._remote_cls = remote._remote_cls.cls
        remote._replace(1)
        pid = ray.get(remote._starting[1])
        assert remote._worker_for(1) == 1 and not remote._starting
        assert caplog.records[-1].getMessage() == f"Ray collector: worker 1 is back (a new actor, pid {pid})"
    assert pid not in pids
    _assert_batches_equal(local.collect(policy, tasks, 4), remote.collect(policy, tasks, 4))
    assert remote.worker_pids() == [pids[0], pid]


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


SMALL = {
    "maml": ["maml.meta_batch_size=4", "maml.episodes_per_task=4", "policy.hidden_sizes=[16]"],
    # PEARL: initial prior-z data of 4 tasks, then one collection with z from the posterior (task inputs)
    "pearl": ["pearl.num_train_tasks=4", "pearl.tasks_per_iteration=2", "pearl.gradient_steps=2", "pearl.meta_batch=2",
              "pearl.batch_size=16", "pearl.context_batch_size=8", "pearl.hidden_sizes=[16]",
              "pearl.encoder_hidden_sizes=[16]"],
}


def one_iteration(config: str, overrides: list[str], backend: str, collector_class: type):
    """(θ before, θ after) one training iteration of ``experiments/{config}.yaml`` on ``backend``, whose
    collector must be a ``collector_class`` exactly when the backend is not ``auto``."""
    from metarl.experiment import build_experiment, load_config

    exp = build_experiment(load_config(f"experiments/{config}.yaml", overrides + [f"collector.backend={backend}"]))
    try:
        assert isinstance(exp.collector, collector_class) == (backend != "auto")
        before = {k: v.detach().clone() for k, v in exp.policy.params().items()}
        exp.algo.train_iteration(exp.task_rng)
        return before, {k: v.detach().clone() for k, v in exp.policy.params().items()}
    finally:
        exp.collector.close()


@pytest.mark.parametrize("config", ["navigation2d_maml", "navigation2d_promp", "navigation2d_pearl"])
def test_training_iteration_on_ray_equals_local(ray, config):
    from metarl.sampling.ray_collector import RayCollector

    overrides = ["env.horizon=20", "collector.num_workers=2", *SMALL["pearl" if "pearl" in config else "maml"]]
    params = {}
    for backend in ("auto", "ray"):
        before, params[backend] = one_iteration(config, overrides, backend, RayCollector)
        assert any(not torch.equal(before[k], params[backend][k]) for k in before)  # the update moved θ
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


def test_loopback_address_ray_would_dial_elsewhere_is_one_line(monkeypatch):
    # Ray dials 127.0.0.1 as this machine's outward IP; a cluster bound to 127.0.0.1 is not there,
    # and ray.init would retry for minutes. The address Ray dials is probed instead.
    import socket
    import types

    pytest.importorskip("ray")
    import ray._private.services as services

    from metarl.sampling.ray_collector import _connect

    inits = []
    fake_ray = types.SimpleNamespace(is_initialized=lambda: False, init=lambda **kwargs: inits.append(kwargs))
    with socket.socket() as listener:  # a cluster head listening on 127.0.0.1 only
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        address = f"127.0.0.1:{listener.getsockname()[1]}"
        monkeypatch.setattr(services, "resolve_ip_for_localhost", lambda host: "127.0.0.2")  # its outward IP
        with pytest.raises(ConnectionError) as err:
            _connect(fake_ray, address)
        port = address.split(":")[1]
        assert str(err.value) == (
            f"collector.address {address!r}: cannot reach a Ray cluster there (Connection refused at 127.0.0.2:{port}: "
            f"Ray dials a loopback address as this machine's IP); start the head with `ray start --head "
            f"--node-ip-address 127.0.0.2`, or run the driver with RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 for a "
            f"cluster bound to 127.0.0.1")
        assert inits == []
        # where Ray keeps 127.0.0.1 (RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0), it connects
        monkeypatch.setattr(services, "resolve_ip_for_localhost", lambda host: host)
        assert _connect(fake_ray, address) is True
        assert [i["address"] for i in inits] == [address]
