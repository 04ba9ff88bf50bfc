"""The collector in worker processes of this machine (``collector.backend: process_pool``).

Why: on many cores the in-process collector waits on its own Python. MuJoCo steps on every core, but the
per-step work around it (the policy call, action sampling, rewards, observations) runs on one core under
the GIL, and with 16 stepping threads it takes as long as the physics: the in-process collector reaches
0.54-0.57 of the open-loop ``mujoco.rollout`` limit there (BENCHMARKS.md), against 0.89-0.95 on 2 cores.
Here ``num_workers`` forked processes each run the whole step loop, policy included, on their share of
the tasks with ``num_threads`` stepping threads of their own (default: the cores divided among the
workers; on two threads a worker steps two shares, the 2-core recipe), so the per-step Python runs on
every core at once. One process per 1-2 cores is the intended use.

Each collection is split into shares of whole tasks as :mod:`metarl.sampling.task_shares` describes: the
driver draws all randomness and owns the sub-environments' RNG states, so checkpoints resume exactly and
the batch does not depend on the number of workers but through rounding. A worker evaluates the policy at
its share's own shape (the whole collection's shape, as the Ray backend does for bit-identity, would cost
every worker the whole batch's arithmetic each step), so batches equal the local backend's to rounding, not
to the bit; the same config on the same machine gives the same batches.

Per collection the policy (a CPU copy) and each share's inputs go to the workers through pipes, and each
share's batch comes back: a few MB for a paper-setting MAML collection, against seconds of stepping. A
worker that dies (killed, out of memory) is one error line and closes the pool; the collection is lost,
and a resumed run repeats it from the last checkpoint. Workers ignore Ctrl-C (the driver decides what it means) and
end when the driver closes the collector or dies.
"""

from __future__ import annotations

import multiprocessing
import os
import pickle
import signal
import warnings
from typing import Sequence

from metarl.sampling.task_shares import CollectorWorker, TaskShareCollector
from metarl.sampling.vector import dead_worker_error, env_spec, stop_workers


def _worker_main(conn, init_args: tuple, parent_ends: Sequence = ()) -> None:
    """A process of the pool: builds its CollectorWorker, then collects the shares it is sent, one
    pickled (share keyword arguments) message each, answering ("ok", (batch, env states)) or ("error", exc)."""
    for end in parent_ends:  # the parent's ends this forked child inherited: closed, so a dead parent reads as EOF
        end.close()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    import torch

    # One intra-op thread: the step loop's policy calls are small, and the cores belong to MuJoCo's
    # stepping threads and to the other workers (the collector's _single_threaded_torch, per process).
    torch.set_num_threads(1)
    try:
        worker = CollectorWorker(*init_args)
        conn.send_bytes(pickle.dumps(("ok", worker.pid())))
    except Exception as err:  # reported by the driver as its own error
        conn.send_bytes(_pickled_error(err))
        return
    while True:
        try:
            message = conn.recv_bytes()
        except (EOFError, OSError):  # the driver closed its end or died
            return
        command, share = pickle.loads(message)
        if command == "close":
            worker.collector.close()
            return
        try:
            answer = pickle.dumps(("ok", worker.collect_columns(**share)), protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as err:
            answer = _pickled_error(err)
        try:
            conn.send_bytes(answer)
        except (BrokenPipeError, OSError):
            return


def _pickled_error(err: Exception) -> bytes:
    """("error", err) pickled; an exception that cannot be pickled goes as a RuntimeError with its text."""
    try:
        return pickle.dumps(("error", err))
    except Exception:
        return pickle.dumps(("error", RuntimeError(f"{type(err).__name__}: {err}")))


class ProcessPoolCollector(TaskShareCollector):
    """:class:`~metarl.sampling.collector.Collector` whose collections run in ``num_workers`` forked
    worker processes of this machine (see the module doc).

    num_threads: MuJoCo stepping threads of each worker; None = this machine's cores divided among the
    workers (at least one each).
    """

    policy_at_whole_shape = False

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
    ):
        super().__init__(env_id, seed=seed, backend="process_pool", num_workers=num_workers, env_kwargs=env_kwargs,
                         horizon=horizon, oracle=oracle, num_threads=num_threads, rescale_actions=rescale_actions)
        cores = os.cpu_count() or 1
        self.worker_threads = int(num_threads) if num_threads is not None else max(1, cores // self.num_workers)
        init_args = (env_id, env_spec(env_id), self.env_kwargs, self.horizon, oracle, self.worker_threads, "auto",
                     rescale_actions)
        # fork, as the subproc backend and Gymnasium's AsyncVectorEnv do: spawn and forkserver re-import the
        # caller's __main__, which breaks any script without an `if __name__ == "__main__":` guard. A
        # worker uses torch on the CPU only (a CUDA context in the driver is never touched in a child).
        methods = multiprocessing.get_all_start_methods()
        ctx = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
        self._conns: list = []
        self._procs: list = []
        with warnings.catch_warnings():
            # Python >= 3.12 warns that fork() in a multi-threaded process may deadlock (a lock held by
            # another thread at the fork). The child runs only this module's loop and the collector's
            # own code, which takes no lock another thread of the driver holds while it forks.
            warnings.filterwarnings("ignore", message=".*use of fork\\(\\) may lead to deadlocks.*",
                                    category=DeprecationWarning)
            for _ in range(self.num_workers):
                parent, child = ctx.Pipe()
                inherited = [*self._conns, parent] if ctx.get_start_method() == "fork" else []
                proc = ctx.Process(target=_worker_main, args=(child, init_args, inherited), daemon=True,
                                   name=f"metarl-collector-{len(self._procs)}")
                proc.start()
                child.close()
                self._conns.append(parent)
                self._procs.append(proc)
        try:
            for conn in self._conns:  # every worker built its collector (or one clear error)
                self._answer(conn)
        except BaseException:
            self.close()
            raise

    def _answer(self, conn):
        """A worker's answer on ``conn``; its error re-raised here; a dead worker as ChildProcessError."""
        try:
            status, value = pickle.loads(conn.recv_bytes())
        except (EOFError, OSError):
            raise self._worker_died() from None
        if status == "error":
            raise value
        return value

    def _worker_died(self) -> ChildProcessError:
        error = dead_worker_error(self._procs, f"a process_pool collector worker of {self.env_id}")
        self.close()
        return error

    def _run_shares(self, policy, shares: list[dict]) -> list:
        if not self._conns:
            raise RuntimeError("this process_pool collector is closed")
        policy_bytes = pickle.dumps(policy, protocol=pickle.HIGHEST_PROTOCOL)
        sent = []
        try:
            for conn, share in zip(self._conns, shares):
                # the policy pickled once; each message carries it with the share (unpickled in the worker)
                conn.send_bytes(pickle.dumps(("collect", _Share(policy_bytes, share)), protocol=pickle.HIGHEST_PROTOCOL))
                sent.append(conn)
        except (BrokenPipeError, OSError):
            raise self._worker_died() from None
        results, error = [], None
        for conn in sent:  # every answer before raising: the pipes stay in step
            try:
                results.append(self._answer(conn))
            except ChildProcessError:
                raise
            except Exception as err:
                error = error or err
        if error is not None:
            raise error
        return results

    def worker_pids(self) -> list[int]:
        """Process ids of the workers (diagnostics, tests)."""
        return [p.pid for p in self._procs]

    def close(self) -> None:
        stop_workers(self._conns, self._procs, lambda conn: conn.send_bytes(pickle.dumps(("close", None))))
        self._conns, self._procs = [], []
        super().close()

    def __del__(self):
        if getattr(self, "_procs", None):
            try:
                self.close()
            except Exception:  # interpreter shutdown: the daemonic workers are ended by multiprocessing
                pass


class _Share(dict):
    """A share's keyword arguments with the policy as pickled bytes, unpickled in the worker: the driver
    pickles the policy once per collection, not once per worker."""

    def __init__(self, policy_bytes: bytes, share: dict):
        super().__init__(share)
        self.policy_bytes = policy_bytes

    def __reduce__(self):
        return _unpickle_share, (self.policy_bytes, dict(self))


def _unpickle_share(policy_bytes: bytes, share: dict) -> dict:
    return {**share, "policy": pickle.loads(policy_bytes)}
