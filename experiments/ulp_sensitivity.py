"""Where a 1-ulp difference grows in one MAML-TRPO iteration (README, reproducibility).

Runs one navigation iteration (the config of tests/test_ray_collector.py's MAML test) as is, then with one
weight moved by one ulp, and prints how far each stage differs: the collected batches (and whether any
episode ended at another step), the gradient and Fisher matrix, the conjugate-gradient step, the line
search and the final parameters. Usage: .venv/bin/python experiments/ulp_sensitivity.py  (a few seconds)
"""

from __future__ import annotations

import math

import torch

import metarl.trpo as trpo
from metarl.experiment import load_config
from metarl.experiment import build_experiment

OVERRIDES = ["env.horizon=20", "maml.meta_batch_size=4", "maml.episodes_per_task=4", "policy.hidden_sizes=[16]"]


def one_iteration(perturb: tuple[str, int] | None = None) -> dict:
    exp = build_experiment(load_config("experiments/navigation2d_maml.yaml", OVERRIDES))
    seen: dict = {"batches": []}
    if perturb is not None:
        name, index = perturb
        with torch.no_grad():
            flat = dict(exp.policy.named_parameters())[name].view(-1)
            flat[index] = torch.nextafter(flat[index], torch.tensor(math.inf))
    collect = exp.collector.collect

    def recording_collect(*args, **kwargs):
        seen["batches"].append(collect(*args, **kwargs))
        return seen["batches"][-1]

    solve = trpo._conjugate_gradient

    def recording_solve(fvp, b, iters, residual_tol):
        x, r = solve(fvp, b, iters, residual_tol)
        fisher = torch.stack([fvp(e) for e in torch.eye(b.numel())]).double()  # damped, column by column
        seen.update(g=-b.double(), step=x.double(), fisher=fisher)
        return x, r

    exp.collector.collect, trpo._conjugate_gradient = recording_collect, recording_solve
    try:
        seen["stats"] = exp.algo.train_iteration(exp.task_rng)
    finally:
        trpo._conjugate_gradient = solve
        exp.collector.close()
    seen["params"] = {k: v.detach().clone() for k, v in exp.policy.named_parameters()}
    return seen


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def main() -> None:
    torch.set_num_threads(1)
    base = one_iteration()
    eig = torch.linalg.eigvalsh(0.5 * (base["fisher"] + base["fisher"].T))
    exact = torch.linalg.solve(base["fisher"], -base["g"])
    print(f"damped Fisher: eigenvalues {float(eig.min()):.3g} .. {float(eig.max()):.3g}, condition {float(eig.max() / eig.min()):.3g}; "
          f"10 CG iterations vs the exact solve: relative difference {rel(base['step'], exact):.3g}")
    for perturb in [("mean_net.0.weight", 0), ("mean_net.2.bias", 1)]:
        other = one_iteration(perturb)
        print(f"\n+1 ulp in {perturb[0]}[{perturb[1]}]:")
        for i, (a, b) in enumerate(zip(base["batches"], other["batches"])):
            print(f"  batch {i}: obs max |diff| {float((a.obs - b.obs).abs().max()):.2e}, episodes ending at another step: "
                  f"{int((a.dones != b.dones).any(0).sum())} of {a.num_columns}")
        print(f"  gradient {rel(other['g'], base['g']):.2e}, Fisher {rel(other['fisher'], base['fisher']):.2e}, "
              f"CG step {rel(other['step'], base['step']):.2e} (relative differences)")
        print(f"  line-search backtracks {base['stats']['line_search/backtracks']:g} vs {other['stats']['line_search/backtracks']:g}")
        for name, value in base["params"].items():
            d = other["params"][name] - value
            print(f"  {name}: max |diff| {float(d.abs().max()):.2e} (of max |value| {float(value.abs().max()):.2e})")


if __name__ == "__main__":
    main()
