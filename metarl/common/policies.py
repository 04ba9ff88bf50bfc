"""Policies as ``nn.Module``s evaluated functionally.

A policy's ``forward`` maps a batch of inputs to the tensors that parameterise its action
distribution, and ``distribution(out)`` builds the distribution. Adapted parameters are plain dicts
of tensors: :func:`policy_forward` evaluates the module with the module's own parameters, with one
dict shared by every column, or with one dict per task (every leaf carries a leading task dimension
[M, ...]) through ``torch.func.vmap`` over ``functional_call``, so all tasks' adapted policies run in
one batched call.

Columns of a batch are laid out task-major: column b belongs to task b // (B // M).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, Sequence

import gymnasium as gym
import numpy as np
import torch
from torch import nn
from torch.func import functional_call, vmap

from metarl.common.config import ConfigRangeError, check_range
from metarl.common.distributions import Categorical, Deterministic, DiagGaussian

Params = dict[str, torch.Tensor]

_ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh}


def mlp(in_dim: int, out_dim: int, hidden_sizes: Sequence[int], activation: str) -> nn.Sequential:
    if activation not in _ACTIVATIONS:
        raise ValueError(f"activation must be one of {sorted(_ACTIVATIONS)}, got {activation!r}")
    layers: list[nn.Module] = []
    last = in_dim
    for h in hidden_sizes:
        layers += [nn.Linear(last, h), _ACTIVATIONS[activation]()]
        last = h
    layers.append(nn.Linear(last, out_dim))
    return nn.Sequential(*layers)


class Policy(nn.Module):
    """Base class: ``forward(obs) -> distribution parameters``; ``distribution(out)``."""

    is_recurrent = False

    def distribution(self, out):
        raise NotImplementedError

    def params(self) -> Params:
        """The module's own parameters as a dict (the meta-parameters θ)."""
        return dict(self.named_parameters())


class GaussianMLPPolicy(Policy):
    """Gaussian policy: MLP mean and a learned state-independent log standard deviation."""

    def __init__(self, obs_dim: int, act_dim: int, hidden_sizes=(100, 100), activation="relu", init_log_std=0.0):
        super().__init__()
        self.mean_net = mlp(obs_dim, act_dim, hidden_sizes, activation)
        self.log_std = nn.Parameter(torch.full((act_dim,), float(init_log_std)))

    def forward(self, obs: torch.Tensor):
        mean = self.mean_net(obs)
        return mean, self.log_std.expand_as(mean)

    def distribution(self, out) -> DiagGaussian:
        return DiagGaussian(*out)


class CategoricalMLPPolicy(Policy):
    """Categorical policy over ``n_actions`` discrete actions."""

    def __init__(self, obs_dim: int, n_actions: int, hidden_sizes=(100, 100), activation="relu"):
        super().__init__()
        self.logits_net = mlp(obs_dim, n_actions, hidden_sizes, activation)

    def forward(self, obs: torch.Tensor):
        return self.logits_net(obs)

    def distribution(self, out) -> Categorical:
        return Categorical(out)


class MLPRegressor(Policy):
    """Deterministic regressor for supervised (H = 1) tasks: the action is the prediction."""

    def __init__(self, in_dim: int, out_dim: int, hidden_sizes=(40, 40), activation="relu"):
        super().__init__()
        self.net = mlp(in_dim, out_dim, hidden_sizes, activation)

    def forward(self, obs: torch.Tensor):
        return self.net(obs)

    def distribution(self, out) -> Deterministic:
        return Deterministic(out)


#: the plain MLP policies and the attribute holding their nn.Sequential (see _per_task_mlp)
_MLP_NETS = {GaussianMLPPolicy: "mean_net", CategoricalMLPPolicy: "logits_net", MLPRegressor: "net"}


def _space_dim(space: gym.Space) -> int:
    if isinstance(space, gym.spaces.Box):
        return int(np.prod(space.shape))
    if isinstance(space, gym.spaces.Discrete):
        return int(space.n)
    raise TypeError(f"unsupported space {space}; expected a Box or Discrete space")


def make_policy(
    observation_space: gym.Space,
    action_space: gym.Space,
    supervised: bool,
    hidden_sizes: Sequence[int] = (100, 100),
    activation: str = "relu",
    init_log_std: float = 0.0,
) -> Policy:
    """The default policy for a task distribution's spaces."""
    obs_dim = _space_dim(observation_space)
    if supervised:
        return MLPRegressor(obs_dim, _space_dim(action_space), hidden_sizes, activation)
    if isinstance(action_space, gym.spaces.Discrete):
        return CategoricalMLPPolicy(obs_dim, int(action_space.n), hidden_sizes, activation)
    if isinstance(action_space, gym.spaces.Box):
        return GaussianMLPPolicy(obs_dim, _space_dim(action_space), hidden_sizes, activation, init_log_std)
    raise TypeError(f"unsupported action space {action_space}; expected Box or Discrete")


def policy_forward(policy: nn.Module, inputs: torch.Tensor, params: Params | None = None, num_tasks: int | None = None):
    """Evaluate ``policy`` on ``inputs`` [*lead, B, D].

    params None: the module's own parameters. params given and num_tasks None: one parameter dict for
    every column. num_tasks = M: every leaf of params has a leading dimension M, and the B columns
    (task-major) are split into M groups, each evaluated with its own parameters in one vmapped call.
    """
    if params is None:
        return policy(inputs)
    if num_tasks is None:
        return functional_call(policy, params, (inputs,))
    lead = inputs.shape[:-2]
    n_cols = inputs.shape[-2]
    if n_cols % num_tasks:
        raise ValueError(f"{n_cols} columns cannot be split evenly into {num_tasks} tasks")
    fast = _per_task_mlp(policy, inputs, params, num_tasks)
    if fast is not None:
        return fast
    task_axis = len(lead)
    grouped = inputs.reshape(*lead, num_tasks, n_cols // num_tasks, inputs.shape[-1])

    def one_task(p, x):
        return functional_call(policy, p, (x,))

    out = vmap(one_task, in_dims=(0, task_axis), out_dims=task_axis)(params, grouped)
    return _merge_task_axis(out, task_axis)


def _per_task_mlp(policy: nn.Module, inputs: torch.Tensor, params: Params, num_tasks: int):
    """:func:`policy_forward` with per-task parameters for the plain MLP policies, as batched matrix
    products (``baddbmm`` over the task dimension); None for any other policy or parameter set.

    Why: ``vmap`` over ``functional_call`` costs about 0.6 ms of Python per call whatever the size,
    five times the arithmetic of a sinusoid meta-batch (25 tasks x 10 points, 2x40), and it runs
    several times per meta-iteration (inner loss, adapted forward, their backward passes).
    """
    net_name = _MLP_NETS.get(type(policy))
    if net_name is None:
        return None
    net = getattr(policy, net_name)
    if type(net) is not nn.Sequential:
        return None
    layers = list(net)
    expected = {f"{net_name}.{i}.{w}" for i in range(0, len(layers), 2) for w in ("weight", "bias")}
    if type(policy) is GaussianMLPPolicy:
        expected.add("log_std")
    if set(params) != expected:
        return None
    for i, m in enumerate(layers):
        if type(m) not in ((nn.Linear,) if i % 2 == 0 else (nn.ReLU, nn.Tanh)):
            return None
    lead, (B, D) = inputs.shape[:-2], inputs.shape[-2:]
    L, n = math.prod(lead), B // num_tasks
    # [*lead, B, D] -> [M, L * n, D]: the rows of each task together
    h = inputs.reshape(L, num_tasks, n, D).transpose(0, 1).reshape(num_tasks, L * n, D)
    for i, m in enumerate(layers):
        if i % 2 == 0:
            w, b = params[f"{net_name}.{i}.weight"], params[f"{net_name}.{i}.bias"]
            h = torch.baddbmm(b.unsqueeze(1), h, w.transpose(1, 2))
        else:
            h = torch.relu(h) if type(m) is nn.ReLU else torch.tanh(h)
    out = h.reshape(num_tasks, L, n, -1).transpose(0, 1).reshape(*lead, B, h.shape[-1])
    if type(policy) is GaussianMLPPolicy:
        log_std = params["log_std"]  # [M, A]: one per task, the same for the task's columns
        log_std = log_std[:, None, None, :].expand(num_tasks, L, n, log_std.shape[-1])
        return out, log_std.transpose(0, 1).reshape(*lead, B, log_std.shape[-1])
    return out


def _merge_task_axis(out, axis: int):
    if isinstance(out, tuple):
        return tuple(_merge_task_axis(o, axis) for o in out)
    shape = out.shape
    return out.reshape(*shape[:axis], shape[axis] * shape[axis + 1], *shape[axis + 2 :])


def stack_params(param_dicts: Sequence[Params]) -> Params:
    """[dict per task] -> one dict whose leaves carry a leading task dimension."""
    return {k: torch.stack([p[k] for p in param_dicts]) for k in param_dicts[0]}


def expand_params(params: Params, num_tasks: int) -> Params:
    """The same parameters for every task, as a per-task dict (views, differentiable)."""
    return {k: v.unsqueeze(0).expand(num_tasks, *v.shape) for k, v in params.items()}


def gru_states(cell: nn.GRUCell, inputs: torch.Tensor, state: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:
    """The states [T, B, H] of ``cell`` run over ``inputs`` [T, B, D] from ``state`` [B, H], each state frozen
    on the steps where ``valid`` [T, B] is 0 (padded rows after an early episode end).

    ``valid=None`` says that no step is padded (e.g. the cheetahs: every episode runs its whole horizon).
    Then torch's multi-step GRU computes the same recursion with the cell's own weights in one call: no
    Python loop over steps, 1.2-1.5x faster forward and backward at RL²'s sizes
    (experiments/rl2_fused_gru_bench.py), the same arithmetic to rounding. Otherwise the cell steps one row
    at a time. The caller decides, so that no host read of ``valid`` happens here (RL² checks its batch
    once per iteration).
    """
    if valid is None:
        params = [cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh]
        out, _ = torch.gru(inputs, state.unsqueeze(0), params, True, 1, 0.0, cell.training, False, False)
        return out
    hs = []
    for t in range(inputs.shape[0]):
        h_new = cell(inputs[t], state)
        state = torch.where(valid[t].bool().unsqueeze(-1), h_new, state)
        hs.append(state)
    return torch.stack(hs)


class RecurrentPolicy(Policy):
    """GRU policy for RL²: fed (observation, previous action, previous reward, done flag).

    The hidden state is carried by the caller: the collector keeps it across the episodes of a
    trial and starts every trial from :meth:`initial_state`. ``done`` is 1 at the first step after
    any episode end, time-limit truncation included, so the policy can tell episodes apart.
    """

    is_recurrent = True

    def __init__(self, obs_dim: int, action_space: gym.Space, hidden_size: int = 128, init_log_std: float = 0.0):
        super().__init__()
        self.discrete = isinstance(action_space, gym.spaces.Discrete)
        self.action_dim = _space_dim(action_space)
        self.hidden_size = hidden_size
        self.input_dim = obs_dim + self.action_dim + 2
        self.cell = nn.GRUCell(self.input_dim, hidden_size)
        self.head = nn.Linear(hidden_size, self.action_dim)
        if not self.discrete:
            self.log_std = nn.Parameter(torch.full((self.action_dim,), float(init_log_std)))

    def initial_state(self, batch_size: int) -> torch.Tensor:
        return torch.zeros(batch_size, self.hidden_size, device=self.head.weight.device)

    def make_inputs(self, obs, prev_action, prev_reward, prev_done) -> torch.Tensor:
        """Concatenate (obs, previous action [one-hot if discrete], previous reward, done flag).

        A discrete ``prev_action`` of -1 means "no previous action" (the first step of a trial) and
        becomes an all-zero vector, so it cannot be mistaken for action 0.
        """
        if self.discrete:
            index = prev_action.long()
            none = index < 0
            prev_action = nn.functional.one_hot(index.clamp(min=0), self.action_dim).to(obs.dtype)
            prev_action = prev_action.masked_fill(none.unsqueeze(-1), 0.0)
        return torch.cat([obs, prev_action.to(obs.dtype), prev_reward.unsqueeze(-1), prev_done.unsqueeze(-1)], -1)

    def _out(self, h):
        out = self.head(h)
        return out if self.discrete else (out, self.log_std.expand_as(out))

    def step(self, inputs: torch.Tensor, state: torch.Tensor):
        h = self.cell(inputs, state)
        return self._out(h), h

    def forward_sequence(self, inputs: torch.Tensor, state: torch.Tensor, valid: torch.Tensor | None):
        """Outputs for a whole trial [T, B, ...]; the state is frozen on invalid (padded) steps.
        ``valid=None``: no step is padded (see :func:`gru_states`)."""
        return self._out(gru_states(self.cell, inputs, state, valid))

    def distribution(self, out):
        return Categorical(out) if self.discrete else DiagGaussian(*out)


@dataclass
class PolicyConfig:
    """The policy (or regressor) network."""

    hidden_sizes: tuple[int, ...] = (100, 100)
    """Widths of the hidden layers of the MLP, input side first."""
    activation: Literal["relu", "tanh"] = "relu"
    """Nonlinearity between hidden layers."""
    init_log_std: float = 0.0
    """Initial log standard deviation of Gaussian policies."""
    recurrent_hidden_size: int = 128
    """GRU hidden-state size of the RL² policy."""

    def validate(self) -> None:
        for width in self.hidden_sizes:
            if width < 1:
                raise ConfigRangeError("hidden_sizes", self.hidden_sizes, "a list of ints >= 1")
        if not math.isfinite(self.init_log_std):
            raise ConfigRangeError("init_log_std", self.init_log_std, "finite")
        check_range(self, "recurrent_hidden_size", ge=1)
