"""Test-session settings."""

import pytest
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


@pytest.fixture
def bench_collect_untimed(monkeypatch):
    """metarl.bench with its slow references stubbed (the single-env rate 1.0, the open-loop limit the
    number of threads it steps on) and every Collector built recorded as (backend, num_threads): for tests
    of which collectors and threads `metarl bench collect` sets up. Yields (bench module, that list)."""
    from metarl import bench
    from metarl.sampling.collector import Collector

    built = []
    original = Collector.__init__

    def init(self, *args, **kwargs):
        built.append((kwargs.get("backend"), kwargs.get("num_threads")))
        original(self, *args, **kwargs)

    monkeypatch.setattr(Collector, "__init__", init)
    monkeypatch.setattr(bench, "_single_env_rate", lambda *args, **kwargs: 1.0)
    monkeypatch.setattr(bench, "_open_loop_limit", lambda venv, horizon, repeats: float(venv.num_threads))
    yield bench, built
