"""Meta-World ML1 / ML10 / ML45 (Yu et al., CoRL 2019; the Farama ``metaworld`` 3.x package) as task
distributions with our task API.

Install: ``pip install -e ".[metaworld]"`` (metaworld 3.1 pins ``mujoco==3.3.0``; metarl runs on it).

* ``metarl/MetaWorldML1-v0`` (kwarg ``env_name``, any of metaworld's 50 names, default ``reach-v3``):
  one manipulation task; 50 training and 50 held-out goal (and object) positions.
* ``metarl/MetaWorldML10-v0``: 10 training task classes, 5 held-out classes, 50 positions each.
* ``metarl/MetaWorldML45-v0``: 45 training classes, 5 held-out classes.

The positions are metaworld's own ``Benchmark`` objects (``metaworld.ML1(env_name, seed)``,
``ML10(seed)``, ``ML45(seed)``) built with ``benchmark_seed`` (default 0), so a seed names one fixed set.
``sample_tasks(n, rng)`` draws n training tasks independently and uniformly from the benchmark's
training tasks (so a class is uniform too); ``sample_test_tasks(n, rng)`` takes its held-out tasks
evenly, every position once before any twice and the classes in turn (``n = 50`` on ML1: each held-out
goal exactly once), which is what ``metarl evaluate`` and the periodic meta-test use. Validation tasks for
``metarl tune`` come from the training tasks (metaworld has no validation split).

Observation: metaworld's 39 floats (hand, gripper, two objects, previous frame; the goal entries are
zero, i.e. hidden, as in every ML benchmark). Action: 4 floats in [-1, 1]. Horizon: 500 steps, the
benchmark's ``max_path_length`` (longer is refused). Reward: metaworld's ``reward_function_version``
"v2" by default (the shaped rewards of Meta-World v2, used on the v3 envs by Meta-World+ 2025), or
"v1" (the original paper's). The metric that papers report is the success rate: ``info["success"]``
per step, and an episode succeeds if it succeeded at any step (``info_scalars`` tells the collector
to record it; :meth:`metarl.sampling.collector.EpisodeBatch.episode_info_max`).

Speed: a vector env of Meta-World tasks (:class:`MetaWorldVectorEnv`, what the collector builds in each
worker process) steps its reach-v3, push-v3 and pick-place-v3 sub-environments together: metaworld's
per-step Python (mocap, observation, shaped v2 reward) runs once per batch with numpy
(``metaworld_vector.py``), with the same floats as the single env's step; other classes and the v1 rewards
step one env at a time.

Memory: every sub-environment holds its own MuJoCo model (about 21 MB for the Sawyer scenes, mostly
textures; metaworld writes goal positions into the model, so models cannot be shared), so a collection
of B columns needs about B x 21 MB. Switching a sub-environment to another task class takes an
instance of that class from a per-process pool (built in about 0.15 s when the pool has none).
"""

from __future__ import annotations

import functools
import pickle
from dataclasses import dataclass, field
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np

from metarl.common.tasks import BatchedTaskEnv, TaskEnv, check_sample_tasks_args, check_task_type

PIP_COMMAND = 'pip install -e ".[metaworld]"'
BENCHMARKS = ("ML1", "ML10", "ML45")
REWARD_VERSIONS = ("v2", "v1")
OBS_DIM = 39
#: free instances kept per process for reuse when a sub-environment changes task class (about 21 MB each):
#: set_task gives its old instance back before taking one of the new class, so a vector env whose tasks
#: change (ML10/ML45) mostly reuses instances instead of building them (~0.15 s each)
POOL_SIZE = 32


#: set by the first import_metaworld(): the fast paths are installed once, so use_fast_paths(False) lasts
_fast_paths_installed = False


def import_metaworld():
    """The metaworld module, or one line saying how to install it."""
    try:
        import metaworld
    except ImportError:
        raise ModuleNotFoundError(f"Meta-World needs the metaworld package: {PIP_COMMAND}") from None
    global _fast_paths_installed
    if not _fast_paths_installed:
        from metarl.envs.metaworld_fast import use_fast_paths

        use_fast_paths()  # metaworld's own results, faster (envs/metaworld_fast.py)
        _fast_paths_installed = True
    return metaworld


@dataclass(frozen=True)
class MetaWorldTask:
    """Task ``index`` of the benchmark's ``split`` ("train" or "test") task list: class ``env_name`` with
    one goal/object placement. ``data`` is metaworld's own task record (pickled), so a task carries
    everything a worker process needs to set it without rebuilding the benchmark."""

    env_name: str
    split: str
    index: int
    data: bytes = field(repr=False)

    def __post_init__(self):
        if self.split not in ("train", "test"):
            raise ValueError(f"MetaWorldTask.split must be 'train' or 'test', got {self.split!r}")


@functools.lru_cache(maxsize=4)
def _benchmark(benchmark: str, env_name: str | None, seed: int):
    """metaworld's Benchmark object, built once per process (~1 s for ML1, ~9 s for ML10, ~100 s for ML45
    on a busy 2-core machine)."""
    mw = import_metaworld()
    return mw.ML1(env_name, seed=seed) if benchmark == "ML1" else getattr(mw, benchmark)(seed=seed)


def _classes(benchmark: str, env_name: str | None) -> dict[str, type]:
    """Every env class of the benchmark by name (training and held-out), without building its tasks."""
    import_metaworld()
    from metaworld import env_dict

    if benchmark == "ML1":
        return {env_name: env_dict.ALL_V3_ENVIRONMENTS[env_name]}
    table = getattr(env_dict, f"{benchmark}_V3")
    return {**table["train"], **table["test"]}


#: this process's free metaworld envs by (class, reward version)
_pool: dict[tuple[type, str], list] = {}


def _take(cls: type, reward_version: str):
    free = _pool.get((cls, reward_version))
    return free.pop() if free else cls(reward_function_version=reward_version)


def _give_back(env, reward_version: str) -> None:
    if sum(len(v) for v in _pool.values()) >= POOL_SIZE:
        env.close()
        return
    _pool.setdefault((type(env), reward_version), []).append(env)


class MetaWorldEnv(TaskEnv):
    """One Meta-World benchmark as a task distribution; holds one metaworld env of the current task's class."""

    task_type = MetaWorldTask
    metadata = {"render_modes": []}
    #: per-step info entries the collector records ([T, B] in EpisodeBatch.infos)
    info_scalars: ClassVar[tuple[str, ...]] = ("success",)

    def __init__(self, benchmark: str = "ML1", env_name: str | None = None, benchmark_seed: int = 0,
                 reward_function_version: str = "v2"):
        if benchmark not in BENCHMARKS:
            raise ValueError(f"benchmark must be one of {', '.join(BENCHMARKS)}, got {benchmark!r}")
        mw = import_metaworld()
        if benchmark == "ML1":
            env_name = "reach-v3" if env_name is None else env_name
            if env_name not in mw.ML1.ENV_NAMES:
                raise ValueError(f"unknown Meta-World ML1 env_name {env_name!r}; valid: {', '.join(mw.ML1.ENV_NAMES)}")
        elif env_name is not None:
            raise ValueError(f"env_name applies to ML1 only; {benchmark} has its own classes (got env_name={env_name!r})")
        if reward_function_version not in REWARD_VERSIONS:
            raise ValueError(f"reward_function_version must be one of {', '.join(REWARD_VERSIONS)}, "
                             f"got {reward_function_version!r}")
        if isinstance(benchmark_seed, bool) or not isinstance(benchmark_seed, (int, np.integer)) or benchmark_seed < 0:
            raise ValueError(f"benchmark_seed must be a non-negative integer, got {benchmark_seed!r}")
        self.benchmark = benchmark
        self.env_name = env_name
        self.benchmark_seed = int(benchmark_seed)
        self.reward_function_version = reward_function_version
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, shape=(OBS_DIM,), dtype=np.float64)
        self.action_space = gym.spaces.Box(-1.0, 1.0, shape=(4,), dtype=np.float32)
        self._env = None
        self._task: MetaWorldTask | None = None

    # -- task API -------------------------------------------------------------------------------

    def _tasks(self, split: str) -> list:
        b = _benchmark(self.benchmark, self.env_name, self.benchmark_seed)
        return b.train_tasks if split == "train" else b.test_tasks

    def _sample(self, n: int, rng: np.random.Generator, split: str) -> list[MetaWorldTask]:
        check_sample_tasks_args(n, rng)
        tasks = self._tasks(split)
        return [MetaWorldTask(tasks[i].env_name, split, int(i), tasks[i].data)
                for i in rng.integers(0, len(tasks), size=int(n))]

    def sample_tasks(self, n: int, rng: np.random.Generator) -> list[MetaWorldTask]:
        """n training tasks, each uniform over the benchmark's training tasks."""
        return self._sample(n, rng, "train")

    def sample_test_tasks(self, n: int, rng: np.random.Generator) -> list[MetaWorldTask]:
        """n held-out tasks, spread evenly: the classes take turns (ML10/ML45: n // 5 or one more each), and a
        class gives each of its positions once, in an order drawn from ``rng``, before any a second time. So
        ``n = 50`` on ML1 scores every held-out goal exactly once; independent draws would leave about a third
        of them out and score others twice."""
        check_sample_tasks_args(n, rng)
        tasks = self._tasks("test")
        by_class: dict[str, list[int]] = {}
        for i, task in enumerate(tasks):
            by_class.setdefault(task.env_name, []).append(i)
        classes = sorted(by_class)
        left: dict[str, list[int]] = {name: [] for name in classes}
        picks = []
        for k in range(int(n)):
            name = classes[k % len(classes)]
            if not left[name]:  # a new round over the class's positions
                left[name] = [int(i) for i in rng.permutation(by_class[name])]
            picks.append(left[name].pop())
        return [MetaWorldTask(tasks[i].env_name, "test", i, tasks[i].data) for i in picks]

    @staticmethod
    def task_group(task: MetaWorldTask) -> str:
        """The task's class (what evaluation reports success rates per)."""
        return task.env_name

    def set_task(self, task: MetaWorldTask) -> None:
        check_task_type(task, MetaWorldTask, type(self).__name__)
        classes = _classes(self.benchmark, self.env_name)
        if task.env_name not in classes:
            raise ValueError(f"task class {task.env_name!r} is not part of {self.benchmark}; its classes: "
                             f"{', '.join(classes)}")
        if self._env is None or type(self._env) is not classes[task.env_name]:
            if self._env is not None:
                _give_back(self._env, self.reward_function_version)
            self._env = _take(classes[task.env_name], self.reward_function_version)
        self._env.set_task(import_metaworld().Task(env_name=task.env_name, data=task.data))
        self._task = task

    def get_task(self) -> MetaWorldTask | None:
        return self._task

    # -- episodes -------------------------------------------------------------------------------

    def _current(self):
        if self._env is None:
            raise RuntimeError(f"{type(self).__name__}: call set_task(task) before reset() (tasks come from sample_tasks)")
        return self._env

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)  # Meta-World resets are deterministic given the task; our stream is kept anyway
        obs, info = self._current().reset()
        return obs, info

    def step(self, action):
        env = self._current()
        if env.curr_path_length >= env.max_path_length:
            raise ValueError(f"Meta-World episodes last at most {env.max_path_length} steps; use env.horizon <= "
                             f"{env.max_path_length}")
        obs, reward, terminated, truncated, info = env.step(np.asarray(action, dtype=np.float32))
        return obs, float(reward), bool(terminated), bool(truncated), info

    def close(self) -> None:
        if self._env is not None:  # not pooled: a closed collector frees its models
            self._env.close()
            self._env = None


class MetaWorldVectorEnv(BatchedTaskEnv):
    """``num_envs`` :class:`MetaWorldEnv` sub-environments (the ``batched_env_class``). Those whose current
    metaworld env has a batched step (``metaworld_vector.has_batched_step``: reach-v3, push-v3 and
    pick-place-v3 with v2 rewards) step together through ``metaworld_vector.step_batch``, which does
    metaworld's per-step Python once per batch with numpy and gives the same floats; the others step one at
    a time through :meth:`MetaWorldEnv.step`. Resets never draw randomness (metaworld's are deterministic given the task),
    so the sub-environments' streams are :class:`BatchedTaskEnv`'s, untouched. The info is what the collector
    records, ``info_scalars``, on both paths."""

    def __init__(self, num_envs: int, **env_kwargs: Any):
        super().__init__(num_envs)
        self.envs = [MetaWorldEnv(**env_kwargs) for _ in range(self.num_envs)]  # without the extra: the pip line
        # imported here, not at the top: it needs scipy, which comes with the extra
        from metarl.envs import metaworld_vector

        self._batched = metaworld_vector
        self.single_observation_space = self.envs[0].observation_space
        self.single_action_space = self.envs[0].action_space
        self._done = np.zeros(self.num_envs, dtype=bool)
        self._obs = np.zeros((self.num_envs, OBS_DIM))
        self._state = None  # metaworld_vector.EpisodeState of the envs with a batched step, built at every reset
        self._state_rows = np.zeros(self.num_envs, dtype=np.int64)  # env i's row in the state (when in it)
        self._groups: list[np.ndarray] = []  # the envs with a batched step, one index array per class
        self._one_at_a_time = np.arange(self.num_envs)  # the others

    def _tasks_changed(self) -> None:
        for env, task in zip(self.envs, self.tasks):
            env.set_task(task)

    def reset(self):
        self._obs = np.stack([env.reset()[0] for env in self.envs])
        self._done[:] = False
        # the classes are the tasks', fixed until the next set_tasks: grouped once per episode, not per step
        batched = np.array([self._batched.has_batched_step(env._env) for env in self.envs])
        # ML10/ML45 mix classes: the state holds the envs with a batched step, in order
        batched_envs = [self.envs[i]._env for i in np.flatnonzero(batched)]
        self._state = self._batched.EpisodeState(batched_envs) if batched_envs else None
        self._state_rows = np.cumsum(batched) - 1
        classes = [type(env._env) for env in self.envs]
        self._groups = [np.flatnonzero(batched & np.array([c is cls for c in classes]))
                        for cls in dict.fromkeys(c for c, b in zip(classes, batched) if b)]
        self._one_at_a_time = np.flatnonzero(~batched)
        return self._obs.copy(), {}

    def step(self, actions):
        n = self.num_envs
        actions = np.asarray(actions)
        reward, success = np.zeros(n), np.zeros(n)
        terminated, truncated = np.zeros(n, dtype=bool), np.zeros(n, dtype=bool)
        running = ~self._done  # finished episodes are masked by the collector: not stepped
        for i in self._one_at_a_time[running[self._one_at_a_time]].tolist():
            obs, reward[i], terminated[i], truncated[i], info = self.envs[i].step(actions[i])
            self._obs[i], success[i] = obs, info["success"]
        for rows in self._groups:
            rows = rows[running[rows]]
            if len(rows):
                step = self._batched.step_batch(self._state, self._state_rows[rows], actions[rows])
                self._obs[rows], reward[rows], truncated[rows], success[rows] = step
        self._done |= terminated | truncated
        return self._obs.copy(), reward, terminated, truncated, {"success": success}

    def close(self) -> None:
        for env in self.envs:
            env.close()


MetaWorldEnv.batched_env_class = MetaWorldVectorEnv
