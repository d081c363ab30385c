"""Variance-preserving SDE (the continuous limit of DDPM)."""

from __future__ import annotations

import torch

from .._checks import check_positive
from .base import AbstractLinearSDE, gaussian_log_prob


class BetaScheduleSDE(AbstractLinearSDE):
    """Base of VP SDEs ``dx = −½ β(t) x dt + √β(t) dW`` given by a noise schedule ``β(t)``.

    A subclass provides ``beta(t)`` and ``integrated_beta(t) = B(t) = ∫₀ᵗ β``;
    everything else follows in closed form (Song et al. 2021, Appendix B,
    eq. 29): mean coefficient ``m(t) = exp(−½ B(t))``, marginal standard
    deviation ``√(1 − m(t)²)``, exact transitions and the ``N(0, I)`` prior.
    """

    def drift(self, x, t):
        return -0.5 * self.beta(t).reshape((-1,) + (1,) * (x.dim() - 1)) * x

    def diffusion(self, x, t):
        return self.beta(t).sqrt()

    def mean_coeff(self, t):
        return torch.exp(-0.5 * self.integrated_beta(t))

    def std(self, t):
        return torch.sqrt(-torch.expm1(-self.integrated_beta(t)))

    def transition_var(self, s, t):
        # 1 − m(t)²/m(s)², free of cancellation for close s, t.
        return -torch.expm1(-(self.integrated_beta(t) - self.integrated_beta(s)))

    def prior_sample(self, shape, *, generator=None, device=None, dtype=None):
        return torch.randn(shape, generator=generator, device=device, dtype=dtype)

    def prior_from_normal(self, z):
        return z

    def prior_log_prob(self, z):
        return gaussian_log_prob(z, 0.0, 1.0)


class VPSDE(BetaScheduleSDE):
    """VP SDE ``dx = −½ β(t) x dt + √β(t) dW`` with ``β(t) = β_min + (t/T) (β_max − β_min)``.

    Source: Song et al. 2021, eq. 11 and Appendix B (eq. 29): the marginal is
    ``N(m(t) x_0, (1 − m(t)²) I)`` with ``m(t) = exp(−½ B(t))``,
    ``B(t) = ∫₀ᵗ β = β_min t + ½ (t²/T) (β_max − β_min)``.  Prior ``N(0, I)``.
    Defaults are score_sde's (β_min = 0.1, β_max = 20, T = 1).

    Raises:
        ValueError: if ``beta_min``/``beta_max``/``T`` are not positive or
            ``beta_max < beta_min`` (all must be finite).
        TypeError: if any of them is not a real number (e.g. a string).
    """

    sampling_eps = 1e-3

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0, T: float = 1.0):
        self.beta_min = check_positive("beta_min", beta_min)
        self.beta_max = check_positive("beta_max", beta_max)
        if self.beta_max < self.beta_min:
            raise ValueError(f"beta_max must be >= beta_min, got {beta_max} < {beta_min}")
        self.T = check_positive("T", T)

    def beta(self, t: torch.Tensor) -> torch.Tensor:
        """β(t), shape of ``t``."""
        return self.beta_min + t / self.T * (self.beta_max - self.beta_min)

    def integrated_beta(self, t: torch.Tensor) -> torch.Tensor:
        """B(t) = ∫₀ᵗ β(u) du, shape of ``t``."""
        return self.beta_min * t + 0.5 * t**2 / self.T * (self.beta_max - self.beta_min)
