"""Vector environments holding one task per sub-environment.

The collector talks to one interface, :class:`~metarl.common.tasks.BatchedTaskEnv` (defined with the
task API, since envs/ implements it): numpy arrays in, numpy arrays out,
no autoreset (the collector resets explicitly, so nothing leaks across episodes), and no time limit
(the collector owns the horizon H). Fast task distributions implement it natively (numpy arrays, or
many MuJoCo ``MjData`` stepped by threads); every other registered environment is wrapped by
:class:`GymLoopVectorEnv`.

Seeding follows Gymnasium exactly so that both paths give identical results: sub-environment i,
seeded with the integer ``s_i``, draws from ``gymnasium.utils.seeding.np_random(s_i)``, the same
generator a single environment builds in ``reset(seed=s_i)``; later resets continue that stream.
Sub-environments never share a stream.

Why not ``gymnasium.vector.SyncVectorEnv`` for the fallback: with autoreset disabled it refuses to
step a sub-environment whose episode has ended, so a batch in which one episode terminates early
(2D navigation) could only continue by resetting that sub-environment, which spends its random
stream on an episode nobody uses and breaks equality with the native path. Stepping only the
running sub-environments needs the loop below, which is what SyncVectorEnv does internally anyway.

:class:`ThreadedVectorEnv` (backend ``threads``, and ``auto``'s choice in the collector for natively batched
MuJoCo on two threads) holds two shares in this process and steps each on its own thread,
so one share's physics (``mujoco.rollout`` releases the GIL) overlaps another share's Python.

:class:`SubprocVectorEnv` (backend ``subproc``) runs contiguous shares of the sub-environments in
worker processes, each share the vector env ``auto`` would build, so environments stepped in Python
(Meta-World, ~1-2k steps/s each) use every core; its batches equal the in-process ones bit for bit.
Why not ``gymnasium.vector.AsyncVectorEnv``: it runs one process per sub-environment (a MAML batch
of 200 columns would be 200 processes on a 2-core machine), and has the SyncVectorEnv limitation above.
"""

from __future__ import annotations

import dataclasses
import inspect
import multiprocessing
import multiprocessing.connection
import os
import signal
import threading
from abc import abstractmethod
from typing import Any, Sequence

import gymnasium as gym
import numpy as np
from gymnasium.envs.registration import load_env_creator
from gymnasium.utils import seeding

from metarl.common.tasks import BatchedTaskEnv, check_task_distribution


class GymLoopVectorEnv(BatchedTaskEnv):
    """Any registered task environment, stepped one sub-environment at a time (the fallback)."""

    def __init__(self, env_id: str, num_envs: int, **env_kwargs: Any):
        super().__init__(num_envs)
        self.env_id = env_id
        # No TimeLimit wrapper: the collector owns the horizon, which may exceed max_episode_steps.
        spec = dataclasses.replace(env_spec(env_id), max_episode_steps=None)
        self.envs = [gym.make(spec, disable_env_checker=True, **env_kwargs) for _ in range(self.num_envs)]
        check_task_distribution(self.envs[0], env_id)
        self.single_observation_space = self.envs[0].observation_space
        self.single_action_space = self.envs[0].action_space
        self.supervised_loss = getattr(self.envs[0].unwrapped, "supervised_loss", None)
        self._pending_seeds: list[int] | None = None
        self._done = np.zeros(self.num_envs, dtype=bool)
        self._last_obs: list | None = None

    def seed(self, seeds: Sequence[int]) -> None:
        if len(seeds) != self.num_envs:
            raise ValueError(f"seed() needs {self.num_envs} seeds, got {len(seeds)}")
        self._pending_seeds = [int(s) for s in seeds]

    def _tasks_changed(self) -> None:
        for env, task in zip(self.envs, self.tasks):
            env.unwrapped.set_task(task)

    def reset(self):
        seeds = self._pending_seeds or [None] * self.num_envs
        self._pending_seeds = None
        results = [env.reset(seed=s) for env, s in zip(self.envs, seeds)]
        self._done[:] = False
        self._last_obs = [r[0] for r in results]
        return np.stack(self._last_obs), _stack_infos([r[1] for r in results])

    def step(self, actions):
        n = self.num_envs
        reward = np.zeros(n)
        terminated = np.zeros(n, dtype=bool)
        truncated = np.zeros(n, dtype=bool)
        infos: list[dict] = [{}] * n
        for i, env in enumerate(self.envs):
            if self._done[i]:
                continue  # finished episodes are masked by the collector; do not step them
            obs, r, term, trunc, info = env.step(actions[i])
            self._last_obs[i] = obs
            reward[i], terminated[i], truncated[i], infos[i] = r, term, trunc, info
            self._done[i] = term or trunc
        return np.stack(self._last_obs), reward, terminated, truncated, _stack_infos(infos)

    def get_rng_state(self):
        if self._pending_seeds is not None:  # seeded but not reset yet: the streams the seeds start
            return [seeding.np_random(s)[0].bit_generator.state for s in self._pending_seeds]
        return [env.unwrapped.np_random.bit_generator.state for env in self.envs]

    def set_rng_state(self, states):
        for env, s in zip(self.envs, states, strict=True):
            env.unwrapped.np_random.bit_generator.state = s
        self._pending_seeds = None  # the restored streams replace any seeds not yet applied

    def close(self):
        for env in self.envs:
            env.close()


def _subproc_worker(conn, spec: gym.envs.registration.EnvSpec, num_envs: int, env_kwargs: dict,
                    parent_ends: Sequence = ()) -> None:
    """A worker of :class:`SubprocVectorEnv`: one in-process vector env, driven by (command, argument) messages.

    ``parent_ends``: the parent's ends of this worker's pipe and of the workers forked before it, which a
    forked worker inherits; closed first, so that when the parent dies its pipes read as closed."""
    for end in parent_ends:
        end.close()
    import metarl.envs  # noqa: F401  (registers metarl/...)

    # A terminal's Ctrl-C reaches the whole process group; the parent alone decides what it means
    # (`metarl train` finishes the iteration under way with these workers, then checkpoints). SIGTERM
    # takes its default action, whatever handler the parent had when it forked: it is how
    # multiprocessing ends a daemonic worker at the parent's exit. A worker whose parent is gone ends
    # quietly at its next receive.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    if spec.id not in gym.registry:  # registered in the parent only (metarl --import MODULE)
        gym.registry[spec.id] = spec
    env_id = spec.id
    venv = None
    while True:
        try:
            command, arg = conn.recv()
        except (EOFError, OSError):  # the parent closed its end or died
            return
        try:
            if command == "close":
                if venv is not None:
                    venv.close()
                conn.send(("ok", None))
                return
            if command == "make":
                venv = make_vector_env(env_id, num_envs, backend="auto", **env_kwargs)
                result = (venv.single_observation_space, venv.single_action_space)
            elif command in ("seed", "set_tasks", "set_rng_state"):
                result = getattr(venv, command)(arg)
            elif command == "step":
                result = venv.step(arg)
            else:  # reset, get_rng_state
                result = getattr(venv, command)()
            conn.send(("ok", result))
        except Exception as err:  # the parent re-raises it
            conn.send(("error", err))


class ShareVectorEnv(BatchedTaskEnv):
    """Sub-environments in contiguous shares [a_w, b_w) (``self.shares``), each share the vector env ``auto``
    would build, held elsewhere: in a worker process (:class:`SubprocVectorEnv`) or in this process, stepped
    on a thread of its own (:class:`ThreadedVectorEnv`). The calls of the vector env API go to every share
    with its slice of the arguments (:meth:`_call_all`), lock-step; the collector drives the shares apart
    instead (:meth:`run_share_loops`)."""

    shares: list[tuple[int, int]]

    @abstractmethod
    def _call_all(self, command: str, args: Sequence | None = None) -> list:
        """Call the vector env method ``command`` of every share (with ``args[w]`` for share w when given);
        the shares' results, in share order."""

    @abstractmethod
    def run_share_loops(self, loops: Sequence) -> list:
        """Drive one step loop per share (generators as :func:`run_loop` takes, loop w on share w's
        sub-environments) without lock-step; returns each loop's return value, in share order."""

    def _split(self, items) -> list:
        return [items[a:b] for a, b in self.shares]

    def seed(self, seeds: Sequence[int]) -> None:
        if len(seeds) != self.num_envs:
            raise ValueError(f"seed() needs {self.num_envs} seeds, got {len(seeds)}")
        self._call_all("seed", self._split([int(s) for s in seeds]))

    def _tasks_changed(self) -> None:
        self._call_all("set_tasks", self._split(self.tasks))

    def reset(self):
        parts = self._call_all("reset")
        return np.concatenate([p[0] for p in parts]), merge_share_infos([p[1] for p in parts], self.shares)

    def step(self, actions):
        actions = np.asarray(actions)
        if actions.shape[:1] != (self.num_envs,):
            raise ValueError(f"actions must have {self.num_envs} rows, got shape {actions.shape}")
        parts = self._call_all("step", self._split(actions))
        obs, reward, terminated, truncated = (np.concatenate([p[i] for p in parts]) for i in range(4))
        return obs, reward, terminated, truncated, merge_share_infos([p[4] for p in parts], self.shares)

    def get_rng_state(self):
        return [s for part in self._call_all("get_rng_state") for s in part]

    def set_rng_state(self, states):
        if len(states) != self.num_envs:
            raise ValueError(f"set_rng_state() needs {self.num_envs} states, got {len(states)}")
        self._call_all("set_rng_state", self._split(list(states)))


class SubprocVectorEnv(ShareVectorEnv):
    """Sub-environments [a_w, b_w) in worker process w (forked), each share the vector env
    ``auto`` would build; numpy arrays go through pipes. :meth:`step` is lock-step (every worker steps
    its share, the main process waits for all); the collector drives the shares apart instead
    (:meth:`run_share_loops`), so that its policy step for one share overlaps the others' stepping."""

    def __init__(self, env_id: str, num_envs: int, num_workers: int = 2, **env_kwargs: Any):
        super().__init__(num_envs)
        if isinstance(num_workers, bool) or not isinstance(num_workers, (int, np.integer)) or num_workers < 1:
            raise ValueError(f"num_workers must be a positive integer, got {num_workers!r}")
        spec = env_spec(env_id)  # an unknown id fails here, with the list of registered ones
        self.env_id = env_id
        self.shares = share_bounds(self.num_envs, num_workers)
        # fork (Linux), as Gymnasium's AsyncVectorEnv does: spawn and forkserver re-import the caller's
        # __main__, which breaks any script without an `if __name__ == "__main__":` guard. The workers
        # only step environments (no torch), so the parent's thread pools do not matter to them.
        methods = multiprocessing.get_all_start_methods()
        ctx = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
        self._conns, self._procs = [], []
        for a, b in self.shares:
            parent, child = ctx.Pipe()
            # a forked child inherits every parent end open so far; without fork nothing is inherited
            inherited = [*self._conns, parent] if ctx.get_start_method() == "fork" else []
            proc = ctx.Process(target=_subproc_worker, args=(child, spec, b - a, env_kwargs, inherited), daemon=True)
            proc.start()
            child.close()
            self._conns.append(parent)
            self._procs.append(proc)
        try:
            self.single_observation_space, self.single_action_space = self._call_all("make")[0]
        except BaseException:
            self.close()
            raise
        self.supervised_loss = getattr(env_class(env_id), "supervised_loss", None)

    def _call_all(self, command: str, args: Sequence | None = None) -> list:
        try:
            for i, conn in enumerate(self._conns):
                conn.send((command, None if args is None else args[i]))
            answers = [conn.recv() for conn in self._conns]  # every answer before raising: the pipes stay in step
        except (EOFError, OSError):
            raise self._worker_died() from None
        error = next((value for status, value in answers if status == "error"), None)
        if error is not None:
            raise error
        return [value for _, value in answers]

    def _worker_died(self) -> ChildProcessError:
        error = dead_worker_error(self._procs, f"a subproc worker of {self.env_id}")
        self.close()
        return error

    def run_share_loops(self, loops: Sequence) -> list:
        """Drive one step loop per worker (generators as :func:`run_loop` takes, loop w on share w's
        sub-environments) without lock-step: whichever worker answers first gets its next call at once,
        so the main process's work for one share overlaps the other workers' stepping. Returns each
        loop's return value, in share order. On any error every call under way is answered first, so
        the pipes stay in step."""
        if len(loops) != len(self._conns):
            raise ValueError(f"run_share_loops needs one loop per worker ({len(self._conns)}), got {len(loops)}")
        results: list = [None] * len(loops)
        waiting: dict = {}  # connection -> share index, for every call under way
        try:
            for w, loop in enumerate(loops):
                self._conns[w].send(next(loop))
                waiting[self._conns[w]] = w
            while waiting:
                for conn in multiprocessing.connection.wait(list(waiting)):
                    w = waiting.pop(conn)
                    status, value = conn.recv()
                    if status == "error":
                        raise value
                    try:
                        call = loops[w].send(value)
                    except StopIteration as stop:
                        results[w] = stop.value
                        continue
                    conn.send(call)
                    waiting[conn] = w
        except (EOFError, OSError):
            raise self._worker_died() from None
        except BaseException:
            for conn in waiting:  # answers of the calls under way, dropped
                try:
                    conn.recv()
                except (EOFError, OSError):
                    pass
            raise
        return results

    def close(self):
        def ask_to_close(conn):
            conn.send(("close", None))
            conn.recv()

        stop_workers(self._conns, self._procs, ask_to_close)
        self._conns, self._procs = [], []


def share_bounds(num_envs: int, num_shares: int) -> list[tuple[int, int]]:
    """Contiguous shares [a, b) of ``num_envs`` sub-environments, as equal as can be, at most ``num_envs`` of them."""
    bounds = np.linspace(0, num_envs, min(int(num_shares), num_envs) + 1).round().astype(int)
    return [(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:])]


def merge_share_infos(infos: list[dict], shares: Sequence[tuple[int, int]]) -> dict[str, np.ndarray]:
    """Shares' info arrays concatenated; a share that lacks a key (none of its sub-envs stepped) gets zeros."""
    out = {}
    for key in dict.fromkeys(k for info in infos for k in info):
        like = next(info[key] for info in infos if key in info)
        out[key] = np.concatenate([info[key] if key in info else np.zeros((b - a, *like.shape[1:]), like.dtype)
                                   for info, (a, b) in zip(infos, shares)])
    return out


#: shares of a ThreadedVectorEnv unless told otherwise: two overlap one's physics with the other's Python
THREAD_SHARES = 2


class ThreadedVectorEnv(ShareVectorEnv):
    """Sub-environments in ``num_shares`` contiguous shares (two by default), each share the vector env
    ``auto`` would build, all in this process; a natively batched MuJoCo share steps on its part of the
    ``num_threads`` stepping threads (all cores by default).

    :meth:`run_share_loops` drives each share's step loop on its own Python thread. MuJoCo's
    ``rollout`` releases the GIL, so one share's physics runs while the collector computes the policy,
    rewards and observations of another: with one ``rollout`` over the whole batch on a pool of
    threads (backend ``native``), the pool waits during that Python (about a tenth of a collection on
    two cores). Two shares are enough for that overlap, and more would cost: each share evaluates the
    policy at the whole collection's shape (what keeps its batches equal to the whole batch's), so the
    policy's arithmetic grows with the number of shares. No processes, no pipes: arrays are shared,
    nothing is pickled. Environments stepped in Python (the Gymnasium loop, Meta-World) hold the GIL and
    gain nothing here; use ``subproc``. :meth:`step` and :meth:`reset` are lock-step, one share after the other."""

    def __init__(self, env_id: str, num_envs: int, num_threads: int | None = None, num_shares: int | None = None,
                 **env_kwargs: Any):
        super().__init__(num_envs)
        if num_threads is None:
            num_threads = os.cpu_count() or 1
        if num_shares is None:
            num_shares = THREAD_SHARES
        for name, value in (("num_threads", num_threads), ("num_shares", num_shares)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        self.env_id = env_id
        self.shares = share_bounds(self.num_envs, min(num_shares, num_threads))
        # the stepping threads split between the shares as evenly as can be (16 -> 8 + 8; 3 -> 2 + 1)
        threads = [len(part) for part in np.array_split(np.arange(num_threads), len(self.shares))]
        batched = getattr(env_class(env_id), "batched_env_class", None)
        takes_threads = batched is not None and "num_threads" in inspect.signature(batched).parameters
        self.venvs: list[BatchedTaskEnv] = []
        try:
            for (a, b), n in zip(self.shares, threads):
                kwargs = {**env_kwargs, "num_threads": n} if takes_threads else env_kwargs
                self.venvs.append(make_vector_env(env_id, b - a, backend="auto", **kwargs))
        except BaseException:
            self.close()
            raise
        self.single_observation_space = self.venvs[0].single_observation_space
        self.single_action_space = self.venvs[0].single_action_space
        self.supervised_loss = self.venvs[0].supervised_loss

    def run_share_loops(self, loops: Sequence) -> list:
        """Drive one step loop per share (generators as :func:`run_loop` takes), share 0 on the calling
        thread and each other share on a thread of its own; returns each loop's return value, in share
        order. The first error (or Ctrl-C) stops every loop at its next call, then is raised."""
        if len(loops) != len(self.venvs):
            raise ValueError(f"run_share_loops needs one loop per share ({len(self.venvs)}), got {len(loops)}")
        results: list = [None] * len(loops)
        errors: list = []
        stop = threading.Event()

        def drive(w: int) -> None:
            try:
                results[w] = run_loop(self.venvs[w], loops[w], stop)
            except BaseException as err:
                errors.append(err)
                stop.set()

        threads = [threading.Thread(target=drive, args=(w,), name=f"metarl-share-{w}", daemon=True)
                   for w in range(1, len(loops))]
        for thread in threads:
            thread.start()
        drive(0)  # Ctrl-C reaches the main thread: caught there as any error, it stops the others
        for thread in threads:
            while thread.is_alive():
                try:
                    thread.join()
                except KeyboardInterrupt:  # Ctrl-C while waiting for the others: stop them, then re-raise
                    stop.set()
                    errors.append(KeyboardInterrupt())
        if errors:
            raise errors[0]
        return results

    def _call_all(self, command: str, args: Sequence | None = None) -> list:
        return [getattr(v, command)(*(() if args is None else (args[i],))) for i, v in enumerate(self.venvs)]

    def close(self):
        for venv in self.venvs:
            venv.close()
        self.venvs = []


def run_loop(venv: BatchedTaskEnv, loop, stop: threading.Event | None = None) -> Any:
    """Drive a step loop, a generator that yields the vector env calls it needs (``("reset", None)`` or
    ``("step", actions)``) and is sent each call's result, on ``venv``; returns the loop's return value.
    ``stop``: when set (by another share's loop that failed), the loop is closed and None returned."""
    call = next(loop)
    while True:
        if stop is not None and stop.is_set():
            loop.close()
            return None
        command, arg = call
        result = venv.reset() if command == "reset" else venv.step(arg)
        try:
            call = loop.send(result)
        except StopIteration as stop:
            return stop.value


def stop_workers(conns: Sequence, procs: Sequence, ask_to_close) -> None:
    """End worker processes: ``ask_to_close(conn)`` each (a worker already gone is skipped), then join each
    for up to 10 s, terminate one still running, and close the driver's ends of the pipes."""
    for conn, proc in zip(conns, procs):
        try:
            ask_to_close(conn)
        except (BrokenPipeError, EOFError, OSError):
            pass
        proc.join(timeout=10)
        if proc.is_alive():
            proc.terminate()
        conn.close()


def dead_worker_error(procs: Sequence, what: str) -> ChildProcessError:
    """The error for a worker process found dead (its pipe closed): ``what`` died, with the pids and exit
    codes of the dead among ``procs`` and what those codes suggest."""
    for p in procs:  # a worker whose pipe just closed may not have exited yet
        p.join(timeout=1.0)
    dead = [(p.pid, p.exitcode) for p in procs if not p.is_alive()]
    return ChildProcessError(f"{what} died (pid, exit code: {dead}); {_death_hint([code for _, code in dead])}")


def _death_hint(exit_codes: list) -> str:
    """What the exit codes of dead workers suggest (a negative code -N: killed by signal N)."""
    signals = sorted({signal.Signals(-c).name for c in exit_codes if c is not None and -c in signal.valid_signals()})
    hint = f"killed by {', '.join(signals)}" if signals else "it may have crashed"
    if not signals or "SIGKILL" in signals:  # the kernel's out-of-memory killer sends SIGKILL
        hint += "; if it ran out of memory, collect fewer columns at a time (Meta-World: ~21 MB each)"
    return hint


def _stack_infos(infos: list[dict]) -> dict[str, np.ndarray]:
    """Stack the numeric info entries (e.g. ``target``) into arrays [B, ...]; finished sub-envs get zeros."""
    present = [i for i in infos if i]
    if not present:
        return {}
    out = {}
    for key, value in present[0].items():
        arr = np.asarray(value)
        if arr.dtype.kind not in "biuf":
            continue
        filler = np.zeros_like(arr)
        out[key] = np.stack([np.asarray(i.get(key, filler)) for i in infos])
    return out


def registered_task_env_ids(namespace: str | None = "metarl") -> list[str]:
    """Ids of registered environments in ``namespace`` (all namespaces if None)."""
    return sorted(k for k, s in gym.registry.items() if namespace is None or s.namespace == namespace)


def env_spec(env_id: str) -> gym.envs.registration.EnvSpec:
    """``gymnasium.spec`` with an error that lists what is registered."""
    import metarl.envs  # noqa: F401  (registers metarl/...)

    try:
        return gym.spec(env_id)
    except gym.error.Error as err:
        known = ", ".join(registered_task_env_ids()) or "(none)"
        raise ValueError(
            f"unknown environment id {env_id!r} ({err}); registered task distributions: {known}. "
            f"A third-party environment must be registered first (metarl CLI: --import MODULE)"
        ) from None


def horizon(env_id: str) -> int:
    spec = env_spec(env_id)
    if not spec.max_episode_steps or spec.max_episode_steps < 1:
        raise ValueError(
            f"environment {env_id!r} is registered without max_episode_steps; the horizon H of a task "
            f"is its max_episode_steps, so register it with one"
        )
    return int(spec.max_episode_steps)


def env_class(env_id: str) -> type:
    spec = env_spec(env_id)
    entry = spec.entry_point
    return load_env_creator(entry) if isinstance(entry, str) else entry


def make_task_env(env_id: str, **env_kwargs: Any) -> gym.Env:
    """One unwrapped single environment of ``env_id``, checked to be a task distribution."""
    env_spec(env_id)
    env = gym.make(env_id, disable_env_checker=True, **env_kwargs)
    check_task_distribution(env, env_id)
    return env.unwrapped


def make_vector_env(env_id: str, num_envs: int, backend: str = "auto", num_workers: int = 2,
                    **env_kwargs: Any) -> BatchedTaskEnv:
    """A vector env of ``num_envs`` sub-environments of ``env_id``.

    backend: ``auto`` (native batched implementation when the env class has one, else the loop),
    ``native`` (require it), ``gym`` (always the loop over single Gymnasium envs), or ``subproc``
    (``auto``'s vector env in ``num_workers`` worker processes, :class:`SubprocVectorEnv`).
    """
    if backend not in ("auto", "native", "gym", "subproc", "threads"):
        raise ValueError(f"vector backend must be one of auto, native, gym, subproc, threads; got {backend!r}")
    if backend == "subproc":
        return SubprocVectorEnv(env_id, num_envs, num_workers, **env_kwargs)
    if backend == "threads":
        return ThreadedVectorEnv(env_id, num_envs, **env_kwargs)
    spec = env_spec(env_id)
    cls = env_class(env_id)
    batched = getattr(cls, "batched_env_class", None)
    if backend == "native" and batched is None:
        raise ValueError(f"environment {env_id!r} has no native batched implementation; use backend 'auto' or 'gym'")
    if backend != "gym" and batched is not None:
        kwargs = {**spec.kwargs, **env_kwargs}
        venv = batched(num_envs, **kwargs)
        venv.supervised_loss = getattr(cls, "supervised_loss", None)
        return venv
    return GymLoopVectorEnv(env_id, num_envs, **env_kwargs)
