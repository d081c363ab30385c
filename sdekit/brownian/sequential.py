"""Brownian increments drawn step by step from a ``torch.Generator``."""

from __future__ import annotations

import math

import torch


class SequentialBrownian:
    """Independent Gaussian increments for consecutive steps, from one ``torch.Generator``.

    The fast source: one ``torch.randn`` per step (two with the area), as a plain
    Euler–Maruyama loop draws them.  It is *not* a path object: a different step size,
    batch size or method gives different noise.  Use :class:`~sdekit.brownian.BrownianTree`
    for a path that is the same at every step size and for every batch.

    Per step ``[s, t]`` of length ``h``: ``ΔW = √h z₁`` and, when the area is asked for,
    ``ΔZ = ∫_s^t (W_u − W_s) du = h(ΔW/2 + √(h/12) z₂)`` (space-time Lévy area
    ``H ~ N(0, h/12)`` independent of ``ΔW``; Kloeden & Platen 1992, §10.4).

    Args:
        size: ``(B, *S)``.
        generator: ``torch.Generator`` (``None``: torch's global generator).
        dtype, device: of the increments.
    """

    def __init__(self, size, *, generator=None, dtype=torch.float32, device=None):
        self.shape = tuple(int(s) for s in size)
        self.generator = generator
        self.dtype = dtype
        self.device = torch.device(device) if device is not None else torch.device("cpu")

    def increments(self, times, area: bool = False):
        """Yield ``(ΔW, ΔZ or None)``, each ``(B, *S)``, for consecutive steps of ``times``."""
        times = [float(t) for t in times]
        for s, t in zip(times[:-1], times[1:]):
            h = t - s
            z = torch.randn(self.shape, generator=self.generator, device=self.device, dtype=self.dtype)
            dW = math.sqrt(h) * z
            if area:
                z2 = torch.randn(self.shape, generator=self.generator, device=self.device, dtype=self.dtype)
                yield dW, h * (0.5 * dW + math.sqrt(h / 12.0) * z2)
            else:
                yield dW, None
