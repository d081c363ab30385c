"""Final denoising step: the posterior mean ``E[x_0 | x_t]`` by Tweedie's formula."""

from __future__ import annotations

import torch

from .._checks import expand_as_batch
from ..sdes.base import AbstractLinearSDE


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
    if not isinstance(sde, AbstractLinearSDE):
        raise TypeError(f"denoise=True needs a linear SDE with closed-form marginals, got {type(sde).__name__}")
    col = lambda v: expand_as_batch(v.to(x.dtype), x)  # noqa: E731
    s = score(x, t.to(x.dtype))
    return (x - col(sde.mean_offset(t)) + col(sde.std(t) ** 2) * s) / col(sde.mean_coeff(t))
