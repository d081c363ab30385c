"""Gaussian-mixture data: a reference problem with closed-form scores, densities and samples."""

from __future__ import annotations

import math

import torch

from .._checks import batch_time, check_tensor
from ..sdes.base import AbstractLinearSDE


class GaussianMixture:
    """Data ``p_0 = Σ_k w_k N(μ_k, Σ_k)`` and its exact marginals under a linear SDE.

    Under ``x_t = m(t) x_0 + c(t) + σ(t) z`` each component stays Gaussian,
    ``N(m μ_k + c, m² Σ_k + σ² I)`` (Song et al. 2021, Appendix B), so the
    marginal density ``p_t``, its score ``∇ log p_t`` and exact samples of ``p_t``
    are all known.  Use it to check samplers and likelihoods.

    Args:
        weights: ``(K,)`` positive, summing to 1.
        means: ``(K, D)``.
        covs: ``(K, D, D)`` symmetric positive definite.
    Raises:
        ValueError: on inconsistent shapes, weights not summing to 1, or
            covariances that are not positive definite.

    All methods take ``sde`` and ``t`` (scalar or ``(B,)``); ``sde=None`` means
    the data distribution itself (``t`` ignored).  ``x`` is ``(B, D)`` (or
    ``(B, *S)`` with ``prod(S) = D``, flattened).  Work in float64 for tests.
    """

    def __init__(self, weights: torch.Tensor, means: torch.Tensor, covs: torch.Tensor):
        check_tensor("weights", weights, min_dim=1)
        check_tensor("means", means, min_dim=2)
        check_tensor("covs", covs, min_dim=3)
        K, D = means.shape
        if weights.shape != (K,) or covs.shape != (K, D, D):
            raise ValueError(
                f"weights, means, covs must have shapes (K,), (K, D), (K, D, D); got "
                f"{tuple(weights.shape)}, {tuple(means.shape)}, {tuple(covs.shape)}"
            )
        if bool((weights <= 0).any()) or abs(float(weights.sum()) - 1.0) > 1e-6:
            raise ValueError("weights must be positive and sum to 1")
        if not torch.allclose(covs, covs.transpose(-1, -2)) or torch.linalg.cholesky_ex(covs).info.any():
            raise ValueError("covs must be symmetric positive definite")
        self.weights, self.means, self.covs = weights, means, covs
        self.K, self.D = K, D
        # Σ_k = Q_k diag(λ_k) Q_kᵀ: every marginal covariance m² Σ_k + σ² I shares Q_k, so a per-sample time
        # costs a division by m² λ + σ² instead of a Cholesky factorisation per sample and component
        self._eig = torch.linalg.eigh(covs.to(torch.float64))

    def _coefficients(self, sde, t, like: torch.Tensor):
        """``m``, ``c``, ``σ`` of the marginal at ``t``, each ``(B', 1)``; ``B' = 1`` for a shared time."""
        if not isinstance(sde, AbstractLinearSDE):
            raise TypeError(f"sde must be a linear SDE with closed-form marginals, got {type(sde).__name__}")
        t = batch_time(t, like)
        if bool((t == t[0]).all()):  # one shared time (a reference: syncs are fine)
            t = t[:1]
        return tuple(v[:, None] for v in (sde.mean_coeff(t), sde.mean_offset(t), sde.std(t)))

    def _params(self, sde, t, like: torch.Tensor):
        """Component means ``(B', K, D)`` and covariances ``(B', K, D, D)``; ``B' = 1`` for a shared time."""
        mu = self.means.to(like)
        cov = self.covs.to(like)
        if sde is None:
            return mu[None], cov[None]
        m, c, s = (v[..., None] for v in self._coefficients(sde, t, like))
        eye = torch.eye(self.D, dtype=like.dtype, device=like.device)
        return m * mu + c, m[..., None] ** 2 * cov + s[..., None] ** 2 * eye

    def _component_terms(self, x, sde, t):
        """Flattened x, precision-weighted residuals ``P_k (x − μ_k)`` and ``log w_k N_k(x)``.

        In the eigenbasis of ``Σ_k``: the marginal covariance is ``Q_k diag(v) Q_kᵀ`` with
        ``v = m² λ_k + σ²``, so ``P_k r = Q_k (Q_kᵀ r / v)`` and ``log det = Σ log v``.
        """
        xf = x.flatten(1)
        if xf.shape[1] != self.D:
            raise ValueError(f"x must have D={self.D} features per sample, got shape {tuple(x.shape)}")
        lam, Q = (v.to(xf) for v in self._eig)  # (K, D), (K, D, D)
        mu = self.means.to(xf)
        if sde is None:
            var = lam[None]
        else:
            m, c, s = (v[..., None] for v in self._coefficients(sde, t, xf))  # (B', 1, 1)
            mu = m * mu + c  # (B', K, D)
            var = m**2 * lam + s**2  # (B', K, D)
        diff = xf[:, None, :] - mu  # (B, K, D)
        # one small product per (sample, component), so that a sample's score does not depend on its batch
        z = (Q.transpose(-1, -2) @ diff.unsqueeze(-1)).squeeze(-1)  # Q_kᵀ (x − μ_k)
        zv = z / var
        prec_diff = (Q @ zv.unsqueeze(-1)).squeeze(-1)
        maha = (z * zv).sum(-1)
        log_det = torch.log(var).sum(-1)
        log_n = -0.5 * maha - 0.5 * log_det - 0.5 * self.D * math.log(2 * math.pi)
        return xf, prec_diff, torch.log(self.weights.to(xf)) + log_n

    def log_prob(self, x: torch.Tensor, sde=None, t=None) -> torch.Tensor:
        """Exact ``log p_t(x)`` in nats, shape ``(B,)``."""
        return torch.logsumexp(self._component_terms(x, sde, t)[2], dim=1)

    def responsibilities(self, x: torch.Tensor, sde=None, t=None) -> torch.Tensor:
        """Posterior component probabilities ``p(k | x)`` under ``p_t``, shape ``(B, K)``."""
        return torch.softmax(self._component_terms(x, sde, t)[2], dim=1)

    def log_responsibilities(self, x: torch.Tensor, sde=None, t=None) -> torch.Tensor:
        """``log p(k | x)`` under ``p_t``, shape ``(B, K)``: the exact noisy classifier (no underflow to −∞)."""
        return torch.log_softmax(self._component_terms(x, sde, t)[2], dim=1)

    def score(self, x: torch.Tensor, sde=None, t=None) -> torch.Tensor:
        """Exact ``∇ₓ log p_t(x) = −Σ_k p(k|x) Σ_k(t)⁻¹ (x − μ_k(t))``, shape of ``x``."""
        _, prec_diff, log_joint = self._component_terms(x, sde, t)
        r = torch.softmax(log_joint, dim=1)
        return -torch.einsum("bk,bkd->bd", r, prec_diff).reshape(x.shape)

    def score_model(self, sde):
        """The exact score as a model ``score(x, t)`` for :func:`sdekit.sample` and friends."""
        return lambda x, t: self.score(x, sde, t)

    def sample(self, n: int, sde=None, t=None, *, generator=None, dtype=torch.float64, device=None):
        """Exact samples of ``p_t``, shape ``(n, D)``; also returns their components ``(n,)``."""
        like = torch.empty(n, self.D, dtype=dtype, device=device)
        mu, cov = (v.expand((n,) + v.shape[1:]) for v in self._params(sde, t, like))
        k = torch.multinomial(self.weights.to(like), n, replacement=True, generator=generator)
        idx = torch.arange(n, device=like.device)
        L = torch.linalg.cholesky(cov[idx, k])
        z = torch.randn(n, self.D, 1, generator=generator, dtype=dtype, device=device)
        return mu[idx, k] + (L @ z).squeeze(-1), k


def example_mixture(dtype=torch.float64) -> GaussianMixture:
    """A 2-D, 3-component mixture with unequal weights and anisotropic covariances."""
    w = torch.tensor([0.5, 0.3, 0.2], dtype=dtype)
    mu = torch.tensor([[-2.0, 0.0], [2.0, 1.0], [0.0, -2.5]], dtype=dtype)
    covs = torch.tensor(
        [[[0.30, 0.10], [0.10, 0.20]], [[0.15, -0.05], [-0.05, 0.25]], [[0.40, 0.0], [0.0, 0.10]]], dtype=dtype
    )
    return GaussianMixture(w, mu, covs)
