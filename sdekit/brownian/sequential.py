"""Brownian increments drawn step by step from a ``torch.Generator``."""

from __future__ import annotations

import math

import torch

from .tree import LEVY_AREA_UNAVAILABLE


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

    def increments(self, times, area: bool = False, reuse: bool = False, levy_area: bool = False):
        """Yield ``(ΔW, ΔZ or None)``, each ``(B, *S)``, for consecutive steps of ``times``.

        With ``reuse=True`` every step's increments are written into the same two
        buffers (no allocation per step), so a yielded tensor is valid only until the
        next one is drawn; ``sdeint`` consumes each step's increments before drawing
        the next.  The values are the same either way.

        Raises:
            ValueError: with ``levy_area=True`` (the Lévy area between channels is not drawn).
        """
        if levy_area:
            raise ValueError(LEVY_AREA_UNAVAILABLE.format(source="SequentialBrownian"))
        times = [float(t) for t in times]
        kw = {"device": self.device, "dtype": self.dtype}
        z = z2 = half = None
        if reuse:
            z, z2, half = torch.empty(self.shape, **kw), torch.empty(self.shape, **kw), torch.empty(self.shape, **kw)
        for s, t in zip(times[:-1], times[1:]):
            h = t - s
            # In place: the same values as √h·z and h(ΔW/2 + √(h/12) z₂), without temporaries.
            dW = torch.randn(self.shape, generator=self.generator, out=z, **kw).mul_(math.sqrt(h))
            if area:
                dZ = torch.randn(self.shape, generator=self.generator, out=z2, **kw).mul_(math.sqrt(h / 12.0))
                yield dW, dZ.add_(torch.mul(dW, 0.5, out=half)).mul_(h)
            else:
                yield dW, None

    def normals(self, times):
        """Yield ``(z, √h)`` per step of ``times``: the standard normals behind :meth:`increments`' ``ΔW = √h z``.

        The same draws from the generator as ``increments(times)`` (no area), so the same path;
        ``z`` is one buffer, overwritten by the next step's draw.  For update steps that fold
        ``√h`` into their own fused multiply-add (:meth:`~sdekit.solvers.sde.euler.EulerMaruyama.step_normal`).
        """
        times = [float(t) for t in times]
        z = torch.empty(self.shape, device=self.device, dtype=self.dtype)
        for s, t in zip(times[:-1], times[1:]):
            yield torch.randn(self.shape, generator=self.generator, out=z), math.sqrt(t - s)

