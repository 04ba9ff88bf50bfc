"""maml.fisher_subsample: the outer TRPO step's Fisher-vector products from a random subset of the
meta-batch's tasks (an approximation behind a flag; the default 1 is the exact step). The products must
be exactly the subset's (checked against the double backward of the subset's KL), the gradient and the
line search must stay the whole batch's, and the default must draw nothing."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import metarl.algos.maml.maml as maml_module
from metarl.algos.maml import MAMLConfig
from metarl.common.config import ConfigRangeError
from tests.test_fvp import F64, RTOL, _problem, _reference, _rel


def test_select_tasks_takes_those_tasks_columns_in_order():
    algo, inner, query, M = _problem("metarl/Navigation2D-v0", tasks=3, episodes=4)
    data = inner[0]
    data.advantage_scale = torch.tensor([1.0, 2.0, 3.0], dtype=F64)
    sub = data.select_tasks([2, 0])
    b, s = data.batch, sub.batch
    assert s.num_tasks == 2 and s.columns_per_task == 4
    assert s.task_index.tolist() == [0] * 4 + [1] * 4
    cols = list(range(8, 12)) + list(range(0, 4))  # task 2's columns, then task 0's
    for name in ("obs", "actions", "rewards", "valid", "dones", "log_probs", "timesteps", "final_obs"):
        assert torch.equal(getattr(s, name), getattr(b, name)[:, cols]), name
    assert torch.equal(sub.advantages, data.advantages[:, cols])
    assert sub.advantage_scale.tolist() == [3.0, 1.0]
    for bad in ([], [3], [-1]):
        with pytest.raises(ValueError, match=r"task indices in \[0, 3\)"):
            data.select_tasks(bad)


def test_fisher_tasks_draws_a_subset_only_below_one():
    algo, _, _, _ = _problem("metarl/Navigation2D-v0", tasks=2)
    rng = np.random.default_rng(0)
    state = rng.bit_generator.state
    assert algo.fisher_tasks(8, rng) is None  # the default, 1: every task, and no draw
    assert rng.bit_generator.state == state
    algo.cfg.fisher_subsample = 0.3
    picks = [algo.fisher_tasks(8, rng) for _ in range(50)]
    assert all(len(p) == 3 and p == sorted(set(p)) and 0 <= p[0] and p[-1] < 8 for p in picks)  # ceil(2.4)
    assert len({tuple(p) for p in picks}) > 10  # random subsets, not a fixed one
    assert algo.fisher_tasks(8, np.random.default_rng(5)) == algo.fisher_tasks(8, np.random.default_rng(5))
    algo.cfg.fisher_subsample = 0.9
    assert algo.fisher_tasks(2, rng) is None  # ceil(1.8) = 2: every task


@pytest.mark.parametrize("value", [0.0, -0.5, 1.5, float("nan")])
def test_fisher_subsample_out_of_range_is_refused(value):
    with pytest.raises(ConfigRangeError, match="fisher_subsample"):
        MAMLConfig(fisher_subsample=value).validate()


def test_fisher_subsample_without_a_trpo_step_is_refused():
    from metarl.experiment import build_experiment, load_config

    for config, extra in (("navigation2d_maml", ["maml.outer=adam"]), ("sinusoid_maml", []), ("navigation2d_promp", [])):
        cfg = load_config(f"experiments/{config}.yaml", ["maml.fisher_subsample=0.5", *extra])
        with pytest.raises(ValueError, match=r"maml.fisher_subsample = 0.5 .*leave it at 1"):
            build_experiment(cfg)


@pytest.mark.parametrize("fisher", ["gauss_newton", "autograd"])
@pytest.mark.parametrize("env_id,steps", [("metarl/Navigation2D-v0", 1), ("metarl/TabularMDP-v0", 2)])
def test_subsampled_step_uses_the_subsets_fisher_and_the_whole_batch_otherwise(monkeypatch, fisher, env_id, steps):
    algo, inner, query, M = _problem(env_id, steps=steps, activation="relu", tasks=4)
    algo.fisher = fisher
    # Five CG iterations (as in tests/test_fvp.py): two tasks' Fisher on these tiny problems is far from full
    # rank, and ten iterations step into its near-null directions, where the whole batch's KL rejects the step.
    algo.cfg.cg_iters = 5
    chosen = [1, 3]
    _, grad_ref, fvp_whole = _reference(algo, inner, query, M)
    sub_inner, sub_query = [d.select_tasks(chosen) for d in inner], query.select_tasks(chosen)
    _, _, fvp_sub = _reference(algo, sub_inner, sub_query, len(chosen))

    # the products are compared before the step: the double-backward graphs hold θ, which the step moves
    gen = torch.Generator().manual_seed(3)
    vs = [torch.randn(grad_ref.numel(), generator=gen, dtype=F64) for _ in range(3)]
    expected = [fvp_sub(v) for v in vs]
    for v, e in zip(vs, expected):
        assert _rel(e, fvp_whole(v)) > 1e-3  # the subset's curvature is not the whole batch's
    seen = {}
    real_step = maml_module.trpo_step

    def recording_step(params, **kwargs):
        seen.update(kwargs, products=[kwargs["fvp"](v) for v in vs])
        return real_step(params, **kwargs)

    monkeypatch.setattr(maml_module, "trpo_step", recording_step)
    start = [p.detach().clone() for p in algo.meta_parameters()]
    stats = algo._trpo(inner, query, M, fisher_tasks=chosen)
    assert stats["line_search/accepted"] == 1.0
    for got, e in zip(seen["products"], expected):
        assert _rel(got, e) < RTOL
    if seen.get("grad") is not None:  # the Gauss-Newton path hands the gradient over; autograd takes it from loss_fn
        assert _rel(seen["grad"], grad_ref) < RTOL
    # the line search measured the whole batch's KL at the step it took (not the subset's)
    kl_whole = _mean_kl(algo, inner, query, M, start, [p.detach().clone() for p in algo.meta_parameters()])
    kl_subset = _mean_kl(algo, sub_inner, sub_query, len(chosen), start,
                         [p.detach().clone() for p in algo.meta_parameters()])
    assert stats["kl"] == pytest.approx(kl_whole, rel=1e-9)
    assert stats["kl"] != pytest.approx(kl_subset, rel=1e-3)
    assert 0 < stats["kl"] <= algo.cfg.max_kl


def _post_update(algo, inner, query, M, theta):
    """The post-update policies on the query observations with the meta-parameters set to ``theta``."""
    from metarl.common.policies import policy_forward

    with torch.no_grad():
        for p, value in zip(algo.meta_parameters(), theta):
            p.copy_(value)
    params = {n: t.detach() for n, t in algo.adapt(inner, M, first_order=True).items()}
    return algo.policy.distribution(policy_forward(algo.policy, query.batch.obs, params, M))


def _mean_kl(algo, inner, query, M, theta_old, theta_new) -> float:
    """Mean over tasks of the per-task mean KL(π_old || π_new) of the post-update policies (the TRPO bound);
    leaves the meta-parameters at ``theta_new``."""
    from metarl.common.adaptation import per_task_mean

    old = _post_update(algo, inner, query, M, theta_old)
    new = _post_update(algo, inner, query, M, theta_new)
    valid = query.batch.valid
    with torch.no_grad():
        return float(per_task_mean(old.kl(new) * valid, valid, M).mean())
