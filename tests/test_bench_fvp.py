"""``metarl bench fvp`` times the update's products and the matmuls it says they contain, on the config's sizes."""

import pytest

from metarl.bench_fvp import bench_fvp


def test_bench_fvp_fields():
    out = bench_fvp("experiments/navigation2d_maml.yaml", ["maml.meta_batch_size=2", "maml.episodes_per_task=2",
                                                           "env.horizon=5", "maml.cg_iters=2"], rounds=1)
    assert out["query_rows"] == 2 * 2 * 5 and out["inner_rows"] == [2 * 2 * 5]
    assert out["width"] == 100 and out["products"] == 2
    assert out["products_over_matmuls"] == pytest.approx(out["fvp_s"] / out["unfused_matmuls_s"])
    # the whole-batch products are timed beside the chunked ones (at these sizes both are one chunk)
    assert out["chunked_over_whole"] == pytest.approx(out["fvp_s"] / out["fvp_whole_batches_s"])
    assert out["chunk_rows"] >= 4096


def test_bench_fvp_refuses_a_policy_without_the_exact_products():
    with pytest.raises(ValueError, match="reinforce estimator"):
        bench_fvp("experiments/navigation2d_maml.yaml", ["maml.estimator=dice", "maml.meta_batch_size=2",
                                                         "maml.episodes_per_task=2", "env.horizon=5"], rounds=1)
