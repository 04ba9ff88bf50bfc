"""The cluster fault scenario end to end (experiments/ray_cluster_faults.py): a head and two worker
nodes on this machine, MAML 2D navigation on them; a worker node killed mid-collection and the
driver SIGKILLed mid-run then resumed both end bit-identical to the undisturbed run. Slow (about
3 min on 2 cores): ``pytest -m slow tests/test_ray_cluster_faults.py``."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_node_and_driver_faults_on_a_cluster_end_like_the_undisturbed_run(tmp_path):
    pytest.importorskip("ray")
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "experiments/ray_cluster_faults.py", "--iterations", "100", "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-5000:]
    summary = json.loads((out / "summary.json").read_text())

    assert summary["undisturbed"]["iterations"] == 100
    node, driver = summary["node"], summary["driver"]
    for fault in (node, driver):  # killed in iteration 3 (4 if that one's collections were missed)
        assert fault["iterations"] == 100 and fault["killed_during_iteration"] in (3, 4)
        assert fault["rows_equal"] and fault["params_bitwise"] and fault["params_max_abs_diff"] == 0
    # the killed node's share (3 tasks x 10 episodes) was re-collected by the actor on the other
    # node, and the replacement actor started on the node that joined afterwards
    assert re.fullmatch(r"Ray collector: worker (\d) died collecting share \1 of 2 \(Actor\w+Error: .+\); "
                        r"re-collecting its 30 columns on worker \d", node["collector_log"][0]), node["collector_log"]
    assert re.fullmatch(r"Ray collector: worker \d is back \(a new actor, pid \d+\)", node["collector_log"][-1])
    # Ray may first lease the replacement on the dead node; once its health checks declare that node
    # dead, the replacement is dead too and the collector starts another
    for line in node["collector_log"][1:-1]:
        assert re.fullmatch(r"Ray collector: the new actor of worker \d died starting \(ActorDiedError: .+\); "
                            r"starting another", line), node["collector_log"]
    assert node["replacement_back"] and node["replacement_on_new_node"]
    assert node["killed_after_s"] <= node["recollection_logged_after_s"] <= node["node_joined_after_s"]
    assert node["sampling_s_of_that_iteration"] > node["undisturbed_sampling_s_of_that_iteration"]
    # the driver resumed from the checkpoint before the iteration it was killed in; its actors were new
    assert driver["resumed_from_checkpoint"] == driver["killed_during_iteration"] - 1
    assert driver["collector_log"] == []
    # the cluster is gone: no process of its session is left
    sys.path.insert(0, str(ROOT / "experiments"))
    try:
        from ray_cluster_faults import session_processes
    finally:
        sys.path.remove(str(ROOT / "experiments"))
    assert session_processes(summary["session_dir"]) == []
