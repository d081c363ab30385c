"""Adaptive SDE steps by step doubling (``sdeint(..., adaptive=True)``).

Each attempt takes one step of size ``h`` and two of size ``h/2`` on the *same*
Brownian path (the path is queried at ``t``, ``t + h/2`` and ``t + h``; the full step's
increments are composed from the halves, so both see exactly the same ``W``), and the
difference of the two results estimates the local error (Gaines & Lyons 1997,
"Variable step size control in the numerical solution of stochastic differential
equations", SIAM J. Appl. Math. 57(5), §4; torchsde's ``adaptive=True`` does the same).
The two half steps are kept.  A rejected attempt is retried with a smaller ``h`` on the
same path, so step size control does not bias the path (the Brownian motion is fixed
before it is queried: a :class:`~sdekit.brownian.BrownianTree` or a torchsde
``BrownianInterval``).

Step sizes follow torchsde's PI controller and constants (safety 0.9, factor in
[0.2, 1.4], integral exponent 1/4.5 and proportional 0.13 on acceptance, 1/1.5 and 0 on
rejection), so on a two-point ``ts`` and the same ``bm`` the accepted steps are
torchsde's.  Differences, both on purpose: outputs land exactly on every ``ts[k]`` (the
step is shortened to reach it) instead of being interpolated linearly between steps,
and an attempt that fails with the step already at ``dt_min`` is retried at ``dt_min``
and then accepted (torchsde accepts the failed larger step).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterator
from typing import NamedTuple

import torch

#: torchsde's controller constants (``torchsde._core.adaptive_stepping.update_step_size``).
SAFETY, FACTOR_MIN, FACTOR_MAX = 0.9, 0.2, 1.4
I_ACCEPT, P_ACCEPT, I_REJECT = 1 / 4.5, 0.13, 1 / 1.5
#: Floor of the error tolerance and of the error ratio (torchsde's ``eps``).
ERROR_EPS = 1e-7


class Controller(NamedTuple):
    """The PI step-size controller's memory: the last accepted ``safety / error``.

    (Before any acceptance, the first attempt's ratio, accepted or not — torchsde's rule.)
    """

    prev_ratio: float | None = None


def error_estimate(y_full: torch.Tensor, y_half: torch.Tensor, rtol: float, atol: float) -> torch.Tensor:
    """The step-doubling error in units of the tolerance: RMS over every element.

    ``sqrt(mean(((y_full − y_half) / max(rtol·max(|y_full|, |y_half|) + atol, 1e-7))²))``,
    floored at 1e-7 (torchsde's ``compute_error``).  Non-finite results give ``inf``.

    Args:
        y_full: ``(B, *D)`` after one step of size ``h``.
        y_half: ``(B, *D)`` after two steps of size ``h/2``.
    Returns:
        0-dim tensor in the states' dtype.
    """
    tol = (rtol * torch.maximum(y_full.abs(), y_half.abs()) + atol).clamp_min(ERROR_EPS)
    err = (((y_full - y_half) / tol).square().sum() / y_full.numel()).sqrt().clamp_min(ERROR_EPS)
    return torch.where(torch.isfinite(err), err, torch.full_like(err, math.inf))


def next_step(error: float, h: float, ctrl: Controller) -> tuple[float, Controller]:
    """The next step size after an attempt with ``h`` and scaled error ``error``.

    Returns ``(h_new, controller)``; the controller's memory changes on acceptance (and is
    set by the first attempt).
    """
    if not math.isfinite(error):
        return h * FACTOR_MIN, ctrl
    ratio = SAFETY / error
    prev = ctrl.prev_ratio if ctrl.prev_ratio is not None else ratio
    if error <= 1:
        factor = ratio ** I_ACCEPT * (ratio / prev) ** P_ACCEPT
        return h * min(FACTOR_MAX, max(1.0, factor)), Controller(ratio)
    factor = ratio ** I_REJECT  # a first attempt's ratio is kept even when rejected (as torchsde)
    return h * min(FACTOR_MAX, max(FACTOR_MIN, factor)), Controller(prev)


def compose_area(h2: float, dW1: torch.Tensor, dZ1, dZ2):
    """``∫_ta^tb (W_s − W_ta) ds`` over two adjacent steps from each step's own.

    ``U = U₁ + U₂ + h₂ ΔW₁`` (the second step's integrand is offset by ``ΔW₁``).
    """
    if dZ1 is None:
        return None
    return dZ1 + dZ2 + h2 * dW1


def compose_levy_area(dW1: torch.Tensor, dW2: torch.Tensor, A1: torch.Tensor, A2: torch.Tensor) -> torch.Tensor:
    """The Lévy area ``A`` ``(B, m, m)`` over two adjacent steps (Chen's relation).

    ``A = A₁ + A₂ + ½ (ΔW₁ ⊗ ΔW₂ − ΔW₂ ⊗ ΔW₁)`` for ``A_jk = ½ (∫ W^j dW^k − ∫ W^k dW^j)``.
    """
    cross = dW1.unsqueeze(-1) * dW2.unsqueeze(-2)
    return A1 + A2 + 0.5 * (cross - cross.transpose(-1, -2))


Query = Callable[[float, float, float], list]


def doubling_query(source, area: bool, pad: Callable[[Iterator], Iterator] | None = None,
                   levy_area: bool = False) -> Query:
    """The increments of a step and of its two halves from a Brownian source.

    A :class:`~sdekit.brownian.BrownianTree` is evaluated once at ``(ta, tm, tb)`` and the
    full step composed from the halves; any other source (torchsde's ``bm`` protocol) is
    asked for ``[ta, tb]``, ``[ta, tm]``, ``[tm, tb]`` in that order, as torchsde asks, so
    a ``BrownianInterval`` returns exactly torchsde's numbers.  ``pad`` maps the
    increments (e.g. the zero channels of the logqp coordinate).  ``levy_area``: the
    second element is the Lévy area ``A`` instead of ``ΔZ`` (``log_ode``; the tree raises).
    """
    def mapped(steps):
        return list(pad(steps) if pad is not None else steps)

    if hasattr(source, "evaluate"):
        def query(ta, tm, tb):
            (dW1, dZ1), (dW2, dZ2) = mapped(source.increments([ta, tm, tb], area=area, levy_area=levy_area))
            full = compose_levy_area(dW1, dW2, dZ1, dZ2) if levy_area else compose_area(tb - tm, dW1, dZ1, dZ2)
            return [(dW1 + dW2, full), (dW1, dZ1), (dW2, dZ2)]
    else:
        def query(ta, tm, tb):
            return [mapped(source.increments([a, b], area=area, levy_area=levy_area))[0]
                    for a, b in ((ta, tb), (ta, tm), (tm, tb))]
    return query


def solve_adaptive(solver, query: Query, y: torch.Tensor, state: tuple, times: list[float], *, dt: float,
                   rtol: float, atol: float, dt_min: float, record: list | None = None
                   ) -> tuple[list[torch.Tensor], tuple]:
    """Step doubling from ``times[0]`` through every ``times[k]``; the states there.

    Args:
        solver: an :class:`~sdekit.solvers.sde.base.AbstractSDESolver`.
        query: ``query(ta, tm, tb)`` gives the increments ``(ΔW, ΔZ)`` of ``[ta, tb]``, of
            ``[ta, tm]`` and of ``[tm, tb]`` on one fixed path (:func:`doubling_query`).
        y: ``(B, *D)`` state at ``times[0]``; ``state`` the solver's state there.
        times: increasing output times (SDE time).
        dt: the first step size; ``rtol``, ``atol``: tolerances of :func:`error_estimate`;
            ``dt_min``: the smallest step (warns when reached, as torchsde does).
        record: if a list, one list per output interval is appended, holding ``(ta, tb, h)``
            for each accepted half step (the steps the result is made of).
    Returns:
        ``(ys, state)``: the states at ``times[1:]`` and the solver state at the end.
    Raises:
        FloatingPointError: if a step at ``dt_min`` still gives non-finite values.
    """
    out = []
    h, ctrl = dt, Controller()
    t = times[0]
    warned = False
    for t_out in times[1:]:
        taken: list = []
        if record is not None:
            record.append(taken)
        while t < t_out:
            step = min(h, t_out - t)
            end = t_out if step >= t_out - t else t + step
            mid = 0.5 * (t + end)
            (dW, dZ), (dW1, dZ1), (dW2, dZ2) = query(t, mid, end)
            t0 = torch.tensor(t, dtype=y.dtype, device=y.device)
            y_full, _ = solver.step(t0, end - t, y, state, dW, dZ)
            y_mid, state_mid = solver.step(t0, mid - t, y, state, dW1, dZ1)
            tm = torch.tensor(mid, dtype=y.dtype, device=y.device)
            y_half, state_half = solver.step(tm, end - mid, y_mid, state_mid, dW2, dZ2)
            with torch.no_grad():
                error = float(error_estimate(y_full, y_half, rtol, atol))
            at_floor = h <= dt_min * (1 + 1e-12)
            h_new, ctrl_new = next_step(error, h, ctrl)
            if error <= 1 or at_floor:
                if not math.isfinite(error):
                    raise FloatingPointError(
                        f"sdeint(adaptive=True): non-finite state at t={end} even with the step at dt_min={dt_min}")
                taken += [(t, mid, mid - t), (mid, end, end - mid)]
                t, y, state, ctrl = end, y_half, state_half, ctrl_new
                h = max(h_new, dt_min)
                continue
            if h_new < dt_min:
                if not warned:
                    warnings.warn("Hitting minimum allowed step size in adaptive time-stepping "
                                  f"(dt_min={dt_min}) at t={t}", UserWarning, stacklevel=3)
                    warned = True
                h_new, ctrl_new = dt_min, Controller()
            h, ctrl = h_new, ctrl_new
        out.append(y)
    return out, state


def next_step_rows(error: torch.Tensor, h: torch.Tensor, prev_ratio: torch.Tensor):
    """:func:`next_step` for each row: ``error``, ``h``, ``prev_ratio`` float64 ``(B,)`` (NaN: none yet).

    Returns ``(h_new, prev_ratio_new)``.
    """
    finite = torch.isfinite(error)
    ratio = SAFETY / torch.where(finite, error, torch.ones_like(error))
    prev = torch.where(torch.isnan(prev_ratio), ratio, prev_ratio)
    accept = finite & (error <= 1)
    grow = (ratio ** I_ACCEPT * (ratio / prev) ** P_ACCEPT).clamp(1.0, FACTOR_MAX)
    shrink = (ratio ** I_REJECT).clamp(FACTOR_MIN, FACTOR_MAX)
    factor = torch.where(accept, grow, torch.where(finite, shrink, torch.full_like(error, FACTOR_MIN)))
    return h * factor, torch.where(accept, ratio, torch.where(finite, prev, prev_ratio))


def per_row(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``(B,)`` values shaped ``(B, 1, …, 1)`` to broadcast against ``like`` ``(B, *D)``, in its dtype."""
    return x.to(like.dtype).reshape((-1,) + (1,) * (like.dim() - 1))


def solve_adaptive_rows(solver, query_rows: Callable, y: torch.Tensor, state: tuple, times: list[float], *,
                        dt: float, rtol: float, atol: float, dt_min: float) -> tuple[list[torch.Tensor], tuple]:
    """:func:`solve_adaptive` with a step size per row (``sdeint(..., per_sample=True)``).

    Row ``b`` keeps its own time, step size and controller memory, and is accepted or
    rejected on its own error (the RMS over its elements), so a hard sample does not shrink
    the steps of the others.  Every attempt evaluates all rows (finished or not, so per-row
    conditioning stays aligned with the batch) and keeps the results only where they apply.

    Args:
        query_rows: ``query_rows(ta, tm, tb)`` with float64 ``(B,)`` times gives the per-row
            increments ``(ΔW, ΔZ)`` of ``[ta, tb]``, ``[ta, tm]`` and ``[tm, tb]``.
        others: as :func:`solve_adaptive`.
    Returns:
        ``(ys, state)``: the states at ``times[1:]`` and the solver state at the end.
    Raises:
        FloatingPointError: if a row's step at ``dt_min`` still gives non-finite values.
    """
    B = y.shape[0]
    f64, dev = torch.float64, y.device
    t = torch.full((B,), times[0], dtype=f64, device=dev)
    h = torch.full((B,), dt, dtype=f64, device=dev)
    prev = torch.full((B,), math.nan, dtype=f64, device=dev)
    target = torch.tensor(times[1:], dtype=f64, device=dev)
    k = torch.zeros(B, dtype=torch.int64, device=y.device)  # index of each row's next output time
    outs = [torch.empty_like(y) for _ in times[1:]]
    warned = False
    while bool((k < len(times) - 1).any()):
        live = k < len(times) - 1
        t_out = target[k.clamp(max=len(times) - 2)]
        end = torch.where(h >= t_out - t, t_out, t + h)
        end = torch.where(live, end, t)  # finished rows take empty steps
        mid = 0.5 * (t + end)
        (dW, dZ), (dW1, dZ1), (dW2, dZ2) = query_rows(t, mid, end)
        y_full, _ = solver.step(per_row(t, y), per_row(end - t, y), y, state, dW, dZ)
        y_mid, state_mid = solver.step(per_row(t, y), per_row(mid - t, y), y, state, dW1, dZ1)
        y_half, state_half = solver.step(per_row(mid, y), per_row(end - mid, y), y_mid, state_mid, dW2, dZ2)
        with torch.no_grad():
            tol = (rtol * torch.maximum(y_full.abs(), y_half.abs()) + atol).clamp_min(ERROR_EPS)
            error = ((y_full - y_half) / tol).square().reshape(B, -1).mean(1).sqrt().clamp_min(ERROR_EPS)
            error = torch.where(torch.isfinite(error), error, torch.full_like(error, math.inf)).double()
        at_floor = h <= dt_min * (1 + 1e-12)
        h_new, prev_new = next_step_rows(error, h, prev)
        accept = live & ((error <= 1) | at_floor)
        if bool((accept & ~torch.isfinite(error)).any()):
            bad = int(torch.nonzero(accept & ~torch.isfinite(error))[0, 0])
            raise FloatingPointError(f"sdeint(adaptive=True, per_sample=True): row {bad} is non-finite at "
                                     f"t={float(end[bad])} even with the step at dt_min={dt_min}")
        floor = live & ~accept & (h_new < dt_min)
        if bool(floor.any()) and not warned:
            warnings.warn("Hitting minimum allowed step size in adaptive time-stepping "
                          f"(dt_min={dt_min}) in {int(floor.sum())} row(s)", UserWarning, stacklevel=3)
            warned = True
        h = torch.where(accept, h_new.clamp_min(dt_min), torch.where(floor, torch.full_like(h, dt_min), h_new))
        h = torch.where(live, h, torch.zeros_like(h) + dt)
        prev = torch.where(floor, torch.full_like(prev, math.nan), prev_new)
        prev = torch.where(live, prev, torch.full_like(prev, math.nan))
        keep = per_row(accept, y).bool()
        y = torch.where(keep, y_half, y)
        state = tuple(torch.where(per_row(accept, s).bool(), a, s) for a, s in zip(state_half, state))
        t = torch.where(accept, end, t)
        arrived = accept & (end == t_out)
        for j in torch.unique(k[arrived]).tolist():
            rows = arrived & (k == j)
            outs[j] = torch.where(per_row(rows, y).bool(), y, outs[j])
        k = k + arrived.long()
    return outs, state
