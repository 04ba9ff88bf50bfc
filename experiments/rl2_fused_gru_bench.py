"""RL² update forward+backward on one HalfCheetahVel batch (10 trials): the fused GRU (valid=None) against the
stepped cell (valid given), best of 3 each, one thread. Run: .venv/bin/python experiments/rl2_fused_gru_bench.py"""
import time, numpy as np, torch
from metarl.experiment import build_experiment, load_config
torch.set_num_threads(1)
exp = build_experiment(load_config("experiments/halfcheetah_vel_rl2.yaml", ["rl2.trials_per_iteration=10", "collector.num_threads=1"]))
algo = exp.algo
b = algo.collect(algo.collector.sample_tasks(10, np.random.default_rng(0)))
assert bool(b.valid.all())
cols = torch.arange(b.num_columns)
def run(seq_valid):
    t0 = time.perf_counter()
    dist, v = algo._evaluate(b, cols, seq_valid)
    (dist.log_prob(b.actions).sum() + v.sum()).backward()
    return time.perf_counter() - t0
times = {"stepped": [], "fused": []}
for _ in range(3):
    times["stepped"].append(run(b.valid)); times["fused"].append(run(None))
s, f = min(times["stepped"]), min(times["fused"])
print(f"T={b.valid.shape[0]} B={b.num_columns}: stepped {s:.3f} s, fused {f:.3f} s, ratio {s/f:.2f}")
exp.collector.close()
