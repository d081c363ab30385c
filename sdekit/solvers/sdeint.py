"""``sdekit.sdeint``: fixed-step forward SDE integration with outputs at requested times."""

from __future__ import annotations

import math

import torch

from .._checks import check_choice, check_finite, check_positive, check_tensor, expand_as_batch

METHODS = ("euler",)


def sdeint(sde, y0: torch.Tensor, ts, method: str = "euler", dt: float = 1e-3, generator=None) -> torch.Tensor:
    """Simulate ``dx = f(x,t) dt + g(x,t) dW`` forward from ``ts[0]``, returning the path at ``ts``.

    Method ``"euler"`` is Euler–Maruyama, ``x ← x + f Δ + g √Δ z`` (Kloeden &
    Platen 1992, §9.1; seed notes 002, "Euler–Maruyama"), strong order 0.5 and
    weak order 1.  Each interval ``[ts[k], ts[k+1]]`` is split into
    ``ceil(len/dt)`` equal steps, so outputs land exactly on ``ts``.

    Args:
        sde: an :class:`~sdekit.sdes.AbstractSDE` (``drift(x, t)``, ``diffusion(x, t)``).
        y0: ``(B, *D)`` initial state at ``ts[0]``.
        ts: 1-D strictly increasing times (SDE time), at least 2 points.
        method: ``"euler"``.
        dt: largest step size (> 0).
        generator: ``torch.Generator`` for the Brownian increments.
    Returns:
        ``(len(ts), B, *D)``, with ``out[0] = y0``.
    Raises:
        ValueError: on non-finite ``y0``, ``dt <= 0``, ``ts`` not 1-D, not finite
            or not strictly increasing, or an unknown ``method``.
    """
    check_tensor("y0", y0, min_dim=1)
    check_finite("y0", y0)
    check_choice("method", method, METHODS)
    dt = check_positive("dt", dt)
    ts = torch.as_tensor(ts, dtype=torch.float64)
    if ts.dim() != 1 or ts.numel() < 2:
        raise ValueError(f"ts must be 1-D with at least 2 times, got shape {tuple(ts.shape)}")
    if not bool(torch.isfinite(ts).all()):
        raise ValueError("ts must be finite")
    if not bool((ts[1:] > ts[:-1]).all()):
        raise ValueError("ts must be strictly increasing")
    times = ts.tolist()
    B = y0.shape[0]
    y, out = y0, [y0]
    for a, b in zip(times[:-1], times[1:]):
        n = max(1, math.ceil((b - a) / dt - 1e-9))
        h = (b - a) / n
        for j in range(n):
            t = torch.full((B,), a + j * h, dtype=y.dtype, device=y.device)
            g = sde.diffusion(y, t)
            g = expand_as_batch(g, y) if g.dim() == 1 else g
            z = torch.randn(y.shape, generator=generator, device=y.device, dtype=y.dtype)
            y = y + sde.drift(y, t) * h + g * math.sqrt(h) * z
        out.append(y)
    return torch.stack(out)
