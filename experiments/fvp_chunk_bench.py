"""Would row chunks speed up the outer update's Fisher-vector products? (issue 22; see BENCHMARKS.md: a first
version in fisher.py, chunks across tasks without the cross block, did not carry the gain over; fisher.py now
chunks a task's rows at a time and keeps the cross block, "The meta-update in row chunks")

One Gauss-Newton-like chain at the paper setting's size (160k rows x 100 wide, one core): a two-layer
tangent pass and its backward pass to a [100, 100] outer product, four [N, 100] @ [100, 100] products plus
the activation masks, computed over all rows at once (what metarl/algos/maml/fisher.py does) and in row
chunks that stay in cache between the products; against four plain matmuls of the same shape. Medians of
5 calls, two interleaved rounds. Run: ``.venv/bin/python experiments/fvp_chunk_bench.py``.
"""

import statistics
import time

import torch

torch.set_num_threads(1)
N, W = 160_000, 100
g = torch.Generator().manual_seed(0)
x = torch.randn(N, W, generator=g)
mask = (torch.rand(N, W, generator=g) > 0.5).float()
w, tangent, w2 = (0.1 * torch.randn(W, W, generator=g) for _ in range(3))


def matmuls():
    for _ in range(4):
        torch.mm(x, w)


def whole():
    dh = (x @ tangent.T) * mask
    back = ((dh @ w2.T) @ w2) * mask
    return back.T @ x


def chunked(rows):
    out = torch.zeros(W, W)
    for i in range(0, N, rows):
        xs, ms = x[i : i + rows], mask[i : i + rows]
        dh = (xs @ tangent.T).mul_(ms)
        back = ((dh @ w2.T) @ w2).mul_(ms)
        out.addmm_(back.T, xs)
    return out


def median_ms(f, n=5):
    f()
    times = []
    for _ in range(n):
        t = time.perf_counter()
        f()
        times.append(time.perf_counter() - t)
    return 1000 * statistics.median(times)


if __name__ == "__main__":
    ref = whole()
    err = (ref - chunked(4096)).abs().max() / ref.abs().max()
    print(f"chunked vs whole: max relative difference {err:.1e} (summation order)")
    for _ in range(2):
        base = median_ms(matmuls)
        print(f"4 matmuls [{N}, {W}] @ [{W}, {W}]: {base:.0f} ms; whole chain {median_ms(whole) / base:.2f}x; "
              + ", ".join(f"chunks of {c}: {median_ms(lambda: chunked(c)) / base:.2f}x" for c in (1024, 2048, 4096, 16384)))
