"""The ``metarl`` command line, called in-process: envs (and --import), config, train, evaluate; plus
one run of the installed console script."""

from __future__ import annotations

import csv
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import gymnasium as gym
import pytest
import yaml

from metarl.cli import main

ROOT = Path(__file__).resolve().parents[1]
SINUSOID = str(ROOT / "experiments" / "sinusoid_maml.yaml")
FAMILIES = {
    "metarl/Sinusoid-v0": ("1", "SinusoidTask(amplitude="),
    "metarl/Navigation2D-v0": ("100", "NavigationTask(goal="),
    "metarl/HalfCheetahVel-v0": ("200", "HalfCheetahVelTask(goal_velocity="),
    "metarl/HalfCheetahDir-v0": ("200", "HalfCheetahDirTask(direction="),
    "metarl/Bandit-v0": ("10", "BanditTask(means="),
    "metarl/TabularMDP-v0": ("10", "TabularMDPTask(transitions="),
}

USER_ENV = '''
from dataclasses import dataclass

import gymnasium as gym
import numpy as np


@dataclass(frozen=True)
class CoinTask:
    bias: float


class CoinEnv(gym.Env):
    observation_space = gym.spaces.Box(0.0, 1.0, shape=(1,), dtype=np.float32)
    action_space = gym.spaces.Discrete(2)

    def __init__(self):
        self._task = CoinTask(0.5)

    def sample_tasks(self, n, rng):
        return [CoinTask(float(b)) for b in rng.uniform(size=n)]

    def set_task(self, task):
        self._task = task

    def get_task(self):
        return self._task

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return np.zeros(1, dtype=np.float32), {}

    def step(self, action):
        return np.zeros(1, dtype=np.float32), float(self.np_random.random() < self._task.bias), False, False, {}


gym.register("{env_id}", entry_point=CoinEnv, max_episode_steps=7)
'''


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    """write_module(name, source) -> name: an importable module in tmp_path, forgotten afterwards
    (sys.modules and the Gymnasium ids it registered)."""
    monkeypatch.syspath_prepend(str(tmp_path))
    names, ids_before = [], set(gym.registry)

    def write_module(name: str, source: str) -> str:
        (tmp_path / f"{name}.py").write_text(textwrap.dedent(source))
        names.append(name)
        return name

    yield write_module
    for name in names:
        sys.modules.pop(name, None)
    for env_id in set(gym.registry) - ids_before:
        gym.registry.pop(env_id)


def _blocks(text: str) -> dict[str, str]:
    """`metarl envs` output split into {env id: its block}."""
    blocks, current = {}, None
    for line in text.splitlines():
        if line and not line.startswith(" "):
            current = line.split(":")[0]
            blocks[current] = line + "\n"
        elif current is not None:
            blocks[current] += line + "\n"
    return blocks


def test_stdout_to_a_file_shows_each_line_at_once(monkeypatch):
    # nohup or a cluster log: stdout is a block-buffered file, and a long tune's per-setting lines would
    # only appear at exit without line buffering.
    import io
    out = io.TextIOWrapper(io.BytesIO(), encoding="utf-8")
    assert not out.line_buffering
    monkeypatch.setattr(sys, "stdout", out)
    assert main(["envs"]) == 0
    assert out.line_buffering
    assert b"metarl/Sinusoid-v0" in out.buffer.getvalue()  # already written through, no flush needed


def test_envs_lists_every_family(capsys):
    assert main(["envs"]) == 0
    blocks = _blocks(capsys.readouterr().out)
    assert set(FAMILIES) <= set(blocks)
    for env_id, (horizon, task) in FAMILIES.items():
        block = blocks[env_id]
        assert f"horizon H     : {horizon} " in block, block
        assert "observation   : Box(" in block and "action        : " in block
        assert f"task          : {task}" in block
        assert max(len(line) for line in block.splitlines()) < 200  # long tasks are shortened
    assert "supervised (H=1)" in blocks["metarl/Sinusoid-v0"]
    assert "action        : Discrete(10)" in blocks["metarl/Bandit-v0"]
    assert "collector: native batched" in blocks["metarl/HalfCheetahVel-v0"]


def test_envs_import_shows_a_user_env(capsys, user_module):
    name = user_module("my_coin_tasks", USER_ENV.replace("{env_id}", "mycoins/Coin-v0"))
    assert main(["envs"]) == 0
    assert "mycoins/Coin-v0" not in capsys.readouterr().out
    assert main(["envs", "--import", name]) == 0
    block = _blocks(capsys.readouterr().out)["mycoins/Coin-v0"]
    assert "horizon H     : 7 " in block and "collector: gym loop" in block
    assert "action        : Discrete(2)" in block
    assert "task          : CoinTask(bias=" in block


def test_envs_import_names_a_non_task_env(capsys, user_module):
    source = USER_ENV.replace("{env_id}", "mycoins/Plain-v0").replace("def sample_tasks", "def _sample_tasks")
    name = user_module("my_plain_env", source)
    assert main(["envs", "--import", name]) == 0
    out = capsys.readouterr().out
    assert "mycoins/Plain-v0: not a task distribution (it lacks sample_tasks)" in out


def test_config_prints_documented_keys(capsys):
    assert main(["config", SINUSOID, "--set", "maml.inner_lr=0.02"]) == 0
    out = capsys.readouterr().out
    assert "# Step size of the inner-loop gradient step.\n  inner_lr: 0.02\n" in out
    assert "# Tasks per meta-iteration.\n  meta_batch_size: 25\n" in out
    assert "  hidden_sizes: [40, 40]\n" in out and "  id: metarl/Sinusoid-v0\n" in out
    assert "(undocumented)" not in out
    # what it prints is a config that loads back to the same values
    data = yaml.safe_load(out)
    assert data["maml"]["inner_lr"] == 0.02 and data["maml"]["outer"] == "adam"


TINY = [
    "--set", "train.iterations=4", "--set", "train.checkpoint_every=2", "--set", "train.log_every=1",
    "--set", "train.show_progress=false", "--set", "maml.meta_batch_size=3", "--set", "policy.hidden_sizes=[8]",
    "--set", "eval.tasks=4", "--set", "eval.steps=2", "--set", "collector.num_threads=1",
]


def test_train_then_evaluate(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", SINUSOID, *TINY, "--run-dir", str(run)]) == 0
    assert f"run directory: {run}" in capsys.readouterr().out

    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["env"]["id"] == "metarl/Sinusoid-v0"
    assert config["train"]["iterations"] == 4 and config["policy"]["hidden_sizes"] == [8]
    with open(run / "progress.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["iteration"]) for r in rows] == [1, 2, 3, 4]
    assert {"iteration", "env_steps_total", "pre_update/loss", "post_update/loss"} <= set(rows[0])
    steps = [float(r["env_steps_total"]) for r in rows]
    assert steps[0] > 0 and all(b - a == steps[0] for a, b in zip(steps, steps[1:]))
    assert list((run / "tb").glob("events.out.tfevents.*"))
    assert sorted(p.name for p in (run / "checkpoints").glob("iter_*.pt")) == ["iter_0000002.pt", "iter_0000004.pt"]

    assert main(["evaluate", str(run)]) == 0
    out = capsys.readouterr().out
    assert "wrote" in out and "maml" in out
    for name in ("adaptation.csv", "adaptation_per_task.csv", "summary.json", "adaptation.png"):
        assert (run / "eval" / name).stat().st_size > 0, name
    with open(run / "eval" / "adaptation.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    maml_rows = [r for r in rows if r["method"] == "maml"]
    assert [int(r["step"]) for r in maml_rows] == [0, 1, 2]  # eval.steps = 2
    assert all(int(r["n_tasks"]) == 4 for r in maml_rows)  # eval.tasks = 4


def test_installed_console_script_reports_bad_input():
    # the script installed with this interpreter (a venv's bin/), else the one on PATH
    beside = Path(sys.executable).with_name("metarl")
    script = str(beside) if beside.exists() else shutil.which("metarl")
    if script is None:
        pytest.skip("the metarl console script is not installed on PATH")
    proc = subprocess.run([script, "config", SINUSOID, "--set", "maml.inner_lr=-1"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr.strip() == "metarl: error: maml.inner_lr = -1.0 is out of range: must be > 0"


@pytest.mark.parametrize("config", ["navigation2d_promp", "halfcheetah_vel_promp"])
def test_bench_maml_times_a_promp_config_against_maml(capsys, config):
    """`metarl bench maml --config <promp config> --compare <maml config>`: both timed in one run
    (tiny overrides), each under its own algorithm, with the ratio of their seconds per iteration."""
    import json

    small = ["maml.meta_batch_size=2", "maml.episodes_per_task=2", "env.horizon=10", "policy.hidden_sizes=[8]"]
    maml = config.replace("promp", "maml")
    args = ["bench", "maml", "--config", f"experiments/{config}.yaml", "--compare", f"experiments/{maml}.yaml",
            "--iterations", "1", "--threads", "1"]
    assert main(sum((["--set", s] for s in small), args)) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (out["algo"], out["compare"]["algo"]) == ("promp", "maml")
    assert out["overrides"] == small
    for r in (out, out["compare"]):
        assert r["seconds_per_iteration"] > 0 and r["update_s"] > 0
        assert r["sampling_s"] + r["adaptation_s"] + r["update_s"] <= r["seconds_per_iteration"] * 1.01
    assert out["ratio"] == pytest.approx(out["seconds_per_iteration"] / out["compare"]["seconds_per_iteration"])
    # MAML-TRPO's line search, per timed iteration (ProMP has none)
    assert len(out["compare"]["line_search_accepted"]) == 1 and out["compare"]["line_search_backtracks"][0] >= 0
    assert "line_search_accepted" not in out
