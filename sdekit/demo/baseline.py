"""The reference model: one full-covariance Gaussian fitted by maximum likelihood."""

from __future__ import annotations

import torch
from torch.distributions import MultivariateNormal


class GaussianBaseline:
    """Full-covariance Gaussian ``N(μ, Σ)`` with the MLE ``μ``, ``Σ`` of the data.

    ``μ`` is the sample mean and ``Σ = (1/N) Σ_i (x_i − μ)(x_i − μ)ᵀ`` (the MLE,
    not the unbiased ``1/(N−1)`` estimate).  Fitting and evaluation run in
    float64; the density is :class:`torch.distributions.MultivariateNormal`.

    Args:
        x: ``(N, D)`` training points (dequantised data), ``N > D`` so that
            ``Σ`` can be positive definite.
    Raises:
        ValueError: if ``x`` is not 2-D with ``N > D``, or if ``Σ`` is singular
            (a Cholesky factorisation fails), e.g. for a constant coordinate.
    """

    def __init__(self, x: torch.Tensor):
        if x.dim() != 2 or x.shape[0] <= x.shape[1]:
            raise ValueError(f"x must have shape (N, D) with N > D, got {tuple(x.shape)}")
        x = x.to(torch.float64)
        self.mean = x.mean(0)
        centred = x - self.mean
        self.covariance = centred.T @ centred / x.shape[0]
        try:
            self.dist = MultivariateNormal(self.mean, covariance_matrix=self.covariance)
        except ValueError as err:  # torch reports a failed Cholesky as ValueError
            raise ValueError(f"the sample covariance is not positive definite: {err}") from err

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """Log-density in nats, shape ``(B,)`` (float64), at ``x`` of shape ``(B, D)``."""
        return self.dist.log_prob(x.to(device=self.mean.device, dtype=torch.float64))
