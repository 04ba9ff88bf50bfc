# Upper bounds of per-step trims on one 50-column share on one thread (a 16-core worker's share, emulated):
# collect time with the per-step log-probability skipped, and with the module calls bypassed.
import time
import numpy as np, torch
import torch.nn.functional as F
torch.set_num_threads(1)
import metarl.sampling.collector as C
from metarl.common import distributions as D
from metarl.common.policies import make_policy
c = C.Collector("metarl/HalfCheetahVel-v0", seed=0, backend="native", num_threads=1)
tasks = c.sample_tasks(5, np.random.default_rng(0))
p = make_policy(c.observation_space, c.action_space, c.supervised, (100, 100))
orig_lp, orig_fwd = D.DiagGaussian.log_prob, C.policy_forward
def no_lp(self, a): return torch.zeros(a.shape[:-1])
def fast(policy, x, params, nt):
    h = x
    for i, m in enumerate(policy.mean_net):
        h = F.linear(h, m.weight, m.bias) if i % 2 == 0 else torch.relu(h)
    return h, policy.log_std
arms = {"orig": (orig_lp, orig_fwd), "no_logprob": (no_lp, orig_fwd), "direct_forward": (orig_lp, fast),
        "both": (no_lp, fast)}
c.collect(p, tasks, 10)
best = {k: [] for k in arms}
for r in range(15):
    for k, (lp, fw) in arms.items():
        D.DiagGaussian.log_prob, C.policy_forward = lp, fw
        t = time.perf_counter(); c.collect(p, tasks, 10); best[k].append(time.perf_counter() - t)
for k, v in best.items():
    print(f"{k:15s} min {min(v)*1e3:.1f} ms  median {np.median(v)*1e3:.1f} ms  per step saved vs orig (min) "
          f"{(min(best['orig'])-min(v))/200*1e6:.1f} us")
