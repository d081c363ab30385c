"""Brownian motion objects following torchsde's ``bm`` protocol (e.g. ``torchsde.BrownianInterval``)."""

from __future__ import annotations

import torch


class CallableBrownian:
    """Wraps any ``bm`` with torchsde's call protocol as a source of step increments.

    ``bm(ta, tb)`` must return ``W(tb) − W(ta)`` of shape ``(B, *S)`` and, for methods
    that need the space-time area, ``bm(ta, tb, return_U=True)`` must return
    ``(W(tb) − W(ta), ∫_ta^tb (W_s − W_ta) ds)`` — torchsde's ``BrownianInterval`` with
    ``levy_area_approximation`` other than ``"none"`` does.  For methods that need the Lévy
    area between channels (``log_ode``), ``bm(ta, tb, return_U=True, return_A=True)`` must
    return ``(ΔW, U, A)`` with ``A`` of shape ``(B, m, m)``,
    ``A_jk = ½(∫ (W^j − W^j_ta) dW^k − ∫ (W^k − W^k_ta) dW^j)`` — torchsde's
    ``BrownianInterval`` with ``levy_area_approximation='davie'`` or ``'foster'`` does
    (approximations of ``A`` from ``(ΔW, U)``: Davie 2014; Foster 2020, DPhil thesis, Oxford).

    Args:
        bm: the Brownian object.
        size: expected ``(B, *S)``.
        dtype, device: the increments are cast to these.
    Raises (when iterated):
        ValueError: if ``bm`` returns a tensor of another shape, or, with ``levy_area``,
            cannot return ``A`` (e.g. a ``BrownianInterval`` whose ``levy_area_approximation``
            is ``'none'`` or ``'space-time'``).
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

    def _levy_area(self, s: float, t: float):
        approximation = getattr(self.bm, "levy_area_approximation", None)
        hint = ("log_ode needs the Lévy area A between noise channels: pass bm=torchsde.BrownianInterval(..., "
                "levy_area_approximation='davie' or 'foster')")
        if approximation is not None and approximation not in ("davie", "foster"):
            raise ValueError(f"{hint}; this bm has levy_area_approximation={approximation!r}")
        try:
            out = self.bm(s, t, return_U=True, return_A=True)
        except (TypeError, ValueError) as err:
            raise ValueError(f"{hint}; bm(ta, tb, return_U=True, return_A=True) raised: {err}") from err
        if not isinstance(out, (tuple, list)) or len(out) != 3 or out[2] is None:
            raise ValueError(f"{hint}; bm(ta, tb, return_U=True, return_A=True) must return (W, U, A)")
        dW, _, A = out
        dW = self._check(dW, "W")
        expected = self.shape + self.shape[-1:]
        if not isinstance(A, torch.Tensor) or tuple(A.shape) != expected:
            got = tuple(A.shape) if isinstance(A, torch.Tensor) else type(A).__name__
            raise ValueError(f"bm returned the Lévy area A of shape {got}, expected {expected}")
        return dW, A.to(device=self.device, dtype=self.dtype)

    def increments(self, times, area: bool = False, levy_area: bool = False):
        """Yield ``(ΔW, ΔZ or None)`` for consecutive steps of ``times`` (one ``bm`` call each).

        With ``levy_area`` the second element is the Lévy area ``A`` ``(B, m, m)`` instead
        (``area`` is then ignored: no method needs both).
        """
        times = [float(t) for t in times]
        for s, t in zip(times[:-1], times[1:]):
            if levy_area:
                yield self._levy_area(s, t)
            elif area:
                dW, dZ = self.bm(s, t, return_U=True)
                yield self._check(dW, "W"), self._check(dZ, "U")
            else:
                yield self._check(self.bm(s, t), "W"), None
