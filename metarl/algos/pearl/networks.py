"""PEARL's networks and the Gaussian algebra of its task posterior.

* :class:`TanhGaussianPolicy`: pi(a | s, z), a = tanh(u), u ~ N(mean, std) (SAC's squashed Gaussian). Its
  input is [obs, z]; the collector appends z to the observations (``task_inputs``).
* :class:`QFunction`: Q(s, a, z), an MLP.
* :class:`ContextEncoder`: an MLP mapping one context transition (s, a, r) to a Gaussian factor
  N(mu_n, sigma_n^2) over z; the posterior is the normalised product of the factors
  (:func:`product_of_gaussians`), which does not depend on the order of the transitions.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from metarl.common.policies import Policy, mlp

_LOG_2PI = math.log(2 * math.pi)
#: bounds of the policy's log standard deviation (SAC's usual [-20, 2])
LOG_STD_MIN, LOG_STD_MAX = -20.0, 2.0
#: floor of each factor's variance before taking products (the paper's code clamps at 1e-7 too)
MIN_FACTOR_VAR = 1e-7
#: actions are clamped to +-(1 - ATANH_EPS) before atanh when a log-probability of a given action is asked
ATANH_EPS = 1e-6


def tanh_log_det(u: Tensor) -> Tensor:
    """log |d tanh(u) / du| = log(1 - tanh(u)^2), summed over the last dimension, in the stable form
    2 (log 2 - u - softplus(-2u))."""
    return (2.0 * (math.log(2.0) - u - F.softplus(-2.0 * u))).sum(-1)


class TanhGaussian:
    """tanh of a diagonal Gaussian: the distribution the collector samples from (``noise_kind`` normal)."""

    noise_kind = "normal"

    def __init__(self, mean: Tensor, log_std: Tensor):
        self.mean = mean
        self.log_std = log_std

    @property
    def noise_shape(self) -> torch.Size:
        return self.mean.shape

    def pre_tanh(self, noise: Tensor) -> Tensor:
        return self.mean + noise * self.log_std.exp()

    def sample_from_noise(self, noise: Tensor) -> Tensor:
        if noise is None or noise.shape != self.mean.shape:
            raise ValueError(f"TanhGaussian.sample_from_noise needs normal noise of shape {tuple(self.mean.shape)}, "
                             f"got {None if noise is None else tuple(noise.shape)}")
        return torch.tanh(self.pre_tanh(noise))

    def rsample_with_log_prob(self, noise: Tensor) -> tuple[Tensor, Tensor]:
        """(action, log pi(action)) for standard-normal ``noise``, differentiable in the parameters."""
        u = self.pre_tanh(noise)
        gauss = (-0.5 * noise.pow(2) - self.log_std - 0.5 * _LOG_2PI).sum(-1)
        return torch.tanh(u), gauss - tanh_log_det(u)

    def log_prob(self, action: Tensor) -> Tensor:
        """log pi(action) of a given action (through atanh; used for the collector's records only)."""
        u = torch.atanh(action.clamp(-1.0 + ATANH_EPS, 1.0 - ATANH_EPS))
        z = (u - self.mean) * torch.exp(-self.log_std)
        return (-0.5 * z.pow(2) - self.log_std - 0.5 * _LOG_2PI).sum(-1) - tanh_log_det(u)

    def mode(self) -> Tensor:
        return torch.tanh(self.mean)


class TanhGaussianPolicy(Policy):
    """pi(a | s, z): an MLP on [obs, z] giving the mean and (clamped) log std of a tanh-squashed Gaussian."""

    def __init__(self, obs_dim: int, latent_dim: int, act_dim: int, hidden_sizes: Sequence[int]):
        super().__init__()
        self.obs_dim, self.latent_dim, self.act_dim = obs_dim, latent_dim, act_dim
        self.net = mlp(obs_dim + latent_dim, 2 * act_dim, hidden_sizes, "relu")

    def forward(self, inputs: Tensor):
        mean, log_std = self.net(inputs).chunk(2, dim=-1)
        return mean, log_std.clamp(LOG_STD_MIN, LOG_STD_MAX)

    def distribution(self, out) -> TanhGaussian:
        return TanhGaussian(*out)


class QFunction(nn.Module):
    """Q(s, a, z) as an MLP on the concatenation."""

    def __init__(self, obs_dim: int, act_dim: int, latent_dim: int, hidden_sizes: Sequence[int]):
        super().__init__()
        self.net = mlp(obs_dim + act_dim + latent_dim, 1, hidden_sizes, "relu")

    def forward(self, obs: Tensor, action: Tensor, z: Tensor) -> Tensor:
        return self.net(torch.cat([obs, action, z], -1)).squeeze(-1)


class ContextEncoder(nn.Module):
    """One Gaussian factor over z per context transition: (mu_n, sigma_n^2 = softplus(.)), as the paper's code."""

    def __init__(self, context_dim: int, latent_dim: int, hidden_sizes: Sequence[int]):
        super().__init__()
        self.latent_dim = latent_dim
        self.net = mlp(context_dim, 2 * latent_dim, hidden_sizes, "relu")

    def forward(self, context: Tensor) -> tuple[Tensor, Tensor]:
        """context [..., N, C] -> factor means and variances [..., N, latent]."""
        mu, pre_var = self.net(context).split(self.latent_dim, dim=-1)
        return mu, F.softplus(pre_var)

    def posterior(self, context: Tensor, weights: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """The posterior N(mean, var) [..., latent] from context [..., N, C] (weights [..., N]: 0 drops a row)."""
        mu, var = self(context)
        return product_of_gaussians(mu, var, weights)


def product_of_gaussians(mu: Tensor, var: Tensor, weights: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """The normalised product of diagonal Gaussian factors N(mu_n, var_n) over dimension -2:
    precision 1/var = sum_n w_n / var_n, mean = var * sum_n w_n mu_n / var_n.

    weights (0 or 1 per factor, [..., N]) drop factors (padded rows); a set with no factor left gives
    the product of none, which is not a distribution: the caller must not ask for it.
    """
    precision = 1.0 / var.clamp_min(MIN_FACTOR_VAR)
    if weights is not None:
        precision = precision * weights.unsqueeze(-1).to(precision.dtype)
    total = precision.sum(-2)
    post_var = 1.0 / total
    return post_var * (precision * mu).sum(-2), post_var


def kl_to_standard_normal(mean: Tensor, var: Tensor) -> Tensor:
    """KL(N(mean, diag var) || N(0, I)), summed over the last dimension:
    0.5 * sum(var + mean^2 - 1 - log var)."""
    return 0.5 * (var + mean.pow(2) - 1.0 - var.log()).sum(-1)
