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
    return (x - col(sde.mean_offset(t)) + col(sde.std(t) ** 2) * s) / col(sde.mean_coeff(t))
