"""Discounted returns, generalised advantage estimation and masked normalisation.

All functions take time-major episode batches: tensors shaped ``[T, B]`` (T time steps, B
columns). Conventions shared with the collector:

* ``valid`` (``[T, B]``, bool or float): 1 where a real step happened, 0 in the tail of a column
  whose episode terminated before the horizon. Outputs are 0 there.
* ``dones`` (``[T, B]``, bool): True at the LAST valid step of each episode, whether it ended by
  termination or by the time limit. A column may hold several consecutive episodes (the trials of
  RL²), so every backward recursion is cut at ``dones``.

The recursions scan backwards over T with a Python loop (T is the horizon, at most a few hundred);
every step is one batched operation over all B columns.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["column_group_std", "discounted_returns", "gae", "normalize", "normalize_per_column_group"]


def _check_time_major(name: str, x: Tensor, shape: torch.Size | None = None) -> None:
    if x.dim() != 2:
        raise ValueError(f"{name} must be a [T, B] tensor, got shape {tuple(x.shape)}")
    if shape is not None and x.shape != shape:
        raise ValueError(
            f"{name} has shape {tuple(x.shape)} but rewards/x have shape {tuple(shape)}"
        )


def _prepare_masks(
    rewards: Tensor, dones: Tensor, valid: Tensor | None
) -> tuple[Tensor, Tensor]:
    """Return (continue_mask, valid_mask) in the rewards' dtype.

    ``continue_mask`` is 1 where the recursion may look one step ahead into the same episode.
    """
    _check_time_major("rewards", rewards)
    _check_time_major("dones", dones, rewards.shape)
    cont = (~dones.bool()).to(rewards.dtype)
    if valid is None:
        valid_f = torch.ones_like(rewards)
    else:
        _check_time_major("valid", valid, rewards.shape)
        valid_f = valid.to(rewards.dtype)
    # A step after which the column is invalid also ends the episode, even if the collector did not
    # mark it done; masking the continuation too keeps garbage in invalid rows from leaking back.
    next_valid = torch.cat([valid_f[1:], torch.zeros_like(valid_f[:1])], dim=0)
    return cont * next_valid, valid_f


def discounted_returns(
    rewards: Tensor, dones: Tensor, gamma: float, valid: Tensor | None = None
) -> Tensor:
    """Reward-to-go ``G_t = r_t + gamma * (1 - done_t) * G_{t+1}``, 0 where ``valid == 0``.

    The step after the last row (t = T) contributes nothing: an episode cut by the horizon is
    treated as finished, as in the MAML/garage implementations.

    Args:
        rewards: ``[T, B]`` floating tensor.
        dones: ``[T, B]`` bool, True at the last valid step of each episode.
        gamma: discount factor in [0, 1].
        valid: optional ``[T, B]`` mask; rows where it is 0 give 0 and never feed earlier steps.
    """
    if not 0.0 <= gamma <= 1.0:
        raise ValueError(f"gamma must be in [0, 1], got {gamma}")
    cont, valid_f = _prepare_masks(rewards, dones, valid)
    r = rewards * valid_f
    out = []
    g = torch.zeros_like(r[0])
    for t in range(r.shape[0] - 1, -1, -1):
        g = r[t] + gamma * cont[t] * g
        out.append(g)
    out.reverse()
    return torch.stack(out, dim=0) * valid_f


def gae(
    rewards: Tensor,
    values: Tensor,
    dones: Tensor,
    gamma: float,
    lam: float,
    valid: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Generalised advantage estimation (Schulman et al. 2016).

    ``delta_t = r_t + gamma * (1 - done_t) * V_{t+1} - V_t`` and
    ``A_t = delta_t + gamma * lam * (1 - done_t) * A_{t+1}``.

    Every episode end, including truncation by the time limit and the last row T-1, is treated as
    terminal: nothing is bootstrapped from the value of the state after it. This matches the
    MAML (rllab) and garage implementations, whose linear feature baseline already sees the time
    step and so can represent the truncated return.

    Returns:
        ``(advantages, returns)`` with ``returns = advantages + values``; both 0 where invalid.
    """
    if not 0.0 <= gamma <= 1.0:
        raise ValueError(f"gamma must be in [0, 1], got {gamma}")
    if not 0.0 <= lam <= 1.0:
        raise ValueError(f"lam must be in [0, 1], got {lam}")
    cont, valid_f = _prepare_masks(rewards, dones, valid)
    _check_time_major("values", values, rewards.shape)
    r = rewards * valid_f
    v = values * valid_f
    next_v = torch.cat([v[1:], torch.zeros_like(v[:1])], dim=0)
    deltas = r + gamma * cont * next_v - v
    out = []
    a = torch.zeros_like(r[0])
    for t in range(r.shape[0] - 1, -1, -1):
        a = deltas[t] + gamma * lam * cont[t] * a
        out.append(a)
    out.reverse()
    adv = torch.stack(out, dim=0) * valid_f
    return adv, (adv + v) * valid_f


def normalize(x: Tensor, valid: Tensor | None = None, eps: float = 1e-8) -> Tensor:
    """``(x - mean) / (std + eps)`` over the valid entries of the whole batch; 0 where invalid.

    The standard deviation is the population one (divide by the count), as numpy's default.
    """
    if valid is None:
        valid_f = torch.ones_like(x)
    else:
        if valid.shape != x.shape:
            raise ValueError(
                f"valid has shape {tuple(valid.shape)} but x has shape {tuple(x.shape)}"
            )
        valid_f = valid.to(x.dtype)
    # clamp keeps an all-invalid batch finite (all zeros) without a host-side branch.
    count = valid_f.sum().clamp(min=1.0)
    mean = (x * valid_f).sum() / count
    centred = (x - mean) * valid_f
    std = ((centred * centred).sum() / count).sqrt()
    return centred / (std + eps)


def normalize_per_column_group(
    x: Tensor, valid: Tensor | None, groups: int, eps: float = 1e-8
) -> Tensor:
    """Like :func:`normalize`, separately within each of ``groups`` contiguous column groups.

    Columns are laid out task-major: column ``b`` belongs to group ``b // (B // groups)``, so with
    one group per task each task's advantages are normalised on their own (MAML's inner loop).
    """
    _check_time_major("x", x)
    T, B = x.shape
    if groups <= 0 or B % groups != 0:
        raise ValueError(f"groups={groups} must be a positive divisor of the column count B={B}")
    if valid is None:
        valid_f = torch.ones_like(x)
    else:
        _check_time_major("valid", valid, x.shape)
        valid_f = valid.to(x.dtype)
    xg = x.reshape(T, groups, B // groups)
    vg = valid_f.reshape(T, groups, B // groups)
    count = vg.sum(dim=(0, 2), keepdim=True).clamp(min=1.0)
    mean = (xg * vg).sum(dim=(0, 2), keepdim=True) / count
    centred = (xg - mean) * vg
    std = ((centred * centred).sum(dim=(0, 2), keepdim=True) / count).sqrt()
    return (centred / (std + eps)).reshape(T, B)


def column_group_std(x: Tensor, valid: Tensor, groups: int) -> Tensor:
    """Standard deviation [groups] of x over the valid entries of each contiguous column group: the
    divisor (before its eps) that :func:`normalize_per_column_group` applies to that group."""
    _check_time_major("x", x)
    T, B = x.shape
    if groups <= 0 or B % groups != 0:
        raise ValueError(f"groups={groups} must be a positive divisor of the column count B={B}")
    xg = x.reshape(T, groups, B // groups)
    vg = valid.to(x.dtype).reshape(T, groups, B // groups)
    count = vg.sum(dim=(0, 2)).clamp(min=1.0)
    mean = (xg * vg).sum(dim=(0, 2)) / count
    centred = (xg - mean[None, :, None]) * vg
    return ((centred * centred).sum(dim=(0, 2)) / count).sqrt()
