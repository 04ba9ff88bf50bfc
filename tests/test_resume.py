"""Runs that survive: SIGKILL mid-run then --resume ends exactly where an uninterrupted run ends;
the same seed gives bit-identical results; SIGTERM stops cleanly with a checkpoint."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from metarl.common.checkpoint import list_checkpoints, load_latest_checkpoint

SINUSOID = [
    "experiments/sinusoid_maml.yaml",
    "--set", "train.iterations=60", "--set", "train.checkpoint_every=10", "--set", "train.log_every=1",
    "--set", "train.keep_checkpoints=10", "--set", "train.show_progress=false",
    "--set", "policy.hidden_sizes=[16,16]", "--set", "collector.num_threads=1",
]
NAVIGATION = [
    "experiments/navigation2d_maml.yaml",
    "--set", "train.iterations=12", "--set", "train.checkpoint_every=3", "--set", "train.keep_checkpoints=10",
    "--set", "train.show_progress=false", "--set", "env.horizon=15", "--set", "maml.meta_batch_size=3",
    "--set", "maml.episodes_per_task=4", "--set", "policy.hidden_sizes=[16]", "--set", "collector.num_threads=1",
]
CHEETAH = [
    "experiments/halfcheetah_dir_maml.yaml",
    "--set", "train.iterations=2", "--set", "train.checkpoint_every=1", "--set", "train.keep_checkpoints=10",
    "--set", "train.show_progress=false", "--set", "env.horizon=20", "--set", "maml.meta_batch_size=2",
    "--set", "maml.episodes_per_task=3", "--set", "policy.hidden_sizes=[16]",
]
PEARL = [
    "experiments/navigation2d_pearl.yaml",
    "--set", "train.iterations=6", "--set", "train.checkpoint_every=2", "--set", "train.keep_checkpoints=10",
    "--set", "train.show_progress=false", "--set", "train.eval_every=0", "--set", "env.horizon=10",
    "--set", "pearl.num_train_tasks=6", "--set", "pearl.tasks_per_iteration=2", "--set", "pearl.gradient_steps=10",
    "--set", "pearl.hidden_sizes=[16]", "--set", "pearl.encoder_hidden_sizes=[16]", "--set", "pearl.meta_batch=3",
    "--set", "pearl.batch_size=16", "--set", "pearl.context_batch_size=8", "--set", "pearl.replay_capacity=500",
]
ROOT = Path(__file__).resolve().parents[1]


def _train(args, run_dir, extra=()):
    cmd = [sys.executable, "-m", "metarl.cli", "train", *args, "--run-dir", str(run_dir), *extra]
    return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _rows(run_dir):
    with open(Path(run_dir) / "progress.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    # wall-clock columns cannot match between two runs; everything else must
    return [{k: v for k, v in r.items() if not k.startswith("time/")} for r in rows]


def _final_params(run_dir):
    return load_latest_checkpoint(run_dir)["algo"]["policy"]


def _kill_after_checkpoint(proc, run_dir, min_iteration, timeout=240):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = list_checkpoints(run_dir)
        if found and found[-1][0] >= min_iteration:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return found[-1][0]
        if proc.poll() is not None:
            pytest.fail(f"run ended before it could be killed: {proc.stderr.read()}")
        time.sleep(0.02)
    proc.kill()
    pytest.fail("no checkpoint appeared in time")


@pytest.mark.parametrize("args", [SINUSOID, NAVIGATION, NAVIGATION + ["--set", "maml.fisher_subsample=0.5"], PEARL,
                                  NAVIGATION + ["--set", "collector.backend=process_pool", "--set", "collector.num_workers=2"]],
                         ids=["sinusoid", "navigation", "navigation_fisher_subsample", "pearl", "navigation_process_pool"])
def test_sigkill_then_resume_equals_uninterrupted_run(tmp_path, args):
    full = _train(args, tmp_path / "full")
    out, err = full.communicate(timeout=600)
    assert full.returncode == 0, err

    killed = _train(args, tmp_path / "killed")
    total = int(next(a for a in args if a.startswith("train.iterations=")).split("=")[1])
    every = int(next(a for a in args if a.startswith("train.checkpoint_every=")).split("=")[1])
    at = _kill_after_checkpoint(killed, tmp_path / "killed", min_iteration=2 * every)
    assert at < total, "the run finished before the kill; the test proves nothing"
    resumed = _train(["--resume"], tmp_path / "killed")
    out, err = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, err

    assert _rows(tmp_path / "killed") == _rows(tmp_path / "full")
    a, b = _final_params(tmp_path / "full"), _final_params(tmp_path / "killed")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_same_seed_is_bit_identical_and_other_seed_differs(tmp_path):
    args = SINUSOID[:1] + ["--set", "train.iterations=20"] + SINUSOID[3:]
    procs = [_train(args, tmp_path / "a"), _train(args, tmp_path / "b"), _train(args, tmp_path / "c", ["--seed", "1"])]
    for p in procs:
        _, err = p.communicate(timeout=600)
        assert p.returncode == 0, err
    a, b, c = (_final_params(tmp_path / n) for n in "abc")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert _rows(tmp_path / "a") == _rows(tmp_path / "b")
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_sigterm_stops_cleanly_with_a_checkpoint(tmp_path):
    args = SINUSOID[:1] + ["--set", "train.iterations=100000"] + SINUSOID[3:]
    proc = _train(args, tmp_path / "run")
    deadline = time.monotonic() + 120
    while not list_checkpoints(tmp_path / "run") and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    last = list_checkpoints(tmp_path / "run")[-1][0]
    rows = _rows(tmp_path / "run")
    assert int(rows[-1]["iteration"]) == last  # the checkpoint matches the last logged iteration
    assert last < 100000


def test_nan_stops_the_run_and_never_reaches_a_checkpoint(tmp_path, monkeypatch):
    from metarl.algos.maml import MAML
    from metarl.experiment import RunError, load_config
    from metarl.train import train

    original = MAML.train_iteration
    calls = {"n": 0}

    def poisoned(self, rng):
        stats = original(self, rng)
        calls["n"] += 1
        if calls["n"] == 7:  # a NaN appears in the parameters after iteration 7
            with torch.no_grad():
                next(self.policy.parameters())[0].fill_(float("nan"))
        return stats

    monkeypatch.setattr(MAML, "train_iteration", poisoned)
    cfg = load_config(ROOT / SINUSOID[0], [a for a in SINUSOID[1:] if a != "--set"] + ["train.checkpoint_every=5"])
    with pytest.raises(RunError, match=r"non-finite parameter .* at iteration 7"):
        train(cfg, tmp_path / "run")
    assert [i for i, _ in list_checkpoints(tmp_path / "run")] == [5]
    state = load_latest_checkpoint(tmp_path / "run")
    assert all(torch.isfinite(v).all() for v in state["algo"]["policy"].values())
    assert max(int(r["iteration"]) for r in _rows(tmp_path / "run")) == 6  # the NaN iteration is not logged


def test_resume_can_extend_a_finished_run(tmp_path):
    # 30 iterations, then --resume with train.iterations=60: the same rows and parameters as one
    # 60-iteration run, so a run longer than a session can be planned in parts.
    full = _train(SINUSOID, tmp_path / "full")
    _, err = full.communicate(timeout=600)
    assert full.returncode == 0, err
    short = SINUSOID[:1] + ["--set", "train.iterations=30"] + SINUSOID[3:]
    first = _train(short, tmp_path / "parts")
    _, err = first.communicate(timeout=600)
    assert first.returncode == 0, err
    assert len(_rows(tmp_path / "parts")) == 30
    longer = _train(["--resume", "--set", "train.iterations=60"], tmp_path / "parts")
    _, err = longer.communicate(timeout=600)
    assert longer.returncode == 0, err
    assert _rows(tmp_path / "parts") == _rows(tmp_path / "full")
    a, b = _final_params(tmp_path / "full"), _final_params(tmp_path / "parts")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert "iterations: 60" in (tmp_path / "parts" / "config.yaml").read_text()
    # anything that would change the iterations already run is still refused
    refused = _train(["--resume", "--set", "train.iterations=90", "--set", "maml.inner_lr=0.5"], tmp_path / "parts")
    _, err = refused.communicate(timeout=600)
    assert refused.returncode == 2 and "maml.inner_lr=0.5 would change it" in err


def test_resume_may_change_mujoco_stepping_threads(tmp_path):
    # Threads only split the cheetahs between them, so one iteration on 1 thread resumed on 2 threads
    # gives the rows and parameters of two iterations on 2 threads: a long run can give up a core.
    full = _train(CHEETAH + ["--set", "collector.num_threads=2"], tmp_path / "full")
    _, err = full.communicate(timeout=600)
    assert full.returncode == 0, err
    first = _train(CHEETAH[:1] + ["--set", "train.iterations=1"] + CHEETAH[3:] + ["--set", "collector.num_threads=1"],
                   tmp_path / "parts")
    _, err = first.communicate(timeout=600)
    assert first.returncode == 0, err
    second = _train(["--resume", "--set", "train.iterations=2", "--set", "collector.num_threads=2"], tmp_path / "parts")
    _, err = second.communicate(timeout=600)
    assert second.returncode == 0, err
    assert len(_rows(tmp_path / "full")) == 2 and _rows(tmp_path / "parts") == _rows(tmp_path / "full")
    a, b = _final_params(tmp_path / "full"), _final_params(tmp_path / "parts")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert "num_threads: 2" in (tmp_path / "parts" / "config.yaml").read_text()


def test_resume_may_change_subproc_workers(tmp_path):
    # subproc workers only split the columns (batches equal in-process ones bit for bit), so a run may
    # continue on another number of worker processes, e.g. a Meta-World run moved to a bigger machine.
    args = NAVIGATION[:1] + ["--set", "train.iterations=4"] + NAVIGATION[3:] + ["--set", "collector.backend=subproc"]
    full = _train(args + ["--set", "collector.num_workers=2"], tmp_path / "full")
    _, err = full.communicate(timeout=600)
    assert full.returncode == 0, err
    first = _train(args + ["--set", "train.iterations=3", "--set", "collector.num_workers=1"], tmp_path / "parts")
    _, err = first.communicate(timeout=600)
    assert first.returncode == 0, err
    second = _train(["--resume", "--set", "train.iterations=4", "--set", "collector.num_workers=2"], tmp_path / "parts")
    _, err = second.communicate(timeout=600)
    assert second.returncode == 0, err
    assert len(_rows(tmp_path / "full")) == 4 and _rows(tmp_path / "parts") == _rows(tmp_path / "full")
    a, b = _final_params(tmp_path / "full"), _final_params(tmp_path / "parts")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert "num_workers: 2" in (tmp_path / "parts" / "config.yaml").read_text()


SLOW_WALK = """
import time

import gymnasium as gym

from test_vector import TinyTaskEnv


class SlowWalk(TinyTaskEnv):
    \"\"\"test_vector's third-party walk, 5 ms a step, so that a training iteration is nearly all collection.\"\"\"

    def step(self, action):
        time.sleep(0.005)
        return super().step(action)


gym.register("slowtest/SlowWalk-v0", entry_point=SlowWalk, max_episode_steps=10)
"""


@pytest.mark.parametrize("backend", ["subproc", "process_pool"])
def test_ctrl_c_on_a_worker_process_run_stops_cleanly_with_a_checkpoint(tmp_path, backend):
    """SIGINT to the whole process group, as a terminal's Ctrl-C sends it, while the worker processes are
    collecting (the env sleeps, so an iteration is nearly all collection): the iteration under way must
    finish with the same workers and be checkpointed, with no error. The workers (subproc: stepping envs;
    process_pool: whole step loops) ignore SIGINT (tests/test_subproc.py checks that alone); here they also
    inherit train's own handler by fork."""
    (tmp_path / "slow_walk_env.py").write_text(SLOW_WALK)
    args = ["experiments/navigation2d_maml.yaml", "--import", "slow_walk_env",
            "--set", "env.id=slowtest/SlowWalk-v0", "--set", "train.iterations=100000",
            "--set", "train.checkpoint_every=1", "--set", "train.keep_checkpoints=10",
            "--set", "train.show_progress=false", "--set", "maml.meta_batch_size=3", "--set", "maml.episodes_per_task=4",
            "--set", "policy.hidden_sizes=[16]", "--set", f"collector.backend={backend}"]
    cmd = [sys.executable, "-m", "metarl.cli", "train", *args, "--run-dir", str(tmp_path / "run")]
    path = [str(tmp_path), str(ROOT / "tests"), os.environ.get("PYTHONPATH")]  # the module and test_vector
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, path))}
    # its own session and process group, so that the signal below reaches the run and its workers only
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, env=env)
    deadline = time.monotonic() + 120
    while not list_checkpoints(tmp_path / "run") and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    time.sleep(0.2)  # well inside the next iteration's collection (about 0.3 s of each 0.6 s collection)
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert "died" not in err
    last = list_checkpoints(tmp_path / "run")[-1][0]
    assert int(_rows(tmp_path / "run")[-1]["iteration"]) == last
    assert 2 <= last < 100000  # the interrupted iteration was finished and checkpointed
