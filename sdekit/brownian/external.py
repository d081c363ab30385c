"""Brownian motion objects following torchsde's ``bm`` protocol (e.g. ``torchsde.BrownianInterval``)."""

from __future__ import annotations

import torch


class CallableBrownian:
    """Wraps any ``bm`` with torchsde's call protocol as a source of step increments.

    ``bm(ta, tb)`` must return ``W(tb) − W(ta)`` of shape ``(B, *S)`` and, for methods
    that need the space-time area, ``bm(ta, tb, return_U=True)`` must return
    ``(W(tb) − W(ta), ∫_ta^tb (W_s − W_ta) ds)`` — torchsde's ``BrownianInterval`` with
    ``levy_area_approximation`` other than ``"none"`` does.

    Args:
        bm: the Brownian object.
        size: expected ``(B, *S)``.
        dtype, device: the increments are cast to these.
    Raises (when iterated):
        ValueError: if ``bm`` returns a tensor of another shape.
    """

    def __init__(self, bm, size, *, dtype, device):
        self.bm = bm
        self.shape = tuple(size)
        self.dtype = dtype
        self.device = device

    def _check(self, value: torch.Tensor, what: str) -> torch.Tensor:
        if not isinstance(value, torch.Tensor) or tuple(value.shape) != self.shape:
            got = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            raise ValueError(f"bm returned {what} of shape {got}, expected {self.shape}")
        return value.to(device=self.device, dtype=self.dtype)

    def increments(self, times, area: bool = False):
        """Yield ``(ΔW, ΔZ or None)`` for consecutive steps of ``times`` (one ``bm`` call each)."""
        times = [float(t) for t in times]
        for s, t in zip(times[:-1], times[1:]):
            if area:
                dW, dZ = self.bm(s, t, return_U=True)
                yield self._check(dW, "W"), self._check(dZ, "U")
            else:
                yield self._check(self.bm(s, t), "W"), None
