"""How many stepping threads each share of the ``threads`` backend should get, on machines of many cores.

    python experiments/share_threads_bench.py --threads 4 8 16 --torch-threads 1

For each thread count T, interleaved rounds (best round reported) of the MAML-paper collection
(HalfCheetahVel, 40 tasks x 20 episodes, H = 200, 2x100 ReLU policy), each arm as env-steps/s:
- ``whole``: one ``mujoco.rollout`` per step over the whole batch on a pool of T threads (backend native);
- ``whole_one_chunk``: the same with one chunk of rows per thread (``chunk_size = B / T``), not MuJoCo's
  default of ten chunks per thread: what the pool's hand-offs cost (``--one-chunk``);
- ``split``: two shares, each on its own Python thread with T / 2 stepping threads (backend threads);
- ``all``: two shares, each with a pool of T stepping threads (2T threads on T cores: a share's physics may
  take every core while the other share runs its Python, at the price of oversubscription when both step);
- ``split_share_shape`` and ``all_share_shape``: the same, each share evaluating the policy at its own
  shape (B / 2 rows) instead of the whole batch's: half the policy arithmetic per share, but rows may round
  differently from the whole batch's (reported as ``*_bit_equal``, not required);
- ``open_loop``: the physics' limit, one open-loop rollout of the whole batch and horizon on T threads.
The other arms' batches are checked equal to the whole batch's, bit for bit (MuJoCo steps each row on one
thread, whatever the pool; the shares evaluate the policy at the whole shape). Prints one JSON line per T.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import time

import mujoco
import mujoco.rollout
import numpy as np
import torch

import metarl  # noqa: F401  (registers metarl/...)
from metarl.bench import _machine, _open_loop_limit
from metarl.common.policies import make_policy
from metarl.sampling import collector as collector_module
from metarl.sampling.collector import Collector
from metarl.sampling.vector import ThreadedVectorEnv

ENV = "metarl/HalfCheetahVel-v0"


def give_every_share(venv: ThreadedVectorEnv, threads: int) -> None:
    """Replace each share's pool by one of ``threads`` threads."""
    for share in venv.venvs:
        share._rollout.close()
        share._rollout = mujoco.rollout.Rollout(nthread=threads if threads > 1 else 0)
        share._datas = [mujoco.MjData(share.model) for _ in range(threads)]
        share.num_threads = threads


@contextlib.contextmanager
def share_shaped_policy():
    """While active, every share's step loop evaluates the policy on its own rows only (no whole shape)."""
    original = collector_module._PolicyRows
    collector_module._PolicyRows = lambda start, count, total: original(0, count, count)
    try:
        yield
    finally:
        collector_module._PolicyRows = original


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[4, 8, os.cpu_count() or 1])
    parser.add_argument("--torch-threads", type=int, default=1,
                        help="torch's threads (the collector's policy calls; 1 is training's default)")
    parser.add_argument("--tasks", type=int, default=40)
    parser.add_argument("--episodes", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--one-chunk", action="store_true", help="add the whole_one_chunk arm")
    args = parser.parse_args()
    torch.set_num_threads(args.torch_threads)
    B = args.tasks * args.episodes
    for T in args.threads:
        names = ["whole", *(["whole_one_chunk"] if args.one_chunk else []), "split", "all",
                 "split_share_shape", "all_share_shape"]
        collectors = {name: Collector(ENV, seed=0, backend="native" if name.startswith("whole") else "threads",
                                      num_threads=T) for name in names}
        shaped = {name: (share_shaped_policy if name.endswith("share_shape") else contextlib.nullcontext)
                  for name in names}
        tasks = collectors["whole"].sample_tasks(args.tasks, np.random.default_rng(0))
        policy = make_policy(collectors["whole"].observation_space, collectors["whole"].action_space, False,
                             (100, 100))
        if args.one_chunk:
            collectors["whole_one_chunk"]._venv(B).chunk_size = max(1, B // T)
        give_every_share(collectors["all"]._venv(B), T)
        give_every_share(collectors["all_share_shape"]._venv(B), T)
        first = {}
        for name, c in collectors.items():  # warm-up
            with shaped[name]():
                first[name] = c.collect(policy, tasks, args.episodes)
        bit_equal = {}
        for name, batch in first.items():
            equal = all(torch.equal(getattr(batch, f), getattr(first["whole"], f)) for f in ("obs", "actions", "rewards"))
            if not equal and not name.endswith("share_shape"):
                raise SystemExit(f"T={T}: arm {name}'s batch differs from the whole batch's")
            bit_equal[f"{name}_bit_equal"] = equal
        rates: dict[str, list[float]] = {name: [] for name in (*collectors, "open_loop")}
        for _ in range(args.rounds):
            for name, c in collectors.items():
                with shaped[name]():
                    start = time.perf_counter()
                    batch = c.collect(policy, tasks, args.episodes)
                rates[name].append(batch.num_steps / (time.perf_counter() - start))
            rates["open_loop"].append(_open_loop_limit(collectors["whole"]._venv(B), collectors["whole"].horizon, 1))
        best = {name: max(r) for name, r in rates.items()}
        limit = best["open_loop"]
        out = {"threads": T, "torch_threads": args.torch_threads, "batch": B, "rounds": args.rounds,
               **{f"{name}_steps_per_s": round(v) for name, v in best.items()},
               **{f"{name}_ratio": round(best[name] / limit, 3) for name in collectors},
               **{k: v for k, v in bit_equal.items() if "share_shape" in k}, **_machine()}
        print(json.dumps(out), flush=True)
        for c in collectors.values():
            c.close()


if __name__ == "__main__":
    main()
