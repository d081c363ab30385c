"""torchdiffeq's view of an ODE for :func:`sdekit.odeint`: one system, a 0-d time, any state structure.

:class:`WholeState` turns the user's ``func(t, y)`` (``t`` 0-d, ``y`` a
tensor or a tuple of tensors), ``event_fn``, callbacks, ``norm`` and time
options into functions of one flat vector on an increasing time grid, which
every backend (the adaptive engine with a batch of one, the fixed-grid and
Adams solvers, scipy) then solves.  Decreasing output times are handled as
torchdiffeq does: the problem is solved in ``s = −t`` with ``dy/ds = −f(−s, y)``.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Callable

import torch

from .._checks import check_callable
from .state import FlatState

#: torchdiffeq's callbacks (attributes of ``func``), each called as ``callback(t0, y0, dt)``.
CALLBACKS = ("callback_step", "callback_accept_step", "callback_reject_step")


def option_times(values, name: str, sign: float = 1.0) -> tuple:
    """Option times (``step_t``, ``jump_t``: a tensor or sequence) as floats, times ``sign``.

    Raises:
        ValueError: a non-finite time (the message names ``options[name]``).
    """
    if values is None:
        return ()
    v = torch.as_tensor(values, dtype=torch.float64).detach().reshape(-1)
    if not bool(torch.isfinite(v).all()):
        raise ValueError(f"options[{name!r}] must be finite")
    return tuple(float(x) * sign for x in v)


@dataclass
class WholeState:
    """A user's ODE as a flat system on increasing times.

    Attributes:
        flat: how the state maps to a vector.
        sign: ``-1.0`` when the user's times decrease (solved in ``s = −t``), else ``1.0``.
        func: the user's ``func``.
        dtype: the state's dtype (time is passed in its real counterpart).
    """

    flat: FlatState
    sign: float
    func: Callable
    dtype: torch.dtype

    def time(self, s: torch.Tensor) -> torch.Tensor:
        """The user's time for the solver's time ``s``."""
        return s if self.sign > 0 else -s

    def rhs(self, s: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``dy/ds`` of the flat state ``y`` ``(N,)`` at the 0-d solver time ``s``."""
        out = self.func(self.time(s), self.flat.unflatten(y))
        dy = self.flat.flatten(out, "func").to(y.dtype)
        return dy if self.sign > 0 else -dy

    def host_rhs(self, dtype: torch.dtype, device: torch.device) -> Callable[[float, torch.Tensor], torch.Tensor]:
        """``dy/dt`` of the flat state ``(N,)`` at the user's time ``t`` (a float), for the whole-state loop.

        ``func`` gets ``t`` as a 0-d tensor of ``dtype`` (the state's real dtype, as torchdiffeq passes it).
        """
        func, flat = self.func, self.flat
        if flat.is_tuple:
            return lambda t, y: flat.flatten(func(torch.scalar_tensor(t, dtype=dtype, device=device),
                                                  flat.unflatten(y)), "func").to(y.dtype)
        shape = torch.Size(flat.shapes[0])
        flat_1d = len(shape) == 1  # the flat vector is the state

        def rhs(t: float, y: torch.Tensor) -> torch.Tensor:
            out = func(torch.scalar_tensor(t, dtype=dtype, device=device), y if flat_1d else y.reshape(shape))
            if not isinstance(out, torch.Tensor) or out.shape != shape:
                flat.flatten(out, "func")  # raises, naming what was expected
            dy = out if flat_1d else out.reshape(-1)
            return dy if dy.dtype == y.dtype else dy.to(y.dtype)

        return rhs

    def batched_rhs(self, s: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """:meth:`rhs` for the adaptive engine's batch of one: ``s`` ``(1,)``, ``y`` ``(1, N)``."""
        # the row as the user's structure straight from (1, N): one view for a tensor state
        row = y.reshape(self.flat.shapes[0]) if not self.flat.is_tuple else self.flat.unflatten(y[0])
        dy = self.flat.flatten(self.func(self.time(s[0]), row), "func")
        if dy.dtype != y.dtype:
            dy = dy.to(y.dtype)
        dy = dy.unsqueeze(0)
        return dy if self.sign > 0 else -dy

    def event(self, event_fn: Callable, s0: torch.Tensor, y0: torch.Tensor) -> Callable:
        """The engine's ``(1,)`` event function from a user's ``event_fn(t, y) -> tensor``.

        Several event values are combined as torchdiffeq does: each is made
        positive at the start, and the smallest decides (the first to cross zero).
        """
        check_callable("event_fn", event_fn)

        def raw(s, y):
            v = event_fn(self.time(s), self.flat.unflatten(y))
            if not isinstance(v, torch.Tensor):
                v = torch.as_tensor(v, dtype=y.dtype, device=y.device)
            return v.real if v.is_complex() else v

        with torch.no_grad():
            signs = torch.sign(raw(s0, y0))

        def combined(s, y):
            return (raw(s, y) * signs).min().reshape(())

        return combined

    def callbacks(self, names=CALLBACKS) -> object | None:
        """The engine's callbacks (``step``, ``accept``, ``reject`` on rows of one) from ``func``'s attributes."""
        found = {name: getattr(self.func, name) for name in names if callable(getattr(self.func, name, None))}
        if not found:
            return None

        def wrap(cb):
            return lambda s, y, h: cb(self.time(s[0]), self.flat.unflatten(y[0]), h[0])

        ns = type("Callbacks", (), {})()
        for name, attr in (("callback_step", "step"), ("callback_accept_step", "accept"),
                           ("callback_reject_step", "reject")):
            if name in found:
                setattr(ns, attr, wrap(found[name]))
        return ns

    def warn_unsupported_callbacks(self, method: str, supported: tuple) -> None:
        """torchdiffeq's warning when ``func`` has callbacks that ``method`` never calls."""
        bad = [n for n in CALLBACKS if n not in supported and callable(getattr(self.func, n, None))]
        if bad:
            warnings.warn(f"method {method!r} does not call the callbacks {bad} of func", stacklevel=4)

    def times(self, values, name: str) -> tuple:
        """Option times (``step_t``, ``jump_t``) in solver time, as floats."""
        return option_times(values, name, self.sign)

    def flat_norm(self, user_norm: Callable | None) -> Callable[[torch.Tensor], torch.Tensor] | None:
        """The norm ``(N,) -> 0-d`` of the flat state: the user's ``norm(state)``, torchdiffeq's default for a
        tuple (the largest per-tensor RMS), or ``None`` for a tensor state (RMS, the engine's own)."""
        if user_norm is not None:
            check_callable("options['norm']", user_norm)
            return self.flat.user_norm(user_norm)
        return self.flat.default_norm() if self.flat.is_tuple else None

    def norm(self, user_norm: Callable | None) -> Callable[[torch.Tensor], torch.Tensor]:
        """The engine's per-row norm ``(1, N) -> (1,)``: the user's ``norm(state)`` or torchdiffeq's default."""
        if user_norm is not None:
            check_callable("options['norm']", user_norm)
            flat_norm = self.flat.user_norm(user_norm)
        else:
            flat_norm = self.flat.default_norm()

        def batched(v: torch.Tensor) -> torch.Tensor:
            if v.shape[0] == 1:  # the engine's batch of one
                return flat_norm(v[0]).reshape(1)
            return torch.stack([flat_norm(row) for row in v])

        return batched

    def grid_constructor(self, user: Callable | None) -> Callable | None:
        """A user's ``grid_constructor(func, y0, t)`` in solver time (called with the user's func, y0 and t)."""
        if user is None:
            return None
        check_callable("options['grid_constructor']", user)
        s = self.sign

        def construct(func, y0, t):
            grid = user(self.func, self.flat.unflatten(y0), t * s)
            return torch.as_tensor(grid, dtype=t.dtype, device=t.device) * s

        return construct
