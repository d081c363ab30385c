"""Final denoising step: the posterior mean ``E[x_0 | x_t]`` by Tweedie's formula."""

from __future__ import annotations

import torch

from .._checks import expand_as_batch
from ..sdes.base import AbstractLinearSDE


def check_denoisable(sde) -> None:
    """Raise ``TypeError`` unless ``sde`` is linear (Tweedie's formula needs its closed-form marginal)."""
    if not isinstance(sde, AbstractLinearSDE):
        raise TypeError(f"denoise=True needs a linear SDE with closed-form marginals, got {type(sde).__name__}")


def tweedie_coefficients(sde, t: torch.Tensor):
    """``(a, b, d)`` with ``E[x_0 | x_t = x] = a x + b s(x, t) + d``: ``(1/m, σ²/m, −c/m)`` at ``t`` (t's shape)."""
    check_denoisable(sde)
    m = sde.mean_coeff(t)
    return 1 / m, sde.std(t) ** 2 / m, -sde.mean_offset(t) / m


def posterior_mean(x: torch.Tensor, s: torch.Tensor, var, alpha=1.0, offset=0.0) -> torch.Tensor:
    """Tweedie's formula ``E[x_0 | x_t = x] = (x − c + σ² s) / α``, for ``x_t = α x_0 + c + σ ε``.

    Source: Efron 2011 (Tweedie's formula); Song et al. 2021, Appendix G; Karras et al. 2022, eq. 3 (in
    the scaled variable ``x̃ = (x − c)/α`` it is ``x̃ + (σ²/α) s``: ``alpha = 1``, ``offset = 0``).  The one
    place sdekit writes it: the samplers' x̂₀ (DPM-Solver++, the diffusers scheduler, the k-diffusion
    denoiser of a score model, the final denoising step) all call it.  A Python ``offset`` of 0 or
    ``alpha`` of 1 is skipped (the result is exact either way).

    Args:
        x: ``(B, *D)`` state ``x_t``.  s: ``(B, *D)`` score ``∇ log p_t(x)``.
        var, alpha, offset: ``σ(t)²``, ``α(t)``, ``c(t)``: Python floats or tensors broadcasting against
            ``x`` (e.g. ``(B, 1, …)`` columns for per-sample times).
    Returns:
        ``(B, *D)``, ``x``'s dtype for float coefficients (torch's promotion otherwise).
    """
    num = x if isinstance(offset, (int, float)) and offset == 0 else x - offset
    num = num + var * s
    return num if isinstance(alpha, (int, float)) and alpha == 1 else num / alpha


def tweedie_denoise(sde, score, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """``E[x_0 | x_t = x] = (x − c(t) + σ(t)² s(x, t)) / m(t)``.

    Source: Efron 2011 (Tweedie's formula); Song et al. 2021, Appendix G
    ("denoising" the last sample).  One score evaluation.

    Args:
        sde: a linear SDE.  x: ``(B, *D)``.  t: ``(B,)`` float64 SDE time.
    Returns:
        ``(B, *D)``.
    Raises:
        TypeError: if ``sde`` is not linear (no closed-form marginal).
    """
    check_denoisable(sde)
    col = lambda v: expand_as_batch(v.to(x.dtype), x)
    s = score(x, t.to(x.dtype))
    return posterior_mean(x, s, col(sde.std(t) ** 2), col(sde.mean_coeff(t)), col(sde.mean_offset(t)))
