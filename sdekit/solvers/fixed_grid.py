"""Whole-state fixed-grid ODE integration: torchdiffeq's fixed-grid contract, Runge–Kutta and Adams.

Implicit Runge–Kutta methods (:mod:`sdekit.solvers.implicit`) step on the same grids.

The state is one tensor of any shape (the caller flattens tuple states and
maps decreasing time grids to increasing ones).  Steps follow a grid — the
output times ``t`` themselves, a uniform grid of ``step_size``, or one from
``grid_constructor`` — and outputs between grid points come from linear or
cubic Hermite interpolation of the step that contains them.  Everything stays
differentiable by plain autograd with respect to ``y0``, ``t`` and the
parameters of ``func``; control decisions (grid layout, event detection,
corrector convergence) read detached copies.

Host syncs: one to lay out the grid (its times as Python floats, which also
give the Adams weights), one per implicit-Adams corrector or Newton iteration (the
convergence test) and one per step of an event search (the sign test).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial
from typing import Callable

import torch

from .._checks import check_callable, check_positive, check_positive_int, check_tensor
from .adams import AdamsStepper
from .adaptive import ToleranceNotMetError
from .implicit import IMPLICIT_METHODS, MAX_NEWTON_ITERS, ImplicitStepper, ImplicitTableau
from .rk import weighted_sum
from .tableaus import RK4, TABLEAUS, ButcherTableau

ADAMS_METHODS = ("explicit_adams", "implicit_adams", "fixed_adams")  # fixed_adams: torchdiffeq's alias
INTERPOLATIONS = ("linear", "cubic")
#: Default step limit of an event search.
MAX_EVENT_STEPS = 10**6


@dataclass
class FixedGridResult:
    """Result of :func:`solve_fixed_grid`.

    Attributes:
        ys: ``(len(t), *y0.shape)`` states at the output times, or ``(2, *y0.shape)``
            (``y0`` and the state at the event) with ``event_fn``.
        nfe: function evaluations.
        steps: grid steps taken.
        event_t: 0-d event time (``None`` without ``event_fn``).
    """

    ys: torch.Tensor
    nfe: int
    steps: int
    event_t: torch.Tensor | None = None


def _nudge(t: torch.Tensor, side: int) -> torch.Tensor:
    """``nextafter(t, ±inf)`` in value, with ``t``'s gradient (the one-ulp shift is a constant)."""
    td = t.detach()
    return t + (torch.nextafter(td, torch.full_like(td, side * math.inf)) - td)


class _Counted:
    """``func`` with an evaluation count; ``side=+1``/``−1`` marks a step start/end for ``perturb``."""

    def __init__(self, func: Callable, perturb: bool):
        self.func, self.perturb, self.nfe = func, perturb, 0

    def __call__(self, t: torch.Tensor, y: torch.Tensor, side: int = 0) -> torch.Tensor:
        self.nfe += 1
        return self.func(_nudge(t, side) if self.perturb and side else t, y)


def rk_step(call: Callable, tableau: ButcherTableau, t0, t1, y0, f0, *_floats):
    """One explicit Runge–Kutta step ``y1 = y0 + h Σ bᵢkᵢ`` of a whole state (HNW I, §II.1, eq. (1.8)).

    Stages with ``cᵢ = 0`` are evaluated at ``t0`` (marked as a step start) and
    with ``cᵢ = 1`` at ``t1`` exactly (marked as a step end), others at ``t0 + cᵢh``.

    Args:
        call: ``call(t, y, side)`` (see :class:`_Counted`); tableau: an explicit method;
        t0, t1: 0-d step bounds; y0: state of any shape; f0: ``f(t0, y0)``, the first stage.
    Returns:
        the state at ``t1``, shaped like ``y0``.
    """
    h = t1 - t0
    ks = [f0]
    for i in range(1, tableau.stages):
        incr = weighted_sum(ks, tableau.a[i])
        yi = y0 if incr is None else y0 + h * incr
        c = tableau.c[i]
        ks.append(call(t1, yi, -1) if c == 1.0 else call(t0, yi, 1) if c == 0.0 else call(t0 + c * h, yi))
    incr = weighted_sum(ks, tableau.b)
    return y0 if incr is None else y0 + h * incr


def interpolate(interp: str, tau, t0, t1, y0, y1, f0=None, f1=None):
    """State at ``tau ∈ [t0, t1]`` from one step's end values.

    ``"linear"``: ``y1 + (tau − t1)/h (y1 − y0)``, exactly ``y1`` at ``tau = t1``.
    ``"cubic"``: the cubic Hermite interpolant through ``y0, y1`` with slopes
    ``f0 = f(t0, y0)``, ``f1 = f(t1, y1)`` (HNW I, §II.6, eq. (6.7)), third order.

    Args:
        interp: ``"linear"`` or ``"cubic"``; tau, t0, t1: 0-d times (``t0 < t1``, any units);
        y0, y1: states at ``t0``, ``t1`` (one shape); f0, f1: their derivatives (cubic only).
    Returns:
        the state at ``tau``, shaped like ``y0``.
    """
    h = t1 - t0
    if interp == "linear":
        return y1 + ((tau - t1) / h) * (y1 - y0)
    th = (tau - t0) / h
    return (1 - th) * y0 + th * y1 + (th * (th - 1)) * ((1 - 2 * th) * (y1 - y0) + ((th - 1) * h) * f0 + (th * h) * f1)


def uniform_grid(t: torch.Tensor, step_size: float) -> torch.Tensor:
    """``t0, t0 + h, t0 + 2h, …`` with the last point set to ``t[-1]`` (torchdiffeq's grid).

    ``n = ceil((t[-1] − t[0])/h + 1)`` points; differentiable in ``t[0]`` and ``t[-1]``.
    Returns a 1-D strictly increasing tensor of ``t``'s dtype.
    """
    t0, t1 = t[0], t[-1]
    n = int(torch.ceil((t1.detach() - t0.detach()) / step_size + 1))
    k = torch.arange(1, max(n - 1, 1), dtype=t.dtype, device=t.device)
    grid = torch.cat([t0[None], t0 + k * step_size, t1[None]])
    if grid.numel() > 2 and bool(grid[-2].detach() >= t1.detach()):  # round-off made the last step empty
        grid = torch.cat([grid[:-2], t1[None]])
    return grid


def _constructed_grid(grid_constructor, func, y0, t):
    grid = grid_constructor(func, y0, t)
    if not isinstance(grid, torch.Tensor) or grid.dim() != 1 or grid.numel() < 2:
        raise ValueError("grid_constructor must return a 1-D tensor of at least 2 times, got "
                         f"{type(grid).__name__} {tuple(grid.shape) if isinstance(grid, torch.Tensor) else ''}")
    g = grid.detach().to(dtype=t.dtype, device=t.device)
    if not bool(torch.isfinite(g).all()) or not bool((g[1:] > g[:-1]).all()):
        raise ValueError("grid_constructor must return finite, strictly increasing times (in the direction of t)")
    if bool(g[0] != t[0].detach()) or bool(g[-1] != t[-1].detach()):
        raise ValueError(f"grid_constructor's grid must start at t[0]={float(t[0]):g} and end at "
                         f"t[-1]={float(t[-1]):g}, got {float(g[0]):g} and {float(g[-1]):g}")
    # Same values, but the ends carry t's gradient.
    return torch.cat([t[:1], grid[1:-1].to(dtype=t.dtype, device=t.device), t[-1:]])


def _make_stepper(method, call, rtol, atol, max_iters, max_order):
    startup = partial(rk_step, call, RK4)
    if isinstance(method, ButcherTableau):
        return partial(rk_step, call, method)
    if isinstance(method, str) and method in TABLEAUS:
        return partial(rk_step, call, TABLEAUS[method])
    if isinstance(method, str) and method in IMPLICIT_METHODS:
        method = IMPLICIT_METHODS[method]
    if isinstance(method, ImplicitTableau):
        return ImplicitStepper(call, method, rtol, atol,
                               check_positive_int("max_iters", MAX_NEWTON_ITERS if max_iters is None else max_iters))
    if method in ADAMS_METHODS:
        return AdamsStepper(call, method != "explicit_adams", check_positive_int("max_order", max_order), startup,
                            rtol, atol, check_positive_int("max_iters", 4 if max_iters is None else max_iters))
    raise ValueError(f"method must be a ButcherTableau or ImplicitTableau, one of {sorted(TABLEAUS)}, one of "
                     f"{sorted(IMPLICIT_METHODS)} or one of {ADAMS_METHODS}, got {method!r}")


def solve_fixed_grid(func, y0, t, method, *, step_size=None, grid_constructor=None, perturb=False,
                     interp="linear", event_fn=None, callback_step=None, rtol=1e-7, atol=1e-9,
                     max_iters=None, max_order=4, max_num_steps=None) -> FixedGridResult:
    """Integrate ``dy/dt = func(t, y)`` along a fixed grid, torchdiffeq-style.

    Args:
        func: ``func(t, y)``, ``t`` 0-d, ``y`` shaped like ``y0`` → same shape.
        y0: initial state at ``t[0]``, a float32/float64 tensor of any shape (0-d included).
        t: 1-D strictly increasing output times (cast to ``y0``'s dtype); with ``event_fn``,
            ``t[0]`` is the start and the search runs past ``t[-1]`` (with ``step_size``).
        method: a :class:`~sdekit.solvers.tableaus.ButcherTableau` (or its name), an implicit
            :class:`~sdekit.solvers.implicit.ImplicitTableau` (or its name in
            :data:`~sdekit.solvers.implicit.IMPLICIT_METHODS`), or
            ``"explicit_adams"`` / ``"implicit_adams"`` (:mod:`sdekit.solvers.adams`).
        step_size: grid spacing ``h > 0`` (:func:`uniform_grid`); grid_constructor:
            ``grid_constructor(func, y0, t)`` → 1-D grid from ``t[0]`` to ``t[-1]``.
            Neither: the grid is ``t``.
        perturb: evaluate step starts at ``nextafter(t0, +inf)`` and step ends at
            ``nextafter(t1, −inf)``, so ``func`` never sees a grid time.
        interp: ``"linear"`` or ``"cubic"`` (:func:`interpolate`); an output at a grid point is its value.
        event_fn: ``event_fn(t, y)`` → 0-d; stop where its sign first differs from its sign at
            ``t[0]``, the root located by bisection on the step's interpolant to ``atol`` in ``t``.
            The event time is differentiable (implicit function theorem on the interpolant).
        callback_step: ``callback_step(t0, y0, dt)`` before each step.
        rtol, atol: Adams corrector / implicit-RK Newton tolerances (RMS; floats or tensors
            broadcastable to ``y0``); ``atol`` (its smallest entry) is also the event time tolerance.
        max_iters: corrector evaluations per implicit Adams step (default 4), or Newton
            iterations per implicit-RK stage system (default :data:`~sdekit.solvers.implicit.MAX_NEWTON_ITERS`);
            max_order: Adams order (1–5).
        max_num_steps: step limit (default: none for grids, :data:`MAX_EVENT_STEPS` for events).
    Returns:
        :class:`FixedGridResult`.
    Raises:
        ValueError: unknown ``method`` or ``interp``, a bad ``step_size``, both ``step_size`` and
            ``grid_constructor``, a grid that is not increasing from ``t[0]`` to ``t[-1]``, or
            ``event_fn`` without ``step_size``/``grid_constructor``.
        ToleranceNotMetError: more than ``max_num_steps`` steps, or no event within them.
    """
    check_callable("func", func)
    check_tensor("y0", y0)
    if interp not in INTERPOLATIONS:
        raise ValueError(f"interp must be one of {INTERPOLATIONS}, got {interp!r}")
    if step_size is not None and grid_constructor is not None:
        raise ValueError("step_size and grid_constructor are mutually exclusive; give at most one")
    if step_size is not None:
        step_size = check_positive("step_size", step_size)
    if grid_constructor is not None:
        check_callable("grid_constructor", grid_constructor)
    if max_num_steps is not None:
        max_num_steps = check_positive_int("max_num_steps", max_num_steps)
    if not isinstance(t, torch.Tensor) or t.dim() != 1 or t.numel() < 1:
        raise ValueError(f"t must be a 1-D tensor of times, got {t!r}")
    t = t.to(y0.dtype)
    if t.numel() > 1 and not bool((t[1:].detach() > t[:-1].detach()).all()):
        raise ValueError("t must be strictly increasing")
    call = _Counted(func, perturb)
    stepper = _make_stepper(method, call, rtol, atol, max_iters, max_order)
    run = _Run(call, stepper, interp, callback_step)
    if event_fn is not None:
        ev_tol = float(torch.as_tensor(atol).detach().min())  # a per-element atol: its smallest entry
        return run.until_event(event_fn, y0, t, step_size, grid_constructor, ev_tol,
                               MAX_EVENT_STEPS if max_num_steps is None else max_num_steps)
    if t.numel() == 1:
        return FixedGridResult(ys=y0[None], nfe=0, steps=0)
    if step_size is not None:
        grid, on_t = uniform_grid(t, step_size), False
    elif grid_constructor is not None:
        grid, on_t = _constructed_grid(grid_constructor, func, y0, t), False
    else:
        grid, on_t = t, True
    if max_num_steps is not None and grid.numel() - 1 > max_num_steps:
        raise ToleranceNotMetError(f"the grid has {grid.numel() - 1} steps, more than max_num_steps={max_num_steps}")
    return run.along(y0, t, grid, on_t)


class _Run:
    """The stepping loop shared by grid runs and event searches."""

    def __init__(self, call: _Counted, stepper, interp: str, callback_step):
        self.call, self.stepper, self.interp, self.callback = call, stepper, interp, callback_step
        self.f0: torch.Tensor | None = None  # f at the next step's start, if already known
        self.steps = 0

    def step(self, t0, t1, y0, t0f: float, t1f: float, need_f1: bool):
        """One step; returns ``(y1, f0, f1)`` with ``f1 = f(t1, y1)`` only if ``need_f1`` (else ``None``)."""
        if self.callback is not None:
            self.callback(t0, y0, t1 - t0)
        f0 = self.call(t0, y0, 1) if self.f0 is None else self.f0
        y1 = self.stepper(t0, t1, y0, f0, t0f, t1f)
        f1 = self.call(t1, y1, -1) if need_f1 else None
        # Without perturb, f(t1, y1) is also the next step's first evaluation.
        self.f0 = f1 if not self.call.perturb else None
        self.steps += 1
        return y1, f0, f1

    def along(self, y0, t, grid, on_t: bool) -> FixedGridResult:
        gf, tf = grid.detach().tolist(), t.detach().tolist()
        ys, y, j = [y0], y0, 1
        for k in range(len(gf) - 1):
            t0, t1 = grid[k], grid[k + 1]
            interior = not on_t and j < len(tf) and tf[j] < gf[k + 1]
            y1, f0, f1 = self.step(t0, t1, y, gf[k], gf[k + 1], self.interp == "cubic" and interior)
            if on_t:
                ys.append(y1)
                j += 1
            while not on_t and j < len(tf) and tf[j] <= gf[k + 1]:
                kind = "linear" if tf[j] == gf[k + 1] else self.interp  # at the grid point: exactly y1
                ys.append(interpolate(kind, t[j], t0, t1, y, y1, f0, f1))
                j += 1
            y = y1
        return FixedGridResult(ys=torch.stack(ys), nfe=self.call.nfe, steps=self.steps)

    def until_event(self, event_fn, y0, t, step_size, grid_constructor, atol: float, max_steps: int):
        if step_size is None and grid_constructor is None:
            raise ValueError("event_fn needs a step_size (or a grid_constructor) for fixed-grid methods")
        check_callable("event_fn", event_fn)
        if grid_constructor is not None:
            grid = _constructed_grid(grid_constructor, self.call.func, y0, t)
            gf = grid.detach().tolist()
            n_steps = min(len(gf) - 1, max_steps)
            bounds = lambda k: (grid[k], grid[k + 1], gf[k], gf[k + 1])
        else:
            t0, t0f, h = t[0], float(t[0].detach()), step_size
            n_steps = max_steps
            bounds = lambda k: (t0 + k * h, t0 + (k + 1) * h, t0f + k * h, t0f + (k + 1) * h)
        sign0 = torch.sign(_event_value(event_fn, t[0], y0).detach())
        y = y0
        for k in range(n_steps):
            ta, tb, taf, tbf = bounds(k)
            y1, f0, f1 = self.step(ta, tb, y, taf, tbf, self.interp == "cubic")
            if bool(torch.sign(_event_value(event_fn, tb, y1).detach()) != sign0):
                ends = (ta, tb, y, y1, f0, f1)
                t_ev = _locate(event_fn, self.interp, ends, sign0, taf, tbf, atol)
                y_ev = interpolate(self.interp, t_ev, *ends)
                return FixedGridResult(ys=torch.stack([y0, y_ev]), nfe=self.call.nfe, steps=self.steps,
                                       event_t=t_ev)
            y = y1
        where = "on the grid_constructor grid" if grid_constructor is not None else f"within {max_steps} steps"
        raise ToleranceNotMetError(f"event not found: event_fn did not change sign {where} "
                                   f"(max_num_steps={max_steps})")


def _event_value(event_fn, t, y) -> torch.Tensor:
    g = event_fn(t, y)
    if not isinstance(g, torch.Tensor) or g.numel() != 1:
        raise ValueError(f"event_fn must return a one-element tensor, got {type(g).__name__} "
                         f"{tuple(g.shape) if isinstance(g, torch.Tensor) else g!r}")
    return g.reshape(())


def _locate(event_fn, interp, ends, sign0, taf: float, tbf: float, atol: float) -> torch.Tensor:
    """Event time in ``[ta, tb]``: bisection, then one implicit-function-theorem term for gradients.

    Bisection halves ``[ta, tb]`` until it is at most ``atol`` wide (at most 100
    times) on detached values.  With ``G(τ) = event_fn(τ, interp(τ))`` and ``τ*``
    the bisection root, ``τ = τ* − (G(τ*) − G(τ*).detach()) / G′(τ*)`` has the
    value ``τ*`` and the gradient ``dτ*/dθ = −∂_θG / G′`` of the exact root of
    the interpolant (``G′`` by autograd on detached values).
    """
    n = 100 if atol <= 0 else min(100, max(0, math.ceil(math.log2((tbf - taf) / atol))))
    dead = tuple(v.detach() if isinstance(v, torch.Tensor) else v for v in ends)
    with torch.no_grad():
        lo, hi = dead[0], dead[1]
        for _ in range(n):
            mid = (lo + hi) / 2
            same = torch.sign(_event_value(event_fn, mid, interpolate(interp, mid, *dead))) == sign0
            lo, hi = torch.where(same, mid, lo), torch.where(same, hi, mid)
        root = (lo + hi) / 2
    if not torch.is_grad_enabled():
        return root
    g = _event_value(event_fn, root, interpolate(interp, root, *ends))
    if not g.requires_grad:
        return root
    with torch.enable_grad():
        tau = root.clone().requires_grad_(True)
        g_tau = _event_value(event_fn, tau, interpolate(interp, tau, *dead))
        slope = torch.autograd.grad(g_tau, tau, allow_unused=True)[0] if g_tau.requires_grad else None
    if slope is None or not bool(torch.isfinite(slope) & (slope != 0)):
        return root
    return root - (g - g.detach()) / slope.detach()
