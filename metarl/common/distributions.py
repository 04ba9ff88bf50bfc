"""Small action distributions that sample from an explicit ``torch.Generator``.

``torch.distributions`` samples from the global generator; the collector needs one seeded stream per
collector so that a whole collection is reproducible from one seed, hence these.

Sampling is split in two so that the randomness can be drawn apart from the policy evaluation: a
distribution names the kind of noise it needs (``noise_kind``: ``"normal"`` or ``"uniform"``, None for
none) and ``sample_from_noise(noise)`` turns noise of ``noise_shape`` into actions deterministically.
The collector draws the noise of a whole collection [T, B, ...] in one call (see :func:`draw_noise`),
so a collection split by columns across processes (the Ray backend) samples exactly the same actions.
``sample(generator)`` is the two steps in one and draws the same numbers it always did.
"""

from __future__ import annotations

import math

import torch

_LOG_2PI = math.log(2 * math.pi)

NOISE_KINDS = ("normal", "uniform")


def draw_noise(kind: str | None, shape, generator: torch.Generator | None = None, dtype=torch.float32,
               device=None) -> torch.Tensor | None:
    """Noise of one ``kind`` in one draw: standard normal, uniform [0, 1), or None for no noise."""
    if kind is None:
        return None
    if kind == "normal":
        return torch.randn(tuple(shape), generator=generator, dtype=dtype, device=device)
    if kind == "uniform":
        return torch.rand(tuple(shape), generator=generator, dtype=dtype, device=device)
    raise ValueError(f"noise kind must be one of {NOISE_KINDS} or None, got {kind!r}")


def _check_noise(dist, noise) -> torch.Tensor:
    if noise is None or tuple(noise.shape) != tuple(dist.noise_shape):
        got = None if noise is None else tuple(noise.shape)
        raise ValueError(f"{type(dist).__name__}.sample_from_noise needs {dist.noise_kind} noise of shape "
                         f"{tuple(dist.noise_shape)}, got {got}")
    return noise


class DiagGaussian:
    """Independent Gaussian over the last dimension."""

    def __init__(self, mean: torch.Tensor, log_std: torch.Tensor):
        self.mean = mean
        self.log_std = log_std.expand_as(mean)

    noise_kind = "normal"

    @property
    def noise_shape(self) -> torch.Size:
        return self.mean.shape

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        noise = draw_noise("normal", self.mean.shape, generator, self.mean.dtype, self.mean.device)
        return self.sample_from_noise(noise)

    def sample_from_noise(self, noise: torch.Tensor) -> torch.Tensor:
        """The action for standard-normal ``noise`` of the mean's shape."""
        return self.mean + _check_noise(self, noise) * self.log_std.exp()

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

    noise_kind = "uniform"

    @property
    def noise_shape(self) -> torch.Size:
        return self.logits.shape

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        u = draw_noise("uniform", self.logits.shape, generator, self.logits.dtype, self.logits.device)
        return self.sample_from_noise(u)

    def sample_from_noise(self, noise: torch.Tensor) -> torch.Tensor:
        """The action for uniform [0, 1) ``noise`` of the logits' shape (one number per category)."""
        # Gumbel-max: argmax(logits + Gumbel noise) is an exact categorical sample, and works for any
        # batch shape with an explicit generator (torch.multinomial needs a 2-D input).
        u = _check_noise(self, noise)
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

    noise_kind = None
    noise_shape = None

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        return self.value

    def sample_from_noise(self, noise: None = None) -> torch.Tensor:
        if noise is not None:
            raise ValueError("Deterministic.sample_from_noise takes no noise (its action is the prediction)")
        return self.value

    def mode(self) -> torch.Tensor:
        return self.value

    def log_prob(self, actions: torch.Tensor) -> torch.Tensor:
        return torch.zeros(actions.shape[:-1], dtype=self.value.dtype, device=self.value.device)

    def entropy(self) -> torch.Tensor:
        return torch.zeros(self.value.shape[:-1], dtype=self.value.dtype, device=self.value.device)

    def detach(self) -> "Deterministic":
        return Deterministic(self.value.detach())
