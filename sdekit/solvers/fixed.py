"""Fixed-step explicit Runge–Kutta integration with outputs exactly at requested times."""

from __future__ import annotations

import math

import torch

from .rk import rk_advance, rk_stages
from .tableaus import ButcherTableau


def substeps(a: float, b: float, dt: float) -> int:
    """Number of equal steps of size at most ``dt`` that cover ``[a, b]`` (at least 1)."""
    return max(1, math.ceil(abs(b - a) / dt - 1e-9))


def solve_fixed(func, y0: torch.Tensor, times, tableau: ButcherTableau, step_size: float, args=()):
    """Integrate ``dy/dt = func(t, y)`` with the fixed-step method ``tableau`` through ``times``.

    Each interval ``[times[k], times[k+1]]`` is split into ``ceil(|Δ|/step_size)``
    equal steps, so outputs land exactly on ``times`` without interpolation.

    Args:
        func: ``func(t, y, *args)`` with ``t`` ``(B,)`` and ``y`` ``(B, *S)`` → ``(B, *S)``.
        y0: ``(B, *S)``; times: list of ``n`` monotone floats; step_size: > 0 (validated by the caller).
    Returns:
        ``(ys, nfe)``: ``ys`` of shape ``(n, B, *S)`` and the evaluations per sample (an int).
    """
    B = y0.shape[0]
    ys, y, nfe = [y0], y0, 0
    for a, b in zip(times[:-1], times[1:]):
        n = substeps(a, b, step_size)
        h = (b - a) / n
        hv = torch.full((B,), h, dtype=y0.dtype, device=y0.device)
        for j in range(n):
            t = torch.full((B,), a + j * h, dtype=y0.dtype, device=y0.device)
            y = rk_advance(y, rk_stages(func, tableau, t, y, hv, None, args), hv, tableau.b)
            nfe += tableau.stages
        ys.append(y)
    return torch.stack(ys), nfe
