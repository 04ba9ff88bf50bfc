"""Two 128-unit GRUs' forward and backward over 5,000 steps (batch 5, RL²'s ML1 update shapes): one after the
other against the second on another Python thread, with ``--threads`` torch intra-op threads.

    python experiments/rl2_gru_threads_bench.py --threads 1      # and --threads 2

Prints one line per round: seconds for the two one after the other (``seq``) and side by side (``par``).
"""

from __future__ import annotations

import argparse
import time
from concurrent.futures import ThreadPoolExecutor

import torch


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    steps, batch, inputs, hidden = 5000, 5, 46, 128
    cells = [torch.nn.GRUCell(inputs, hidden) for _ in range(2)]
    x = torch.randn(steps, batch, inputs)

    def forward_backward(cell):
        weights = [cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh]
        out, _ = torch.gru(x, torch.zeros(1, batch, hidden), weights, True, 1, 0.0, True, False, False)
        out.pow(2).mean().backward()

    pool = ThreadPoolExecutor(1)

    def seq():
        forward_backward(cells[0])
        forward_backward(cells[1])

    def par():
        other = pool.submit(forward_backward, cells[1])
        forward_backward(cells[0])
        other.result()

    seq(), par()  # warm-up
    for _ in range(args.rounds):
        line = []
        for name, f in (("seq", seq), ("par", par)):
            t = time.perf_counter()
            f()
            line.append(f"{name} {time.perf_counter() - t:.3f} s")
        print("  ".join(line))


if __name__ == "__main__":
    main()
