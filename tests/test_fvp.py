"""MAML's outer TRPO step in Gauss-Newton form (metarl.algos.maml.maml.OuterLinearization) against the
reference autograd path: the double backward of the KL through the adaptation
(metarl.common.trpo.fisher_vector_product_fn), the autograd gradient of the surrogate, and a whole TRPO
step. Everything in float64, so the two must agree to rounding."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from metarl.sampling.collector import Collector, EpisodeBatch
from metarl.algos.maml import MAML, InnerData, MAMLConfig
from metarl.algos.maml.fisher import OuterLinearization, mlp_spec
from metarl.common.policies import GaussianMLPPolicy, MLPRegressor, make_policy
from metarl.common.trpo import _grads_or_zeros, fisher_vector_product_fn, flatten

F64 = torch.float64
RTOL = 1e-8


def _double(batch: EpisodeBatch) -> EpisodeBatch:
    out = batch.to("cpu")
    for name in ("obs", "rewards", "valid", "log_probs"):
        setattr(out, name, getattr(out, name).double())
    if out.actions.is_floating_point():
        out.actions = out.actions.double()
    return out


def _mask_tail(data: InnerData, every: int = 3, steps: int = 2) -> InnerData:
    """Mark the last ``steps`` rows of every ``every``-th column invalid (as after an early
    termination: advantages are 0 there), so per-task denominators differ between tasks."""
    batch = data.batch
    valid = batch.valid.clone()
    valid[-steps:, ::every] = 0.0
    batch.valid = valid
    return InnerData(batch, data.advantages * valid)


def _problem(env_id, *, steps=1, first_order=False, activation="tanh", hidden=(6, 5), learn_lr=False,
             tasks=3, episodes=4, seed=0):
    """A tiny MAML problem in float64: algorithm, inner batches, query batch, number of tasks."""
    horizon = 5
    collector = Collector(env_id, seed=seed, horizon=horizon)
    task_list = collector.sample_tasks(tasks, np.random.default_rng(seed))
    torch.manual_seed(seed)
    policy = make_policy(collector.observation_space, collector.action_space, False, hidden, activation,
                         init_log_std=-0.5)
    cfg = MAMLConfig(meta_batch_size=tasks, episodes_per_task=episodes, inner_steps=steps, inner_lr=0.4,
                     first_order=first_order, learn_inner_lr=learn_lr, outer="trpo", max_kl=0.01)
    algo = MAML(policy, collector, cfg)
    if learn_lr:
        # distinct learning rates per entry, so that a wrong pairing of rates and entries shows
        with torch.no_grad():
            for p in algo.inner_lrs.parameters():
                p.uniform_(0.2, 0.6)
    data = algo.rollout_adaptation(task_list, steps, episodes, episodes)
    policy.double()
    if algo.inner_lrs is not None:
        algo.inner_lrs.double()
    data = [_mask_tail(InnerData(_double(d.batch), d.advantages.double())) for d in data]
    *inner, query = data
    return algo, inner, query, tasks


def _reference(algo, inner, query, M):
    """Surrogate, its gradient and the double-backward Fisher-vector product (no damping)."""
    params = algo.meta_parameters()
    loss, _, old = algo._surrogate_and_kl(inner, query, M, None)
    grad = flatten(_grads_or_zeros(loss, params, create_graph=False, retain_graph=False))
    _, kl, _ = algo._surrogate_and_kl(inner, query, M, old.detach())
    return loss.detach(), grad, fisher_vector_product_fn(kl, params, 0.0)


def _rel(a, b):
    return float((a - b).norm() / b.norm())


CASES = [
    # (env, inner steps, first order, activation, learned inner lr)
    ("metarl/Navigation2D-v0", 1, False, "relu", False),
    ("metarl/Navigation2D-v0", 1, False, "tanh", False),
    ("metarl/Navigation2D-v0", 1, True, "tanh", False),
    ("metarl/Navigation2D-v0", 2, False, "relu", False),
    ("metarl/Navigation2D-v0", 2, False, "tanh", False),
    ("metarl/Navigation2D-v0", 2, True, "relu", False),
    ("metarl/Navigation2D-v0", 2, False, "tanh", True),
    ("metarl/Navigation2D-v0", 0, False, "tanh", False),
    ("metarl/TabularMDP-v0", 1, False, "tanh", False),
    ("metarl/TabularMDP-v0", 1, True, "relu", False),
    ("metarl/TabularMDP-v0", 2, False, "relu", False),
    ("metarl/TabularMDP-v0", 2, True, "tanh", False),
    ("metarl/TabularMDP-v0", 1, False, "relu", True),
    ("metarl/Bandit-v0", 2, False, "tanh", False),
]


# Row chunks of the products (OuterLinearization's chunk_rows) on these problems of 3 tasks x 20 rows:
# None, one piece; 7, three row ranges of every task, the last shorter; 45, groups of two tasks and one.
CHUNKS = [None, 7, 45]


@pytest.mark.parametrize("chunk_rows", CHUNKS)
@pytest.mark.parametrize("cross", [False, True])
@pytest.mark.parametrize("env_id,steps,first_order,activation,learn_lr", CASES)
def test_gauss_newton_fvp_and_gradient_match_autograd(env_id, steps, first_order, activation, learn_lr, cross,
                                                      chunk_rows):
    algo, inner, query, M = _problem(env_id, steps=steps, first_order=first_order, activation=activation,
                                     learn_lr=learn_lr)
    loss, grad, fvp_ref = _reference(algo, inner, query, M)
    lin = OuterLinearization(algo, mlp_spec(algo.policy), inner, query, M, cross=cross, chunk_rows=chunk_rows)
    assert len(lin.qry.chunks) == {None: 1, 7: 9, 45: 2}[chunk_rows]
    assert lin.cross == (cross and not first_order)
    assert float(lin.kl) == 0.0
    torch.testing.assert_close(lin.loss, loss, rtol=1e-12, atol=1e-14)
    assert _rel(lin.grad, grad) < RTOL
    gen = torch.Generator().manual_seed(1)
    for _ in range(3):
        v = torch.randn(grad.numel(), generator=gen, dtype=F64)
        ref = fvp_ref(v)
        assert ref.norm() > 0
        assert _rel(lin.fvp(v), ref) < RTOL


def test_second_order_terms_are_tested():
    """The comparisons above can tell the full Fisher from one that ignores how the adaptation
    depends on θ (the query network's Gauss-Newton matrix alone, i.e. the first-order Fisher)."""
    algo, inner, query, M = _problem("metarl/Navigation2D-v0", steps=1, activation="relu")
    _, grad, fvp_ref = _reference(algo, inner, query, M)
    algo.cfg.first_order = True
    lin_fo = OuterLinearization(algo, mlp_spec(algo.policy), inner, query, M)
    v = torch.randn(grad.numel(), generator=torch.Generator().manual_seed(2), dtype=F64)
    assert _rel(lin_fo.fvp(v), fvp_ref(v)) > 1e-3
    assert _rel(lin_fo.grad, grad) > 1e-3


@pytest.mark.parametrize("chunk_rows", CHUNKS)
@pytest.mark.parametrize("hidden", [(), (4,), (5, 4, 3)])
def test_other_depths(hidden, chunk_rows):
    # no hidden layer (no cross term at all), one, and three (a cross term outside the first pair)
    algo, inner, query, M = _problem("metarl/Navigation2D-v0", steps=2, activation="tanh", hidden=hidden)
    _, grad, fvp_ref = _reference(algo, inner, query, M)
    lin = OuterLinearization(algo, mlp_spec(algo.policy), inner, query, M, cross=True, chunk_rows=chunk_rows)
    assert _rel(lin.grad, grad) < RTOL
    v = torch.randn(grad.numel(), generator=torch.Generator().manual_seed(3), dtype=F64)
    assert _rel(lin.fvp(v), fvp_ref(v)) < RTOL


@pytest.mark.parametrize("tasks,rows,chunk_rows", [(3, 20, 7), (3, 20, 45), (5, 20, 40), (4, 9, 9), (2, 6, 100)])
def test_row_chunks_cover_every_row_once(tasks, rows, chunk_rows):
    from metarl.algos.maml.fisher import row_chunks

    seen = torch.zeros(tasks, rows, dtype=torch.long)
    chunks = row_chunks(tasks, rows, chunk_rows)
    for t, r in chunks:
        seen[t, r] += 1
        assert seen[t, r].numel() <= max(chunk_rows, rows)
    assert bool((seen == 1).all())
    assert len({seen[t, r].shape for t, r in chunks}) <= 2  # at most two work-buffer shapes
    assert (len(chunks) == 1) == (tasks * rows <= chunk_rows)


def test_cross_block_in_row_blocks(monkeypatch):
    """The cross block summed over several row blocks of a task (the last one shorter) is the one-block sum."""
    import metarl.algos.maml.fisher as fisher

    algo, inner, query, M = _problem("metarl/Navigation2D-v0", steps=2, activation="tanh")
    _, grad, fvp_ref = _reference(algo, inner, query, M)
    one = OuterLinearization(algo, mlp_spec(algo.policy), inner, query, M, cross=True)
    monkeypatch.setattr(fisher, "CROSS_BLOCK_FLOATS", 3 * 6 * 3)  # 3 rows a block: 20 rows = 6 x 3 + 2
    blocks = OuterLinearization(algo, mlp_spec(algo.policy), inner, query, M, cross=True)
    for a, b in zip(one.steps, blocks.steps):
        torch.testing.assert_close(a.net.cross, b.net.cross, rtol=1e-12, atol=1e-15)
        assert float(a.net.cross.abs().max()) > 0
    v = torch.randn(grad.numel(), generator=torch.Generator().manual_seed(6), dtype=F64)
    assert _rel(blocks.fvp(v), fvp_ref(v)) < RTOL


def test_default_chunks_follow_threads_and_device():
    from metarl.algos.maml.fisher import FVP_CHUNK_ROWS_PER_THREAD, default_chunk_rows

    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        assert default_chunk_rows("cpu") == 2 * FVP_CHUNK_ROWS_PER_THREAD
        torch.set_num_threads(1)
        assert default_chunk_rows(torch.device("cpu")) == FVP_CHUNK_ROWS_PER_THREAD
    finally:
        torch.set_num_threads(threads)
    assert default_chunk_rows("cuda:0") is None  # whole batches on a GPU (no device needed to ask)
    algo, inner, query, M = _problem("metarl/Navigation2D-v0", steps=1, activation="relu")
    lin = OuterLinearization(algo, mlp_spec(algo.policy), inner, query, M)
    assert lin.chunk_rows == default_chunk_rows("cpu")


def test_fvp_is_symmetric_and_positive():
    algo, inner, query, M = _problem("metarl/TabularMDP-v0", steps=2, activation="relu")
    lin = OuterLinearization(algo, mlp_spec(algo.policy), inner, query, M, cross=True)
    gen = torch.Generator().manual_seed(4)
    u, v = (torch.randn(lin.grad.numel(), generator=gen, dtype=F64) for _ in range(2))
    torch.testing.assert_close(u @ lin.fvp(v), v @ lin.fvp(u), rtol=1e-10, atol=0)
    assert float(v @ lin.fvp(v)) > 0


@pytest.mark.parametrize("chunk_rows", CHUNKS)
@pytest.mark.parametrize("env_id", ["metarl/Navigation2D-v0", "metarl/TabularMDP-v0"])
def test_evaluate_matches_autograd_surrogate_and_kl_after_a_move(env_id, chunk_rows):
    algo, inner, query, M = _problem(env_id, steps=2, activation="relu", learn_lr=True)
    lin = OuterLinearization(algo, mlp_spec(algo.policy), inner, query, M, chunk_rows=chunk_rows)
    _, _, old = algo._surrogate_and_kl(inner, query, M, None)
    gen = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for p in algo.meta_parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=gen, dtype=F64))
    loss_ref, kl_ref, _ = algo._surrogate_and_kl(inner, query, M, old.detach())
    loss, kl = lin.evaluate()
    assert float(kl_ref.detach()) > 1e-4  # the move is not negligible
    torch.testing.assert_close(loss, loss_ref.detach(), rtol=1e-10, atol=1e-14)
    torch.testing.assert_close(kl, kl_ref.detach(), rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize(
    "env_id,steps,first_order,learn_lr",
    [("metarl/Navigation2D-v0", 1, False, False), ("metarl/Navigation2D-v0", 2, False, True),
     ("metarl/TabularMDP-v0", 1, False, False), ("metarl/TabularMDP-v0", 2, True, False)],
)
def test_trpo_step_is_the_same_with_either_fisher(env_id, steps, first_order, learn_lr):
    algo, inner, query, M = _problem(env_id, steps=steps, first_order=first_order, activation="relu",
                                     learn_lr=learn_lr)
    # Five CG iterations, not ten: on these tiny problems (rank-deficient Fisher, 67-134 parameters)
    # the later iterations run on residuals at rounding level, where a relative perturbation of
    # 1e-15 in g already moves the solution by up to 1e-5 (measured), for either product. Five
    # iterations keep the step a well-conditioned function of (g, F), so equality can be tight.
    algo.cfg.cg_iters = 5
    start = [p.detach().clone() for p in algo.meta_parameters()]
    results = {}
    for fisher in ("autograd", "gauss_newton"):
        with torch.no_grad():
            for p, s in zip(algo.meta_parameters(), start):
                p.copy_(s)
        algo.fisher = fisher
        stats = algo._trpo(inner, query, M)
        results[fisher] = (stats, [p.detach().clone() for p in algo.meta_parameters()])
    (ref_stats, ref_params), (stats, params) = results["autograd"], results["gauss_newton"]
    assert ref_stats["line_search/accepted"] == 1.0  # a real step, not a rejected one
    assert stats["line_search/backtracks"] == ref_stats["line_search/backtracks"]
    for key in ref_stats:
        assert stats[key] == pytest.approx(ref_stats[key], rel=1e-9, abs=1e-14), key
    moved = torch.cat([(p - s).reshape(-1) for p, s in zip(ref_params, start)])
    diff = torch.cat([(p - q).reshape(-1) for p, q in zip(params, ref_params)])
    assert float(moved.norm()) > 1e-3
    assert float(diff.norm()) < 1e-9 * float(moved.norm())


@pytest.mark.parametrize("env_id,steps", [("metarl/Navigation2D-v0", 1), ("metarl/TabularMDP-v0", 2)])
def test_emaml_trpo_step_is_the_same_with_either_fisher(env_id, steps):
    """E-MAML on the Gauss-Newton path (its exploration term added to the linearisation's gradient
    and values) takes autograd's step, and the term changes that step."""
    algo, inner, query, M = _problem(env_id, steps=steps, activation="relu")
    algo.cfg.cg_iters = 5  # as in test_trpo_step_is_the_same_with_either_fisher
    start = [p.detach().clone() for p in algo.meta_parameters()]
    results = {}
    for estimator, fisher in (("emaml", "autograd"), ("emaml", "gauss_newton"), ("reinforce", "gauss_newton")):
        with torch.no_grad():
            for p, s in zip(algo.meta_parameters(), start):
                p.copy_(s)
        algo.fisher, algo.cfg.estimator = fisher, estimator
        stats = algo._trpo(inner, query, M)
        results[estimator, fisher] = (stats, torch.cat([(p.detach() - s).reshape(-1) for p, s in zip(algo.meta_parameters(), start)]))
    (ref_stats, ref_step), (stats, step) = results["emaml", "autograd"], results["emaml", "gauss_newton"]
    assert ref_stats["line_search/accepted"] == 1.0
    for key in ref_stats:
        assert stats[key] == pytest.approx(ref_stats[key], rel=1e-9, abs=1e-14), key
    assert float((step - ref_step).norm()) < 1e-9 * float(ref_step.norm())
    plain_step = results["reinforce", "gauss_newton"][1]
    assert float((step - plain_step).norm()) > 1e-3 * float(plain_step.norm())


def test_unsupported_policies_fall_back_to_autograd():
    class Shifted(GaussianMLPPolicy):  # a subclass may change forward: not the hand-derived MLP
        def forward(self, obs):
            mean, log_std = super().forward(obs)
            return mean + 1.0, log_std

    assert mlp_spec(Shifted(2, 2, (4,))) is None
    assert mlp_spec(MLPRegressor(1, 1, (4,))) is None
    assert mlp_spec(GaussianMLPPolicy(2, 2, (4,))) is not None
    # the fallback still takes a valid step
    algo, inner, query, M = _problem("metarl/Navigation2D-v0", steps=1, activation="relu")
    shifted = Shifted(2, 2, (6, 5), activation="relu", init_log_std=-0.5).double()
    shifted.load_state_dict(algo.policy.state_dict())
    algo.policy = shifted
    stats = algo._trpo(inner, query, M)
    assert stats["line_search/accepted"] == 1.0


def test_train_iteration_takes_the_gauss_newton_path(monkeypatch):
    import metarl.common.trpo

    def no_double_backward(*args, **kwargs):
        raise AssertionError("the double-backward Fisher-vector product was used")

    monkeypatch.setattr(metarl.common.trpo, "fisher_vector_product_fn", no_double_backward)
    collector = Collector("metarl/Navigation2D-v0", seed=0, horizon=5)
    torch.manual_seed(0)
    policy = GaussianMLPPolicy(2, 2, (8, 8), activation="relu")
    algo = MAML(policy, collector, MAMLConfig(meta_batch_size=2, episodes_per_task=3, outer="trpo"))
    stats = algo.train_iteration(np.random.default_rng(0))
    assert stats["line_search/accepted"] == 1.0
    algo.fisher = "autograd"  # and the switch does select the other path
    with pytest.raises(AssertionError, match="double-backward"):
        algo.train_iteration(np.random.default_rng(1))
