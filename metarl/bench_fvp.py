"""``metarl bench fvp``: the outer TRPO update's Fisher-vector products (metarl.algos.maml.fisher) against
the bare matrix products they contain, timed in one run (issue 22's yardstick for the meta-update).

One meta-batch of ``config`` is collected and the update linearised as training does; ``rounds``
interleaved rounds time ``cg_iters`` products and the unfused matmuls they need: per product, 4 [query
rows, W] @ [W, W] (the query network's Jacobian and its transpose) and 8 [inner rows, W] @ [W, W] per
inner step (its two Hessian-vector products, 4 each with the cross block), W the widest hidden layer,
on random data. Medians over rounds; ``products_over_matmuls`` < 1 is the target. The same products over
whole batches (``chunk_rows=None``, what fisher.py did before its row chunks) are timed in the same rounds:
``chunked_over_whole`` is what the chunks buy.
"""

from __future__ import annotations

import statistics
import time

import torch


def update_inputs(config: str, overrides=()):
    """One meta-batch of a MAML config, as training collects it for an outer update: the experiment (its
    collector closed), the inner batches, the query batch and the number of tasks."""
    from metarl.experiment import build_experiment, load_config

    exp = build_experiment(load_config(config, list(overrides)))
    inner, query, M = exp.algo.collect_meta_batch(exp.task_rng)
    exp.collector.close()
    return exp, inner, query, M


def bench_fvp(config: str = "experiments/navigation2d_maml.yaml", overrides=(), rounds: int = 3) -> dict:
    from metarl.algos.maml.fisher import OuterLinearization, mlp_spec

    exp, inner, query, M = update_inputs(config, overrides)
    algo, cfg = exp.algo, exp.cfg.maml
    spec = mlp_spec(algo.policy)
    if spec is None or cfg.estimator != "reinforce":
        raise ValueError(f"bench fvp needs an MLP Gaussian or categorical policy and the reinforce estimator ({config})")
    lin = OuterLinearization(algo, spec, inner, query, M, products=cfg.cg_iters)
    lin_whole = OuterLinearization(algo, spec, inner, query, M, products=cfg.cg_iters, chunk_rows=None)
    width = max(algo.policy.params()[w].shape[0] for w in spec.weights[:-1])
    rows_q = query.batch.valid.numel()
    rows_i = [d.batch.valid.numel() for d in inner]
    gen = torch.Generator().manual_seed(0)
    a_q, a_i = torch.randn(rows_q, width, generator=gen), [torch.randn(n, width, generator=gen) for n in rows_i]
    w = torch.randn(width, width, generator=gen)

    def matmuls():
        for _ in range(cfg.cg_iters):
            for a, k in [(a_q, 4)] + [(a, 8) for a in a_i]:
                for _ in range(k):
                    torch.mm(a, w)

    v = torch.randn(lin.grad.numel(), generator=gen)

    def products(lin=lin):
        for _ in range(cfg.cg_iters):
            lin.fvp(v)

    def products_whole():
        products(lin_whole)

    times: dict[str, list[float]] = {"matmuls": [], "products": [], "products_whole": []}
    matmuls(), products(), products_whole()  # warm-up
    for _ in range(rounds):
        for name, f in (("matmuls", matmuls), ("products", products), ("products_whole", products_whole)):
            t = time.perf_counter()
            f()
            times[name].append(time.perf_counter() - t)
    med = {k: statistics.median(x) for k, x in times.items()}
    return {"bench": "fvp", "config": config, "overrides": list(overrides), "products": cfg.cg_iters,
            "query_rows": rows_q, "inner_rows": rows_i, "width": width, "cross_block": lin.cross,
            "fvp_s": med["products"], "unfused_matmuls_s": med["matmuls"],
            "products_over_matmuls": med["products"] / med["matmuls"], "chunk_rows": lin.chunk_rows,
            "fvp_whole_batches_s": med["products_whole"], "chunked_over_whole": med["products"] / med["products_whole"],
            "rounds": rounds}
