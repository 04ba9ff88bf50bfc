"""Where MAML-TRPO's outer update spends its time: one meta-batch of a config is collected, one update is
taken as a warm-up, then the same update is taken again from the same parameters under cProfile. Prints the
update's seconds and the cumulative time of the linearisation, the conjugate gradient (the Fisher-vector
products), the line search's evaluations and the cross block.

Run: ``NT=2 .venv/bin/python experiments/profile_maml_update.py experiments/halfcheetah_vel_maml.yaml``
(NT: torch threads, default 2; further arguments are config overrides).
"""

import cProfile
import os
import pstats
import sys
import time

import torch

from metarl.bench_fvp import update_inputs

from metarl.algos.maml import fisher
from metarl.common import trpo

PARTS = [(fisher.OuterLinearization.__init__, "linearisation (adaptation kept, query, gradient)"),
         (fisher._MLP.precompute_cross, "  of which the cross block"),
         (trpo._conjugate_gradient, "conjugate gradient (Fisher-vector products)"),
         (fisher.OuterLinearization.evaluate, "line-search evaluations")]


if __name__ == "__main__":
    torch.set_num_threads(int(os.environ.get("NT", "2")))
    config = sys.argv[1] if len(sys.argv) > 1 else "experiments/halfcheetah_vel_maml.yaml"
    exp, inner, query, M = update_inputs(config, sys.argv[2:])
    algo = exp.algo
    start = {k: v.clone() for k, v in algo.policy.state_dict().items()}
    algo._trpo(inner, query, M)  # warm-up
    algo.policy.load_state_dict(start)
    prof = cProfile.Profile()
    t = time.perf_counter()
    prof.enable()
    stats = algo._trpo(inner, query, M)
    prof.disable()
    print(f"update {time.perf_counter() - t:.2f} s ({torch.get_num_threads()} threads); line search backtracks "
          f"{stats['line_search/backtracks']:.0f}")
    st = pstats.Stats(prof).stats
    for func, label in PARTS:
        code = func.__code__
        cum = st.get((code.co_filename, code.co_firstlineno, code.co_name), (0, 0, 0, 0.0))[3]
        print(f"  {label}: {cum:.2f} s")
