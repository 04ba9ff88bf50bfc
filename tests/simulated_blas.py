"""A test-only stand-in for another machine's BLAS: ``METARL_TEST_OTHER_BLAS=1`` (``.ci/run`` sets it).

On some CPUs (e.g. an AVX-512/AMX Xeon with MKL) a row of a matrix product comes out differently, in
the last bit, depending on the shape of the call it was computed in: an MLP evaluated on [10, 6, 2]
and on its ten [6, 2] slices differs by ~6e-8. Our CI machine's BLAS happens to give every row the
same result whatever the shape, so a test that silently assumes so (a Ray share against the whole
batch, ``policy(batch.obs)`` against the collector's per-step calls) passes here and fails there.

:func:`install` makes this machine behave like such a CPU: every ``nn.Linear`` (``F.linear``),
``torch.baddbmm`` (the per-task MLP forward of metarl/common/policies.py), ``nn.GRUCell`` and ``torch.gru`` output is
multiplied, element by element, by 1 - eps, 1 or 1 + eps (eps: the dtype's
machine epsilon, so a change of about one ulp), in a pattern drawn from the *physical* shape of the
call: the input's shape, vmap's batch dimensions included. The same shape gives the same pattern (same
shapes on the same machine stay bit-identical, as a real BLAS does), another shape another pattern.
Multiplying by a constant keeps autograd, double backward and torch.func transforms working.

Ray actors run in other processes: :func:`ray_runtime_env` installs the same switch in them.
"""

from __future__ import annotations

import os
import zlib

import numpy as np
import torch

ENV_VAR = "METARL_TEST_OTHER_BLAS"

_factors: dict[tuple, torch.Tensor] = {}
_installed = False


def enabled() -> bool:
    return os.environ.get(ENV_VAR, "") not in ("", "0")


def _physical_shape(t: torch.Tensor) -> tuple[int, ...]:
    """The shape of the tensor underneath torch.func wrappers (vmap adds its batch dimensions there)."""
    functorch = torch._C._functorch
    while functorch.is_functorch_wrapped_tensor(t):
        t = functorch.get_unwrapped(t)
    return tuple(t.shape)


def _perturb(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``y`` (the output of a call on input ``x``) moved by about an ulp in a pattern fixed by the shapes."""
    if not y.is_floating_point():
        return y
    key = (_physical_shape(x), tuple(y.shape), y.dtype)
    factor = _factors.get(key)
    if factor is None:
        seed = zlib.crc32(repr(key).encode())  # the same in every process (Ray actors included)
        # numpy's generator: torch's random ops are refused inside vmap
        sign = torch.from_numpy(np.random.default_rng(seed).integers(-1, 2, tuple(y.shape)))
        factor = 1.0 + sign.to(y.dtype) * torch.finfo(y.dtype).eps
        _factors[key] = factor
    return y * factor


def install() -> None:
    """Patch ``F.linear``, ``torch.baddbmm``, ``nn.GRUCell.forward`` and ``torch.gru`` (the multi-step GRU of
    RL²'s unpadded replays) in this process (idempotent)."""
    global _installed
    if _installed:
        return
    _installed = True
    functional = torch.nn.functional
    real_linear = functional.linear
    real_gru_forward = torch.nn.GRUCell.forward
    real_baddbmm = torch.baddbmm
    real_gru = torch.gru

    def linear(input, weight, bias=None):
        return _perturb(input, real_linear(input, weight, bias))

    def gru_forward(self, input, hx=None):
        return _perturb(input, real_gru_forward(self, input, hx))

    def baddbmm(input, batch1, batch2, **kwargs):
        return _perturb(batch1, real_baddbmm(input, batch1, batch2, **kwargs))

    def gru(input, hx, *args, **kwargs):
        out, h_n = real_gru(input, hx, *args, **kwargs)
        return _perturb(input, out), h_n

    functional.linear = linear
    torch.gru = gru
    torch.baddbmm = baddbmm
    torch.nn.GRUCell.forward = gru_forward


def ray_runtime_env() -> dict:
    """``ray.init(runtime_env=...)`` that installs the switch in every worker process (when enabled)."""
    if not enabled():
        return {}
    here = os.path.dirname(os.path.abspath(__file__))  # workers import this module from tests/
    path = os.pathsep.join(p for p in (here, os.environ.get("PYTHONPATH", "")) if p)
    return {"env_vars": {ENV_VAR: os.environ[ENV_VAR], "PYTHONPATH": path},
            "worker_process_setup_hook": "simulated_blas.install"}
