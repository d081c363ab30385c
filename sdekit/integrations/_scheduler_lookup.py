"""Where a ``step`` is in the run: diffusers' timestep-lookup contract for
:class:`~sdekit.integrations.diffusers_scheduler.SDEScheduler`.

A mixin over the scheduler's ``timesteps`` tensor and its host-side plan
(``_plan``: :class:`~sdekit.integrations._scheduler_schedule.Plan`) and the run
state ``_step_index``/``_begin_index``.
"""

from __future__ import annotations

import torch

from . import _scheduler_stages as stages
from ._scheduler_schedule import Plan, timestep_key


class TimestepLookup:
    """``set_begin_index``, ``step_index``, ``begin_index``, ``index_for_timestep``, ``previous_timestep``."""

    timesteps: torch.Tensor
    _plan: Plan
    _step_index: int | None
    _begin_index: int | None

    def _check_usable(self):  # overridden by the scheduler
        pass

    def set_begin_index(self, begin_index: int = 0):
        """Start the next run at entry ``begin_index`` of ``timesteps`` (image-to-image pipelines call it).

        Raises:
            ValueError: if ``begin_index`` is not an integer in ``[0, len(timesteps))``.
        """
        if isinstance(begin_index, bool) or int(begin_index) != begin_index \
                or not 0 <= begin_index < len(self._plan.stages):
            raise ValueError(f"begin_index must be an integer in [0, {len(self._plan.stages)}), got {begin_index!r}")
        self._begin_index = int(begin_index)

    @property
    def step_index(self) -> int | None:
        """Index into ``timesteps`` of the next ``step`` (``None`` before the first)."""
        return self._step_index

    @property
    def begin_index(self) -> int | None:
        """Entry of ``timesteps`` the run starts at, if :meth:`set_begin_index` set one (else ``None``)."""
        return self._begin_index

    def _view_index(self, timestep) -> int | None:
        """Entry index of ``timestep`` if it is an element (view) of ``self.timesteps``; no host sync."""
        ts = self.timesteps
        if not (isinstance(timestep, torch.Tensor) and timestep.dim() == 0 and timestep.dtype == ts.dtype
                and timestep.device == ts.device and ts.numel() > 0
                and timestep.untyped_storage().data_ptr() == ts.untyped_storage().data_ptr()):
            return None
        offset, stride = timestep.storage_offset() - ts.storage_offset(), ts.stride(0)
        if stride <= 0 or offset % stride or not 0 <= offset // stride < ts.numel():
            return None
        return offset // stride

    @staticmethod
    def _value(timestep) -> float:
        """The timestep as a Python number (reads a device tensor: one host sync)."""
        if isinstance(timestep, torch.Tensor):
            if timestep.numel() != 1:
                raise ValueError(f"timestep must be a scalar, got a tensor of shape {tuple(timestep.shape)}")
            return float(timestep.reshape(()).item())
        try:
            return float(timestep)
        except (TypeError, ValueError):
            raise TypeError(f"timestep must be a number or a scalar tensor, got {type(timestep).__name__}") from None

    def _start_index(self, value: float) -> int:
        j = self._plan.start_of.get(timestep_key(value))
        if j is None:
            raise ValueError(f"timestep {value:g} is not on this scheduler's schedule "
                             f"(timesteps = {stages.summary(self._plan.values)}); pass an entry of "
                             f"scheduler.timesteps after set_timesteps")
        return j

    def index_for_timestep(self, timestep) -> int:
        """The entry of ``timesteps`` a ``step`` at ``timestep`` would take (see the module docstring).

        Raises:
            ValueError: if ``timestep`` is not on the schedule, or contradicts ``begin_index``.
        """
        j = self._view_index(timestep)
        if self._step_index is None and self._begin_index is not None:
            b = self._begin_index
            if j is not None:
                known = self._plan.values[j]
            elif not isinstance(timestep, torch.Tensor) or timestep.device.type == "cpu":
                known = self._value(timestep)
            else:
                known = None  # reading it would sync; begin_index decides, as in diffusers
            if known is not None and timestep_key(known) != timestep_key(self._plan.values[b]):
                raise ValueError(f"step got timestep {known:g}, but begin_index={b} points at "
                                 f"timesteps[{b}] = {self._plan.values[b]:g}")
            return b
        if j is not None:
            return j
        value = self._value(timestep)
        e = self._step_index
        if e is not None and e < len(self._plan.values) and timestep_key(self._plan.values[e]) == timestep_key(value):
            return e  # the next entry: the run continues
        return self._start_index(value)

    def previous_timestep(self, timestep) -> torch.Tensor:
        """Training timestep at the end of the interval that ``timestep`` starts (``-1`` for the data), 0-d tensor.

        Raises:
            ValueError: if ``timestep`` is not on the schedule.
        """
        self._check_usable()
        j = self._view_index(timestep)
        i = self._plan.stages[self._start_index(self._value(timestep)) if j is None else j][1]
        ks = self._plan.interval_timesteps
        return torch.tensor(ks[i + 1] if i + 1 < len(ks) else -1, dtype=self.timesteps.dtype)
