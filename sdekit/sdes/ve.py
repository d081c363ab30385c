"""Variance-exploding SDE (the continuous limit of NCSN / SMLD)."""

from __future__ import annotations

import math

import torch

from .._checks import check_positive
from .base import AbstractLinearSDE, gaussian_log_prob


class VESDE(AbstractLinearSDE):
    """VE SDE ``dx = σ(t) √(2 log(σ_max/σ_min)) dW``, ``σ(t) = σ_min (σ_max/σ_min)^{t/T}``.

    Source: Song et al. 2021, eq. 9 and Appendix B (eq. 30).  Following
    score_sde and NCSN, the perturbation kernel is ``N(x_0, σ(t)² I)``: the
    process starts at ``t = 0`` from the data perturbed by ``σ_min``, so that
    ``Var(x_t | x_s) = σ(t)² − σ(s)²`` is the SDE's exact transition.  Prior
    ``N(0, σ_max² I)``.  Defaults are score_sde's (σ_min = 0.01, σ_max = 50,
    T = 1; sampling ε = 1e-5).

    Raises:
        ValueError: if ``sigma_min``/``sigma_max``/``T`` are not positive or
            ``sigma_max <= sigma_min`` (all must be finite).
        TypeError: if any of them is not a real number (e.g. a string).
    """

    sampling_eps = 1e-5

    def __init__(self, sigma_min: float = 0.01, sigma_max: float = 50.0, T: float = 1.0):
        self.sigma_min = check_positive("sigma_min", sigma_min)
        self.sigma_max = check_positive("sigma_max", sigma_max)
        if self.sigma_max <= self.sigma_min:
            raise ValueError(f"sigma_max must be > sigma_min, got {sigma_max} <= {sigma_min}")
        self.T = check_positive("T", T)

    @property
    def _log_ratio(self) -> float:
        return math.log(self.sigma_max / self.sigma_min)

    def drift(self, x, t):
        return torch.zeros_like(x)

    def diffusion(self, x, t):
        return self.std(t) * math.sqrt(2 * self._log_ratio / self.T)

    def mean_coeff(self, t):
        return torch.ones_like(t)

    def std(self, t):
        return self.sigma_min * torch.exp(t / self.T * self._log_ratio)

    def transition_var(self, s, t):
        # σ(t)² − σ(s)² = σ(t)² (1 − e^{−2 (t−s) log(σmax/σmin)/T}).
        return self.std(t) ** 2 * -torch.expm1(-2.0 * (t - s) / self.T * self._log_ratio)

    def prior_sample(self, shape, *, generator=None, device=None, dtype=None):
        return self.sigma_max * torch.randn(shape, generator=generator, device=device, dtype=dtype)

    def prior_from_normal(self, z):
        return self.sigma_max * z

    def prior_log_prob(self, z):
        return gaussian_log_prob(z, 0.0, self.sigma_max)
