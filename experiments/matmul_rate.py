"""The machine's float32 matrix-product rate for the shapes of MAML-TRPO's outer update (BENCHMARKS.md uses it
for the floor of an exact update): a cache-resident batched product [2, 4000, W] @ [2, W, W] (one row chunk
of two tasks) and a whole-batch [160k, W] @ [W, W] one, on the threads given.

Run: ``.venv/bin/python experiments/matmul_rate.py --threads 2 --width 100``
"""

import argparse
import time

import torch


def rate(a: torch.Tensor, b: torch.Tensor, seconds: float = 1.0) -> float:
    """GFLOP/s of torch.matmul(a, b), best of 3 timed loops of about ``seconds`` each."""
    flop = 2 * a.shape[-2] * a.shape[-1] * b.shape[-1] * (a.shape[0] if a.dim() == 3 else 1)
    for _ in range(3):
        torch.matmul(a, b)
    t = time.perf_counter()
    torch.matmul(a, b)
    reps = max(1, int(seconds / max(time.perf_counter() - t, 1e-6)))
    best = 0.0
    for _ in range(3):
        t = time.perf_counter()
        for _ in range(reps):
            torch.matmul(a, b)
        best = max(best, reps * flop / (time.perf_counter() - t) / 1e9)
    return best


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--width", type=int, default=100)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    W = args.width
    g = torch.Generator().manual_seed(0)
    chunk = rate(torch.randn(2, 4000, W, generator=g), torch.randn(2, W, W, generator=g))
    whole = rate(torch.randn(160_000, W, generator=g), torch.randn(W, W, generator=g))
    print(f"{args.threads} thread(s), width {W}: chunk [2, 4000, {W}] @ [2, {W}, {W}] {chunk:.0f} GFLOP/s; "
          f"whole batch [160000, {W}] @ [{W}, {W}] {whole:.0f} GFLOP/s")
