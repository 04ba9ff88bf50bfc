"""Vector environments holding one task per sub-environment.

The collector talks to one interface, :class:`~metarl.common.tasks.BatchedTaskEnv` (defined with the
task API, since envs/ implements it): numpy arrays in, numpy arrays out,
no autoreset (the collector resets explicitly, so nothing leaks across episodes), and no time limit
(the collector owns the horizon H). Fast task distributions implement it natively (numpy arrays, or
many MuJoCo ``MjData`` stepped by threads); every other registered environment is wrapped by
:class:`GymLoopVectorEnv`.

Seeding follows Gymnasium exactly so that both paths give identical results: sub-environment i,
seeded with the integer ``s_i``, draws from ``gymnasium.utils.seeding.np_random(s_i)``, the same
generator a single environment builds in ``reset(seed=s_i)``; later resets continue that stream.
Sub-environments never share a stream.

Why not ``gymnasium.vector.SyncVectorEnv`` for the fallback: with autoreset disabled it refuses to
step a sub-environment whose episode has ended, so a batch in which one episode terminates early
(2D navigation) could only continue by resetting that sub-environment, which spends its random
stream on an episode nobody uses and breaks equality with the native path. Stepping only the
running sub-environments needs the loop below, which is what SyncVectorEnv does internally anyway.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import gymnasium as gym
import numpy as np
from gymnasium.envs.registration import load_env_creator
from gymnasium.utils import seeding

from metarl.common.tasks import BatchedTaskEnv, check_task_distribution


class GymLoopVectorEnv(BatchedTaskEnv):
    """Any registered task environment, stepped one sub-environment at a time (the fallback)."""

    def __init__(self, env_id: str, num_envs: int, **env_kwargs: Any):
        super().__init__(num_envs)
        self.env_id = env_id
        # No TimeLimit wrapper: the collector owns the horizon, which may exceed max_episode_steps.
        spec = dataclasses.replace(env_spec(env_id), max_episode_steps=None)
        self.envs = [gym.make(spec, disable_env_checker=True, **env_kwargs) for _ in range(self.num_envs)]
        check_task_distribution(self.envs[0], env_id)
        self.single_observation_space = self.envs[0].observation_space
        self.single_action_space = self.envs[0].action_space
        self.supervised_loss = getattr(self.envs[0].unwrapped, "supervised_loss", None)
        self._pending_seeds: list[int] | None = None
        self._done = np.zeros(self.num_envs, dtype=bool)
        self._last_obs: list | None = None

    def seed(self, seeds: Sequence[int]) -> None:
        if len(seeds) != self.num_envs:
            raise ValueError(f"seed() needs {self.num_envs} seeds, got {len(seeds)}")
        self._pending_seeds = [int(s) for s in seeds]

    def _tasks_changed(self) -> None:
        for env, task in zip(self.envs, self.tasks):
            env.unwrapped.set_task(task)

    def reset(self):
        seeds = self._pending_seeds or [None] * self.num_envs
        self._pending_seeds = None
        results = [env.reset(seed=s) for env, s in zip(self.envs, seeds)]
        self._done[:] = False
        self._last_obs = [r[0] for r in results]
        return np.stack(self._last_obs), _stack_infos([r[1] for r in results])

    def step(self, actions):
        n = self.num_envs
        reward = np.zeros(n)
        terminated = np.zeros(n, dtype=bool)
        truncated = np.zeros(n, dtype=bool)
        infos: list[dict] = [{}] * n
        for i, env in enumerate(self.envs):
            if self._done[i]:
                continue  # finished episodes are masked by the collector; do not step them
            obs, r, term, trunc, info = env.step(actions[i])
            self._last_obs[i] = obs
            reward[i], terminated[i], truncated[i], infos[i] = r, term, trunc, info
            self._done[i] = term or trunc
        return np.stack(self._last_obs), reward, terminated, truncated, _stack_infos(infos)

    def get_rng_state(self):
        if self._pending_seeds is not None:  # seeded but not reset yet: the streams the seeds start
            return [seeding.np_random(s)[0].bit_generator.state for s in self._pending_seeds]
        return [env.unwrapped.np_random.bit_generator.state for env in self.envs]

    def set_rng_state(self, states):
        for env, s in zip(self.envs, states, strict=True):
            env.unwrapped.np_random.bit_generator.state = s
        self._pending_seeds = None  # the restored streams replace any seeds not yet applied

    def close(self):
        for env in self.envs:
            env.close()


def _stack_infos(infos: list[dict]) -> dict[str, np.ndarray]:
    """Stack the numeric info entries (e.g. ``target``) into arrays [B, ...]; finished sub-envs get zeros."""
    present = [i for i in infos if i]
    if not present:
        return {}
    out = {}
    for key, value in present[0].items():
        arr = np.asarray(value)
        if arr.dtype.kind not in "biuf":
            continue
        filler = np.zeros_like(arr)
        out[key] = np.stack([np.asarray(i.get(key, filler)) for i in infos])
    return out


def registered_task_env_ids(namespace: str | None = "metarl") -> list[str]:
    """Ids of registered environments in ``namespace`` (all namespaces if None)."""
    return sorted(k for k, s in gym.registry.items() if namespace is None or s.namespace == namespace)


def env_spec(env_id: str) -> gym.envs.registration.EnvSpec:
    """``gymnasium.spec`` with an error that lists what is registered."""
    import metarl.envs  # noqa: F401  (registers metarl/...)

    try:
        return gym.spec(env_id)
    except gym.error.Error as err:
        known = ", ".join(registered_task_env_ids()) or "(none)"
        raise ValueError(
            f"unknown environment id {env_id!r} ({err}); registered task distributions: {known}. "
            f"A third-party environment must be registered first (metarl CLI: --import MODULE)"
        ) from None


def horizon(env_id: str) -> int:
    spec = env_spec(env_id)
    if not spec.max_episode_steps or spec.max_episode_steps < 1:
        raise ValueError(
            f"environment {env_id!r} is registered without max_episode_steps; the horizon H of a task "
            f"is its max_episode_steps, so register it with one"
        )
    return int(spec.max_episode_steps)


def env_class(env_id: str) -> type:
    spec = env_spec(env_id)
    entry = spec.entry_point
    return load_env_creator(entry) if isinstance(entry, str) else entry


def make_task_env(env_id: str, **env_kwargs: Any) -> gym.Env:
    """One unwrapped single environment of ``env_id``, checked to be a task distribution."""
    env_spec(env_id)
    env = gym.make(env_id, disable_env_checker=True, **env_kwargs)
    check_task_distribution(env, env_id)
    return env.unwrapped


def make_vector_env(env_id: str, num_envs: int, backend: str = "auto", **env_kwargs: Any) -> BatchedTaskEnv:
    """A vector env of ``num_envs`` sub-environments of ``env_id``.

    backend: ``auto`` (native batched implementation when the env class has one, else the loop),
    ``native`` (require it), or ``gym`` (always the loop over single Gymnasium envs).
    """
    if backend not in ("auto", "native", "gym"):
        raise ValueError(f"vector backend must be one of auto, native, gym; got {backend!r}")
    spec = env_spec(env_id)
    cls = env_class(env_id)
    batched = getattr(cls, "batched_env_class", None)
    if backend == "native" and batched is None:
        raise ValueError(f"environment {env_id!r} has no native batched implementation; use backend 'auto' or 'gym'")
    if backend != "gym" and batched is not None:
        kwargs = {**spec.kwargs, **env_kwargs}
        venv = batched(num_envs, **kwargs)
        venv.supervised_loss = getattr(cls, "supervised_loss", None)
        return venv
    return GymLoopVectorEnv(env_id, num_envs, **env_kwargs)
