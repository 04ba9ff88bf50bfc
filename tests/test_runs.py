"""Bad input to ``metarl`` gets one clear line on stderr, no traceback, exit status 2; run-directory
safety (existing runs, --resume); unreadable and foreign-version checkpoints."""

from __future__ import annotations

import shutil
import sys
import textwrap
import warnings
from pathlib import Path

import gymnasium as gym
import pytest
import torch

from metarl.common.checkpoint import (
    FORMAT_VERSION,
    CheckpointError,
    CheckpointVersionError,
    CheckpointWarning,
    list_checkpoints,
    load_latest_checkpoint,
    save_checkpoint,
)
from metarl.cli import main

ROOT = Path(__file__).resolve().parents[1]
SINUSOID = str(ROOT / "experiments" / "sinusoid_maml.yaml")
TINY = [
    "--set", "train.iterations=2", "--set", "train.checkpoint_every=1", "--set", "train.show_progress=false",
    "--set", "maml.meta_batch_size=2", "--set", "policy.hidden_sizes=[8]", "--set", "collector.num_threads=1",
    "--set", "eval.tasks=3", "--set", "eval.steps=1",
]


def run_cli(capsys, args: list[str]) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(capsys, args, *fragments) -> str:
    code, _, err = run_cli(capsys, args)
    assert code == 2, err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("metarl: error: "), err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory) -> Path:
    """A finished two-iteration sinusoid run with checkpoints at iterations 1 and 2 (copy before changing)."""
    run = tmp_path_factory.mktemp("runs") / "run"
    assert main(["train", SINUSOID, *TINY, "--run-dir", str(run)]) == 0
    return run


@pytest.fixture
def run_copy(trained_run, tmp_path) -> Path:
    target = tmp_path / "run"
    shutil.copytree(trained_run, target)
    return target


# --------------------------------------------------------------------------------- config input


def test_missing_config_file(capsys, tmp_path):
    missing = tmp_path / "nope.yaml"
    assert_one_line_error(capsys, ["train", missing], f"config file not found: {missing}")
    assert_one_line_error(capsys, ["config", missing], "config file not found")


def test_malformed_yaml_names_the_line(capsys, tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("algo: maml\nmaml:\n  inner_lr: 0.1\n  meta_batch_size: [3\nseed: 1\n")
    # parsing fails at line 5; the bracket left open at line 4 is named too
    assert_one_line_error(capsys, ["train", path], f"malformed YAML in {path} at line 5, column",
                          "(while parsing a flow sequence at line 4)")
    path.write_text("seed: 1\nmaml:\n  inner_lr: 0.1\n   outer: adam\n")
    assert_one_line_error(capsys, ["config", path], "at line 4, column 9: mapping values are not allowed here")
    path.write_text("maml:\n  inner_lr: 0.1\n  inner_lr: 0.2\n")
    assert_one_line_error(capsys, ["config", path], "duplicate key 'inner_lr'", "line 3")


def test_unknown_key_suggests_the_nearest(capsys, tmp_path):
    path = tmp_path / "typo.yaml"
    path.write_text("maml:\n  inner_lrr: 0.1\n")
    assert_one_line_error(capsys, ["train", path], "unknown config key 'maml.inner_lrr'", "did you mean 'maml.inner_lr'?")
    assert_one_line_error(capsys, ["config", SINUSOID, "--set", "maml.metabatch_size=3"],
                          "unknown config key 'maml.metabatch_size'", "did you mean 'maml.meta_batch_size'?")
    # a key put in the wrong section points to where it lives
    assert_one_line_error(capsys, ["config", "--set", "max_kl=0.1"], "did you mean 'maml.max_kl'?")


def test_wrong_type(capsys):
    assert_one_line_error(capsys, ["config", SINUSOID, "--set", "maml.inner_lr=fast"],
                          "maml.inner_lr: expected a float, got 'fast' (str)")
    assert_one_line_error(capsys, ["train", SINUSOID, "--set", "maml.meta_batch_size=2.5"],
                          "maml.meta_batch_size: expected an int")
    assert_one_line_error(capsys, ["config", "--set", "maml.outer=adm"], "maml.outer", "did you mean 'adam'?")


@pytest.mark.parametrize("override,message", [
    ("maml.inner_lr=-0.1", "maml.inner_lr = -0.1 is out of range: must be > 0"),
    ("maml.max_kl=0", "maml.max_kl = 0.0 is out of range: must be > 0"),
    ("maml.max_kl=-0.01", "maml.max_kl = -0.01 is out of range: must be > 0"),
    ("maml.episodes_per_task=0", "maml.episodes_per_task = 0 is out of range: must be >= 1"),
    ("rl2.episodes_per_trial=0", "rl2.episodes_per_trial = 0 is out of range: must be >= 1"),
    ("maml.meta_batch_size=0", "maml.meta_batch_size = 0 is out of range: must be >= 1"),
])
def test_out_of_range(capsys, tmp_path, override, message):
    run = tmp_path / "run"
    assert_one_line_error(capsys, ["train", SINUSOID, "--set", override, "--run-dir", run], message)
    assert not run.exists()  # nothing is created for a config that does not validate


def test_usage_errors_exit_2(capsys, tmp_path):
    assert_one_line_error(capsys, ["train", "--set", "seed=1"], "train needs a CONFIG.yaml")
    assert_one_line_error(capsys, ["config", "--set", "maml.inner_lr"], "--set expects key=value")
    assert_one_line_error(capsys, ["train", SINUSOID, "--import", "no_such_module_xyz", "--run-dir", tmp_path / "r"],
                          "--import no_such_module_xyz", "No module named 'no_such_module_xyz'")


# --------------------------------------------------------------------------------- environments


def test_unknown_env_id_lists_registered(capsys, tmp_path):
    run = tmp_path / "run"
    line = assert_one_line_error(capsys, ["train", SINUSOID, *TINY, "--set", "env.id=metarl/Sinusoid-v9", "--run-dir", run],
                                 "unknown environment id 'metarl/Sinusoid-v9'", "--import MODULE")
    for env_id in ("metarl/Sinusoid-v0", "metarl/Navigation2D-v0", "metarl/HalfCheetahVel-v0",
                   "metarl/HalfCheetahDir-v0", "metarl/Bandit-v0", "metarl/TabularMDP-v0"):
        assert env_id in line
    assert not run.exists()  # the failed start left no run behind


NOT_A_TASK_ENV = '''
import gymnasium as gym
import numpy as np


class PlainEnv(gym.Env):
    observation_space = gym.spaces.Box(-1.0, 1.0, shape=(1,), dtype=np.float32)
    action_space = gym.spaces.Box(-1.0, 1.0, shape=(1,), dtype=np.float32)

    def get_task(self):
        return None

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return np.zeros(1, dtype=np.float32), {}

    def step(self, action):
        return np.zeros(1, dtype=np.float32), 0.0, False, False, {}


gym.register("plainpkg/Plain-v0", entry_point=PlainEnv, max_episode_steps=5)
'''


def test_env_without_task_methods(capsys, tmp_path, monkeypatch):
    (tmp_path / "plain_env_module.py").write_text(textwrap.dedent(NOT_A_TASK_ENV))
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        assert_one_line_error(
            capsys,
            ["train", SINUSOID, *TINY, "--import", "plain_env_module", "--set", "env.id=plainpkg/Plain-v0",
             "--run-dir", tmp_path / "run"],
            "environment 'plainpkg/Plain-v0'", "is not a task distribution: it lacks sample_tasks, set_task",
        )
    finally:
        sys.modules.pop("plain_env_module", None)
        gym.registry.pop("plainpkg/Plain-v0", None)


WALK_ENV = """
import gymnasium as gym
import numpy as np


class WalkEnv(gym.Env):
    observation_space = gym.spaces.Box(-10.0, 10.0, shape=(1,), dtype=np.float32)
    action_space = gym.spaces.Box(-1.0, 1.0, shape=(1,), dtype=np.float32)
    goal = 0.0

    def sample_tasks(self, n, rng):
        return [float(g) for g in rng.uniform(-1.0, 1.0, size=n)]

    def set_task(self, task):
        self.goal = task

    def get_task(self):
        return self.goal

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.x = 0.0
        return np.zeros(1, dtype=np.float32), {}

    def step(self, action):
        self.x += float(action[0])
        return np.array([self.x], dtype=np.float32), -abs(self.x - self.goal), False, False, {}


gym.register("walkpkg/Walk-v0", entry_point=WalkEnv, max_episode_steps=4)
"""


def test_failed_start_leaves_no_run_behind(capsys, tmp_path, monkeypatch):
    (tmp_path / "walk_env_module.py").write_text(WALK_ENV)
    monkeypatch.syspath_prepend(str(tmp_path))
    run = tmp_path / "run"
    args = ["train", SINUSOID, *TINY, "--import", "walk_env_module", "--set", "env.id=walkpkg/Walk-v0",
            "--set", "maml.outer=trpo", "--run-dir", run]
    try:
        # fails in the first iteration, when the collector builds its vector env
        assert_one_line_error(capsys, [*args, "--set", "collector.backend=native"],
                              "'walkpkg/Walk-v0' has no native batched implementation")
        assert not run.exists()
        code, _, err = run_cli(capsys, args)  # the corrected command is not refused
        assert code == 0, err
        assert [i for i, _ in list_checkpoints(run)] == [1, 2]
    finally:
        sys.modules.pop("walk_env_module", None)
        gym.registry.pop("walkpkg/Walk-v0", None)


def test_import_of_a_broken_module_names_the_place(capsys, tmp_path, monkeypatch):
    (tmp_path / "broken_env_module.py").write_text("x = 1\nraise RuntimeError('boom')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        assert_one_line_error(capsys, ["envs", "--import", "broken_env_module"],
                              "--import broken_env_module: RuntimeError: boom", "broken_env_module.py:2")
    finally:
        sys.modules.pop("broken_env_module", None)


# ------------------------------------------------------------------------------ run directories


def test_existing_run_is_refused_unless_resume_or_overwrite(capsys, run_copy):
    before = sorted(p.name for p in (run_copy / "checkpoints").iterdir())
    assert_one_line_error(capsys, ["train", SINUSOID, *TINY, "--run-dir", run_copy],
                          f"run directory {run_copy} already holds a run", "--resume", "--overwrite")
    assert sorted(p.name for p in (run_copy / "checkpoints").iterdir()) == before  # untouched
    code, out, err = run_cli(capsys, ["train", SINUSOID, *TINY, "--set", "train.iterations=1", "--run-dir", run_copy,
                                      "--overwrite"])
    assert code == 0, err
    assert [i for i, _ in list_checkpoints(run_copy)] == [1]  # the old run's checkpoints are gone


def test_resume_without_checkpoint(capsys, run_copy, tmp_path):
    shutil.rmtree(run_copy / "checkpoints")
    assert_one_line_error(capsys, ["train", "--resume", run_copy], "--resume: no checkpoint in", "nothing to resume")
    assert_one_line_error(capsys, ["train", "--resume", "--run-dir", tmp_path / "empty"], "is not a run directory")


def test_malformed_run_config(capsys, run_copy):
    (run_copy / "config.yaml").write_text("algo: maml\nmaml: {inner_lr: 0.1\n")
    assert_one_line_error(capsys, ["train", "--resume", run_copy], "malformed YAML in", "config.yaml at line 3")
    assert_one_line_error(capsys, ["evaluate", run_copy], "malformed YAML in", "config.yaml at line 3")


def test_truncated_newest_checkpoint_falls_back_with_a_warning(run_copy):
    newest = list_checkpoints(run_copy)[-1][1]
    newest.write_bytes(newest.read_bytes()[:100])
    with pytest.warns(CheckpointWarning, match=r"iter_0000002\.pt cannot be read .*falling back to the previous"):
        state = load_latest_checkpoint(run_copy)
    assert state["iteration"] == 1
    # asking for that iteration explicitly is an error, not a silent substitute
    with pytest.raises(CheckpointError, match="cannot be read"):
        load_latest_checkpoint(run_copy, iteration=2)
    # every checkpoint unreadable: an error
    list_checkpoints(run_copy)[0][1].write_bytes(b"")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CheckpointWarning)
        with pytest.raises(CheckpointError, match="no readable checkpoint"):
            load_latest_checkpoint(run_copy)


def test_resume_from_truncated_checkpoint_warns_in_one_line(capsys, run_copy):
    newest = list_checkpoints(run_copy)[-1][1]
    newest.write_bytes(newest.read_bytes()[:100])
    code, out, err = run_cli(capsys, ["train", "--resume", run_copy])
    assert code == 0, err
    warning = [line for line in err.splitlines() if "falling back" in line]
    assert len(warning) == 1 and warning[0].startswith("metarl: warning: checkpoint "), err
    assert "Traceback" not in err
    # iteration 2 was run again from iteration 1's checkpoint
    assert load_latest_checkpoint(run_copy)["iteration"] == 2


def _rewrite_version(path: Path, version) -> None:
    state = torch.load(path, weights_only=False)
    state["format_version"] = version
    torch.save(state, path)


def test_other_format_version_is_named(capsys, run_copy):
    newest = list_checkpoints(run_copy)[-1][1]
    _rewrite_version(newest, FORMAT_VERSION + 1)
    with pytest.raises(CheckpointVersionError, match=rf"format version {FORMAT_VERSION + 1}; this metarl reads version {FORMAT_VERSION}"):
        load_latest_checkpoint(run_copy)
    assert_one_line_error(capsys, ["train", "--resume", run_copy], f"format version {FORMAT_VERSION + 1}",
                          f"reads version {FORMAT_VERSION}")
    # a file without any version (not a metarl checkpoint)
    torch.save({"iteration": 2}, newest)
    with pytest.raises(CheckpointVersionError, match="format version None"):
        load_latest_checkpoint(run_copy)


def test_save_keeps_the_newest_and_writes_atomically(tmp_path):
    for i in range(1, 6):
        save_checkpoint(tmp_path, i, {"x": i}, keep=2)
    assert [i for i, _ in list_checkpoints(tmp_path)] == [4, 5]
    assert not list((tmp_path / "checkpoints").glob("*.tmp"))
    assert load_latest_checkpoint(tmp_path)["x"] == 5


def test_evaluate_refuses_foreign_version_checkpoints(capsys, run_copy):
    for _, path in list_checkpoints(run_copy):
        _rewrite_version(path, FORMAT_VERSION + 1)
    assert_one_line_error(capsys, ["evaluate", run_copy], f"format version {FORMAT_VERSION + 1}")


def test_resume_refuses_config_changes(capsys, tmp_path):
    assert_one_line_error(capsys, ["train", "--resume", str(tmp_path), "--set", "maml.inner_lr=0.5"],
                          "--resume continues the run's saved config")
