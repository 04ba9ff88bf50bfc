"""``metarl bench``: speed figures measured in one run, printed as one JSON line each.

* ``collect``: env-steps/s of the Collector (policy in the loop, all columns in parallel) against one
  Gymnasium env stepped in a Python loop (``ratio_vs_single_env``; the target for Meta-World with
  ``--backend subproc`` on 2 cores is 1.7; with subproc also against W single-env loops run at once in W
  processes, ``fraction_of_parallel_limit``: the limit of stepping envs one at a time, which a vector env
  that steps many envs' Python at once, as Meta-World reach-v3, push-v3 and pick-place-v3 do, can pass; for Meta-World also against one env running metaworld's own
  per-step code, ``ratio_vs_metaworld_own_single_env``), and for natively batched MuJoCo envs collected in this
  process against the open-loop ``mujoco.rollout`` limit for the same model, batch size and thread count
  (``ratio``); when the collector steps MuJoCo in two shares of threads (``auto`` on two threads) or in
  worker processes (``--backend process_pool``, with ``--workers``; ``--threads`` is then per worker), also
  the same collection in this process as one rollout over the whole batch on as many threads
  (``whole_batch_ratio``, ``shares_over_whole_batch``).
  Each figure is timed once per round, rounds interleaved (``--repeats`` of them), best round each.
* ``maml``: seconds per meta-iteration of a config (MAML, ProMP or pretraining), split into sampling / inner
  adaptation / outer update; with ``--compare`` a second config timed alternately in the same run and the ratio.
* ``fvp``: the outer update's Fisher-vector products against the bare matmuls they
  contain (metarl.bench_fvp).
* ``sinusoid``: milliseconds per meta-iteration of the MAML-paper sinusoid setting; ``--reference`` also
  times a plain ``torch.func`` MAML of the same setting in the same run (interleaved rounds, medians).
* ``pearl``: env-steps/s of PEARL's collection (its initial prior-z episodes of every training task through
  the Collector, z as a per-task input) and SAC gradient steps/s, with the replay buffers' memory bound, the
  step's matmul FLOPs and their rate as a fraction of a plain matmul's timed in between (same load).

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
                  hidden_sizes=(100, 100), repeats: int = 2, backend: str = "auto", env_kwargs: dict | None = None,
                  num_workers: int = 2, num_threads: int | None = None) -> dict:
    """Closed-loop collection vs one Gymnasium env in a loop, and vs the open-loop physics limit (MuJoCo
    envs), for the same batch. ``num_workers``: processes of ``backend`` subproc (and Ray actors);
    ``num_threads``: MuJoCo's stepping threads (``collector.num_threads``; None: all cores)."""
    from metarl.sampling.backends import make_collector
    from metarl.sampling.collector import Collector
    from metarl.common.policies import make_policy
    from metarl.sampling.vector import ThreadedVectorEnv, make_vector_env

    # ray: actors on the cluster in RAY_ADDRESS, else a local Ray; process_pool: --threads are each worker's
    # stepping threads (None: the cores divided among the workers)
    collector = make_collector(env_id, backend=backend, num_workers=num_workers, seed=0, env_kwargs=env_kwargs,
                               num_threads=num_threads)
    tasks = collector.sample_tasks(num_tasks, np.random.default_rng(0))
    policy = make_policy(collector.observation_space, collector.action_space, collector.supervised, hidden_sizes)
    collector.collect(policy, tasks, episodes_per_task)  # warm-up: builds the vector env and thread pool
    horizon, kwargs = collector.horizon, env_kwargs or {}
    # the local vector env (Ray collects in its actors: no open-loop reference is built for it here; the
    # process pool's workers step on this machine, so its reference is built below)
    venv = None if backend in ("ray", "process_pool") else collector._venv(num_tasks * episodes_per_task)

    def collector_rate() -> float:
        t = time.perf_counter()
        batch = collector.collect(policy, tasks, episodes_per_task)
        return batch.num_steps / (time.perf_counter() - t)

    # Every figure timed against the collector, each arm once per round, rounds interleaved: a host whose
    # speed drifts over minutes then moves both sides of a ratio alike. Each arm reports its best round.
    arms = {"collector_steps_per_s": collector_rate,
            "gymnasium_single_env_steps_per_s": lambda: _single_env_rate(env_id, horizon, kwargs)}
    if env_id.startswith("metarl/MetaWorld"):
        # The same loop with metaworld's own per-step code instead of our fast paths (envs/metaworld_fast.py):
        # what a user stepping metaworld's env gets, so this ratio counts both the cores and the fast paths.
        arms["metaworld_own_code_single_env_steps_per_s"] = lambda: _single_env_rate(
            env_id, horizon, kwargs, metaworld_own_code=True)
    if backend == "subproc":
        # What the cores give when each steps one env on its own: W single-env loops started together in W
        # processes. Measured, not assumed to be W x the single-env rate: shared caches, memory bandwidth,
        # clocks or SMT siblings can make busy cores slower each than one busy core.
        arms["parallel_single_env_steps_per_s"] = lambda: _parallel_single_env_rate(
            env_id, horizon, kwargs, collector.num_workers)
    own_venv = whole = None
    threads = None
    if isinstance(venv, ThreadedVectorEnv):  # the physics' limit is the whole batch's: one rollout, every core
        threads = sum(getattr(v, "num_threads", 1) for v in venv.venvs)
    elif backend == "process_pool" and _has_native_mujoco(env_id):  # the workers' threads, in one rollout
        threads = collector.num_workers * collector.worker_threads
    if threads is not None:
        venv = own_venv = make_vector_env(env_id, num_tasks * episodes_per_task, backend="native",
                                          num_threads=threads, **kwargs)
        venv.set_tasks([task for task in tasks for _ in range(episodes_per_task)])
        # and the same collection as one rollout over the whole batch (backend native), so that what the
        # shares' threads buy is a ratio measured in this run
        whole = Collector(env_id, seed=0, backend="native", env_kwargs=env_kwargs, num_threads=threads)
        whole.collect(policy, tasks, episodes_per_task)  # warm-up

        def whole_batch_rate() -> float:
            t = time.perf_counter()
            batch = whole.collect(policy, tasks, episodes_per_task)
            return batch.num_steps / (time.perf_counter() - t)

        arms["whole_batch_collector_steps_per_s"] = whole_batch_rate
    if hasattr(venv, "model") and hasattr(venv, "get_state"):  # natively batched MuJoCo: the physics' own limit
        arms["open_loop_steps_per_s"] = lambda: _open_loop_limit(venv, horizon, 1)
    rounds = {name: [] for name in arms}
    for _ in range(repeats):
        for name, arm in arms.items():
            rounds[name].append(arm())
    best = {name: max(rates) for name, rates in rounds.items()}
    ours = best["collector_steps_per_s"]
    out = {"bench": "collect", "env": env_id, "batch": num_tasks * episodes_per_task, "horizon": horizon,
           "collector_steps_per_s": ours, "rounds": repeats}
    if backend in ("ray", "subproc", "process_pool"):
        out["workers"] = collector.num_workers
    if backend == "process_pool":
        out["threads_per_worker"] = collector.worker_threads
    single = best["gymnasium_single_env_steps_per_s"]
    out.update(gymnasium_single_env_steps_per_s=single, ratio_vs_single_env=ours / single)
    if "metaworld_own_code_single_env_steps_per_s" in best:
        own = best["metaworld_own_code_single_env_steps_per_s"]
        out.update(metaworld_own_code_single_env_steps_per_s=own, ratio_vs_metaworld_own_single_env=ours / own)
    if "parallel_single_env_steps_per_s" in best:
        parallel = best["parallel_single_env_steps_per_s"]
        out.update(parallel_single_env_steps_per_s=parallel, fraction_of_parallel_limit=ours / parallel)
    if "open_loop_steps_per_s" in best:
        limit = best["open_loop_steps_per_s"]
        out.update(open_loop_steps_per_s=limit, ratio=ours / limit)
        if "whole_batch_collector_steps_per_s" in best:
            whole_rate = best["whole_batch_collector_steps_per_s"]
            out.update(whole_batch_collector_steps_per_s=whole_rate, whole_batch_ratio=whole_rate / limit,
                       shares_over_whole_batch=ours / whole_rate)
    if own_venv is not None:
        own_venv.close()
        whole.close()
    collector.close()
    return {**out, **_machine()}


def _has_native_mujoco(env_id: str) -> bool:
    """Whether ``env_id`` has a natively batched MuJoCo implementation (an open-loop limit to measure)."""
    from metarl.sampling.collector import _takes_num_threads

    return _takes_num_threads(env_id, "native")


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


def _single_env_rate(env_id: str, horizon: int, env_kwargs: dict, steps: int = 4000, barrier=None,
                     metaworld_own_code: bool = False) -> float:
    """env-steps/s of one Gymnasium environment stepped in a Python loop (random actions, no policy),
    on one task, reset every ``horizon`` steps as the collector resets (resets counted in the time).
    ``barrier``: waited on just before the timed loop (parallel loops start together).
    ``metaworld_own_code``: a Meta-World env runs metaworld's own per-step code, not our fast paths."""
    import gymnasium as gym

    env = gym.make(env_id, disable_env_checker=True, max_episode_steps=None, **env_kwargs).unwrapped
    if metaworld_own_code:
        from metarl.envs.metaworld_fast import use_fast_paths

        use_fast_paths(False)  # after building the env, which installs them
    try:
        env.set_task(env.sample_tasks(1, np.random.default_rng(0))[0])
        env.action_space.seed(0)
        actions = [env.action_space.sample() for _ in range(steps)]
        if barrier is not None:
            barrier.wait()
        t = time.perf_counter()
        for i, a in enumerate(actions):
            if i % horizon == 0:
                env.reset(seed=i)
            env.step(a)
        rate = steps / (time.perf_counter() - t)
    finally:
        if metaworld_own_code:
            use_fast_paths(True)
    env.close()
    return rate


def _parallel_single_env_rate(env_id: str, horizon: int, env_kwargs: dict, processes: int) -> float:
    """Summed env-steps/s of ``processes`` single-env loops (:func:`_single_env_rate`) run at the same time in
    forked processes, released together by a barrier once every env is built."""
    import multiprocessing

    ctx = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn")
    barrier, results = ctx.Barrier(processes), ctx.Queue()
    procs = [ctx.Process(target=_single_env_rate_worker, args=(env_id, horizon, env_kwargs, barrier, results),
                         daemon=True) for _ in range(processes)]
    for proc in procs:
        proc.start()
    rates = [results.get(timeout=600) for _ in procs]
    for proc in procs:
        proc.join()
    failed = [r for r in rates if isinstance(r, str)]
    if failed:
        # A loop that fails aborts the barrier, so others may report BrokenBarrierError first, even loops
        # already released (abort can land before they wake): name the error that started it.
        root = [r for r in failed if not r.startswith("BrokenBarrierError")] or failed
        raise RuntimeError(f"a parallel single-env loop failed: {root[0]}")
    return float(sum(rates))


def _single_env_rate_worker(env_id, horizon, env_kwargs, barrier, results) -> None:
    try:
        results.put(_single_env_rate(env_id, horizon, env_kwargs, barrier=barrier))
    except Exception as err:  # the parent raises it
        barrier.abort()  # the loops still waiting at the barrier fail too, instead of waiting forever
        results.put(f"{type(err).__name__}: {err}")


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
    # per timed iteration, so that a comparison can check both sides did the same work (a rejected TRPO
    # step or extra backtracks cost evaluations)
    line_search: list[dict[str, list[float]]] = [{} for _ in exps]
    for _ in range(iterations):
        for exp, total, ls in zip(exps, totals, line_search):
            t0 = time.perf_counter()
            stats = exp.algo.train_iteration(exp.task_rng)
            total["wall"] += time.perf_counter() - t0
            for k, v in stats.items():
                if k.startswith("time/"):
                    total[k] = total.get(k, 0.0) + v
                elif k.startswith("line_search/"):
                    ls.setdefault(k.replace("/", "_"), []).append(float(v))
    results = []
    for name, exp, total, ls in zip(names, exps, totals, line_search):
        r = {"config": name, "algo": exp.cfg.algo, "seconds_per_iteration": total.pop("wall") / iterations}
        if exp.cfg.algo == "maml":
            r["estimator"] = exp.cfg.maml.estimator
        r.update({k.replace("time/", "").replace("_s", "") + "_s": v / iterations for k, v in total.items()})
        r.update(ls)
        exp.collector.close()
        results.append(r)
    out = {"bench": "maml", **results[0], "overrides": list(overrides)}
    if compare is not None:
        out["compare"] = results[1]
        out["ratio"] = results[0]["seconds_per_iteration"] / results[1]["seconds_per_iteration"]
    return {**out, **_machine()}


def bench_sinusoid(iterations: int = 300, reference: bool = False) -> dict:
    """Milliseconds per meta-iteration: meta-batch 25, K = 10, one inner step, 2x40 ReLU, Adam; with
    ``reference``, a plain torch.func MAML of the same setting timed in the same run (metarl.bench_sinusoid)."""
    from metarl.bench_sinusoid import bench_sinusoid as run_sinusoid

    return {**run_sinusoid(iterations, reference), **_machine()}


def bench_pearl(config: str = "experiments/halfcheetah_vel_pearl.yaml", steps: int = 20, overrides=()) -> dict:
    """PEARL: env-steps/s of the initial collection (every training task's prior-z episodes in one batched
    collection), SAC gradient steps/s (after one warm-up step), and the replay memory bound. Also the
    step's matmul FLOPs (torch's FLOP counter; :func:`~metarl.algos.pearl.gradient_step_flops` gives them
    from the layer shapes) and the rate they run at against a plain matmul timed in between the steps
    (``fraction_of_matmul_rate``: how close the step is to the machine's matmul throughput, under any load)."""
    from torch.utils.flop_counter import FlopCounterMode

    from metarl.algos.pearl import TaskReplayBuffers
    from metarl.experiment import build_experiment, load_config

    cfg = load_config(config, ["algo=pearl", *overrides])
    exp = build_experiment(cfg)
    algo = exp.algo
    t = time.perf_counter()
    env_steps = algo._initialize(exp.task_rng)
    collect_s = time.perf_counter() - t
    algo.gradient_step()  # warm-up
    with FlopCounterMode(display=False) as counter:
        algo.gradient_step()
    # The step is matmul-bound: its rate is compared with a plain [R, w] @ [w, w] matmul (R rows of the
    # meta-batch, w the first hidden width) timed between the steps, so that both see the same load.
    pc = cfg.pearl
    a = torch.randn(pc.meta_batch * pc.batch_size, pc.hidden_sizes[0])
    w = torch.randn(pc.hidden_sizes[0], pc.hidden_sizes[0])
    a @ w
    step_s = mm_s = 0.0
    mm_per_step = 5
    for _ in range(steps):
        t = time.perf_counter()
        algo.gradient_step()
        step_s += time.perf_counter() - t
        t = time.perf_counter()
        for _ in range(mm_per_step):
            a @ w
        mm_s += time.perf_counter() - t
    step_s /= steps
    mm_gflops = 2 * a.shape[0] * w.shape[0] * w.shape[1] * mm_per_step * steps / mm_s / 1e9
    flops = counter.get_total_flops()
    per = TaskReplayBuffers.bytes_per_transition(algo.replay.obs_dim, algo.replay.act_dim)
    out = {"bench": "pearl", "config": config, "overrides": list(overrides), "env_steps": env_steps,
           "env_steps_per_s": env_steps / collect_s, "gradient_steps_per_s": 1.0 / step_s,
           "gflop_per_step": flops / 1e9, "step_gflops": flops / 1e9 / step_s, "matmul_gflops": mm_gflops,
           "fraction_of_matmul_rate": flops / 1e9 / step_s / mm_gflops,
           "transitions_per_gradient_step": pc.meta_batch * (pc.batch_size + pc.context_batch_size),
           "bytes_per_transition": per, "bytes_at_1M_transitions": per * 10**6,
           "replay_bound_bytes": algo.replay.nbytes + algo.encoder_buffer.nbytes}
    exp.collector.close()
    return {**out, **_machine()}
def _parse_kwarg(item: str) -> tuple[str, object]:
    """``KEY=VALUE`` (the value read as YAML) for ``--env-kwarg``."""
    import yaml

    key, sep, value = item.partition("=")
    if not sep or not key:
        raise ValueError(f"--env-kwarg expects KEY=VALUE, got {item!r}")
    return key, yaml.safe_load(value)


def run(which: list[str], args) -> None:
    for name in which:
        if name == "collect":
            env_kwargs = dict(_parse_kwarg(item) for item in (args.env_kwarg or []))
            result = bench_collect(args.env, args.tasks, args.episodes, repeats=args.repeats, backend=args.backend,
                                   env_kwargs=env_kwargs, num_workers=args.workers, num_threads=args.threads)
        elif name == "maml":
            result = bench_maml(args.config or "experiments/navigation2d_maml.yaml", args.iterations or 3,
                                args.set or [],
                                getattr(args, "compare", None))
        elif name == "fvp":
            from metarl.bench_fvp import bench_fvp

            result = {**bench_fvp(args.config or "experiments/navigation2d_maml.yaml", args.set or []), **_machine()}
        elif name == "sinusoid":
            result = bench_sinusoid(reference=getattr(args, "reference", False))
        elif name == "pearl":
            result = bench_pearl(args.config or "experiments/halfcheetah_vel_pearl.yaml", args.iterations or 20,
                                 args.set or [])
        else:
            raise ValueError(f"unknown benchmark {name!r}; expected collect, maml, fvp, sinusoid or pearl")
        print(json.dumps(result), flush=True)
