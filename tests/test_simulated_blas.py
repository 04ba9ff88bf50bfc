"""The simulated other-machine BLAS (tests/simulated_blas.py) perturbs what it claims to, by shape."""

from __future__ import annotations

import os
import subprocess
import sys

CHECK = r"""
import torch, simulated_blas
simulated_blas.install()
torch.manual_seed(0)
x, w, b = torch.randn(10, 6, 3), torch.randn(4, 3), torch.randn(4)
whole = torch.nn.functional.linear(x, w, b)
again = torch.nn.functional.linear(x, w, b)
rows = torch.stack([torch.nn.functional.linear(x[i], w, b) for i in range(10)])
print("linear", bool(torch.equal(whole, again)), bool(torch.equal(whole, rows)), float((whole - rows).abs().max()))
h, W, B = torch.randn(5, 8, 3), torch.randn(5, 4, 3), torch.randn(5, 1, 4)
whole = torch.baddbmm(B, h, W.transpose(1, 2))
again = torch.baddbmm(B, h, W.transpose(1, 2))
part = torch.baddbmm(B, h[:, :4], W.transpose(1, 2))
print("baddbmm", bool(torch.equal(whole, again)), bool(torch.equal(whole[:, :4], part)), float((whole[:, :4] - part).abs().max()))
cell = torch.nn.GRUCell(3, 4)
whole = cell(x[0])
print("gru", bool(torch.equal(whole, cell(x[0]))), bool(torch.equal(whole[:3], cell(x[0, :3]))), 0.0)
"""


def test_same_shape_identical_other_shape_differs_by_about_an_ulp():
    here = os.path.dirname(os.path.abspath(__file__))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (here, os.environ.get("PYTHONPATH", "")) if p)}
    out = subprocess.run([sys.executable, "-c", CHECK], env=env, capture_output=True, text=True, check=True).stdout
    for line in out.strip().splitlines():
        name, same_shape_equal, other_shape_equal, diff = line.split()
        assert same_shape_equal == "True", f"{name}: the same call's shape must give the same bits"
        assert other_shape_equal == "False", f"{name}: another call shape must move some row's bits"
        assert float(diff) < 1e-5, f"{name}: the perturbation must stay about an ulp, got {diff}"
