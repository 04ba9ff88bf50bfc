"""Throughput of half-cheetah stepping: raw ``mujoco.rollout`` vs our batched env vs one Gymnasium env.

Prints env-steps/s (one env step = ``frame_skip`` = 5 physics steps) for

  (a)  mujoco.rollout, open loop: B sub-envs x T env steps in ONE call (T*5 physics steps), all threads
  (a2) mujoco.rollout, one call of 5 physics steps per env step (zero warm start), nothing else:
       what the batched env does minus its numpy, to separate call overhead from our own
  (b)  BatchedHalfCheetahVel stepped T times with random actions (actions drawn before timing)
  (c)  Gymnasium HalfCheetah-v5, one env, gym.make'd (with its default wrappers), random actions

and the ratios (b)/(a), (b)/(a2). Each is given per wall second and per CPU second of this process
(all threads). The CPU figure is the robust one on a shared machine: load from other processes
stretches wall time but not the CPU seconds spent here (the rollout pool waits on condition
variables, so idle threads cost none). The contenders run in interleaved rounds and each figure is
its best round. Not a test: numbers depend on the machine. Usage:

    python scripts/bench_cheetah_collect.py [--num-envs 800] [--steps 200] [--threads N] [--repeats 5]
                                            [--chunk-size K]
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Callable

import gymnasium as gym
import mujoco
import mujoco.rollout
import numpy as np

from metarl.envs.half_cheetah import BatchedHalfCheetahVel

CTRL = mujoco.mjtState.mjSTATE_CTRL.value


def timed(fn: Callable[[], None]) -> tuple[float, float]:
    """(wall seconds, process CPU seconds) of one call."""
    wall0, cpu0 = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall0, time.process_time() - cpu0


def open_loop(model, state0, actions, frame_skip, threads, chunk_size):
    """(a): every sub-env's whole episode in one rollout call, the action held for frame_skip steps."""
    B, T = state0.shape[0], actions.shape[0]
    control = np.repeat(actions.transpose(1, 0, 2), frame_skip, axis=1).astype(np.float64)  # [B, T*fs, nu]
    out = np.empty((B, T * frame_skip, state0.shape[1]))
    datas = [mujoco.MjData(model) for _ in range(threads)]
    models = [model] * B
    ro = mujoco.rollout.Rollout(nthread=threads if threads > 1 else 0)

    def run():
        ro.rollout(models, datas, state0, control, control_spec=CTRL, skip_checks=True,
                   nstep=T * frame_skip, state=out, chunk_size=chunk_size)

    return run


def per_step_rollout(model, state0, actions, frame_skip, threads, chunk_size):
    """(a2): one rollout call of frame_skip steps per env step, state carried in numpy."""
    B, T = state0.shape[0], actions.shape[0]
    ctrl = np.empty((B, frame_skip, model.nu))
    out = np.empty((B, frame_skip, state0.shape[1]))
    state = np.empty_like(state0)
    datas = [mujoco.MjData(model) for _ in range(threads)]
    models = [model] * B
    ro = mujoco.rollout.Rollout(nthread=threads if threads > 1 else 0)

    def run():
        state[:] = state0
        for t in range(T):
            ctrl[:] = actions[t][:, None, :]
            ro.rollout(models, datas, state, ctrl, control_spec=CTRL, skip_checks=True,
                       nstep=frame_skip, state=out, chunk_size=chunk_size)
            state[:] = out[:, -1]

    return run


def batched_env(B, actions, threads, chunk_size):
    """(b): our batched env; reset is outside the timed region."""
    venv = BatchedHalfCheetahVel(B, num_threads=threads, chunk_size=chunk_size)
    venv.seed(list(range(B)))

    def run():
        for a in actions:
            venv.step(a)

    def prepare():
        venv.reset()

    return run, prepare


def single_env(steps):
    """(c): one gym.make'd HalfCheetah-v5."""
    env = gym.make("HalfCheetah-v5", max_episode_steps=steps + 1)
    actions = np.random.default_rng(1).uniform(-1, 1, (steps, 6)).astype(np.float32)

    def run():
        for a in actions:
            env.step(a)

    def prepare():
        env.reset(seed=0)

    return run, prepare


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--num-envs", type=int, default=800)
    p.add_argument("--steps", type=int, default=200, help="env steps per sub-env (H)")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--repeats", type=int, default=5, help="interleaved rounds; each figure is its best round")
    p.add_argument("--chunk-size", type=int, default=None, help="rollout chunk size (default: rollout's own)")
    p.add_argument("--single-steps", type=int, default=4000, help="env steps for (c)")
    args = p.parse_args()
    B, T, threads, chunk = args.num_envs, args.steps, args.threads, args.chunk_size

    # initial states exactly as the env's reset draws them
    probe = BatchedHalfCheetahVel(B, num_threads=1)
    probe.seed(list(range(B)))
    probe.reset()
    state0 = probe.get_state()
    model, frame_skip = probe.model, probe.frame_skip
    probe.close()
    actions = np.random.default_rng(0).uniform(-1, 1, (T, B, model.nu)).astype(np.float32)

    noop = lambda: None  # noqa: E731
    contenders = {
        "a": ("rollout open loop, 1 call", open_loop(model, state0, actions, frame_skip, threads, chunk), noop, B * T),
        "a2": ("rollout, 1 call per env step", per_step_rollout(model, state0, actions, frame_skip, threads, chunk),
               noop, B * T),
        "b": ("BatchedHalfCheetahVel.step", *batched_env(B, actions, threads, chunk), B * T),
        "c": ("gymnasium HalfCheetah-v5, single env", *single_env(args.single_steps), args.single_steps),
    }

    print(f"B={B} sub-envs, T={T} env steps (x{frame_skip} physics steps), threads={threads}, "
          f"chunk_size={chunk or 'rollout default'}, cpu_count={os.cpu_count()}, mujoco {mujoco.__version__}")
    for _, run, prepare, _ in contenders.values():  # warm up pools, caches and page tables
        prepare()
        run()
    times: dict[str, list[tuple[float, float]]] = {k: [] for k in contenders}
    for _ in range(args.repeats):  # interleaved, so load from other processes hits all alike
        for k, (_, run, prepare, _) in contenders.items():
            prepare()
            times[k].append(timed(run))

    wall = {k: contenders[k][3] / min(w for w, _ in v) for k, v in times.items()}
    cpu = {k: contenders[k][3] / min(c for _, c in v) for k, v in times.items()}
    print(f"{'':43s} {'env-steps/s (wall)':>19s} {'env-steps/CPU-s':>16s}")
    for k, (name, *_) in contenders.items():
        print(f"{'(' + k + ')':5s}{name:38s} {wall[k]:19.0f} {cpu[k]:16.0f}")
    print(f"ratio (b)/(a):  wall {wall['b'] / wall['a']:.3f}  CPU {cpu['b'] / cpu['a']:.3f}")
    print(f"ratio (b)/(a2): wall {wall['b'] / wall['a2']:.3f}  CPU {cpu['b'] / cpu['a2']:.3f}")
    load = os.getloadavg()[0]
    if load > threads + 0.5:
        print(f"note: 1-min load average {load:.1f} on {os.cpu_count()} CPUs; other processes compete, "
              f"so the wall figures are low and noisy")


if __name__ == "__main__":
    main()
