"""E-MAML's two outer-gradient parts on the first meta-batch of experiments/navigation2d_emaml.yaml (seed 0):
the plain MAML surrogate's gradient, the exploration term's (weight 1), their norms and cosine.

    .venv/bin/python results/promp_navigation/emaml_gradients.py
"""

import torch

from metarl.common.trpo import flatten
from metarl.experiment import build_experiment, load_config

exp = build_experiment(load_config("experiments/navigation2d_emaml.yaml"))
algo = exp.algo
inner, query, M = algo.collect_meta_batch(exp.task_rng)
params = algo.meta_parameters()
algo.cfg.estimator = "reinforce"  # the plain surrogate alone
plain, _, _ = algo._surrogate_and_kl(inner, query, M, None)
g_plain = flatten(torch.autograd.grad(plain, params))
g_explore = flatten(torch.autograd.grad(algo._exploration_loss(inner, query, M), params))
cos = float(g_plain @ g_explore / (g_plain.norm() * g_explore.norm()))
print(f"|plain gradient| {g_plain.norm():.4f}, |exploration gradient| {g_explore.norm():.4f}, cosine {cos:.4f}")
