"""A linear SDE in the noise-level parametrisation: ``x = α(t) (x̃ + c̃) ``, time ``σ̃ = σ(t)/α(t)``.

For a linear SDE with marginal ``x_t = α(t) x_0 + c(t) + σ(t) ε`` the scaled
state ``x̃ = (x − c(t))/α(t) = x_0 + σ̃ ε`` has the marginals of the VE
(EDM) process at noise level ``σ̃ = σ/α = e^{−λ}`` (``λ`` the half log-SNR),
and the probability flow of every such SDE becomes the same ODE
``dx̃/dσ̃ = (x̃ − D(x̃, σ̃))/σ̃`` with the denoiser
``D = E[x_0 | x_t] = x̃ + σ̃ σ s(x, t)`` (Tweedie's formula).  Song, Meng &
Ermon 2021 (DDIM), §4.3 and eq. 14; Karras et al. 2022 (EDM), §2 and
Table 1; Lu et al. 2022a, §3.1.  So every sampler written for a k-diffusion
denoiser (:mod:`sdekit.integrations.k_diffusion`) runs on VP, sub-VP, VE, EDM,
discrete-VP or Ornstein–Uhlenbeck SDEs through :class:`ScaledDenoiser`, and
its ancestral noise (added in ``x̃``) is that SDE's exact posterior noise.
"""

from __future__ import annotations

import math
from typing import Callable

import torch

from .._checks import check_model_output, expand_as_batch
from ..sdes.base import AbstractLinearSDE
from ..sdes.edm import EDMSDE
from ..sdes.subvp import SubVPSDE
from ..sdes.ve import VESDE
from ..sdes.vp import VPSDE
from .denoise import posterior_mean
from .dpm_solver import log_snr

#: Bisection halvings of the time interval: 2^-80 of it, below float64 resolution.
_BISECTIONS = 80


def _quadratic_time(sde: VPSDE, integrated: torch.Tensor) -> torch.Tensor:
    """The ``t >= 0`` with ``β_min t + ½ (β_max − β_min) t²/T = B``, in the cancellation-free form."""
    a = 0.5 * (sde.beta_max - sde.beta_min) / sde.T
    b = sde.beta_min
    return 2 * integrated / (b + torch.sqrt(b * b + 4 * a * integrated))


def time_of_log_snr(sde: AbstractLinearSDE, lam: torch.Tensor, t_max: float | None = None) -> torch.Tensor:
    """The time ``t`` with ``λ(t) = log(α(t)/σ(t)) = lam``: the inverse of :func:`~sdekit.sampling.dpm_solver.log_snr`.

    Closed forms (any ``λ``, also beyond ``T``, where EDM's churn evaluates):
    :class:`~sdekit.VPSDE` (``B(t) = log(1 + e^{−2λ})`` solved for ``t``),
    :class:`~sdekit.SubVPSDE` (``B = 2 asinh(e^{−λ}/2)``), :class:`~sdekit.VESDE`
    (``t = T log(e^{−λ}/σ_min)/log(σ_max/σ_min)``) and :class:`~sdekit.EDMSDE`
    (``t = e^{−λ}``).  Any other linear SDE is inverted by bisection on
    ``[0, t_max]`` (default ``T``) on ``lam``'s device: no host sync.

    Args:
        sde: a linear SDE whose ``λ`` decreases strictly in ``t``.
        lam: tensor of any shape (float64 is used).
        t_max: upper end of the bisection (default ``sde.T``); targets with
            ``λ < λ(t_max)`` come out as ``t_max``, so pass one that brackets them.
    Returns:
        float64 tensor of ``lam``'s shape and device.
    """
    lam = lam.to(torch.float64)
    kind = type(sde)  # exact types only: a subclass may change the marginals
    if kind is EDMSDE:
        return torch.exp(-lam)
    if isinstance(sde, VESDE) and kind is VESDE:
        return sde.T * (-lam - math.log(sde.sigma_min)) / sde._log_ratio
    if isinstance(sde, SubVPSDE) and kind is SubVPSDE:
        return _quadratic_time(sde, 2 * torch.asinh(0.5 * torch.exp(-lam)))
    if isinstance(sde, VPSDE) and kind is VPSDE:
        return _quadratic_time(sde, torch.logaddexp(-2 * lam, torch.zeros_like(lam)))  # log(1 + σ̃²)
    lo = torch.zeros_like(lam)
    hi = torch.full_like(lam, float(sde.T if t_max is None else t_max))
    for _ in range(_BISECTIONS):
        mid = 0.5 * (lo + hi)
        above = log_snr(sde, mid) >= lam  # λ decreases in t: the root lies above mid
        lo, hi = torch.where(above, mid, lo), torch.where(above, hi, mid)
    return 0.5 * (lo + hi)


def sigma_of_time(sde: AbstractLinearSDE, t: torch.Tensor) -> torch.Tensor:
    """``σ̃(t) = σ(t)/α(t)``, float64 of ``t``'s shape (Karras et al. 2022, Table 1's σ(t) of a scaled SDE)."""
    t = torch.as_tensor(t, dtype=torch.float64)
    return sde.std(t) / sde.mean_coeff(t)


def time_of_sigma(sde: AbstractLinearSDE, sigma: torch.Tensor, t_max: float | None = None) -> torch.Tensor:
    """The inverse of :func:`sigma_of_time` (``λ = −log σ̃``; see :func:`time_of_log_snr`), float64."""
    return time_of_log_snr(sde, -torch.log(sigma.to(torch.float64)), t_max)


def scaled_state(sde: AbstractLinearSDE, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """The k-diffusion variable ``x̃ = (x − c(t))/α(t)`` of the state ``x`` ``(B, *D)`` at times ``t`` ``(B,)``
    (float64; the coefficients are rounded to ``x``'s dtype).  Karras et al. 2022, §4 (scaling) and Table 1."""
    return (x - expand_as_batch(sde.mean_offset(t).to(x.dtype), x)) / expand_as_batch(
        sde.mean_coeff(t).to(x.dtype), x)


def unscaled_state(sde: AbstractLinearSDE, x_scaled: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """The inverse of :func:`scaled_state`: ``x = α(t) x̃ + c(t)``, ``(B, *D)`` in ``x_scaled``'s dtype."""
    return expand_as_batch(sde.mean_coeff(t).to(x_scaled.dtype), x_scaled) * x_scaled + expand_as_batch(
        sde.mean_offset(t).to(x_scaled.dtype), x_scaled)


class ScaledDenoiser:
    """The k-diffusion denoiser ``D(x̃, σ̃) = E[x_0 | x_t]`` of a score model on a linear SDE.

    ``x̃ = (x − c(t))/α(t)``, ``σ̃ = σ(t)/α(t)``; at a call the time is
    ``t = t(σ̃)`` (:func:`time_of_sigma`), the state ``x = α x̃ + c`` and
    ``D = x̃ + σ̃ σ(t) s(x, t)`` (Tweedie's formula in the scaled variable;
    Karras et al. 2022, eq. 3 and Table 1).  Counts its calls in ``nfe``.

    Args:
        score: ``score(x, t, **model_kwargs)``, ``x`` ``(B, *D)``, ``t`` ``(B,)`` in SDE time → ``(B, *D)``.
        sde: the linear SDE.
        t_max: upper end of the time inversion when ``sde`` has no closed form (default ``T``).

    Call: ``(x̃ (B, *D), σ̃ (B,), **model_kwargs)`` → ``(B, *D)`` in ``x̃``'s dtype.
    Raises (on call): ValueError, naming ``score``, if the score's output is not of ``x``'s shape.
    """

    def __init__(self, score: Callable, sde: AbstractLinearSDE, t_max: float | None = None):
        self.score, self.sde, self.t_max, self.nfe = score, sde, t_max, 0

    def time(self, sigma: torch.Tensor) -> torch.Tensor:
        """SDE time (float64, ``sigma``'s shape) of noise levels ``sigma``."""
        return time_of_sigma(self.sde, sigma, self.t_max)

    def to_state(self, x_scaled: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """``x = α(t) x̃ + c(t)`` for ``t`` ``(B,)`` float64 (:func:`unscaled_state`)."""
        return unscaled_state(self.sde, x_scaled, t)

    def to_scaled(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """``x̃ = (x − c(t))/α(t)`` for ``t`` ``(B,)`` float64 (:func:`scaled_state`)."""
        return scaled_state(self.sde, x, t)

    def __call__(self, x_scaled: torch.Tensor, sigma: torch.Tensor, **model_kwargs) -> torch.Tensor:
        t = self.time(sigma)
        x = self.to_state(x_scaled, t)
        s = check_model_output("score", self.score(x, t.to(x.dtype), **model_kwargs), x)
        self.nfe += 1
        gain = (sigma.to(torch.float64) * self.sde.std(t)).to(x.dtype)  # σ̃ σ = σ²/α
        return posterior_mean(x_scaled, s, expand_as_batch(gain, x))  # x̃ + (σ²/α) s
