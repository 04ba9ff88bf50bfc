"""The sinusoid reference of ``metarl bench sinusoid --reference`` is a fair yardstick: on the same data it
computes metarl's meta-loss and meta-gradient (second order through the inner step)."""

import pytest
import torch

from metarl.algos.maml import MAML, MAMLConfig
from metarl.bench_sinusoid import Reference, reference_meta_loss, sinusoid_data
from metarl.common.adaptation import InnerData
from metarl.common.policies import make_policy
from metarl.sampling.collector import Collector, EpisodeBatch


def _batch(x: torch.Tensor, y: torch.Tensor) -> EpisodeBatch:
    """An H = 1 batch holding x, y [M, n, 1] as the collector lays them out (one step, task-major columns)."""
    M, n, _ = x.shape
    B = M * n
    ones = torch.ones(1, B)
    return EpisodeBatch(obs=x.reshape(1, B, 1), actions=torch.zeros(1, B, 1), rewards=torch.zeros(1, B), valid=ones,
                        dones=torch.ones(1, B, dtype=torch.bool), log_probs=torch.zeros(1, B),
                        timesteps=torch.zeros(1, B, dtype=torch.long),
                        task_index=torch.arange(M).repeat_interleave(n), num_tasks=M, horizon=1, targets=y.reshape(1, B, 1))


def _metarl_and_reference(first_order: bool):
    torch.manual_seed(0)
    collector = Collector("metarl/Sinusoid-v0", seed=0)
    policy = make_policy(collector.observation_space, collector.action_space, True, (40, 40))
    cfg = MAMLConfig(meta_batch_size=25, episodes_per_task=10, inner_lr=0.01, outer="adam", first_order=first_order)
    algo = MAML(policy, collector, cfg)
    xs, ys, xq, yq = sinusoid_data(25, 10, 10, torch.Generator().manual_seed(1))
    params = algo.meta_parameters()
    loss = algo.inner_loss(algo.adapt([InnerData(_batch(xs, ys), None)], 25), InnerData(_batch(xq, yq), None), 25).mean()
    ours = torch.autograd.grad(loss, params)
    ref = Reference(policy, 25, 10, 10, inner_lr=0.01, outer_lr=1e-3)
    ref_loss = reference_meta_loss(ref.params, xs, ys, xq, yq, 0.01, ref.forward)
    theirs = torch.autograd.grad(ref_loss, list(ref.params.values()))
    return loss, ours, ref_loss, theirs


def test_reference_computes_metarls_meta_gradient():
    loss, ours, ref_loss, theirs = _metarl_and_reference(first_order=False)
    torch.testing.assert_close(loss, ref_loss, rtol=1e-5, atol=1e-6)
    for a, b in zip(ours, theirs):
        assert a.abs().max() > 0
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_first_order_gradient_differs_from_reference():
    # the comparison can fail: dropping the second-order term moves the gradient beyond the tolerance above
    _, ours, _, theirs = _metarl_and_reference(first_order=True)
    with pytest.raises(AssertionError):
        for a, b in zip(ours, theirs):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_reference_iteration_takes_an_adam_step():
    policy = make_policy(*(lambda c: (c.observation_space, c.action_space))(Collector("metarl/Sinusoid-v0")), True, (40, 40))
    ref = Reference(policy, 5, 10, 10, inner_lr=0.01, outer_lr=1e-3)
    before = {k: v.detach().clone() for k, v in ref.params.items()}
    ref.iteration()
    # Adam's first step moves each entry by lr * |g| / (|g| + eps): lr, except where |g| is near eps (1e-8)
    for k, v in ref.params.items():
        moved = (v.detach() - before[k]).abs()
        assert (moved <= 1e-3 * (1 + 1e-5)).all(), k
        assert torch.allclose(moved.median(), torch.tensor(1e-3), rtol=1e-4), k
