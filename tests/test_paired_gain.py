"""experiments/paired_gain.py: paired step-k minus step-0 differences against a hand computation."""

import math
import subprocess
import sys


def test_paired_gain_matches_hand_computation(tmp_path):
    csv = tmp_path / "adaptation_per_task.csv"
    rows = ["method,step,task,return"]
    step0, step1 = [1.0, 2.0, 3.0], [2.0, 4.0, 3.0]  # differences 1, 2, 0: mean 1, sample std 1
    rows += [f"maml,0,{t},{v}" for t, v in enumerate(step0)] + [f"maml,1,{t},{v}" for t, v in enumerate(step1)]
    csv.write_text("\n".join(rows) + "\n")
    out = subprocess.run([sys.executable, "experiments/paired_gain.py", str(csv)],
                         capture_output=True, text=True, check=True).stdout
    half = 4.303 / math.sqrt(3)  # t quantile 0.975 at 2 degrees of freedom
    assert out.strip() == (f"maml return step 1 - step 0: +1.000 [{1 - half:.3f}, {1 + half:.3f}], "
                           "up on 2 of 3 tasks, down on 0")
