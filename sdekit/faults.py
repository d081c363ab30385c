"""Non-finite values in a sampler or likelihood: where each sample first went wrong.

A :class:`NonFiniteMonitor` passed to :func:`sdekit.sample` or
:func:`sdekit.log_likelihood` (``monitor=``) records, per sample, the first
step and time ``t`` at which its state (or its ODE right-hand side) stopped
being finite, without host syncs inside the loop.  A faulted sample's
output is set to NaN; the other samples are untouched (bitwise).  For the
adaptive probability-flow ODE the monitor also freezes a faulted sample
(its derivative becomes 0), so the per-sample step control does not shrink
its step until ``max_steps`` and take the whole batch down with it.

Reading the record (:meth:`NonFiniteMonitor.faults`) costs one host sync;
:meth:`NonFiniteMonitor.raise_if_any` raises :class:`NonFiniteError`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch

from ._checks import expand_as_batch


@dataclass(frozen=True)
class Fault:
    """One sample's first non-finite value.

    Attributes:
        sample_index: the sample's global index (``sample_index`` of the call).
        step: fixed-step samplers: the predictor step ``i`` (0-based) after
            which the state was non-finite (``N``: the final denoising
            evaluation); adaptive ODE: the 0-based index of the sample's
            function evaluation that returned a non-finite value.
        t: SDE time of that step's start ``t_i`` (fixed-step) or of the
            evaluation (ODE), in ``[0, T]``.
    """

    sample_index: int
    step: int
    t: float

    def as_dict(self) -> dict:
        """The fault as a JSON-able dict (``sample_index``, ``step``, ``t``, …), as written in shard records."""
        return asdict(self)


class NonFiniteError(FloatingPointError):
    """A sample's state became NaN or infinite.

    Attributes:
        sample_index, step, t: of the first fault (lowest sample index), see :class:`Fault`.
        faults: every :class:`Fault` of the batch.
    """

    def __init__(self, faults: list[Fault], where: str = ""):
        self.faults = list(faults)
        first = self.faults[0]
        self.sample_index, self.step, self.t = first.sample_index, first.step, first.t
        more = f" ({len(self.faults) - 1} more sample(s) also faulted)" if len(self.faults) > 1 else ""
        place = f" in {where}" if where else ""
        super().__init__(f"non-finite value{place} at sample index {first.sample_index}, step {first.step}, "
                         f"t={first.t:.6g}{more}")


class NonFiniteMonitor:
    """Per-sample record of the first non-finite state, kept on the device.

    Args:
        sample_index: int64 ``(B,)`` global indices of the batch's samples (reported in :class:`Fault`).
    Attributes:
        step: int64 ``(B,)``, the faulting step, ``-1`` where the sample is finite.
        t: float64 ``(B,)``, the faulting time, NaN where the sample is finite.
    """

    def __init__(self, sample_index: torch.Tensor):
        if not isinstance(sample_index, torch.Tensor) or sample_index.dim() != 1:
            raise TypeError(f"sample_index must be a 1-D integer torch.Tensor, got {sample_index!r}")
        self.sample_index = sample_index.to(torch.int64)
        B, dev = self.sample_index.shape[0], self.sample_index.device
        self.step = torch.full((B,), -1, dtype=torch.int64, device=dev)
        self.t = torch.full((B,), math.nan, dtype=torch.float64, device=dev)
        self.evaluations = torch.zeros(B, dtype=torch.int64, device=dev)

    @property
    def faulted(self) -> torch.Tensor:
        """``(B,)`` bool: samples with a recorded fault."""
        return self.step >= 0

    @staticmethod
    def _bad(v: torch.Tensor) -> torch.Tensor:
        return ~torch.isfinite(v.flatten(1)).all(1)

    def after_step(self, step, t, x: torch.Tensor) -> None:
        """Record samples whose state ``x`` ``(B, *D)`` is non-finite after ``step`` (int or ``(B,)``) at time ``t``."""
        new = self._bad(x) & ~self.faulted
        step = torch.as_tensor(step, dtype=torch.int64, device=x.device)
        t = torch.as_tensor(t, dtype=torch.float64, device=x.device)
        self.step = torch.where(new, step, self.step)
        self.t = torch.where(new, t, self.t)

    def slots(self) -> torch.Tensor:
        """``arange(B)``: pass as the first of ``solve_adaptive``'s ``args`` with :meth:`guard`."""
        return torch.arange(self.step.shape[0], device=self.step.device)

    def wrap_rhs(self, func, args: tuple):
        """``(guard(func), (slots(),) + args)``: an RHS and its ``solve_adaptive`` args, guarded."""
        return self.guard(func), (self.slots(),) + tuple(args)

    def guard(self, func):
        """Wrap an ODE right-hand side ``func(t, y, *args)`` for :func:`sdekit.solve_adaptive`.

        The wrapper is called as ``guarded(t, y, slot, *args)`` where ``slot``
        (the solver gathers it to the active samples) is :meth:`slots`.  It
        records non-finite outputs and returns 0 for faulted samples, which
        then stay put and finish; their results are replaced by NaN later
        (:meth:`fill_nan`).
        """

        def guarded(t, y, slot, *args):
            out = func(t, y, *args)
            before = self.step.index_select(0, slot) >= 0
            new = self._bad(out) & ~before
            self.step.index_copy_(0, slot, torch.where(new, self.evaluations.index_select(0, slot),
                                                       self.step.index_select(0, slot)))
            t_row = torch.as_tensor(t, dtype=torch.float64, device=out.device).expand(slot.shape[0])
            self.t.index_copy_(0, slot, torch.where(new, t_row, self.t.index_select(0, slot)))
            self.evaluations.index_add_(0, slot, torch.ones_like(slot))
            return torch.where(expand_as_batch(new | before, out), torch.zeros((), dtype=out.dtype, device=out.device),
                               out)

        return guarded

    def fill_nan(self, v: torch.Tensor) -> torch.Tensor:
        """``v`` ``(B, ...)`` with the faulted samples' rows set to NaN (no sync)."""
        return torch.where(expand_as_batch(self.faulted, v), torch.full((), math.nan, dtype=v.dtype, device=v.device), v)

    def faults(self) -> list[Fault]:
        """The recorded faults, by sample index (one host sync)."""
        rows = torch.nonzero(self.faulted).squeeze(1).tolist()
        idx, step, t = self.sample_index.tolist(), self.step.tolist(), self.t.tolist()
        return sorted((Fault(int(idx[r]), int(step[r]), float(t[r])) for r in rows), key=lambda f: f.sample_index)

    def raise_if_any(self, where: str = "") -> None:
        """Raise :class:`NonFiniteError` if any sample faulted (one host sync)."""
        faults = self.faults()
        if faults:
            raise NonFiniteError(faults, where)


class NullMonitor:
    """The monitor of a run without one: every hook does nothing, so samplers call them unconditionally."""

    evaluations = 0

    def after_step(self, step, t, x: torch.Tensor) -> None:
        """Nothing to record."""

    def fill_nan(self, v: torch.Tensor) -> torch.Tensor:
        """``v`` itself."""
        return v

    def wrap_rhs(self, func, args: tuple):
        """``(func, args)`` unchanged."""
        return func, tuple(args)


#: The shared :class:`NullMonitor`.
NULL_MONITOR = NullMonitor()


def as_monitor(monitor):
    """``monitor``, or :data:`NULL_MONITOR` for ``None`` (a :class:`NonFiniteMonitor` or anything with its hooks)."""
    return NULL_MONITOR if monitor is None else monitor
