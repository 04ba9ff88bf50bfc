"""``metarl bench``: speed figures measured in one run, printed as one JSON line each.

* ``collect``: env-steps/s of the Collector (policy in the loop, all columns in parallel) against the
  open-loop ``mujoco.rollout`` limit for the same model, batch size and thread count, and their ratio.
* ``maml``: seconds per meta-iteration of a config (MAML, ProMP or pretraining), split into sampling / inner
  adaptation / outer update; with ``--compare`` a second config timed alternately in the same run and the ratio.
* ``sinusoid``: milliseconds per meta-iteration of the MAML-paper sinusoid setting.

Absolute times depend on the machine; ratios measured in the same run are what carry over.
"""

from __future__ import annotations

import json
import os
import platform
import time

import numpy as np
import torch


def _machine() -> dict:
    return {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(), "machine": platform.machine(),
            "torch": torch.__version__}


def bench_collect(env_id: str = "metarl/HalfCheetahVel-v0", num_tasks: int = 40, episodes_per_task: int = 20,
                  hidden_sizes=(100, 100), repeats: int = 2, backend: str = "auto") -> dict:
    """Closed-loop collection vs the open-loop physics limit (MuJoCo envs) for the same batch."""
    from metarl.sampling.collector import Collector
    from metarl.common.policies import make_policy

    if backend == "ray":
        # Ray actors (collector.num_workers' default, 2) on the cluster in RAY_ADDRESS, else a local Ray
        from metarl.sampling.ray_collector import RayCollector

        collector = RayCollector(env_id, seed=0)
    else:
        collector = Collector(env_id, seed=0, backend=backend)
    tasks = collector.sample_tasks(num_tasks, np.random.default_rng(0))
    policy = make_policy(collector.observation_space, collector.action_space, collector.supervised, hidden_sizes)
    collector.collect(policy, tasks, episodes_per_task)  # warm-up: builds the vector env and thread pool
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        batch = collector.collect(policy, tasks, episodes_per_task)
        best = min(best, time.perf_counter() - t)
    steps = batch.num_steps
    out = {"bench": "collect", "env": env_id, "batch": num_tasks * episodes_per_task, "horizon": collector.horizon,
           "collector_steps_per_s": steps / best}
    if backend == "ray":
        out["ray_workers"] = collector.num_workers
    venv = collector._venv(num_tasks * episodes_per_task)
    if hasattr(venv, "model") and hasattr(venv, "get_state"):
        limit = _open_loop_limit(venv, collector.horizon, repeats)
        out.update(open_loop_steps_per_s=limit, ratio=out["collector_steps_per_s"] / limit,
                   gymnasium_single_env_steps_per_s=_single_env_rate(env_id))
    collector.close()
    return {**out, **_machine()}


def _open_loop_limit(venv, horizon: int, repeats: int) -> float:
    """env-steps/s of one open-loop ``mujoco.rollout`` call over the whole batch and horizon."""
    import mujoco
    import mujoco.rollout

    venv.reset()
    state0 = np.ascontiguousarray(venv.get_state())
    B, model, fs = state0.shape[0], venv.model, venv.frame_skip
    threads = getattr(venv, "num_threads", os.cpu_count() or 1)
    actions = np.random.default_rng(0).uniform(-1, 1, (B, horizon, model.nu))
    control = np.ascontiguousarray(np.repeat(actions, fs, axis=1))
    out = np.empty((B, horizon * fs, state0.shape[1]))
    datas = [mujoco.MjData(model) for _ in range(max(threads, 1))]
    roll = mujoco.rollout.Rollout(nthread=threads if threads > 1 else 0)
    best = float("inf")
    try:
        for _ in range(repeats + 1):  # the first call warms the pool up
            t = time.perf_counter()
            roll.rollout([model] * B, datas, state0, control, control_spec=mujoco.mjtState.mjSTATE_CTRL.value,
                         skip_checks=True, nstep=horizon * fs, state=out)
            best = min(best, time.perf_counter() - t)
    finally:
        roll.close()
    return B * horizon / best


def _single_env_rate(env_id: str, steps: int = 4000) -> float:
    """env-steps/s of one Gymnasium environment stepped in a Python loop (random actions)."""
    import gymnasium as gym

    env = gym.make(env_id, disable_env_checker=True, max_episode_steps=steps + 1)
    env.reset(seed=0)
    actions = [env.action_space.sample() for _ in range(steps)]
    t = time.perf_counter()
    for a in actions:
        env.step(a)
    rate = steps / (time.perf_counter() - t)
    env.close()
    return rate


def bench_maml(config: str = "experiments/navigation2d_maml.yaml", iterations: int = 3, overrides=(),
               compare: str | None = None) -> dict:
    """Seconds per meta-iteration (after one warm-up iteration), split by phase; any algorithm with
    meta-iterations (maml, promp, pretrain). With ``compare``, a second config (same overrides) is
    timed in the same run, its iterations alternating with the first's so both see the same load,
    and ``ratio`` is the first's seconds per iteration over the second's."""
    from metarl.experiment import build_experiment, load_config

    names = [config] if compare is None else [config, compare]
    exps = [build_experiment(load_config(name, list(overrides))) for name in names]
    for exp in exps:
        exp.algo.train_iteration(exp.task_rng)  # warm-up
    totals: list[dict[str, float]] = [{"wall": 0.0} for _ in exps]
    for _ in range(iterations):
        for exp, total in zip(exps, totals):
            t0 = time.perf_counter()
            stats = exp.algo.train_iteration(exp.task_rng)
            total["wall"] += time.perf_counter() - t0
            for k, v in stats.items():
                if k.startswith("time/"):
                    total[k] = total.get(k, 0.0) + v
    results = []
    for name, exp, total in zip(names, exps, totals):
        r = {"config": name, "algo": exp.cfg.algo, "seconds_per_iteration": total.pop("wall") / iterations}
        if exp.cfg.algo == "maml":
            r["estimator"] = exp.cfg.maml.estimator
        r.update({k.replace("time/", "").replace("_s", "") + "_s": v / iterations for k, v in total.items()})
        exp.collector.close()
        results.append(r)
    out = {"bench": "maml", **results[0], "overrides": list(overrides)}
    if compare is not None:
        out["compare"] = results[1]
        out["ratio"] = results[0]["seconds_per_iteration"] / results[1]["seconds_per_iteration"]
    return {**out, **_machine()}


def bench_sinusoid(iterations: int = 300) -> dict:
    """Milliseconds per meta-iteration: meta-batch 25, K = 10, one inner step, 2x40 ReLU, Adam."""
    r = bench_maml("experiments/sinusoid_maml.yaml", iterations)
    return {"bench": "sinusoid", "ms_per_iteration": 1000 * r["seconds_per_iteration"],
            **{k: v for k, v in r.items() if k.endswith("_s") and k != "seconds_per_iteration"}, **_machine()}


def run(which: list[str], args) -> None:
    for name in which:
        if name == "collect":
            result = bench_collect(args.env, args.tasks, args.episodes, repeats=args.repeats, backend=args.backend)
        elif name == "maml":
            result = bench_maml(args.config, args.iterations, args.set or [], getattr(args, "compare", None))
        elif name == "sinusoid":
            result = bench_sinusoid()
        else:
            raise ValueError(f"unknown benchmark {name!r}; expected collect, maml or sinusoid")
        print(json.dumps(result), flush=True)
