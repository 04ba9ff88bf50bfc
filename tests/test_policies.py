"""policy_forward's batched-matmul path for per-task parameters of the plain MLP policies equals vmap."""

import pytest
import torch
from torch.func import functional_call, vmap

from metarl.common import policies as P


def _vmapped(policy, x, params, M):
    """The generic path: vmap over functional_call, one parameter dict per task."""
    lead, B = x.shape[:-2], x.shape[-2]
    axis = len(lead)
    grouped = x.reshape(*lead, M, B // M, x.shape[-1])
    out = vmap(lambda p, xx: functional_call(policy, p, (xx,)), in_dims=(0, axis), out_dims=axis)(params, grouped)
    out = out if isinstance(out, tuple) else (out,)
    return tuple(o.reshape(*o.shape[:axis], B, *o.shape[axis + 2:]) for o in out)


@pytest.mark.parametrize("make", [
    lambda: (1, P.MLPRegressor(1, 1, (40, 40))),
    lambda: (3, P.GaussianMLPPolicy(3, 2, (16, 16), "tanh")),
    lambda: (3, P.CategoricalMLPPolicy(3, 4, (8,))),
])
@pytest.mark.parametrize("lead", [(), (4,)])
def test_per_task_mlp_matches_vmap(make, lead):
    torch.manual_seed(0)
    D, policy = make()
    M = 5
    params = {k: (v.detach() + 0.1 * torch.randn(M, *v.shape)).requires_grad_(True) for k, v in policy.named_parameters()}
    x = torch.randn(*lead, M * 3, D)
    fast = P._per_task_mlp(policy, x, params, M)
    assert fast is not None  # the batched path is taken for these policies
    fast = fast if isinstance(fast, tuple) else (fast,)
    slow = _vmapped(policy, x, params, M)
    for a, b in zip(fast, slow):
        assert a.shape == b.shape
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    # the gradients with respect to the per-task parameters agree too (what the inner step uses)
    ga = torch.autograd.grad(sum(o.square().sum() for o in fast), list(params.values()))
    gb = torch.autograd.grad(sum(o.square().sum() for o in slow), list(params.values()))
    for a, b in zip(ga, gb):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_other_policies_fall_back_to_vmap():
    class Shifted(P.MLPRegressor):  # a subclass may change forward: not the plain MLP
        def forward(self, obs):
            return self.net(obs) + 1.0

    policy = Shifted(1, 1, (8,))
    params = {k: v.detach().expand(2, *v.shape) for k, v in policy.named_parameters()}
    x = torch.randn(6, 1)
    assert P._per_task_mlp(policy, x, params, 2) is None
    torch.testing.assert_close(P.policy_forward(policy, x, params, 2), policy(x))
    # a parameter set that is not the module's own (a missing leaf) falls back as well
    plain = P.MLPRegressor(1, 1, (8,))
    partial = {k: v.detach().expand(2, *v.shape) for k, v in plain.named_parameters() if k != "net.0.bias"}
    assert P._per_task_mlp(plain, x, partial, 2) is None
