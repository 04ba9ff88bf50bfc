"""Config sections of what collection needs: the task distribution (``env:``) and the collector (``collector:``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from metarl.common.config import ConfigRangeError, check_range


@dataclass
class EnvConfig:
    """The task distribution."""

    id: str = "metarl/Sinusoid-v0"
    """Registered Gymnasium id of the task distribution."""
    kwargs: dict[str, Any] = field(default_factory=dict)
    """Keyword arguments passed to the environment constructor."""
    horizon: int | None = None
    """Episode length H; null uses the registered max_episode_steps."""
    rescale_actions: bool = True
    """Continuous policies act in [-1, 1] per dimension, clipped to it and mapped onto the action space's finite bounds (as rllab's normalize(), used by the MAML paper); no effect on [-1, 1], unbounded or discrete spaces. On or off, every Box action is clipped to the bounds before the env sees it."""

    def validate(self) -> None:
        if not self.id.strip():
            raise ConfigRangeError("id", self.id, "a non-empty Gymnasium id")
        check_range(self, "horizon", ge=1)


@dataclass
class CollectorConfig:
    """Experience collection: vector environments and devices."""

    backend: Literal["auto", "native", "gym", "subproc", "threads", "process_pool", "ray"] = "auto"
    """Vector env implementation: auto = native batched when available (MuJoCo on two stepping threads: as threads), else the Gymnasium loop; native = the native batched env as one batch (MuJoCo: one rollout over every column on a pool of num_threads); threads = two shares splitting num_threads, each stepped by its own step loop on its own thread (the same batches; only natively batched MuJoCo gains, measured on 2 cores); subproc = auto's in num_workers worker processes on this machine (envs stepped in Python, e.g. Meta-World; the policy stays in this process); process_pool = num_workers worker processes on this machine, each running the whole step loop (policy included) on its share of the tasks with auto and num_threads threads (for many cores, where one process's per-step Python is the limit: one worker per 1-2 cores; batches equal auto's to rounding; evaluation collects on pools too); ray = Ray actors (num_workers, address) each using auto (evaluation collects in this process, with auto)."""
    num_threads: int | None = None
    """Threads stepping MuJoCo environments (backend process_pool: per worker, ray: per actor); null = all cores (process_pool: the cores divided among the workers; ray: 1)."""
    torch_threads: int | None = 1
    """Torch intra-op threads for updates; null = all cores. 1 is fastest for small networks (OpenMP spin-waiting)."""
    device: str = "cpu"
    """Torch device of the policy and of every update (cpu, cuda, cuda:N); environments always step on the CPU, observations go to the device and actions come back once per step."""
    num_workers: int = 2
    """Worker processes (backend subproc, one per core; backend process_pool, one per 1-2 cores, each taking a contiguous share of the tasks) or Ray actors (backend ray; each takes a contiguous share of the tasks and num_threads (default 1) CPUs)."""
    address: str | None = None
    """Ray cluster address; 'auto' joins a running cluster, null starts a local one."""

    def validate(self) -> None:
        check_range(self, "num_threads", ge=1)
        check_range(self, "torch_threads", ge=1)
        check_range(self, "num_workers", ge=1)
        if not self.device.strip():
            raise ConfigRangeError("device", self.device, "a torch device such as 'cpu' or 'cuda:0'")


def torch_device(name: str) -> torch.device:
    """``collector.device`` as a torch.device, checked against this machine: one clear error line for a
    name torch does not know, or a CUDA device this machine does not have."""
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise ConfigRangeError("collector.device", name, "a torch device such as 'cpu', 'cuda' or 'cuda:0'") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigRangeError("collector.device", name, f"'cpu' on this machine: torch {torch.__version__} "
                                   "sees no CUDA device (torch.cuda.is_available() is False)")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigRangeError("collector.device", name,
                                   f"one of cuda:0..cuda:{torch.cuda.device_count() - 1} on this machine")
    return device
