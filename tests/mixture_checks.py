"""Exact moment checks of samples against a Gaussian-mixture marginal.

Under ``p_t = Σ_k w_k N(μ_k(t), C_k(t))`` the responsibilities ``r_k(x)`` satisfy
``r_k(x) p_t(x) = w_k N_k(x)``, hence *exactly*

    E[r_k] = w_k,   E[r_k x] = w_k μ_k(t),   E[r_k (x − μ_k(t))²] = w_k diag C_k(t).

Each is the mean of i.i.d. terms, so each gets a standard error from the
sample and a 5-SE tolerance (tests/stats.py); nothing is fitted.
"""

from __future__ import annotations

import torch

from stats import assert_mean_close


def assert_matches_mixture(x: torch.Tensor, mixture, sde, t: float, what: str) -> None:
    x = x.double().flatten(1)
    r = mixture.responsibilities(x, sde, t)  # (n, K)
    n = x.shape[0]
    mu, cov = mixture._params(sde, t, x[:1])
    mu, var = mu[0], torch.diagonal(cov[0], dim1=-2, dim2=-1)  # (K, D)
    w = mixture.weights
    assert_mean_close(r, w, what=f"{what}: component weights")
    assert_mean_close((r[..., None] * x[:, None, :]).reshape(n, -1), (w[:, None] * mu).reshape(-1), what=f"{what}: means")
    sq = r[..., None] * (x[:, None, :] - mu) ** 2
    assert_mean_close(sq.reshape(n, -1), (w[:, None] * var).reshape(-1), what=f"{what}: variances")
