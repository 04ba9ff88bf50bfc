"""The one vectorized rollout collector every algorithm and task kind uses (H = 1 included).

``Collector.collect(policy, tasks, episodes_per_task)`` runs ``len(tasks) * episodes_per_task``
episodes in parallel, one per column, each sub-environment holding its column's task, and returns
one :class:`EpisodeBatch` of time-major tensors [T, B, ...]. The policy is called once per time
step for all columns; per-task (adapted) parameters are evaluated in one vmapped call.

For RL² a column holds a *trial*: ``episodes_per_trial`` consecutive episodes of the same task,
T = H * episodes_per_trial. Episode k of a trial occupies rows [k*H, (k+1)*H); an episode that
terminates early leaves the rest of its slot masked (valid = 0), and every column resets at the
same rows, so resets stay batched. A recurrent policy's hidden state starts at zero for every
trial, is carried across the episodes of the trial and frozen on masked rows.

Per-task inputs: ``task_inputs`` [M, D] (one vector per task, e.g. PEARL's latent z) is appended to
every observation of that task's columns before the policy call, so the policy sees [obs, input]. The
batch keeps the environment's observations only.

The collector never knows which algorithm asked.
"""

from __future__ import annotations

import contextlib
import inspect
import os
from dataclasses import dataclass, field, fields
from typing import Sequence

import gymnasium as gym
import numpy as np
import torch

from metarl.common.distributions import draw_noise
from metarl.common.policies import Params, policy_forward
from metarl.common.tasks import BatchedTaskEnv
from metarl.sampling.vector import (ShareVectorEnv, env_class, horizon as registered_horizon, make_task_env,
                                   make_vector_env, run_loop as _run_loop)


#: ``auto`` steps natively batched MuJoCo in two shares of threads (backend ``threads``) on up to this many
#: stepping threads, and as one rollout over the whole batch (``native``) beyond. Measured (BENCHMARKS.md):
#: on 2 cores the shares reach 0.89-0.95 of the open-loop limit against 0.80-0.87; on 16 cores, where MuJoCo's
#: stepping shrinks beside the per-step Python that the shares cannot run at once (the GIL) and that each
#: share repeats at the whole collection's shape, 0.98 of the whole batch's rate in bench collect and 15% slower
#: sampling in a MAML iteration; on that machine's 4 and 8 threads, 0.97 and 0.93. Neither giving each share
#: every thread nor the policy at a share's own shape closed the gap on 4-16 cores
#: (experiments/share_threads_bench.py, BENCHMARKS.md): the per-step Python is what remains there.
SHARED_STEPPING_MAX_THREADS = 2


def _takes_num_threads(env_id: str, backend: str) -> bool:
    if backend == "gym":
        return False
    batched = getattr(env_class(env_id), "batched_env_class", None)
    return batched is not None and "num_threads" in inspect.signature(batched).parameters


@contextlib.contextmanager
def _single_threaded_torch():
    """Run torch single-threaded inside the step loop.

    The per-step policy call is small; with several intra-op threads, torch's OpenMP workers spin
    after each call and steal the cores MuJoCo's stepping threads need (collection measured 4x
    slower on 2 cores), while one thread evaluates an 800-column MLP step in well under a millisecond.
    """
    threads = torch.get_num_threads()
    if threads == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _share_loop(loop, torch_threads: int):
    """A step loop that may be driven on a thread of its own (backend ``threads``), set up there as on
    the collector's thread: torch's grad mode and its OpenMP/MKL thread count are per thread, and a new
    thread starts with gradients on and every core (its policy calls would record a graph, spin idle
    OpenMP workers on the cores MuJoCo steps on, and round differently from the calling thread)."""
    torch.set_num_threads(torch_threads)  # runs at the first resumption, on the driving thread
    with torch.no_grad():
        call = next(loop)
    while True:
        result = yield call
        with torch.no_grad():
            try:
                call = loop.send(result)
            except StopIteration as stop:
                return stop.value


def policy_device(policy: torch.nn.Module) -> torch.device:
    """The device of a policy's parameters (the CPU for a policy without any)."""
    param = next(policy.parameters(), None)
    return torch.device("cpu") if param is None else param.device


@dataclass
class EpisodeBatch:
    """Episodes of many tasks, time-major. Column b belongs to task ``task_index[b]``."""

    obs: torch.Tensor  #: [T, B, *obs_shape] float32
    actions: torch.Tensor  #: [T, B, *act_shape] (float32, or int64 for discrete actions)
    rewards: torch.Tensor  #: [T, B] float32, 0 on masked steps
    valid: torch.Tensor  #: [T, B] float32, 1 where a real step happened
    dones: torch.Tensor  #: [T, B] bool, True at the last valid step of every episode
    log_probs: torch.Tensor  #: [T, B] log-probability of the action under the collecting policy
    timesteps: torch.Tensor  #: [T, B] int64, step index within the episode
    task_index: torch.Tensor  #: [B] int64
    num_tasks: int
    horizon: int
    episodes_per_trial: int = 1
    targets: torch.Tensor | None = None  #: [T, B, *target_shape] for supervised (H = 1) tasks
    policy_inputs: torch.Tensor | None = None  #: [T, B, D] inputs fed to a recurrent policy
    #: [episodes_per_trial, B, *obs_shape] observation after the last valid step of each episode (the
    #: next observation of that step, which ``obs`` does not hold; off-policy algorithms bootstrap from it)
    final_obs: torch.Tensor | None = None
    #: per-step info scalars the env names in ``info_scalars`` (e.g. Meta-World's ``success``): [T, B]
    #: float32, 0 on masked steps
    infos: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def num_columns(self) -> int:
        return self.valid.shape[1]

    @property
    def columns_per_task(self) -> int:
        return self.num_columns // self.num_tasks

    @property
    def num_steps(self) -> int:
        """Number of real environment steps in the batch."""
        return int(self.valid.sum())

    def episode_returns(self) -> torch.Tensor:
        """Undiscounted return of every episode: [episodes_per_trial, B]."""
        return self.rewards.reshape(self.episodes_per_trial, self.horizon, -1).sum(1)

    def mean_return_per_task(self) -> torch.Tensor:
        """Mean episode return of each task: [M]."""
        per_column = self.episode_returns().mean(0)
        return per_column.reshape(self.num_tasks, -1).mean(1)

    def episode_info_max(self, key: str) -> torch.Tensor:
        """Largest value of info scalar ``key`` over each episode's valid steps: [episodes_per_trial, B].
        For a 0/1 ``success`` signal: 1 if the episode succeeded at any step (Meta-World's success)."""
        if key not in self.infos:
            raise KeyError(f"the batch holds no per-step info {key!r} (it has: {', '.join(self.infos) or 'none'}); "
                           f"the env must name it in info_scalars")
        x = torch.where(self.valid > 0, self.infos[key], float("-inf"))
        return x.reshape(self.episodes_per_trial, self.horizon, -1).amax(1)

    def mean_info_max_per_task(self, key: str) -> torch.Tensor:
        """Mean over each task's episodes of :meth:`episode_info_max` (the success rate of ``success``): [M]."""
        return self.episode_info_max(key).mean(0).reshape(self.num_tasks, -1).mean(1)

    def task_columns(self, tasks: Sequence[int]) -> torch.Tensor:
        """Column indices [len(tasks) * columns_per_task] of ``tasks``, task by task in the given order."""
        cpt = self.columns_per_task
        tasks = torch.as_tensor(tasks, dtype=torch.long, device=self.valid.device)
        if tasks.dim() != 1 or tasks.numel() == 0 or int(tasks.min()) < 0 or int(tasks.max()) >= self.num_tasks:
            raise ValueError(f"tasks must be a non-empty list of task indices in [0, {self.num_tasks}), "
                             f"got {tasks.tolist()}")
        return (tasks.unsqueeze(1) * cpt + torch.arange(cpt, device=tasks.device)).reshape(-1)

    def select_tasks(self, tasks: Sequence[int]) -> "EpisodeBatch":
        """The episodes of ``tasks`` only (copies), as a batch of ``len(tasks)`` tasks numbered in that order."""
        cols = self.task_columns(tasks)
        kwargs = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "task_index":
                value = torch.arange(len(tasks), device=cols.device).repeat_interleave(self.columns_per_task)
            elif f.name == "num_tasks":
                value = len(tasks)
            elif f.name == "infos":
                value = {k: v.index_select(1, cols) for k, v in value.items()}
            elif isinstance(value, torch.Tensor):  # [T or episodes_per_trial, B, ...]
                value = value.index_select(1, cols)
            kwargs[f.name] = value
        return EpisodeBatch(**kwargs)

    def to(self, device) -> "EpisodeBatch":
        kwargs = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, torch.Tensor):
                value = value.to(device)
            elif f.name == "infos":
                value = {k: v.to(device) for k, v in value.items()}
            kwargs[f.name] = value
        return EpisodeBatch(**kwargs)


def action_rescaling(space: gym.Space) -> tuple[np.ndarray, np.ndarray] | None:
    """(center, half-width) of a Box with finite bounds other than [-1, 1], else None.

    Why rescale: a Gaussian policy starts with unit standard deviation and takes inner steps of a
    fixed size; both are only meaningful on a unit scale. On 2D navigation (bounds ±0.1) an
    unscaled policy samples 10x past the clip, its mean saturates at tens of units and one inner
    step cannot move it (the MAML paper's code ran every RL env through rllab's ``normalize``).
    """
    if not isinstance(space, gym.spaces.Box):
        return None
    low = np.asarray(space.low, dtype=np.float64)
    high = np.asarray(space.high, dtype=np.float64)
    if not (np.all(np.isfinite(low)) and np.all(np.isfinite(high))):
        return None
    if np.all(low == -1.0) and np.all(high == 1.0):
        return None
    return (high + low) / 2.0, (high - low) / 2.0


def _in_place(x: torch.Tensor, start: int, total: int) -> torch.Tensor:
    """[n, ...] -> [total, ...]: x in rows [start, start + n), zeros elsewhere (x itself if n = total)."""
    if x.shape[0] == total:
        return x
    out = x.new_zeros((total, *x.shape[1:]))
    out[start : start + x.shape[0]] = x
    return out


class _PolicyRows:
    """Where a share's ``count`` columns sit among the ``total`` rows the policy is evaluated on: rows
    [start, start + count). The whole collection is the share with start 0 and count = total, for
    which widening and narrowing return their argument (the local collector's step loop is unchanged)."""

    def __init__(self, start: int, count: int, total: int):
        self.start, self.count, self.total = start, count, total

    def widen(self, x: torch.Tensor) -> torch.Tensor:
        """This share's rows [count, ...] -> [total, ...], zeros in the other shares' rows."""
        return _in_place(x, self.start, self.total)

    def narrow(self, x: torch.Tensor) -> torch.Tensor:
        """[total, ...] -> this share's rows [count, ...]."""
        return x if self.count == self.total else x[self.start : self.start + self.count]


class Collector:
    """Collects episodes of one task distribution; owns the vector envs and the random streams.

    One ``seed`` makes every collection reproducible: sub-environment streams are derived from it
    (never shared between sub-environments), and actions are sampled from a ``torch.Generator``
    seeded with it. Vector envs are built on first use for each number of columns and kept.

    Both kinds of randomness are partition-independent, so that a collection split by columns across
    processes (``metarl.sampling.ray_collector``) gives the same batch: column b's env stream depends only on
    (seed, B, b) (:meth:`column_seeds`), and the action noise of the whole collection is drawn up front
    in one call (:meth:`action_noise`), of which every column uses only its own slice. So does the
    arithmetic: a share evaluates the policy at the whole collection's shape (:meth:`collect_columns`).

    Actions the env sees (:meth:`env_action`, the one place this happens, for every caller: training,
    evaluation, Ray actors, the oracle's PPO and its evaluation): every continuous action is clipped to
    the action space's bounds, so an env never sees (nor charges a control cost on) an action it
    cannot apply. The batch stores the policy's own unclipped sample, whose log-probability is the one
    the algorithms differentiate.
    rescale_actions: Box actions of the policy live in [-1, 1] per dimension and are mapped affinely
    onto the action space's bounds (after clipping to [-1, 1]) before stepping. No effect on unbounded
    or [-1, 1] Boxes (clipped to their bounds all the same), discrete or supervised tasks (:func:`action_rescaling`).
    backend: the vector env implementation (``auto``, ``native``, ``gym``, ``subproc``: ``auto``'s in
    ``num_workers`` worker processes, for environments stepped in Python; ``threads``: two shares on threads
    of this process, ``auto``'s choice for natively batched MuJoCo on two stepping threads,
    ``SHARED_STEPPING_MAX_THREADS``); ``ray`` is honoured by
    :class:`metarl.sampling.ray_collector.RayCollector` and ``process_pool`` by
    :class:`metarl.sampling.process_pool.ProcessPoolCollector` (:func:`metarl.sampling.backends.make_collector`
    builds the class a backend names); a plain Collector given either uses ``auto``, which gives the same
    batches (to rounding for ``process_pool``).
    """

    def __init__(
        self,
        env_id: str,
        seed: int = 0,
        backend: str = "auto",
        env_kwargs: dict | None = None,
        horizon: int | None = None,
        oracle: bool = False,
        num_threads: int | None = None,
        rescale_actions: bool = True,
        num_workers: int = 2,
    ):
        self.env_id = env_id
        #: task-in-observation variant: every observation ends with the task's features (oracle policies)
        self.oracle = oracle
        #: stepping threads for native batched envs that take ``num_threads`` (MuJoCo); None = all cores
        self.num_threads = num_threads
        #: worker processes of the ``subproc`` backend
        self.num_workers = int(num_workers)
        self.backend = backend
        self._vector_backend = "auto" if backend in ("ray", "process_pool") else backend
        self.env_kwargs = dict(env_kwargs or {})
        self.seed = int(seed)
        self.horizon = int(horizon) if horizon is not None else registered_horizon(env_id)
        if self.horizon < 1:
            raise ValueError(f"horizon must be >= 1, got {self.horizon}")
        self.generator = torch.Generator().manual_seed(self.seed)
        self._venvs: dict[int, BatchedTaskEnv] = {}
        #: one single environment, used for what is not per-step work (sample_tasks, task_to_array)
        self.task_env = make_task_env(env_id, **self.env_kwargs)
        if oracle:
            from metarl.sampling.oracle_env import TaskInObservation

            self.task_env = TaskInObservation(self.task_env)
        self.observation_space = self.task_env.observation_space
        self.action_space = self.task_env.action_space
        self.supervised_loss = getattr(self.task_env, "supervised_loss", None)
        #: per-step info entries recorded into ``EpisodeBatch.infos`` (named by the env class; generic)
        self.info_scalars = tuple(getattr(self.task_env.unwrapped, "info_scalars", ()))
        #: (center, half-width) mapping policy actions in [-1, 1] onto the Box bounds; None: the policy
        #: acts in the env's own units (rescaling off, unbounded or [-1, 1] Box, discrete or supervised)
        self.action_rescaling = (
            None if self.supervised or not rescale_actions else action_rescaling(self.action_space)
        )
        #: (low, high) every continuous action is clipped to before stepping; None: discrete or supervised
        self.action_bounds = None
        if not self.supervised and isinstance(self.action_space, gym.spaces.Box):
            self.action_bounds = (np.asarray(self.action_space.low), np.asarray(self.action_space.high))

    @property
    def rescale_actions(self) -> bool:
        """Whether policy actions are rescaled onto the bounds (see ``action_rescaling``)."""
        return self.action_rescaling is not None

    @property
    def supervised(self) -> bool:
        return self.supervised_loss is not None

    def _venv(self, num_envs: int) -> BatchedTaskEnv:
        venv = self._venvs.get(num_envs)
        if venv is None:
            kwargs = dict(self.env_kwargs)
            if self.num_threads is not None and _takes_num_threads(self.env_id, self._vector_backend):
                kwargs["num_threads"] = self.num_threads
            if self.oracle:
                from metarl.sampling.oracle_env import make_oracle_vector_env

                venv = make_oracle_vector_env(self.env_id, num_envs, backend=self._vector_backend, **kwargs)
            else:
                backend = self._vector_backend
                if backend == "subproc":
                    kwargs["num_workers"] = self.num_workers
                threads = self.num_threads or os.cpu_count() or 1
                if (backend == "auto" and num_envs > 1 and _takes_num_threads(self.env_id, backend)
                        and 1 < threads <= SHARED_STEPPING_MAX_THREADS):
                    # Natively batched MuJoCo on two threads: two shares, each driven by its own step loop
                    # on its own thread (ThreadedVectorEnv), so the policy's Python for one share overlaps
                    # the other's physics; one rollout over the whole batch leaves its pool idle then.
                    backend = "threads"
                venv = make_vector_env(self.env_id, num_envs, backend=backend, **kwargs)
            venv.seed(self.column_seeds(num_envs))
            self._venvs[num_envs] = venv
        return venv

    def column_seeds(self, num_envs: int) -> list[int]:
        """Seeds of the sub-environments of a ``num_envs``-column vector env, one per column.

        Distinct per sub-environment and per size; column b's seed depends only on (seed, num_envs, b),
        so a share of the columns [a, b) seeded with ``column_seeds(num_envs)[a:b]`` runs the same
        episodes as those columns of the whole vector env.
        """
        seeds = np.random.SeedSequence([self.seed, num_envs]).generate_state(num_envs, dtype=np.uint32)
        return [int(s) for s in seeds]

    def _noise_spec(self) -> tuple[str | None, tuple[int, ...]]:
        """(kind, per-column shape) of the action noise, from the action space, as the policies of
        :mod:`metarl.common.policies` sample: a Gaussian over a Box, Gumbel-max over a Discrete, none for H = 1."""
        if self.supervised:
            return None, ()
        if isinstance(self.action_space, gym.spaces.Discrete):
            return "uniform", (int(self.action_space.n),)
        return "normal", tuple(self.action_space.shape)

    def env_action(self, action: np.ndarray) -> np.ndarray:
        """The env's action for a policy action, always within the action space's bounds: with
        rescaling, center + half_width * clip(action, -1, 1) (rllab's ``normalize``, which the MAML
        paper's experiments used); else, for a Box, the action clipped to its bounds (as rllab and
        SB3 do: a [-1, 1] cheetah must not charge 0.05|a|^2 on a torque it clamps); else as is.

        The one function that maps policy actions to env actions: the collector's step loop (local
        and in Ray actors) and the oracle's PPO environments call it."""
        if self.action_rescaling is not None:
            center, half = self.action_rescaling
            return (center + half * np.clip(action, -1.0, 1.0)).astype(action.dtype)
        if self.action_bounds is not None:
            return np.clip(action, *self.action_bounds).astype(action.dtype, copy=False)
        return action

    def action_noise(self, num_steps: int, num_columns: int, deterministic: bool = False) -> torch.Tensor | None:
        """The action noise of one whole collection, [T, B, ...], drawn in one call from the generator.

        Drawn up front rather than step by step so that any share of the columns can be collected
        elsewhere with its slice ``noise[:, a:b]`` and sample exactly the actions it samples here.
        Gaussian: standard normal [T, B, act_dim]; categorical: uniform [T, B, n] (Gumbel-max);
        deterministic actions and supervised tasks: None (the generator does not advance).
        """
        kind, shape = self._noise_spec()
        if deterministic or kind is None:
            return None
        return draw_noise(kind, (num_steps, num_columns, *shape), self.generator)

    def sample_tasks(self, n: int, rng: np.random.Generator) -> list:
        """Tasks from the distribution (the environment's ``sample_tasks``)."""
        return self.task_env.sample_tasks(n, rng)

    def sample_test_tasks(self, n: int, rng: np.random.Generator) -> list:
        """Held-out tasks: the environment's ``sample_test_tasks`` where it has a held-out set
        (Meta-World), else ``sample_tasks`` (the caller's evaluation stream keeps them apart)."""
        fn = getattr(self.task_env.unwrapped, "sample_test_tasks", None)
        return fn(n, rng) if fn is not None else self.sample_tasks(n, rng)

    def task_groups(self, tasks: Sequence) -> list[str] | None:
        """Each task's group (Meta-World: its task class) from the env's optional ``task_group(task)``, else None."""
        fn = getattr(self.task_env.unwrapped, "task_group", None)
        return None if fn is None else [str(fn(t)) for t in tasks]

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
        """Run ``episodes_per_task`` episodes of every task in parallel.

        params: None for the policy's own parameters; a dict of tensors for functional parameters;
        with ``per_task_params`` every leaf has a leading dimension ``len(tasks)``.
        episodes_per_trial: > 1 for RL² trials (consecutive episodes in one column).
        task_inputs: [len(tasks), D], appended to the observations of each task's columns before the
        policy call (PEARL's latent z); None: the policy sees the observations alone.
        """
        cols_per_task = self._columns_per_task(policy, tasks, episodes_per_task, episodes_per_trial, params,
                                               task_inputs)
        n_cols = len(tasks) * cols_per_task
        noise = self.action_noise(self.horizon * episodes_per_trial, n_cols, deterministic)
        return self._rollout(self._venv(n_cols), policy, tasks, cols_per_task, params, per_task_params,
                             episodes_per_trial, deterministic, noise, task_inputs=task_inputs)

    def collect_columns(
        self,
        policy: torch.nn.Module,
        tasks: Sequence,
        episodes_per_task: int = 1,
        *,
        params: Params | None = None,
        per_task_params: bool = False,
        episodes_per_trial: int = 1,
        deterministic: bool = False,
        noise: torch.Tensor | None = None,
        env_states: Sequence,
        first_task: int = 0,
        total_tasks: int | None = None,
        task_inputs: torch.Tensor | None = None,
    ) -> tuple[EpisodeBatch, list]:
        """Collect one share (whole tasks) of a larger collection: what a Ray actor runs.

        The caller owns the randomness: ``noise`` is this share's column slice of the whole
        collection's :meth:`action_noise`, and ``env_states`` are the RNG states its sub-environments
        start from (one per column). Returns the batch (``task_index`` counts from 0 within ``tasks``)
        and the sub-environments' RNG states after it. Nothing of this collector's own streams is used,
        so the same arguments give the same batch in any process, a restarted one included.

        ``tasks`` are tasks ``first_task ..`` of the whole collection's ``total_tasks`` (default: the
        share is the whole). The policy is evaluated at the whole collection's shape, this share's rows
        in their own place and zeros in the others' (per-task parameters likewise), so that every row
        comes out bit for bit as in the whole collection: a BLAS may round a row differently in a call
        of another shape (measured on an AVX-512 Xeon with MKL), and a vectorized elementwise op may
        treat a tensor's tail differently. The price: each share pays the whole collection's policy
        arithmetic; the environment steps are what is split. ``task_inputs`` are this share's tasks' rows.
        """
        cols_per_task = self._columns_per_task(policy, tasks, episodes_per_task, episodes_per_trial, params,
                                               task_inputs)
        n_cols = len(tasks) * cols_per_task
        total_tasks = len(tasks) if total_tasks is None else int(total_tasks)
        if not 0 <= first_task <= total_tasks - len(tasks):
            raise ValueError(f"collect_columns: {len(tasks)} tasks from first_task={first_task} do not fit in "
                             f"total_tasks={total_tasks}")
        T = self.horizon * episodes_per_trial
        kind, shape = self._noise_spec()
        expected = None if deterministic or kind is None else (T, n_cols, *shape)
        got = None if noise is None else tuple(noise.shape)
        if got != expected:
            raise ValueError(f"collect_columns: noise must be {'None' if expected is None else expected}, got {got}")
        if len(env_states) != n_cols:
            raise ValueError(f"collect_columns: {n_cols} columns need {n_cols} env RNG states, got {len(env_states)}")
        venv = self._venv(n_cols)
        venv.set_rng_state(list(env_states))
        rows = _PolicyRows(first_task * cols_per_task, n_cols, total_tasks * cols_per_task)
        if params is not None and per_task_params:
            params = {k: _in_place(v, first_task, total_tasks) for k, v in params.items()}
        if task_inputs is not None:
            task_inputs = _in_place(task_inputs, first_task, total_tasks)
        batch = self._rollout(venv, policy, tasks, cols_per_task, params, per_task_params, episodes_per_trial,
                              deterministic, noise, rows, task_inputs)
        return batch, venv.get_rng_state()

    def _columns_per_task(self, policy, tasks, episodes_per_task, episodes_per_trial, params,
                          task_inputs=None) -> int:
        """Check collect()'s arguments; columns per task (one trial of episodes_per_trial episodes each)."""
        num_tasks = len(tasks)
        if num_tasks < 1:
            raise ValueError("collect() needs at least one task")
        if episodes_per_task < 1 or episodes_per_trial < 1 or episodes_per_task % episodes_per_trial:
            raise ValueError(
                f"episodes_per_task ({episodes_per_task}) must be a positive multiple of "
                f"episodes_per_trial ({episodes_per_trial})"
            )
        if getattr(policy, "is_recurrent", False) and params is not None:
            raise ValueError("recurrent policies are evaluated with their own parameters (params must be None)")
        if task_inputs is not None:
            if getattr(policy, "is_recurrent", False):
                raise ValueError("task_inputs are for feed-forward policies; a recurrent policy builds its own inputs")
            if task_inputs.dim() != 2 or task_inputs.shape[0] != num_tasks:
                raise ValueError(f"task_inputs must be [num_tasks={num_tasks}, D], got {tuple(task_inputs.shape)}")
        return episodes_per_task // episodes_per_trial

    def _rollout(self, venv: BatchedTaskEnv, policy, tasks, cols_per_task, params, per_task_params,
                 episodes_per_trial, deterministic, noise, rows: "_PolicyRows | None" = None,
                 task_inputs: torch.Tensor | None = None) -> EpisodeBatch:
        """Every column of ``venv`` runs its trial; actions come from ``noise`` [T, B, ...].

        rows: where these columns sit in the policy's calls (a share of a larger collection); per-task
        ``params`` (and ``task_inputs``) then already cover the whole collection's tasks.

        A ``venv`` whose sub-environments live in shares (a :class:`ShareVectorEnv`: worker processes,
        ``subproc``, or threads of this process, ``threads``) is driven without lock-step: each share's
        columns run their own step loop (:meth:`_step_loop`), which evaluates the policy on its rows as soon
        as that share's observations arrive, while the other shares step. Every loop evaluates the policy
        at the whole collection's shape (its rows in place, zeros elsewhere, as a Ray share does) on an
        aligned fresh input and the caller's torch thread count (:func:`_share_loop`), so the batch equals
        the lock-step one bit for bit.
        """
        num_tasks = len(tasks)
        n_cols = num_tasks * cols_per_task
        rows = rows or _PolicyRows(0, n_cols, n_cols)
        T = self.horizon * episodes_per_trial
        venv.set_tasks([task for task in tasks for _ in range(cols_per_task)])
        # The policy runs on its own device (collector.device): per step the observations go there and
        # the actions come back, once each; the noise goes there once per collection (it is drawn on the
        # CPU generator, so every device samples the same actions), and the batch is returned there.
        device = policy_device(policy)
        noise = None if noise is None else noise.to(device)
        # [total rows, D]: each task's input repeated over its columns (task-major), built once
        column_inputs = None
        if task_inputs is not None:
            column_inputs = task_inputs.detach().float().repeat_interleave(cols_per_task, 0).to(device)
        shares = getattr(venv, "shares", None)

        def loop(a: int, b: int):
            share_rows = rows if (a, b) == (0, n_cols) else _PolicyRows(rows.start + a, b - a, rows.total)
            return _share_loop(self._step_loop(policy, share_rows, T, cols_per_task, params, per_task_params,
                                               deterministic, None if noise is None else noise[:, a:b],
                                               column_inputs, device), torch.get_num_threads())

        with torch.no_grad(), _single_threaded_torch():
            if isinstance(venv, ShareVectorEnv) and len(shares) > 1:
                parts = venv.run_share_loops([loop(a, b) for a, b in shares])
            else:
                parts = [_run_loop(venv, loop(0, n_cols))]

        def cat(key):
            values = [p[key] for p in parts]
            if values[0] is None or len(values) == 1:
                return values[0]
            return torch.cat(values, 1) if isinstance(values[0], torch.Tensor) else np.concatenate(values, 1)

        as_tensor = lambda x: None if x is None else torch.from_numpy(x)  # noqa: E731  (numpy buffers, shared)
        H = self.horizon
        timesteps = torch.arange(T, device=device).remainder(H).unsqueeze(1).expand(T, n_cols)
        return EpisodeBatch(
            obs=as_tensor(cat("obs")),
            actions=as_tensor(cat("actions")),
            rewards=as_tensor(cat("rewards")),
            valid=as_tensor(cat("valid")),
            dones=as_tensor(cat("dones")),
            log_probs=cat("log_probs"),
            timesteps=timesteps,
            task_index=torch.arange(num_tasks, device=device).repeat_interleave(cols_per_task),
            num_tasks=num_tasks,
            horizon=H,
            episodes_per_trial=episodes_per_trial,
            targets=as_tensor(cat("targets")),
            policy_inputs=cat("policy_inputs"),
            final_obs=as_tensor(cat("final_obs")),
            infos={key: torch.from_numpy(parts[0]["infos"][key] if len(parts) == 1 else
                                         np.concatenate([p["infos"][key] for p in parts], 1))
                   for key in self.info_scalars},
        ).to(device)

    def _step_loop(self, policy, rows: "_PolicyRows", T: int, cols_per_task: int, params, per_task_params,
                   deterministic: bool, noise: torch.Tensor | None, column_inputs: torch.Tensor | None, device):
        """The step loop of the columns ``rows`` (a generator): yields the vector env calls it needs,
        ``("reset", None)`` or ``("step", env_actions)``, is sent each call's result, and returns this
        loop's buffers [T, rows.count, ...]. ``noise`` holds these columns only; ``column_inputs`` and
        per-task ``params`` cover all ``rows.total`` rows."""
        H = self.horizon
        n_cols = rows.count
        policy_tasks = rows.total // cols_per_task
        recurrent = getattr(policy, "is_recurrent", False)
        obs, info = yield "reset", None
        obs_buf = np.zeros((T, n_cols, *np.shape(obs)[1:]), dtype=np.float32)
        rew_buf = np.zeros((T, n_cols), dtype=np.float32)
        valid_buf = np.zeros((T, n_cols), dtype=np.float32)
        done_buf = np.zeros((T, n_cols), dtype=bool)
        act_buf = None
        logp_buf = torch.zeros(T, n_cols, device=device)
        target_buf = None
        inputs_buf = None
        running = np.ones(n_cols, dtype=bool)
        final_obs_buf = np.zeros((T // H, n_cols, *np.shape(obs)[1:]), dtype=np.float32)
        info_bufs = {key: np.zeros((T, n_cols), dtype=np.float32) for key in self.info_scalars}
        if recurrent:
            state = policy.initial_state(rows.total)
            # Before the first step of a trial there is no previous action: -1 for a discrete policy
            # (encoded as an all-zero one-hot, not as "arm 0 was pulled"), zeros for a continuous one.
            prev_action = (torch.full((n_cols,), -1, dtype=torch.long, device=device) if policy.discrete
                           else torch.zeros(n_cols, policy.action_dim, device=device))
            prev_reward = torch.zeros(n_cols, device=device)
            prev_done = torch.zeros(n_cols, device=device)

        for t in range(T):
            k = t % H
            if k == 0 and t > 0:
                obs, info = yield "reset", None
                running[:] = True
            obs_buf[t] = obs
            # A copy, not a view of obs_buf: MKL's rounding depends on its operands' memory alignment, and
            # row t of obs_buf sits at an offset of t * n_cols * D floats; a fresh tensor (64-byte
            # aligned by torch) rounds as a share's widened input does, whatever t and the share sizes.
            obs_t = torch.from_numpy(obs_buf[t]).to(device, copy=True)
            if recurrent:
                inputs = policy.make_inputs(obs_t, prev_action, prev_reward, prev_done)
                out, new_state = policy.step(rows.widen(inputs), state)
                if inputs_buf is None:
                    inputs_buf = torch.zeros(T, n_cols, inputs.shape[-1], device=device)
                inputs_buf[t] = inputs
            else:
                x = rows.widen(obs_t)
                if column_inputs is not None:
                    x = torch.cat([x, column_inputs], -1)
                out = policy_forward(policy, x, params, policy_tasks if per_task_params else None)
            dist = policy.distribution(out)
            if deterministic:
                action = dist.mode()
            else:
                if t == 0 and getattr(dist, "noise_kind", None) != self._noise_spec()[0]:
                    raise ValueError(
                        f"the policy's {type(dist).__name__} samples with {getattr(dist, 'noise_kind', None)} "
                        f"noise, but the collector draws {self._noise_spec()[0]} noise for {self.action_space}"
                    )
                action = dist.sample_from_noise(None if noise is None else rows.widen(noise[t]))
            logp_buf[t] = rows.narrow(dist.log_prob(action))
            action = rows.narrow(action)
            action_np = action.cpu().numpy()
            if act_buf is None:
                act_buf = np.zeros((T, *action_np.shape), dtype=action_np.dtype)
            act_buf[t] = action_np
            valid_buf[t] = running
            obs, reward, terminated, truncated, info = yield "step", self.env_action(action_np)
            rew_buf[t] = np.where(running, reward, 0.0)
            for key, buf in info_bufs.items():
                if key in info:  # absent only when no sub-env stepped
                    buf[t] = np.where(running, info[key], 0.0)
            if self.supervised:
                if target_buf is None:
                    target_buf = np.zeros((T, *np.shape(info["target"])), dtype=np.float32)
                target_buf[t] = info["target"]
            ended = terminated | truncated | (k == H - 1)
            done_buf[t] = running & ended
            final_obs_buf[t // H][done_buf[t]] = obs[done_buf[t]]
            if recurrent:
                # running, reward, done of this step: one transfer to the policy's device
                flags = torch.from_numpy(np.stack([running, rew_buf[t], done_buf[t]]).astype(np.float32)).to(device)
                run_t = flags[0] > 0
                state = torch.where(rows.widen(run_t).unsqueeze(-1), new_state, state)
                prev_action = torch.where(run_t.view(-1, *[1] * (action.dim() - 1)), action, prev_action)
                prev_reward = torch.where(run_t, flags[1], prev_reward)
                prev_done = torch.where(run_t, flags[2], prev_done)
            running &= ~ended
        return {"obs": obs_buf, "actions": act_buf, "rewards": rew_buf, "valid": valid_buf, "dones": done_buf,
                "log_probs": logp_buf, "targets": target_buf, "policy_inputs": inputs_buf,
                "final_obs": final_obs_buf, "infos": info_bufs}

    def get_rng_state(self) -> dict:
        """Every random stream of the collector (for checkpoints and exact resume)."""
        return {
            "torch": self.generator.get_state(),
            "envs": {n: v.get_rng_state() for n, v in self._venvs.items()},
        }

    def set_rng_state(self, state: dict) -> None:
        self.generator.set_state(state["torch"])
        saved = {int(n) for n in state["envs"]}
        # A vector env built after the state was taken must start again from its seed, as it would
        # have when first built.
        for n in [n for n in self._venvs if n not in saved]:
            self._venvs.pop(n).close()
        for n, s in state["envs"].items():
            self._venv(int(n)).set_rng_state(s)

    def close(self) -> None:
        for v in self._venvs.values():
            v.close()
        self._venvs.clear()
