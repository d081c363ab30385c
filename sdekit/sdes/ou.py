"""Ornstein–Uhlenbeck process."""

from __future__ import annotations

import math

import torch

from .._checks import check_positive, check_real
from .base import AbstractLinearSDE, gaussian_log_prob


class OrnsteinUhlenbeck(AbstractLinearSDE):
    """OU SDE ``dx = θ (μ − x) dt + σ dW``.

    Marginal ``N(μ + (x_0 − μ) e^{−θt}, σ²/(2θ) (1 − e^{−2θt}) I)``; the prior is
    the stationary law ``N(μ, σ²/(2θ) I)`` (seed notes 002, "Ornstein–Uhlenbeck
    process", stationary density ``√(θ/πσ²) exp(−θ(x−μ)²/σ²)``).

    Args:
        theta: mean-reversion rate θ > 0 (1 / time).
        sigma: noise scale σ > 0.
        mu: long-run mean μ (scalar).
        T: time horizon, default 1.

    Raises:
        ValueError: if ``theta``, ``sigma`` or ``T`` is not a finite number > 0, or ``mu`` is not finite.
        TypeError: if any of them is not a real number (e.g. a string).
    """

    def __init__(self, theta: float, sigma: float, mu: float = 0.0, T: float = 1.0):
        self.theta = check_positive("theta", theta)
        self.sigma = check_positive("sigma", sigma)
        self.mu = check_real("mu", mu)
        self.T = check_positive("T", T)

    @property
    def stationary_std(self) -> float:
        """σ / √(2θ), the standard deviation of the stationary law."""
        return self.sigma / math.sqrt(2 * self.theta)

    def drift(self, x, t):
        return self.theta * (self.mu - x)

    def diffusion(self, x, t):
        return torch.full_like(t, self.sigma)

    def mean_coeff(self, t):
        return torch.exp(-self.theta * t)

    def mean_offset(self, t):
        return self.mu * -torch.expm1(-self.theta * t)

    def std(self, t):
        return self.stationary_std * torch.sqrt(-torch.expm1(-2 * self.theta * t))

    def transition_var(self, s, t):
        return self.stationary_std**2 * -torch.expm1(-2 * self.theta * (t - s))

    def prior_sample(self, shape, *, generator=None, device=None, dtype=None):
        z = torch.randn(shape, generator=generator, device=device, dtype=dtype)
        return self.mu + self.stationary_std * z

    def prior_from_normal(self, z):
        return self.mu + self.stationary_std * z

    def prior_log_prob(self, z):
        return gaussian_log_prob(z, self.mu, self.stationary_std)
