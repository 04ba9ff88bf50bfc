"""One collection split into shares of whole tasks, each collected by a worker in another process.

What the Ray backend (:mod:`metarl.sampling.ray_collector`, actors on a cluster) and the process pool
(:mod:`metarl.sampling.process_pool`, worker processes of this machine) have in common:
:class:`TaskShareCollector` has the interface of :class:`~metarl.sampling.collector.Collector`, and each
collection

1. checks the arguments, draws the action noise of the whole collection [T, B, ...] from the driver's
   generator in one call (exactly the draw the local Collector makes) and splits the tasks into
   contiguous shares, one per worker (whole tasks, so per-task parameters split cleanly);
2. hands worker k its tasks, their slice of per-task (MAML post-update) parameters and task inputs, its
   column slice of the noise and the RNG states its sub-environments start from; the worker runs the
   ordinary step loop on them (``Collector.collect_columns``, in :class:`CollectorWorker`);
3. concatenates the shares in task order (never in completion order) and keeps the sub-environments'
   RNG states that come back.

The driver owns every random stream and workers own none, so the randomness never depends on the
split: column b's env stream starts from ``Collector.column_seeds(B)[b]`` and its actions use
``noise[:, b]``. ``get_rng_state`` / ``set_rng_state`` have the local Collector's format, so a run
resumes on any backend. The arithmetic depends on the split unless the policy is evaluated at the
whole collection's shape in every worker (``policy_at_whole_shape``, the Ray backend's choice: the same
batch as the local backend, bit for bit, at the price of the whole batch's policy arithmetic in each
worker); at a share's own shape (the process pool's choice, for speed) a BLAS may round a row
differently, so batches equal the local backend's to rounding.
"""

from __future__ import annotations

import copy
import dataclasses
import os
from typing import Sequence

import numpy as np
import torch
from gymnasium.utils import seeding

from metarl.common.policies import Params
from metarl.sampling.collector import Collector, EpisodeBatch, policy_device


class CollectorWorker:
    """What one worker runs (a Ray actor, or a process of the pool): an in-process Collector with the
    vector env ``auto`` builds, which collects the shares it is sent."""

    def __init__(self, env_id: str, env_spec, env_kwargs: dict, horizon: int, oracle: bool, num_threads: int,
                 vector_backend: str, rescale_actions: bool):
        import gymnasium as gym

        import metarl.envs  # noqa: F401  (registers the metarl/ task distributions in this process)

        # A third-party env registered in the driver (--import MODULE) may be unknown here: register the
        # driver's spec, whose entry point the worker resolves as the driver did.
        if env_id not in gym.registry:
            gym.registry[env_id] = env_spec
        self.collector = Collector(env_id, seed=0, backend=vector_backend, env_kwargs=env_kwargs, horizon=horizon,
                                   oracle=oracle, num_threads=num_threads, rescale_actions=rescale_actions)

    def pid(self) -> int:
        return os.getpid()

    def collect_columns(self, policy, tasks, episodes_per_task, params, per_task_params, episodes_per_trial,
                        deterministic, noise, env_states, first_task, total_tasks, task_inputs=None,
                        exit_at_step=None):
        if exit_at_step is not None:
            self._exit_at_step(len(env_states), exit_at_step)
        return self.collector.collect_columns(
            policy, tasks, episodes_per_task, params=params, per_task_params=per_task_params,
            episodes_per_trial=episodes_per_trial, deterministic=deterministic, noise=noise,
            env_states=env_states, first_task=first_task, total_tasks=total_tasks, task_inputs=task_inputs)

    def _exit_at_step(self, num_envs: int, step: int) -> None:
        """Fault injection for tests: the process dies (no cleanup, like a crash or a lost node) at
        env step ``step`` of the next share, mid-collection."""
        venv = self.collector._venv(num_envs)
        real_step = venv.step
        count = [0]

        def step_or_die(actions):
            if count[0] == step:
                os._exit(1)
            count[0] += 1
            return real_step(actions)

        venv.step = step_or_die


class TaskShareCollector(Collector):
    """A :class:`Collector` whose collections run as task shares in ``num_workers`` workers elsewhere
    (see the module doc). Subclasses start the workers and implement :meth:`_run_shares`."""

    #: evaluate the policy at the whole collection's shape in every worker (bit-identical to the local
    #: backend) rather than at the share's own shape (equal to rounding; each worker's arithmetic is its own)
    policy_at_whole_shape = True

    def __init__(self, env_id: str, *, backend: str, num_workers: int, seed: int = 0, env_kwargs: dict | None = None,
                 horizon: int | None = None, oracle: bool = False, num_threads: int | None = None,
                 rescale_actions: bool = True):
        if isinstance(num_workers, bool) or not isinstance(num_workers, (int, np.integer)) or num_workers < 1:
            raise ValueError(f"num_workers must be a positive integer, got {num_workers!r}")
        super().__init__(env_id, seed=seed, backend=backend, env_kwargs=env_kwargs, horizon=horizon, oracle=oracle,
                         num_threads=num_threads, rescale_actions=rescale_actions)
        self.num_workers = int(num_workers)
        #: RNG states of every column of the B-column collections, per B: the driver owns the env
        #: streams (the local Collector keeps them in its vector envs)
        self._env_states: dict[int, list] = {}

    def _initial_env_states(self, num_envs: int) -> list:
        # The streams the local Collector's vector env of this size starts from (BatchedTaskEnv.seed).
        return [seeding.np_random(s)[0].bit_generator.state for s in self.column_seeds(num_envs)]

    def _shared(self, obj):
        """``obj`` as it is handed to every worker (the Ray backend: one copy in the object store)."""
        return obj

    def collect(
        self,
        policy: torch.nn.Module,
        tasks: Sequence,
        episodes_per_task: int = 1,
        *,
        params: Params | None = None,
        per_task_params: bool = False,
        episodes_per_trial: int = 1,
        deterministic: bool = False,
        task_inputs: torch.Tensor | None = None,
    ) -> EpisodeBatch:
        """Same arguments and result as :meth:`Collector.collect`; the episodes run in the workers."""
        tasks = list(tasks)
        cols_per_task = self._columns_per_task(policy, tasks, episodes_per_task, episodes_per_trial, params,
                                               task_inputs)
        num_tasks = len(tasks)
        n_cols = num_tasks * cols_per_task
        noise = self.action_noise(self.horizon * episodes_per_trial, n_cols, deterministic)
        states = self._env_states.get(n_cols) or self._initial_env_states(n_cols)

        # Workers act on the CPU: a policy on another device (collector.device) is sent as a CPU copy, and
        # the merged batch goes back to its device. Parameters are sent detached: adapted (MAML)
        # parameters carry autograd graphs, which cannot be pickled and are not needed to act.
        device = policy_device(policy)
        if device.type != "cpu":
            policy = copy.deepcopy(policy).cpu()
            params = None if params is None else {k: v.detach().cpu() for k, v in params.items()}
            task_inputs = None if task_inputs is None else task_inputs.detach().cpu()
        policy_ref = self._shared(policy)
        shared_params = None
        if params is not None and not per_task_params:
            shared_params = self._shared({k: v.detach() for k, v in params.items()})
        whole = self.policy_at_whole_shape
        shares = []
        for m0, m1 in task_shares(num_tasks, self.num_workers):
            c0, c1 = m0 * cols_per_task, m1 * cols_per_task
            share_params = shared_params
            if params is not None and per_task_params:
                # each worker gets only its tasks' slice (clone: a view would pickle the whole tensor)
                share_params = {k: v.detach()[m0:m1].clone() for k, v in params.items()}
            shares.append(dict(
                tasks=tasks[m0:m1], episodes_per_task=episodes_per_task, params=share_params,
                per_task_params=per_task_params, episodes_per_trial=episodes_per_trial,
                deterministic=deterministic, noise=None if noise is None else noise[:, c0:c1].clone(),
                env_states=states[c0:c1], first_task=m0 if whole else 0, total_tasks=num_tasks if whole else m1 - m0,
                task_inputs=None if task_inputs is None else task_inputs.detach()[m0:m1].clone(),
            ))
        results = self._run_shares(policy_ref, shares)
        self._env_states[n_cols] = [s for _, share_states in results for s in share_states]
        return concat_columns([batch for batch, _ in results], num_tasks).to(device)

    def _run_shares(self, policy, shares: list[dict]) -> list:
        """Every share's (batch, env RNG states after it), in share order: share k is the keyword
        arguments of ``CollectorWorker.collect_columns`` less the policy."""
        raise NotImplementedError

    def get_rng_state(self) -> dict:
        """The local Collector's format: resuming on either backend continues identically."""
        return {"torch": self.generator.get_state(), "envs": copy.deepcopy(self._env_states)}

    def set_rng_state(self, state: dict) -> None:
        self.generator.set_state(state["torch"])
        # Sizes not in the state start again from their seeds, as with the local Collector.
        self._env_states = {int(n): copy.deepcopy(list(s)) for n, s in state["envs"].items()}


def task_shares(num_tasks: int, num_workers: int) -> list[tuple[int, int]]:
    """Contiguous task ranges [m0, m1), one per worker that gets any task; sizes differ by at most one."""
    bounds = np.linspace(0, num_tasks, min(num_workers, num_tasks) + 1).round().astype(int)
    return [(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:])]


def concat_columns(batches: list[EpisodeBatch], num_tasks: int) -> EpisodeBatch:
    """Shares of one collection (in task order) as one batch: columns concatenated, task index global."""
    n_cols = sum(b.num_columns for b in batches)
    merged = {}
    # Every field, not a fixed list, so that a field added to EpisodeBatch is carried too: tensors are
    # [T, B, ...] (concatenated on the column axis), everything else is the same in every share.
    for f in dataclasses.fields(EpisodeBatch):
        parts = [getattr(b, f.name) for b in batches]
        if isinstance(parts[0], torch.Tensor) and f.name != "task_index":
            merged[f.name] = torch.cat(parts, dim=1)
        elif f.name == "infos":  # per-step info scalars, [T, B] each
            merged[f.name] = {k: torch.cat([p[k] for p in parts], dim=1) for k in parts[0]}
        else:
            merged[f.name] = parts[0]
    merged["task_index"] = torch.arange(num_tasks).repeat_interleave(n_cols // num_tasks)
    merged["num_tasks"] = num_tasks
    return EpisodeBatch(**merged)
