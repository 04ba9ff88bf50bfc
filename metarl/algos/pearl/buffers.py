"""Per-task replay buffers as preallocated tensors.

:class:`TaskReplayBuffers` holds ``num_tasks`` ring buffers of ``capacity`` transitions each in one
tensor per field ([num_tasks, capacity, ...]): observation, action, reward, next observation and the
terminal flag. Adding and sampling are vectorised over tasks (no Python loop over tasks or
transitions). Memory is fixed at construction: ``num_tasks * capacity * bytes_per_transition``, with
``bytes_per_transition = 4 * (2 * obs_dim + act_dim + 1) + 1`` (float32 fields, a bool terminal).
The tensors are allocated with ``torch.empty``, so the operating system commits pages as they fill;
entries past a task's size are never read.
"""

from __future__ import annotations

import torch
from torch import Tensor

from metarl.sampling.collector import EpisodeBatch

FIELDS = ("obs", "actions", "rewards", "next_obs", "terminals")


def transitions_from_batch(batch: EpisodeBatch) -> dict[str, Tensor]:
    """The valid transitions of a batch of single episodes, column by column in time order.

    Returns the fields of :data:`FIELDS` flattened to [n, ...] plus ``column`` [n] (the batch column
    each came from). The next observation of an episode's last step is ``batch.final_obs``; a step is
    terminal when its episode ended before the horizon (a time-limit end is not terminal, so SAC
    bootstraps there; an episode that terminates exactly at step H is counted as truncated).
    """
    if batch.episodes_per_trial != 1 or batch.final_obs is None:
        raise ValueError("transitions_from_batch needs single-episode columns with final_obs (Collector.collect)")
    obs = batch.obs  # [T, B, D]
    next_obs = torch.cat([obs[1:], obs[-1:]], 0).clone()
    last = batch.dones  # [T, B]
    next_obs[last] = batch.final_obs[0].unsqueeze(0).expand_as(obs)[last]
    terminals = last & (batch.timesteps < batch.horizon - 1)
    valid = batch.valid.bool().T.reshape(-1)  # column-major: each episode's steps in time order
    column = torch.arange(batch.num_columns).unsqueeze(1).expand(-1, obs.shape[0]).reshape(-1)

    def flat(x: Tensor) -> Tensor:
        return x.transpose(0, 1).reshape(-1, *x.shape[2:])[valid]

    return {"obs": flat(obs), "actions": flat(batch.actions.float()), "rewards": flat(batch.rewards),
            "next_obs": flat(next_obs), "terminals": flat(terminals), "column": column[valid]}


class TaskReplayBuffers:
    """``num_tasks`` ring buffers of ``capacity`` transitions, one tensor per field."""

    def __init__(self, num_tasks: int, capacity: int, obs_dim: int, act_dim: int):
        if num_tasks < 1 or capacity < 1:
            raise ValueError(f"TaskReplayBuffers needs num_tasks >= 1 and capacity >= 1, got {num_tasks}, {capacity}")
        self.num_tasks, self.capacity, self.obs_dim, self.act_dim = num_tasks, capacity, obs_dim, act_dim
        shape = (num_tasks, capacity)
        self.data = {
            "obs": torch.empty(*shape, obs_dim),
            "actions": torch.empty(*shape, act_dim),
            "rewards": torch.empty(*shape),
            "next_obs": torch.empty(*shape, obs_dim),
            "terminals": torch.empty(*shape, dtype=torch.bool),
        }
        self.size = torch.zeros(num_tasks, dtype=torch.long)  #: filled entries per task
        self.next = torch.zeros(num_tasks, dtype=torch.long)  #: where each task's next transition goes

    @staticmethod
    def bytes_per_transition(obs_dim: int, act_dim: int) -> int:
        return 4 * (2 * obs_dim + act_dim + 1) + 1

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.data.values())

    def clear(self, tasks: Tensor) -> None:
        """Empty the buffers of ``tasks`` [k]."""
        self.size[tasks] = 0
        self.next[tasks] = 0

    def add(self, tasks: Tensor, transitions: dict[str, Tensor]) -> None:
        """Append transitions [n, ...] of ``tasks`` [n] (task index per transition; transitions of one
        task are stored in the order given). Full buffers overwrite their oldest entries."""
        tasks = tasks.long()
        n = tasks.shape[0]
        if n == 0:
            return
        counts = torch.bincount(tasks, minlength=self.num_tasks)
        if int(counts.max()) > self.capacity:
            raise ValueError(f"{int(counts.max())} transitions for one task in one add exceed the buffer capacity "
                             f"{self.capacity}")
        # rank of each transition among its task's new ones: position in a stable sort by task
        order = torch.sort(tasks, stable=True).indices
        starts = torch.cumsum(counts, 0) - counts
        rank = torch.empty(n, dtype=torch.long)
        rank[order] = torch.arange(n) - starts[tasks[order]]
        slot = (self.next[tasks] + rank) % self.capacity
        for key, store in self.data.items():
            store[tasks, slot] = transitions[key].to(store.dtype)
        self.next = (self.next + counts) % self.capacity
        self.size = torch.clamp(self.size + counts, max=self.capacity)

    def sample(self, tasks: Tensor, n: int, generator: torch.Generator) -> dict[str, Tensor]:
        """``n`` transitions of each of ``tasks`` [k], uniformly with replacement: fields [k, n, ...]."""
        sizes = self.size[tasks]
        if bool((sizes == 0).any()):
            empty = tasks[sizes == 0].tolist()
            raise ValueError(f"cannot sample from the empty buffers of tasks {empty}")
        slot = (torch.rand(len(tasks), n, generator=generator, dtype=torch.float64) * sizes.unsqueeze(1)).long()
        rows = tasks.long().unsqueeze(1)
        return {key: store[rows, slot] for key, store in self.data.items()}

    def state_dict(self) -> dict:
        """Filled entries only, task after task (each task's first ``size`` slots, flattened to
        [sum of sizes, ...]), and the pointers: a checkpoint grows with the stored transitions, not with
        the largest task's size times the number of tasks."""
        filled = self._filled()
        return {"capacity": self.capacity, "size": self.size.clone(), "next": self.next.clone(),
                "data": {k: v[:, : filled.shape[1]][filled] for k, v in self.data.items()}}

    def load_state_dict(self, state: dict) -> None:
        if state["capacity"] != self.capacity or state["size"].shape[0] != self.num_tasks:
            raise ValueError(f"replay buffer of {state['size'].shape[0]} tasks x {state['capacity']} transitions "
                             f"cannot be loaded into {self.num_tasks} x {self.capacity}")
        self.size = state["size"].clone()
        self.next = state["next"].clone()
        filled = self._filled()
        for k, v in state["data"].items():
            if v.dim() == self.data[k].dim():  # the padded [num_tasks, largest size, ...] form of older checkpoints
                self.data[k][:, : v.shape[1]] = v
            else:
                self.data[k][:, : filled.shape[1]][filled] = v.to(self.data[k].dtype)

    def _filled(self) -> Tensor:
        """[num_tasks, largest size]: which of the first slots hold a transition."""
        return torch.arange(int(self.size.max())).unsqueeze(0) < self.size.unsqueeze(1)
