"""Test-session settings."""

import torch

import simulated_blas

# The tests use tiny tensors, for which torch's intra-op threads only add spin-waiting; on a busy
# 2-core machine multi-threaded tiny ops were measured over 10x slower. Subprocess tests (the CLI)
# still use the configured thread count.
torch.set_num_threads(1)

# METARL_TEST_OTHER_BLAS=1: matrix products whose rows depend on the call's shape, as on some CPUs
# (see tests/simulated_blas.py); .ci/run runs the whole suite once more under it (subprocess tests,
# e.g. the CLI's, do not load this file and run unpatched).
if simulated_blas.enabled():
    simulated_blas.install()
