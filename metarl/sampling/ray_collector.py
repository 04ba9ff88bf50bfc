"""The collector on Ray actors (``collector.backend: ray``): one meta-batch spread over many machines.

:class:`RayCollector` has the interface of :class:`metarl.sampling.collector.Collector` (it is one): the
algorithm calls ``collect(policy, tasks, episodes_per_task, ...)`` and gets one :class:`EpisodeBatch`.
Behind it, ``num_workers`` Ray actors each hold an in-process Collector (the native batched vector
env where one exists, vector backend ``auto``); every collection is split into shares of whole tasks,
one per actor, as :mod:`metarl.sampling.task_shares` describes.

Same seed, same batch as the local backend, bit for bit, whatever the number of actors. Column b's
env stream starts from ``Collector.column_seeds(B)[b]`` and its actions use ``noise[:, b]``, so no
random draw depends on the split; and an actor evaluates the policy at the whole collection's shape
(its columns in their own rows, zeros elsewhere; ``Collector.collect_columns``), so no rounding does
either: a BLAS may round a row differently in a call of another shape (an AVX-512 Xeon with MKL did,
by ~6e-8). Each actor thus pays the whole batch's policy arithmetic, small next to stepping MuJoCo;
only the environment steps are split. Bit-identity needs the actors' CPU and libraries to be the
driver's (one machine, or identical nodes); elsewhere the batches agree to rounding until a
trajectory crosses a discrete threshold (README, reproducibility).

The driver owns every random stream; actors own none. The env RNG states of every column are sent
with each share and returned after it, so:

* any actor reproduces exactly what the dead one would have produced: when an actor's call fails
  because its process died (killed, crashed, node lost), its share is sent again with the same
  inputs to an actor that is running (up to ``max_retries`` times per collection), and a fresh actor
  is started in its place. The fresh actor takes its share back once it runs; until then (for good,
  when no node has room for it: the cluster lost a node) the running actors collect its share too,
  so a lost node never stalls training. Each such event is one log line (``Ray collector: ...``);
* ``get_rng_state`` / ``set_rng_state`` (checkpoints, ``--resume``) have the local format, so a run
  can resume on either backend and continue identically.

The cost is a few hundred bytes per column each way, small next to the batch itself.

``ray`` is an optional dependency (``pip install "metarl[ray]"``); this module is imported only when
the ray backend is chosen, so everything else works without it.
"""

from __future__ import annotations

import logging
import socket
import warnings

from metarl.sampling.task_shares import CollectorWorker, TaskShareCollector

log = logging.getLogger(__name__)


def _import_ray():
    try:
        import ray
    except ImportError:
        raise ValueError("collector.backend 'ray' needs the optional package ray, which is not installed: "
                         "pip install 'metarl[ray]'") from None
    return ray


class _CollectorWorker(CollectorWorker):
    """A Ray actor's worker (its own class name: Ray titles an actor's process ``ray::_CollectorWorker``)."""


class RayCollector(TaskShareCollector):
    """:class:`Collector` whose collections run on ``num_workers`` Ray actors (see the module doc).

    address: None starts a local Ray (unless this process is already connected, which is then used),
    ``auto`` joins the cluster this machine belongs to, ``HOST:PORT`` (or ``ray://HOST:PORT``) a given one.
    num_threads: MuJoCo stepping threads of each actor, and the CPUs each actor reserves (default 1).
    max_retries: shares re-sent per collection after actors died, before giving up.
    """

    def __init__(
        self,
        env_id: str,
        seed: int = 0,
        env_kwargs: dict | None = None,
        horizon: int | None = None,
        oracle: bool = False,
        num_threads: int | None = None,
        rescale_actions: bool = True,
        *,
        num_workers: int = 2,
        address: str | None = None,
        max_retries: int = 3,
        vector_backend: str = "auto",
    ):
        ray = _import_ray()
        super().__init__(env_id, seed=seed, backend="ray", num_workers=num_workers, env_kwargs=env_kwargs,
                         horizon=horizon, oracle=oracle, num_threads=num_threads, rescale_actions=rescale_actions)
        self.address = address
        self.max_retries = int(max_retries)
        self.vector_backend = vector_backend
        #: shares sent again because their actor died (all collections so far)
        self.retries = 0
        #: tests: share index -> env step at which the actor that next runs that share dies
        self._exit_next: dict[int, int] = {}
        #: worker index -> pid() call of its replacement actor, until that actor runs
        self._starting: dict[int, object] = {}
        self._ray = ray
        self._started_ray = _connect(ray, address)
        from metarl.sampling.vector import env_spec

        self._env_spec = env_spec(env_id)
        self._actor_threads = int(num_threads or 1)
        cpus = ray.cluster_resources().get("CPU", 0)
        if cpus < num_workers * self._actor_threads:
            warnings.warn(f"collector.num_workers={num_workers} actors x {self._actor_threads} CPU need "
                          f"{num_workers * self._actor_threads} CPUs, the Ray cluster has {cpus:g}; "
                          f"actors beyond that wait for resources", stacklevel=2)
        self._remote_cls = ray.remote(_CollectorWorker)
        self._actors = [self._new_actor() for _ in range(num_workers)]

    def _new_actor(self):
        # max_restarts=0: a dead actor is replaced by the driver (with the share it was running), so
        # there is one recovery path, not Ray's restart racing the driver's retry.
        return self._remote_cls.options(num_cpus=self._actor_threads, max_restarts=0).remote(
            self.env_id, self._env_spec, self.env_kwargs, self.horizon, self.oracle, self._actor_threads,
            self.vector_backend, self.rescale_actions)

    def _shared(self, obj):
        return self._ray.put(obj)  # one copy in the object store for all actors

    def _worker_for(self, k: int) -> int:
        """The worker that collects share k: worker k, unless it is a replacement not running yet (no
        node may ever have room for it); then a running worker, which queues the share after its own."""
        ray = self._ray
        while True:
            for j, ref in list(self._starting.items()):
                if ray.wait([ref], timeout=0)[0]:
                    del self._starting[j]
                    try:
                        log.warning(f"Ray collector: worker {j} is back (a new actor, pid {ray.get(ref)})")
                    except (ray.exceptions.RayActorError, ray.exceptions.ObjectLostError) as err:
                        log.warning(f"Ray collector: the new actor of worker {j} died starting "
                                    f"({_error_line(err)}); starting another")
                        self._replace(j)
            if k not in self._starting:
                return k
            running = [j for j in range(len(self._actors)) if j not in self._starting]
            if running:
                return running[k % len(running)]
            log.warning(f"Ray collector: no actor is running; waiting for a new one to start (each needs "
                        f"{self._actor_threads} free CPU)")
            ray.wait(list(self._starting.values()), num_returns=1)

    def _replace(self, j: int) -> None:
        """Kill worker j's actor and start a fresh one, wherever the cluster has room (maybe never)."""
        try:
            self._ray.kill(self._actors[j], no_restart=True)
        except Exception:  # already gone: nothing to clean up
            pass
        self._actors[j] = self._new_actor()
        self._starting[j] = self._actors[j].pid.remote()

    def _submit(self, k: int, policy_ref, share: dict):
        """Send share k to its worker; (result ref, worker index, actor)."""
        j = self._worker_for(k)
        exit_at_step = self._exit_next.pop(k, None)
        actor = self._actors[j]
        return actor.collect_columns.remote(policy_ref, exit_at_step=exit_at_step, **share), j, actor

    def _run_shares(self, policy_ref, shares: list[dict]) -> list:
        """Every share's result, in share order; a share whose actor died is re-sent to a running actor."""
        ray = self._ray
        pending = {}
        for k, share in enumerate(shares):
            ref, j, actor = self._submit(k, policy_ref, share)
            pending[ref] = k, j, actor
        results: list = [None] * len(shares)
        failures = 0
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            ref = done[0]
            k, j, actor = pending.pop(ref)
            try:
                results[k] = ray.get(ref)
            except (ray.exceptions.RayActorError, ray.exceptions.ObjectLostError) as err:
                # ObjectLostError: the result was stored on a node that died before it was fetched
                failures += 1
                if failures > self.max_retries:
                    raise RuntimeError(
                        f"Ray collector: actors died {failures} times in one collection (max_retries="
                        f"{self.max_retries}); last: worker {j} collecting share {k}: {_first_line(err)}") from None
                self.retries += 1
                if self._actors[j] is actor:  # not yet replaced (a worker running two shares fails twice)
                    self._replace(j)
                ref, j2, actor = self._submit(k, policy_ref, shares[k])
                pending[ref] = k, j2, actor
                log.warning(f"Ray collector: worker {j} died collecting share {k} of {len(shares)} "
                            f"({_error_line(err)}); re-collecting its {len(shares[k]['env_states'])} "
                            f"columns on worker {j2}")
            except ray.exceptions.RayTaskError as err:
                # An error raised by the collector code itself (bad env, bad policy): report it as it
                # would be raised in-process, not as Ray's multi-line remote traceback.
                cause = getattr(err, "cause", None)
                if isinstance(cause, Exception):
                    raise cause from None
                raise
        return results

    def worker_pids(self) -> list[int]:
        """Process ids of the actors (diagnostics, tests)."""
        return self._ray.get([a.pid.remote() for a in self._actors])

    def close(self) -> None:
        for actor in getattr(self, "_actors", []):
            try:
                self._ray.kill(actor, no_restart=True)
            except Exception:  # already dead
                pass
        self._actors = []
        self._starting = {}
        if getattr(self, "_started_ray", False) and self._ray.is_initialized():
            self._ray.shutdown()
            self._started_ray = False
        super().close()


def _error_line(err: BaseException) -> str:
    return f"{type(err).__name__}: {_first_line(err)}"


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _parse_address(address: str) -> tuple[str, int]:
    rest = address.split("://", 1)[1] if "://" in address else address
    host, sep, port = rest.rpartition(":")
    if not sep:
        return rest, 6379  # Ray's default GCS port
    if not port.isdigit():
        raise ValueError(f"collector.address {address!r} is not HOST:PORT, ray://HOST:PORT or 'auto'")
    return host.strip("[]"), int(port)


def _dialed_host(host: str) -> str:
    """The host ray.init connects to for ``host``: Ray replaces a loopback host by this machine's
    outward IP (so that other machines can join), unless RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0."""
    try:
        from ray._private.services import resolve_ip_for_localhost

        return resolve_ip_for_localhost(host)
    except Exception:  # another Ray version, or a host Ray rejects itself: probe what was given
        return host


def _connect(ray, address: str | None) -> bool:
    """Connect this process to Ray; True when this call started the connection (close() ends it)."""
    if ray.is_initialized():
        return False  # a script or test already connected this process: use that cluster
    if address not in (None, "auto"):
        # Ray itself retries an unreachable address for minutes; a plain TCP connect answers in seconds.
        host, port = _parse_address(address)
        dialed = _dialed_host(host)
        try:
            socket.create_connection((dialed, port), timeout=5).close()
        except OSError as err:
            if dialed != host:  # e.g. a cluster bound to 127.0.0.1 on one machine
                raise ConnectionError(
                    f"collector.address {address!r}: cannot reach a Ray cluster there ({err.strerror or err} at "
                    f"{dialed}:{port}: Ray dials a loopback address as this machine's IP); start the head with "
                    f"`ray start --head --node-ip-address {dialed}`, or run the driver with "
                    f"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 for a cluster bound to {host}") from None
            raise ConnectionError(
                f"collector.address {address!r}: cannot reach a Ray cluster there ({err.strerror or err}); "
                f"start one with `ray start --head` and pass the address it prints, or use "
                f"collector.address=auto on a cluster node") from None
    try:
        ray.init(address=address, include_dashboard=False, ignore_reinit_error=True)
    except ConnectionError as err:
        if _auth_failed(err):
            # Ray >= 2.5x clusters use token authentication by default; the cause is buried in a
            # multi-line chained traceback, so name it and the fix here.
            raise ConnectionError(
                f"collector.address {address!r}: the Ray cluster refused this process's auth token; copy "
                f"~/.ray/auth_token from the head node (or set RAY_AUTH_TOKEN) and set RAY_AUTH_MODE=token") from None
        raise ConnectionError(f"collector.address {address!r}: cannot join a Ray cluster ({_first_line(err)}); "
                              f"start one with `ray start --head`, or set collector.address to null for a "
                              f"local Ray") from None
    return True


def _auth_failed(err: BaseException) -> bool:
    seen = 0
    while err is not None and seen < 10:
        if "InvalidAuthToken" in str(err) or type(err).__name__ == "AuthenticationError":
            return True
        err, seen = err.__cause__ or err.__context__, seen + 1
    return False
