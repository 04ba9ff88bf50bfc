"""``metarl bench sinusoid``: metarl's sinusoid meta-iteration, and a plain ``torch.func`` reference of
the same algorithm timed in the same run (``--reference``).

The reference is MAML as the paper states it, written directly: a 2x40 ReLU regressor as a dict of
tensors, the inner step as ``vmap`` over ``grad`` of the support loss (one step, step size α), the
meta-loss the mean query MSE of the adapted parameters, and one Adam step on θ through the
second-order graph. Data: M tasks (A ~ U[0.1, 5], φ ~ U[0, π]), K support and Q query inputs
x ~ U[-5, 5] per task, drawn with torch. It is a yardstick, not a second implementation to train
with: ``tests/test_bench_sinusoid.py`` checks it computes metarl's meta-gradient on the same data.
"""

from __future__ import annotations

import math
import time

import torch
from torch.func import functional_call, grad, vmap


def reference_meta_loss(params: dict, xs, ys, xq, yq, inner_lr: float, forward) -> torch.Tensor:
    """Mean over tasks of the query MSE after one inner step per task (xs/ys [M, K, 1], xq/yq [M, Q, 1]).

    ``forward(params, x)`` evaluates the regressor; params are θ, shared by the tasks."""

    def loss(p, x, y):
        return ((forward(p, x) - y) ** 2).mean()

    def adapted_query_loss(p, x_s, y_s, x_q, y_q):
        g = grad(loss)(p, x_s, y_s)
        return loss({k: p[k] - inner_lr * g[k] for k in p}, x_q, y_q)

    return vmap(adapted_query_loss, in_dims=(None, 0, 0, 0, 0))(params, xs, ys, xq, yq).mean()


def sinusoid_data(M: int, K: int, Q: int, generator: torch.Generator):
    """(xs, ys, xq, yq) for M random sinusoid tasks, K support and Q query points each."""
    amp = 0.1 + 4.9 * torch.rand(M, 1, 1, generator=generator)
    phase = math.pi * torch.rand(M, 1, 1, generator=generator)
    xs = -5 + 10 * torch.rand(M, K, 1, generator=generator)
    xq = -5 + 10 * torch.rand(M, Q, 1, generator=generator)
    return xs, amp * torch.sin(xs - phase), xq, amp * torch.sin(xq - phase)


class Reference:
    """One reference meta-iteration per call: fresh data, meta-loss, backward, Adam step."""

    def __init__(self, net: torch.nn.Module, M: int, K: int, Q: int, inner_lr: float, outer_lr: float, seed: int = 0):
        self.net, self.M, self.K, self.Q, self.inner_lr = net, M, K, Q, inner_lr
        self.params = {k: v.detach().clone().requires_grad_(True) for k, v in net.named_parameters()}
        self.optimizer = torch.optim.Adam(self.params.values(), lr=outer_lr)
        self.generator = torch.Generator().manual_seed(seed)

    def forward(self, p, x):
        return functional_call(self.net, p, (x,))

    def iteration(self) -> float:
        xs, ys, xq, yq = sinusoid_data(self.M, self.K, self.Q, self.generator)
        self.optimizer.zero_grad()
        loss = reference_meta_loss(self.params, xs, ys, xq, yq, self.inner_lr, self.forward)
        loss.backward()
        self.optimizer.step()
        return float(loss.detach())


def bench_sinusoid(iterations: int = 300, reference: bool = False, rounds: int = 5,
                   config: str = "experiments/sinusoid_maml.yaml") -> dict:
    """Milliseconds per meta-iteration of metarl's sinusoid setting (and of the reference, interleaved).

    ``rounds`` rounds of ``iterations // rounds`` iterations each, metarl then the reference in every
    round; the medians over rounds are reported, and their ratio."""
    import statistics

    from metarl.experiment import build_experiment, load_config

    exp = build_experiment(load_config(config, []))
    algo, cfg = exp.algo, exp.cfg.maml
    ref = None
    if reference:
        ref = Reference(exp.policy, cfg.meta_batch_size,
                        cfg.episodes_per_task, cfg.query_episodes_per_task or cfg.episodes_per_task,
                        cfg.inner_lr, cfg.outer_lr)
    per_round = max(1, iterations // rounds)
    for _ in range(20):  # warm-up
        algo.train_iteration(exp.task_rng)
        if ref is not None:
            ref.iteration()
    ours, theirs, phases = [], [], {}
    for _ in range(rounds):
        t = time.perf_counter()
        for _ in range(per_round):
            stats = algo.train_iteration(exp.task_rng)
            for k, v in stats.items():
                if k.startswith("time/"):
                    phases[k] = phases.get(k, 0.0) + v
        ours.append((time.perf_counter() - t) / per_round)
        if ref is not None:
            t = time.perf_counter()
            for _ in range(per_round):
                ref.iteration()
            theirs.append((time.perf_counter() - t) / per_round)
    n = rounds * per_round
    out = {"bench": "sinusoid", "ms_per_iteration": 1000 * statistics.median(ours), "rounds": rounds,
           "iterations_per_round": per_round}
    out.update({k.replace("time/", "").replace("_s", "") + "_ms": 1000 * v / n for k, v in phases.items()})
    if ref is not None:
        out["reference_ms_per_iteration"] = 1000 * statistics.median(theirs)
        out["ratio"] = out["ms_per_iteration"] / out["reference_ms_per_iteration"]
    exp.collector.close()
    return out
