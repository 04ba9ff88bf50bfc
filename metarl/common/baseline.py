"""Linear feature baseline (Duan et al. 2016, "Benchmarking Deep RL for Continuous Control").

Per step the features are::

    [clip(obs, -10, 10), clip(obs, -10, 10)**2, t/100, (t/100)**2, (t/100)**3, 1]

with ``t`` the time step within the episode; returns are regressed on them by ridge regression.
MAML refits the baseline per task and per inner step, so here one weight vector is fitted per
group of contiguous columns (columns are task-major) and all groups are solved in one batched
``torch.linalg`` call.
"""

from __future__ import annotations

import operator
import warnings

import torch
from torch import Tensor

__all__ = ["LinearFeatureBaseline"]


class LinearFeatureBaseline:
    """Ridge regression of returns on hand-made features, one fit per task group.

    Args:
        reg_coeff: ridge coefficient added to the diagonal of the normal equations.
        max_retries: how many times to retry, each with the coefficient multiplied by 10, when the
            solve gives non-finite weights (near-singular features, e.g. all-constant
            observations in float rounding).

    After :meth:`fit_predict`, ``coeffs`` holds the fitted weights, shape ``[groups, F]`` (float64).
    """

    def __init__(self, reg_coeff: float = 1e-5, max_retries: int = 5) -> None:
        if not reg_coeff > 0:
            raise ValueError(f"reg_coeff must be positive, got {reg_coeff}")
        if max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {max_retries}")
        self.reg_coeff = float(reg_coeff)
        self.max_retries = int(max_retries)
        self.coeffs: Tensor | None = None

    @staticmethod
    def features(obs: Tensor, timesteps: Tensor) -> Tensor:
        """Feature tensor ``[T, B, 2 * D + 4]`` for observations ``[T, B, D]``."""
        o = obs.clamp(-10.0, 10.0)
        t = (timesteps.to(obs.dtype) / 100.0).unsqueeze(-1)
        return torch.cat([o, o * o, t, t * t, t * t * t, torch.ones_like(t)], dim=-1)

    def fit_predict(
        self, obs: Tensor, returns: Tensor, valid: Tensor, timesteps: Tensor, groups: int
    ) -> Tensor:
        """Fit one weight vector per column group on the valid steps; predict every step.

        Args:
            obs: ``[T, B, D]`` observations.
            returns: ``[T, B]`` regression targets (discounted returns).
            valid: ``[T, B]`` mask; invalid rows are left out of the fit and predicted as 0.
            timesteps: ``[T, B]`` time step index of each row within its episode.
            groups: number of task groups; ``B`` must be divisible by it.

        Returns:
            ``[T, B]`` predicted values in ``returns.dtype``, detached from any graph.
        """
        if obs.dim() != 3:
            raise ValueError(f"obs must be [T, B, D], got shape {tuple(obs.shape)}")
        T, B, _ = obs.shape
        for name, x in (("returns", returns), ("valid", valid), ("timesteps", timesteps)):
            if tuple(x.shape) != (T, B):
                raise ValueError(
                    f"{name} has shape {tuple(x.shape)}, expected [T, B] = {(T, B)} from obs"
                )
        try:
            groups = operator.index(groups)  # accepts numpy integers, rejects floats
        except TypeError:
            raise ValueError(f"groups must be an integer, got {groups!r}") from None
        if groups <= 0 or B % groups != 0:
            raise ValueError(
                f"groups={groups!r} must be a positive integer dividing the column count B={B}"
            )
        out_dtype = returns.dtype
        C = B // groups

        with torch.no_grad():
            # float64: the normal equations square the condition number of the feature matrix.
            feats = self.features(obs.detach().double(), timesteps.detach())
            F = feats.shape[-1]
            w = valid.detach().double().unsqueeze(-1)
            y = returns.detach().double().unsqueeze(-1)
            # Zeroing invalid rows removes them from X^T X and X^T y, and zeroes their targets so
            # non-finite garbage there cannot leak in (0 * nan would not be 0, hence where()).
            mask = w > 0
            x_m = torch.where(mask, feats, torch.zeros((), dtype=feats.dtype, device=feats.device))
            y_m = torch.where(mask, y, torch.zeros((), dtype=y.dtype, device=y.device))
            # [T, B, *] -> [G, T * C, *]: rows of each group's design matrix.
            xg = x_m.reshape(T, groups, C, F).permute(1, 0, 2, 3).reshape(groups, T * C, F)
            yg = y_m.reshape(T, groups, C, 1).permute(1, 0, 2, 3).reshape(groups, T * C, 1)
            xtx = xg.transpose(1, 2) @ xg  # [G, F, F]
            xty = xg.transpose(1, 2) @ yg  # [G, F, 1]
            eye = torch.eye(F, dtype=xtx.dtype, device=xtx.device)

            coeffs = torch.full((groups, F, 1), float("nan"), dtype=xtx.dtype, device=xtx.device)
            reg = self.reg_coeff
            for _ in range(self.max_retries + 1):
                sol, _info = torch.linalg.solve_ex(xtx + reg * eye, xty)
                # Only groups still without a finite solution take the new attempt.
                pending = ~torch.isfinite(coeffs).all(dim=1, keepdim=True)
                coeffs = torch.where(pending, sol, coeffs)
                # One host sync per attempt (at most max_retries + 1), not per group.
                if bool(torch.isfinite(coeffs).all()):
                    break
                reg *= 10.0
            bad = ~torch.isfinite(coeffs).all(dim=1, keepdim=True)
            if bool(bad.any()):
                warnings.warn(
                    f"LinearFeatureBaseline: no finite fit for groups "
                    f"{bad.flatten().nonzero().flatten().tolist()} even with reg_coeff {reg:g}; "
                    "predicting 0 for them (are the returns finite?)",
                    RuntimeWarning,
                    stacklevel=2,
                )
                coeffs = torch.where(bad, torch.zeros_like(coeffs), coeffs)
            self.coeffs = coeffs.squeeze(-1)

            # Predict with the unmasked features so every row gets a value, then zero invalid rows.
            fg = feats.reshape(T, groups, C, F)
            pred = torch.einsum("tgcf,gf->tgc", fg, self.coeffs).reshape(T, B)
            pred = torch.where(mask.squeeze(-1), pred, torch.zeros((), dtype=pred.dtype, device=pred.device))
        return pred.to(out_dtype)
