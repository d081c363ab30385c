"""The variance-exploding SDE with time measured in noise level: σ(t) = t (EDM, k-diffusion)."""

from __future__ import annotations

import torch

from .._checks import check_positive
from .base import AbstractLinearSDE, gaussian_log_prob


class EDMSDE(AbstractLinearSDE):
    """VE SDE ``dx = √(2t) dW`` whose time is the noise level: ``x_t | x_0 ~ N(x_0, t² I)``.

    Source: Karras et al. 2022 ("Elucidating the design space…", EDM), Table 1
    and eq. 4 with ``σ(t) = t``, ``s(t) = 1``: then ``g(t)² = d σ²/dt = 2t`` and
    the probability flow is ``dx/dσ = (x − D(x, σ))/σ`` for the denoiser
    ``D = x + σ² ∇ log p_σ``, the ODE that k-diffusion's samplers step through
    (their ``sigmas`` are times of this SDE).  Unlike :class:`~sdekit.VESDE`
    (geometric ``σ(t)``, score_sde), ``t = 0`` is the clean data.

    Args:
        sigma_min: default smallest time a sampler integrates down to
            (``sampling_eps``; EDM's 0.002).
        sigma_max: horizon ``T`` and prior scale (EDM's 80): prior ``N(0, σ_max² I)``.
    Raises:
        ValueError: unless ``0 < sigma_min < sigma_max`` (both finite).
        TypeError: if either is not a real number (e.g. a string).
    """

    def __init__(self, sigma_min: float = 0.002, sigma_max: float = 80.0):
        self.sigma_min = check_positive("sigma_min", sigma_min)
        self.sigma_max = check_positive("sigma_max", sigma_max)
        if self.sigma_max <= self.sigma_min:
            raise ValueError(f"sigma_max must be > sigma_min, got {sigma_max} <= {sigma_min}")
        self.T = self.sigma_max
        self.sampling_eps = self.sigma_min

    def drift(self, x, t):
        return torch.zeros_like(x)

    def diffusion(self, x, t):
        return torch.sqrt(2.0 * t)

    def mean_coeff(self, t):
        return torch.ones_like(t)

    def std(self, t):
        return t.clone()

    def transition_var(self, s, t):
        return (t - s) * (t + s)

    def prior_sample(self, shape, *, generator=None, device=None, dtype=None):
        return self.sigma_max * torch.randn(shape, generator=generator, device=device, dtype=dtype)

    def prior_from_normal(self, z):
        """Prior samples ``σ_max z`` from standard normals ``z`` ``(B, *D)`` (keyed, batch-invariant priors)."""
        return self.sigma_max * z

    def prior_log_prob(self, z):
        return gaussian_log_prob(z, 0.0, self.sigma_max)

