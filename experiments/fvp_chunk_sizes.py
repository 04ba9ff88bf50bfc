"""Milliseconds per Fisher-vector product of MAML-TRPO's outer update for several row-chunk sizes
(metarl.algos.maml.fisher.OuterLinearization's ``chunk_rows``; None = whole batches), on one meta-batch of a
config, in interleaved rounds (medians). The default chunk size per thread (fisher.FVP_CHUNK_ROWS_PER_THREAD)
was chosen from this. Also prints each size's relative difference to the whole-batch product (summation order
only).

Run: ``NT=2 .venv/bin/python experiments/fvp_chunk_sizes.py experiments/halfcheetah_vel_maml.yaml``
(NT: torch threads, default 1; further arguments are config overrides).
"""

import os
import statistics
import sys
import time

import torch

from metarl.algos.maml.fisher import OuterLinearization, mlp_spec
from metarl.bench_fvp import update_inputs

SIZES = [None, 2048, 4096, 8192, 16384, 32768]

if __name__ == "__main__":
    torch.set_num_threads(int(os.environ.get("NT", "1")))
    config = sys.argv[1] if len(sys.argv) > 1 else "experiments/halfcheetah_vel_maml.yaml"
    exp, inner, query, M = update_inputs(config, sys.argv[2:])
    algo = exp.algo
    spec = mlp_spec(algo.policy)
    lins = {c: OuterLinearization(algo, spec, inner, query, M, products=10, chunk_rows=c) for c in SIZES}
    v = torch.randn(lins[None].grad.numel(), generator=torch.Generator().manual_seed(0))
    ref = lins[None].fvp(v)
    for c in SIZES[1:]:
        print(f"chunk_rows={c}: relative difference to whole batches {float((lins[c].fvp(v) - ref).norm() / ref.norm()):.1e}")
    times = {c: [] for c in SIZES}
    for _ in range(3):
        for c in SIZES:
            t = time.perf_counter()
            for _ in range(3):
                lins[c].fvp(v)
            times[c].append((time.perf_counter() - t) / 3)
    print(f"{config}, {torch.get_num_threads()} thread(s), {M} tasks x {query.batch.valid.numel() // M} query rows:",
          ", ".join(f"{c}: {1000 * statistics.median(t):.0f} ms" for c, t in times.items()))
