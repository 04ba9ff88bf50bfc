"""Sinusoid regression (Finn et al. 2017, "Model-Agnostic Meta-Learning", section 5.1) as an H = 1 task.

A task is y = A sin(x - phi) with amplitude A ~ U[0.1, 5.0] and phase phi ~ U[0, pi]. An episode is a
single supervised example: ``reset()`` draws the input x ~ U[-5, 5] (the observation, shape (1,)),
the action is the model's prediction, and ``step`` returns reward = -(prediction - y)^2,
``terminated=True`` and ``info["target"] = y`` (float32, shape (1,)). ``supervised_loss`` is the
matching differentiable torch MSE, so an inner loop can backpropagate through the loss instead of
the reward.

Action-space bounds: SB3's ``check_env`` rejects a Box action space with infinite bounds, so the
prediction space is Box(-100, 100). The bound is nominal: targets lie in [-5, 5], so no sensible
prediction comes near it, and ``step`` does not clip (the reward is the exact squared error of
whatever was predicted, matching ``supervised_loss``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from numbers import Real

import gymnasium as gym
import numpy as np
import torch

from metarl.common.tasks import BatchedTaskEnv, TaskEnv, check_sample_tasks_args, check_task_type

AMPLITUDE_RANGE = (0.1, 5.0)
PHASE_RANGE = (0.0, math.pi)
INPUT_RANGE = (-5.0, 5.0)
#: Nominal bound of the prediction (action) space; finite only because SB3 requires finite bounds.
PREDICTION_BOUND = 100.0


@dataclass(frozen=True)
class SinusoidTask:
    """y = amplitude * sin(x - phase)."""

    amplitude: float
    phase: float

    def __post_init__(self):
        # Any finite values are allowed (out-of-distribution test tasks are legitimate); stored as
        # Python floats so equal tasks compare and hash equal whatever numeric type built them.
        for name in ("amplitude", "phase"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(value):
                raise ValueError(f"SinusoidTask.{name} must be a finite real number, got {value!r}")
            object.__setattr__(self, name, float(value))


DEFAULT_TASK = SinusoidTask(amplitude=1.0, phase=0.0)


def mse_loss(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-sample squared error, averaged over the last (output) dimension; batch dims are kept."""
    if prediction.shape != target.shape:
        # Broadcasting [B, 1] against [B] would silently give a [B, B] loss, so require equal shapes.
        raise ValueError(
            f"mse_loss: prediction shape {tuple(prediction.shape)} != target shape {tuple(target.shape)}"
        )
    return ((prediction - target) ** 2).mean(dim=-1)


def _inputs_from_uniform(u: np.ndarray) -> np.ndarray:
    """x ~ U[-5, 5] from U[0, 1) draws, as float32.

    ``low + (high - low) * u`` is how numpy's ``Generator.uniform`` maps its draw, so the values are
    the same as ``rng.uniform(-5, 5)``; one scalar ``rng.random()`` per sub-env is the cheapest draw
    that keeps every sub-env on its own stream (this runs for every column of every collection).
    """
    low, high = INPUT_RANGE
    return (low + (high - low) * u).astype(np.float32)


def _targets(x: np.ndarray, amplitude: np.ndarray, phase: np.ndarray) -> np.ndarray:
    """y = A sin(x - phi) from the float32 input the model sees, computed in float64, returned float32.

    Shared by the single and the batched env so both produce bit-identical targets.
    """
    return (amplitude * np.sin(x.astype(np.float64) - phase)).astype(np.float32)


def _prediction_array(action, shape: tuple[int, ...], where: str) -> np.ndarray:
    try:
        pred = np.asarray(action, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{where}: expected a numeric prediction of shape {shape}, got {action!r}") from None
    if pred.shape != shape:
        if pred.size == math.prod(shape):
            pred = pred.reshape(shape)  # accept e.g. a scalar for (1,) or [B] for [B, 1]
        else:
            raise ValueError(f"{where}: expected a prediction of shape {shape}, got shape {pred.shape}")
    return pred


class SinusoidEnv(TaskEnv):
    """Sinusoid regression task distribution; one episode is one (x, y) example."""

    task_type = SinusoidTask
    supervised_loss = staticmethod(mse_loss)
    metadata = {"render_modes": []}

    def __init__(self):
        self.observation_space = gym.spaces.Box(*INPUT_RANGE, shape=(1,), dtype=np.float32)
        self.action_space = gym.spaces.Box(-PREDICTION_BOUND, PREDICTION_BOUND, shape=(1,), dtype=np.float32)
        #: bounds of ``task_to_array`` over the training distribution (used by the oracle wrapper)
        self.task_space = _task_space()
        self._task = DEFAULT_TASK
        self._x = np.zeros(1, dtype=np.float32)
        self._target = np.zeros(1, dtype=np.float32)

    def sample_tasks(self, n: int, rng: np.random.Generator) -> list[SinusoidTask]:
        check_sample_tasks_args(n, rng)
        amplitudes = rng.uniform(*AMPLITUDE_RANGE, size=n)
        phases = rng.uniform(*PHASE_RANGE, size=n)
        return [SinusoidTask(float(a), float(p)) for a, p in zip(amplitudes, phases)]

    def set_task(self, task: SinusoidTask) -> None:
        check_task_type(task, SinusoidTask, type(self).__name__)
        self._task = task

    def get_task(self) -> SinusoidTask:
        return self._task

    @staticmethod
    def task_to_array(task: SinusoidTask) -> np.ndarray:
        return np.array([task.amplitude, task.phase], dtype=np.float32)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        # One generator call per reset keeps the env cheap and fixes the draw order the batched
        # env reproduces.
        self._x = _inputs_from_uniform(np.array([self.np_random.random()]))
        self._target = _targets(self._x, self._task.amplitude, self._task.phase)
        return self._x.copy(), {}

    def step(self, action):
        pred = _prediction_array(action, (1,), "SinusoidEnv.step")
        err = pred - self._target.astype(np.float64)
        reward = -float(err[0] * err[0])
        return self._x.copy(), reward, True, False, {"target": self._target.copy()}


def _task_space() -> gym.spaces.Box:
    return gym.spaces.Box(
        low=np.array([AMPLITUDE_RANGE[0], PHASE_RANGE[0]], dtype=np.float32),
        high=np.array([AMPLITUDE_RANGE[1], PHASE_RANGE[1]], dtype=np.float32),
        dtype=np.float32,
    )


class BatchedSinusoidEnv(BatchedTaskEnv):
    """``num_envs`` sinusoid tasks; steps are vectorized, reset draws x_i from ``self.rngs[i]``.

    A sub-environment whose (one-step) episode has ended is not advanced again until ``reset()``:
    further steps return its last observation, reward 0 and zero targets, as the loop fallback does.
    """

    supervised_loss = staticmethod(mse_loss)
    task_to_array = staticmethod(SinusoidEnv.task_to_array)

    def __init__(self, num_envs: int):
        super().__init__(num_envs)
        self.single_observation_space = gym.spaces.Box(*INPUT_RANGE, shape=(1,), dtype=np.float32)
        self.single_action_space = gym.spaces.Box(
            -PREDICTION_BOUND, PREDICTION_BOUND, shape=(1,), dtype=np.float32
        )
        self.task_space = _task_space()
        self._x = np.zeros((self.num_envs, 1), dtype=np.float32)
        self._target = np.zeros((self.num_envs, 1), dtype=np.float32)
        self._done = np.ones(self.num_envs, dtype=bool)
        self._was_reset = False
        self.set_tasks([DEFAULT_TASK] * self.num_envs)

    def _tasks_changed(self) -> None:
        # A task object repeats over its columns (the collector sets one per episode): check and read each
        # distinct object once (this ran per task per column, a third of an H = 1 collection's time).
        distinct = {id(t): t for t in self.tasks}
        for task in distinct.values():
            check_task_type(task, SinusoidTask, type(self).__name__)
        slot = {key: i for i, key in enumerate(distinct)}
        rows = np.fromiter((slot[id(t)] for t in self.tasks), dtype=np.intp, count=self.num_envs)
        values = np.array([[t.amplitude, t.phase] for t in distinct.values()], dtype=np.float64)[rows]
        self._amplitude = values[:, :1].copy()
        self._phase = values[:, 1:].copy()

    def reset(self):
        # Each sub-env must draw from its own generator, so this is one call per sub-env (at reset
        # only; steps are fully vectorized).
        u = np.fromiter((rng.random() for rng in self.rngs), dtype=np.float64, count=self.num_envs)
        self._x = _inputs_from_uniform(u)[:, None]
        self._target = _targets(self._x, self._amplitude, self._phase)
        self._done[:] = False
        self._was_reset = True
        return self._x.copy(), {}

    def step(self, actions):
        if not self._was_reset:
            raise RuntimeError("BatchedSinusoidEnv.step called before reset()")
        pred = _prediction_array(actions, (self.num_envs, 1), "BatchedSinusoidEnv.step")
        active = ~self._done
        err = pred[:, 0] - self._target[:, 0].astype(np.float64)
        reward = np.where(active, -(err * err), 0.0)
        terminated = active.copy()
        truncated = np.zeros(self.num_envs, dtype=bool)
        target = np.where(active[:, None], self._target, np.float32(0.0))
        self._done[:] = True
        return self._x.copy(), reward, terminated, truncated, {"target": target}


SinusoidEnv.batched_env_class = BatchedSinusoidEnv
