"""Small action distributions that sample from an explicit ``torch.Generator``.

``torch.distributions`` samples from the global generator; the collector needs one seeded stream per
collector so that a whole collection is reproducible from one seed, hence these.
"""

from __future__ import annotations

import math

import torch

_LOG_2PI = math.log(2 * math.pi)


class DiagGaussian:
    """Independent Gaussian over the last dimension."""

    def __init__(self, mean: torch.Tensor, log_std: torch.Tensor):
        self.mean = mean
        self.log_std = log_std.expand_as(mean)

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        noise = torch.randn(self.mean.shape, generator=generator, dtype=self.mean.dtype, device=self.mean.device)
        return self.mean + noise * self.log_std.exp()

    def mode(self) -> torch.Tensor:
        return self.mean

    def log_prob(self, actions: torch.Tensor) -> torch.Tensor:
        z = (actions - self.mean) * torch.exp(-self.log_std)
        return (-0.5 * z.pow(2) - self.log_std - 0.5 * _LOG_2PI).sum(-1)

    def entropy(self) -> torch.Tensor:
        return (self.log_std + 0.5 * (1.0 + _LOG_2PI)).sum(-1)

    def kl(self, other: "DiagGaussian") -> torch.Tensor:
        """KL(self || other), summed over action dimensions."""
        var_ratio = torch.exp(2 * (self.log_std - other.log_std))
        mean_term = ((self.mean - other.mean) * torch.exp(-other.log_std)).pow(2)
        return 0.5 * (var_ratio + mean_term - 1.0 - 2 * (self.log_std - other.log_std)).sum(-1)

    def detach(self) -> "DiagGaussian":
        return DiagGaussian(self.mean.detach(), self.log_std.detach())


class Categorical:
    """Categorical over the last dimension of ``logits``; actions are int64 indices."""

    def __init__(self, logits: torch.Tensor):
        self.logits = logits - logits.logsumexp(-1, keepdim=True)

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        # Gumbel-max: argmax(logits + Gumbel noise) is an exact categorical sample, and works for any
        # batch shape with an explicit generator (torch.multinomial needs a 2-D input).
        u = torch.rand(self.logits.shape, generator=generator, dtype=self.logits.dtype, device=self.logits.device)
        gumbel = -torch.log(-torch.log(u.clamp_min(1e-20)))
        return torch.argmax(self.logits + gumbel, dim=-1)

    def mode(self) -> torch.Tensor:
        return torch.argmax(self.logits, dim=-1)

    def log_prob(self, actions: torch.Tensor) -> torch.Tensor:
        return self.logits.gather(-1, actions.long().unsqueeze(-1)).squeeze(-1)

    def entropy(self) -> torch.Tensor:
        return -(self.logits.exp() * self.logits).sum(-1)

    def kl(self, other: "Categorical") -> torch.Tensor:
        return (self.logits.exp() * (self.logits - other.logits)).sum(-1)

    def detach(self) -> "Categorical":
        return Categorical(self.logits.detach())


class Deterministic:
    """A point prediction (supervised H = 1 tasks): the action is the model's output."""

    def __init__(self, value: torch.Tensor):
        self.value = value

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        return self.value

    def mode(self) -> torch.Tensor:
        return self.value

    def log_prob(self, actions: torch.Tensor) -> torch.Tensor:
        return torch.zeros(actions.shape[:-1], dtype=self.value.dtype, device=self.value.device)

    def entropy(self) -> torch.Tensor:
        return torch.zeros(self.value.shape[:-1], dtype=self.value.dtype, device=self.value.device)

    def detach(self) -> "Deterministic":
        return Deterministic(self.value.detach())
