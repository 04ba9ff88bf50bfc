"""Per-step info scalars (``info_scalars`` of a task distribution, e.g. Meta-World's ``success``): the
collector records them as [T, B] tensors, masked like rewards, on every backend; an episode's value is
its maximum over its valid steps (success at any step)."""

from __future__ import annotations

import dataclasses

import gymnasium as gym
import numpy as np
import pytest
import torch

import metarl  # noqa: F401
from metarl.common.policies import make_policy
from metarl.sampling.collector import Collector
from metarl.sampling.task_shares import concat_columns as _concat_columns

from test_vector import TinyTaskEnv


class HitTaskEnv(TinyTaskEnv):
    """The tiny random walk, reporting ``info["hit"]`` = 1 within 0.5 of the offset and ``info["distance"]``;
    held-out tasks have offsets in [3, 4] or [-4, -3], grouped by sign (as Meta-World's test classes)."""

    info_scalars = ("hit", "distance")

    def sample_test_tasks(self, n, rng):
        return [type(t)(float(np.sign(t.offset) * 3 + t.offset / 2)) for t in self.sample_tasks(n, rng)]

    @staticmethod
    def task_group(task):
        if abs(task.offset) <= 2.0:
            return "training task"  # never seen in evaluation, which draws from sample_test_tasks
        return "right" if task.offset > 0 else "left"

    def step(self, action):
        obs, reward, terminated, truncated, _ = super().step(action)
        return obs, reward, terminated, truncated, {"hit": float(-reward < 0.5), "distance": -reward, "name": "x"}


HIT_ID = "thirdparty/Hit-v0"
if HIT_ID not in gym.registry:
    gym.register(HIT_ID, entry_point=HitTaskEnv, max_episode_steps=10)


def _collect(backend="auto", episodes_per_trial=1):
    c = Collector(HIT_ID, seed=3, backend=backend)
    torch.manual_seed(0)
    policy = make_policy(c.observation_space, c.action_space, False, (8,))
    tasks = c.sample_tasks(4, np.random.default_rng(0))
    batch = c.collect(policy, tasks, 6, episodes_per_trial=episodes_per_trial)
    c.close()
    return batch


@pytest.mark.parametrize("episodes_per_trial", [1, 3])
def test_info_scalars_are_recorded_and_masked(episodes_per_trial):
    b = _collect(episodes_per_trial=episodes_per_trial)
    assert set(b.infos) == {"hit", "distance"}  # only the declared scalars; "name" is not one
    valid = b.valid.bool()
    assert not bool(valid.all())  # some episodes ended early
    # distance = -reward on every real step, 0 on masked ones (as rewards)
    assert torch.equal(b.infos["distance"], -b.rewards)
    assert torch.equal(b.infos["hit"][valid], (-b.rewards[valid] < 0.5).float())
    assert torch.all(b.infos["hit"][~valid] == 0)
    # an episode's value: the max over its valid steps, by a loop over episodes
    E, H, B = b.episodes_per_trial, b.horizon, b.num_columns
    expected = torch.zeros(E, B)
    for e in range(E):
        for col in range(B):
            rows = slice(e * H, (e + 1) * H)
            expected[e, col] = b.infos["distance"][rows, col][valid[rows, col]].max()
    assert torch.equal(b.episode_info_max("distance"), expected)
    hit = b.episode_info_max("hit")
    assert torch.allclose(b.mean_info_max_per_task("hit"), hit.mean(0).reshape(4, -1).mean(1))
    assert 0 < float(hit.mean()) < 1  # both outcomes occur, so the check above can fail


def test_missing_info_scalar_is_one_line():
    b = _collect()
    with pytest.raises(KeyError, match="no per-step info 'success' .*it has: hit, distance"):
        b.episode_info_max("success")


def test_info_scalars_on_subproc_and_across_ray_shares():
    local = _collect()
    sub = _collect("subproc")
    for key in local.infos:
        assert torch.equal(local.infos[key], sub.infos[key]), key
    # two shares of whole tasks, concatenated as the Ray collector does
    half = local.num_columns // 2

    def share(cols):
        fields = {f.name: getattr(local, f.name) for f in dataclasses.fields(local)}
        for name, value in fields.items():
            if isinstance(value, torch.Tensor) and name != "task_index":
                fields[name] = value[:, cols]
        fields["infos"] = {k: v[:, cols] for k, v in local.infos.items()}
        fields["task_index"] = local.task_index[cols] - local.task_index[cols][0]
        fields["num_tasks"] = local.num_tasks // 2
        return type(local)(**fields)

    merged = _concat_columns([share(slice(0, half)), share(slice(half, None))], local.num_tasks)
    for key in local.infos:
        assert torch.equal(merged.infos[key], local.infos[key]), key


@pytest.mark.parametrize("algo", ["maml", "rl2"])
def test_success_style_rates_reach_progress_evaluation_and_plots(algo, tmp_path, capsys):
    """The reports of an env with info indicators and a held-out set (what Meta-World uses), end to end."""
    import csv
    import json

    from metarl.cli import main
    from metarl.evaluation.plots import plot_training

    run = tmp_path / "run"
    config = tmp_path / "hit.yaml"
    config.write_text(f"algo: {algo}\n")
    sets = [f"algo={algo}", f"env.id={HIT_ID}", "train.iterations=2", "train.show_progress=false",
            "train.eval_every=2", "train.eval_tasks=4", "policy.hidden_sizes=[8]"]
    sets += (["maml.meta_batch_size=3", "maml.episodes_per_task=2"] if algo == "maml" else
             ["rl2.trials_per_iteration=4", "rl2.minibatches=1", "rl2.episodes_per_trial=2"])
    assert main(["train", str(config), "--run-dir", str(run)] + [a for kv in sets for a in ("--set", kv)]) == 0
    with open(run / "progress.csv") as f:
        rows = list(csv.DictReader(f))
    cols = (["pre_update/hit_rate", "post_update/hit_rate"] if algo == "maml"
            else ["hit_rate/episode_0", "hit_rate/episode_1"]) + ["meta_test/hit_rate_step0"]
    for col in cols:
        assert 0.0 <= float(rows[-1][col]) <= 1.0, col
    capsys.readouterr()
    assert main(["evaluate", str(run), "--tasks", "8", "--steps", "1"]) == 0
    assert "hit_rate by step" in capsys.readouterr().out
    out = run / "eval"
    summary = json.loads((out / "summary.json").read_text())
    method = algo
    # the held-out tasks are the env's test set: their per-task hit rates, grouped by the env's task_group
    with open(out / "hit_rate_per_task.csv") as f:
        per_task = [r for r in csv.DictReader(f) if r["method"] == method and r["step"] == "0"]
    groups = {r["group"] for r in per_task}
    assert len(per_task) == 8 and groups <= {"left", "right"}  # held-out tasks only
    for group, curves in summary["hit_rate_by_group"].items():
        values = [float(r["hit_rate"]) for r in per_task if r["group"] == group]
        assert curves[method][0]["n_tasks"] == len(values)
        assert curves[method][0]["mean"] == pytest.approx(np.mean(values))
    overall = summary["hit_rate"][method][0]
    assert overall["mean"] == pytest.approx(np.mean([float(r["hit_rate"]) for r in per_task]))
    for name in ("hit_rate.csv", "hit_rate.png", "hit_rate_by_group.csv", "hit_rate_by_group.png", "adaptation.csv"):
        assert (out / name).is_file(), name
    assert "distance_rate" in summary  # every declared indicator is reported (distance is not 0/1 here)
    png = plot_training([run], tmp_path / "training.png")
    assert png.is_file() and png.stat().st_size > 0
    capsys.readouterr()
    assert main(["plot", str(run), "--curves", "hit_rate", "--out", str(tmp_path / "rates.png")]) == 0
    assert (tmp_path / "rates.png").is_file()
    assert main(["plot", str(run), "--curves", "success_rate"]) == 2
    assert "no success_rate curves found" in capsys.readouterr().err


def test_evaluation_in_task_batches(tmp_path):
    """eval.task_batch: the test tasks adapted a batch at a time, batch 0 with the evaluation seed (so its
    per-task values are those of a direct evaluation of those tasks), later batches with seeds of their own."""
    import csv
    from dataclasses import replace

    from metarl.evaluation.curves import adaptation_curves, eval_collector
    from metarl.experiment import evaluate_run, load_config, load_run
    from metarl.train import train

    config = tmp_path / "hit.yaml"
    config.write_text(f"algo: maml\nenv: {{id: {HIT_ID}}}\npolicy: {{hidden_sizes: [8]}}\n"
                      "maml: {meta_batch_size: 2, episodes_per_task: 2}\ntrain: {iterations: 1, show_progress: false}\n")
    run = train(load_config(config), tmp_path / "run")

    def per_task(out):
        evaluate_run(run, steps=1, tasks=8, overrides=[f"eval.task_batch={out[1]}"] if out[1] else [],
                     out_dir=tmp_path / out[0])
        # distance_rate: the episode's largest distance, a continuous value (unlike the 0/1 hit)
        with open(tmp_path / out[0] / "distance_rate_per_task.csv") as f:
            return [float(r["distance_rate"]) for r in csv.DictReader(f) if r["method"] == "maml" and r["step"] == "1"]

    whole, batched = per_task(("whole", None)), per_task(("batched", 3))
    cfg, exp, _ = load_run(run, None)
    ev = replace(cfg.eval, steps=1, tasks=8, episodes_per_task=cfg.maml.episodes_per_task)
    collector = eval_collector(cfg, ev)
    tasks = collector.sample_test_tasks(8, np.random.default_rng(ev.seed))
    direct = adaptation_curves(exp.algo, tasks[:3], collector, ev)["distance_rate"][1]
    direct_all = adaptation_curves(exp.algo, tasks, eval_collector(cfg, ev), ev)["distance_rate"][1]
    assert batched[:3] == direct.tolist() and whole == direct_all.tolist() and len(batched) == 8
    assert all(a != b for a, b in zip(batched, whole))  # collected apart: other column seeds, other episodes
