"""Adaptive embedded Runge–Kutta integration with per-sample error control.

Each sample of the batch has its own time, step size and error norm, so a
sample takes the steps *it* needs (score_sde's ``solve_ivp`` route and
torchdiffeq share one step size across the flattened batch; torchode keeps
evaluating finished samples).  Samples that have reached their end time are
dropped from the active set, so they stop costing function evaluations.
Outputs between steps come from the tableau's continuous extension.

Faults are isolated per sample: a sample whose derivative at its accepted
state is not finite, or whose step size collapses to round-off, is frozen at
once and reported; the others finish with the results they would have had
alone.  The solve then raises :class:`ToleranceNotMetError` carrying the
partial solution.

Host syncs: one per step, ``torch.nonzero`` on the "not finished" mask, which
both ends the loop and selects the active samples; plus, only when there are
interior output times, one ``nonzero`` selecting the (sample, output) pairs
that the step crossed (and, with an event function or jump times, one for
the samples that fired or jumped).  Everything else stays on the device.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import torch

from .._checks import (
    check_batch,
    check_callable,
    check_finite,
    check_positive,
    check_positive_int,
    check_tensor,
    expand_as_batch,
)
from ..kernels.backend import resolve_backend
from ..kernels.rk import rk_combine_triton
from .controller import PI_CONTROLLER, StepController, batch_invariant_pow
from .events import EventSpec, locate
from .rk import _stages, fsal_reuses_last_stage, rk_advance, rk_interpolate, weighted_sum
from .tableaus import DOPRI5, ButcherTableau

#: Failure codes of :attr:`AdaptiveSolution.failure`.
FAILURES = {1: "non-finite derivative", 2: "step size collapsed", 3: "max_steps reached"}


class ToleranceNotMetError(RuntimeError):
    """An adaptive solver could not take some samples to their end time.

    Attributes:
        solution: the :class:`AdaptiveSolution` with the finished samples'
            exact results (failed samples frozen where they stopped; outputs
            they never reached are NaN), or ``None``.
        failures: one dict per failed sample: ``sample`` (row index),
            ``reason`` (see :data:`FAILURES`), ``t``, ``step`` (accepted steps
            so far) and ``h`` (last attempted step size).
    """

    def __init__(self, message: str, solution: AdaptiveSolution | None = None, failures: list | None = None):
        super().__init__(message)
        self.solution = solution
        self.failures = list(failures or [])


@dataclass
class AdaptiveSolution:
    """Result of :func:`solve_adaptive`.

    Attributes:
        y: ``(B, *S)`` state at each sample's end time (its event, if one fired).
        nfe: ``(B,)`` int64, function evaluations spent on each sample.
        steps: ``(B,)`` int64, accepted steps of each sample.
        rejected: ``(B,)`` int64, rejected steps of each sample.
        ys: ``(n, B, *S)`` states at the output times (``ys[-1] = y``).
        event_t: ``(B,)`` event time of each sample (NaN where none fired), or ``None`` without events.
        failure: ``(B,)`` int8 failure code (0 = finished; see :data:`FAILURES`).
    """

    y: torch.Tensor
    nfe: torch.Tensor
    steps: torch.Tensor
    rejected: torch.Tensor
    ys: torch.Tensor | None = None
    event_t: torch.Tensor | None = None
    failure: torch.Tensor | None = None


@dataclass(frozen=True)
class StepOptions:
    """Step controls beyond the tolerances (torchdiffeq's adaptive-solver options).

    Attributes:
        first_step: initial step size (> 0), or ``None`` for the automatic choice.
        min_step, max_step: bounds on every step size; a step of ``min_step``
            is accepted whatever its error.
        step_t: times to step onto exactly (e.g. output times of interest).
        jump_t: discontinuities of ``func`` in ``t``: stepped onto exactly, and
            the derivative is re-evaluated just past them (no FSAL reuse).
        norm: ``norm(v) -> (b,)`` of the scaled error ``(b, *S)``; default RMS per sample.
        callbacks: object with optional ``step(t, y, h)``, ``accept(t, y, h)``,
            ``reject(t, y, h)`` called on the active rows (costs a host sync per step).
    """

    first_step: float | None = None
    min_step: float = 0.0
    max_step: float = math.inf
    step_t: tuple = ()
    jump_t: tuple = ()
    norm: Callable | None = None
    callbacks: object | None = field(default=None, compare=False)


def _rms(v: torch.Tensor) -> torch.Tensor:
    return v.flatten(1).pow(2).mean(1).sqrt()


def _row_finite(v: torch.Tensor) -> torch.Tensor:
    return torch.isfinite(v.flatten(1)).all(1)


def _initial_step(func, t0, y0, f0, direction, span, order, rtol, atol, args, norm):
    """Per-sample initial step (Hairer, Nørsett & Wanner, §II.4, p. 169); costs one evaluation."""
    scale = atol + y0.abs() * rtol
    d0, d1 = norm(y0 / scale), norm(f0 / scale)
    h0 = torch.where((d0 < 1e-5) | (d1 < 1e-5), torch.full_like(d0, 1e-6), 0.01 * d0 / d1)
    h0 = torch.minimum(h0, span)
    y1 = y0 + expand_as_batch(h0 * direction, y0) * f0
    f1 = func(t0 + h0 * direction, y1, *args)
    d2 = norm((f1 - f0) / scale) / h0
    dmax = torch.maximum(d1, d2)
    h1 = torch.where(
        dmax <= 1e-15,
        torch.clamp(h0 * 1e-3, min=1e-6),
        batch_invariant_pow(0.01 / dmax.clamp_min(1e-300), 1.0 / (order + 1)),
    )
    return torch.minimum(torch.minimum(100 * h0, h1), span)


def _check_tableau(tableau: ButcherTableau) -> ButcherTableau:
    if not isinstance(tableau, ButcherTableau) or not tableau.adaptive:
        raise ValueError(f"tableau must be an embedded ButcherTableau (with b_error), got {tableau!r}")
    return tableau


def _check_tolerance(name: str, tol):
    if isinstance(tol, torch.Tensor) and tol.numel() > 1:
        if not bool(torch.isfinite(tol).all()) or bool((tol <= 0).any()):
            raise ValueError(f"{name} must be finite and > 0 everywhere")
        return tol
    return check_positive(name, float(tol) if isinstance(tol, torch.Tensor) else tol)


def _check_options(opts: StepOptions) -> StepOptions:
    if not isinstance(opts, StepOptions):
        raise TypeError(f"options must be a StepOptions, got {type(opts).__name__}")
    if opts.first_step is not None:
        check_positive("first_step", opts.first_step)
    if not (opts.min_step >= 0) or not (opts.max_step > 0) or opts.min_step > opts.max_step:
        raise ValueError(f"need 0 <= min_step <= max_step and max_step > 0, got min_step={opts.min_step}, "
                         f"max_step={opts.max_step}")
    if set(map(float, opts.step_t)) & set(map(float, opts.jump_t)):
        raise ValueError("step_t and jump_t must not share times")
    return opts


def solve_adaptive(
    func,
    y0: torch.Tensor,
    t0,
    t1,
    *,
    rtol: float | torch.Tensor = 1e-5,
    atol: float | torch.Tensor = 1e-5,
    max_steps: int = 10_000,
    tableau: ButcherTableau = DOPRI5,
    controller: StepController = PI_CONTROLLER,
    args: tuple = (),
    t_eval: torch.Tensor | None = None,
    backend: str | None = "auto",
    options: StepOptions | None = None,
    event_fn: Callable | None = None,
    event_tol: float | None = None,
) -> AdaptiveSolution:
    """Integrate ``dy/dt = func(t, y)`` from ``t0`` to ``t1``, each sample with its own steps.

    Error control per sample: a step is accepted when
    ``RMS(err / (atol + rtol · max(|y|, |y_new|))) <= 1`` over that sample's
    elements (Hairer, Nørsett & Wanner, §II.4, eq. 4.11); the next step comes
    from ``controller`` (default: the PI controller of
    :mod:`sdekit.solvers.controller`).  Default tableau: Dormand–Prince 5(4)
    (RK45, :data:`~sdekit.solvers.tableaus.DOPRI5`).

    float16 and bfloat16 states are integrated in float32 (state, error
    control and time), with ``func`` called on the state cast to the input
    dtype; the results are cast back.  Half precision cannot represent the
    per-step increments of a tolerance-controlled solve.

    Args:
        func: ``func(t, y, *args)`` with ``t`` ``(b,)``, ``y`` ``(b, *S)`` and each
            of ``args`` gathered to the same ``b`` active samples → ``(b, *S)``.
            Samples must not interact: ``func`` is called on subsets of the batch.
        y0: ``(B, *S)`` initial state.
        t0, t1: start and end times, scalars or ``(B,)``; ``t1 < t0`` integrates backwards.
        rtol, atol: relative and absolute tolerances (> 0): numbers, or tensors
            broadcastable to ``(*S)`` (one per component).
        max_steps: bound on step attempts (accepted + rejected) per sample.
        tableau: an embedded RK pair (with ``dense`` when ``t_eval`` has interior times).
        controller: a :class:`~sdekit.solvers.controller.StepController`.
        args: tensors with leading dimension ``B`` passed on to ``func``.
        t_eval: optional ``(B, n)`` per-sample output times, monotone from
            ``t0`` to ``t1`` (``t_eval[:, 0] = t0``, ``t_eval[:, -1] = t1``);
            the states there are returned in ``ys``.
        backend: ``"auto"`` (the fused Triton stage combination of
            :func:`sdekit.kernels.rk_combine` for CUDA float32/16/bf16 data, the
            PyTorch arithmetic otherwise), ``"triton"``, ``"torch"``, or ``None``
            for ``$SDEKIT_BACKEND`` (see :mod:`sdekit.kernels.backend`).
        options: a :class:`StepOptions` (first/min/max step, step_t, jump_t, norm, callbacks).
        event_fn: ``event_fn(t, y, *args) -> (b,)``: a sample stops where its
            value changes sign from its value at ``t0`` (``t1`` may then be
            ``±inf``); its time is in ``event_t``.
        event_tol: bisection tolerance of the event time (default ``atol``, as torchdiffeq).
    Returns:
        :class:`AdaptiveSolution` with the end state, per-sample counts and ``ys``.
    Raises:
        ValueError: on non-finite ``y0`` or one with no rows (``B = 0``), bad
            tolerances, ``max_steps``, ``args`` or options.
        TypeError: ``func`` not callable, ``y0`` not a floating tensor, a
            tolerance that is not a real number.
        ToleranceNotMetError: if some sample could not reach ``t1``: its
            derivative became non-finite, its step size collapsed, or
            ``max_steps`` attempts were not enough (the message names the
            samples, the reason, ``t`` and the last step size; the error
            carries the other samples' results in ``.solution``).
    """
    check_callable("func", func)
    check_tensor("y0", y0, min_dim=1)
    check_batch("y0", y0)
    check_finite("y0", y0)
    rtol, atol = _check_tolerance("rtol", rtol), _check_tolerance("atol", atol)
    max_steps = check_positive_int("max_steps", max_steps)
    tableau = _check_tableau(tableau)
    opts = _check_options(options or StepOptions())
    B = y0.shape[0]
    for i, a in enumerate(args):
        if a.shape[0] != B:
            raise ValueError(f"args[{i}] must have leading dimension B={B}, got {tuple(a.shape)}")
    event = None
    if event_fn is not None:
        check_callable("event_fn", event_fn)
        tol = float(atol.min()) if isinstance(atol, torch.Tensor) else atol
        event = EventSpec(event_fn, check_positive("event_tol", tol if event_tol is None else event_tol))
    low = y0.dtype in (torch.float16, torch.bfloat16)
    work = torch.float32 if low else y0.dtype
    if t_eval is None:
        t0 = torch.as_tensor(t0, dtype=work, device=y0.device).expand(B)
        t1 = torch.as_tensor(t1, dtype=work, device=y0.device).expand(B)
        t_eval = torch.stack([t0, t1], dim=1)
    fused = (resolve_backend(backend, y0.device, y0.dtype) == "triton" and opts.norm is None
             and not isinstance(rtol, torch.Tensor) and not isinstance(atol, torch.Tensor))
    if low:
        user, dt = func, y0.dtype

        def func(t, y, *a):
            return user(t.to(dt), y.to(dt), *a).to(torch.float32)

        if event is not None:
            ev_user = event.fn
            event = EventSpec(lambda t, y, *a: ev_user(t.to(dt), y.to(dt), *a).to(torch.float32), event.tol)
        try:
            sol = _integrate(func, y0.to(work), t_eval.to(work), tableau, rtol, atol, max_steps, controller,
                             args, fused, opts, event)
        except ToleranceNotMetError as err:
            if err.solution is not None:
                err.solution = _cast(err.solution, dt)
            raise
        return _cast(sol, dt)
    return _integrate(func, y0, t_eval.to(y0.dtype), tableau, rtol, atol, max_steps, controller, args, fused,
                      opts, event)


def _cast(sol: AdaptiveSolution, dtype) -> AdaptiveSolution:
    ys = None if sol.ys is None else sol.ys.to(dtype)
    return AdaptiveSolution(y=sol.y.to(dtype), nfe=sol.nfe, steps=sol.steps, rejected=sol.rejected, ys=ys,
                            event_t=sol.event_t, failure=sol.failure)


def _combine(tableau, yi, ks, step, rtol, atol, fused, norm, y_new=None, hb=None):
    """New state and per-sample error norm of one step (fused Triton pass or PyTorch ops).

    ``y_new``: the new state if already known (the last stage's state of an FSAL
    pair whose ``b`` is its last row of ``a``; only without autograd graph, where
    a second use of that tensor would change the order gradients are summed in);
    ``hb``: ``step`` viewed as ``(b, 1, …)``.
    """
    if fused:
        y_new, err = rk_combine_triton(yi, ks, tableau.b, tableau.b_error, step, rtol, atol)
        return y_new, err.to(yi.dtype)
    if y_new is None:
        y_new = rk_advance(yi, ks, step, tableau.b)
    error = (expand_as_batch(step, yi) if hb is None else hb) * weighted_sum(ks, tableau.b_error)
    return y_new, norm(error / (atol + rtol * torch.maximum(yi.abs(), y_new.abs())))


def _acceptance(k0, y_new, err, step, min_step: float):
    """Per-sample ``(accept, bad_f, isfinite(err))`` of an attempted step.

    Accepted: a finite error norm ``<= 1`` (or a step at ``min_step``) and a finite new state.  A
    non-finite derivative ``k0`` at the accepted state (``bad_f``) is a fault, not a step to shrink.
    """
    bad_f = ~_row_finite(k0)
    finite_new = _row_finite(y_new)
    err_finite = torch.isfinite(err)
    accept = err_finite & (err <= 1.0) & finite_new
    if min_step > 0:
        accept |= (step.abs() <= min_step) & finite_new
    accept &= ~bad_f
    return accept, bad_f, err_finite


def _rows(idx: torch.Tensor | None) -> Callable[[torch.Tensor], torch.Tensor]:
    """Selection of the rows ``idx`` of a batched tensor (every row, unchanged, when ``idx`` is ``None``)."""
    if idx is None:
        return lambda v: v
    return lambda v: v.index_select(0, idx)


def _barriers(t0, t1, direction, step_t, jump_t):
    """Per-sample times to step onto, in the order they are reached, padded with ``t1``.

    Returns ``(bar, is_jump)`` of shape ``(B, K + 1)``: ``bar[:, -1] = t1``.
    """
    times = [(float(v), False) for v in step_t] + [(float(v), True) for v in jump_t]
    B = t0.shape[0]
    if not times:
        return t1[:, None].clone(), torch.zeros(B, 1, dtype=torch.bool, device=t0.device)
    tv = torch.tensor([v for v, _ in times], dtype=t0.dtype, device=t0.device)
    jv = torch.tensor([j for _, j in times], dtype=torch.bool, device=t0.device)
    rel = (tv[None, :] - t0[:, None]) * direction[:, None]  # distance along the direction
    inside = (rel > 0) & ((t1[:, None] - tv[None, :]) * direction[:, None] > 0)
    key = torch.where(inside, rel, torch.full_like(rel, math.inf))
    order = key.argsort(dim=1)
    bar = torch.where(inside, tv[None, :].expand(B, -1), t1[:, None]).gather(1, order)
    is_jump = (jv[None, :].expand(B, -1) & inside).gather(1, order)
    bar = torch.cat([bar, t1[:, None]], dim=1)
    is_jump = torch.cat([is_jump, torch.zeros(B, 1, dtype=torch.bool, device=t0.device)], dim=1)
    return bar, is_jump


def _callback(opts: StepOptions, name: str, t, y, h, mask=None):
    fn = getattr(opts.callbacks, name, None) if opts.callbacks is not None else None
    if fn is None:
        return
    if mask is None:
        fn(t, y, h)
    elif bool(mask.any()):
        fn(t[mask], y[mask], h[mask])


def _integrate(func, y0, t_out, tableau, rtol, atol, max_steps, controller, args, fused=False,
               opts: StepOptions | None = None, event: EventSpec | None = None) -> AdaptiveSolution:
    """The per-sample adaptive loop; ``t_out`` is ``(B, n)`` with ``n >= 2``."""
    opts = opts or StepOptions()
    norm = opts.norm or _rms
    B, n = t_out.shape
    dev = y0.device
    t0, t1 = t_out[:, 0].clone(), t_out[:, -1].clone()
    direction = torch.sign(t1 - t0)
    span = (t1 - t0).abs()
    bar, bar_jump = _barriers(t0, t1, direction, opts.step_t, opts.jump_t)
    last_bar = bar.shape[1] - 1
    has_jumps = bool(bar_jump.any())
    counts = {k: torch.zeros(B, dtype=torch.int64, device=dev) for k in ("nfe", "steps", "rejected")}
    ys = torch.full((n,) + tuple(y0.shape), math.nan, dtype=y0.dtype, device=dev)
    ys[0] = y0
    k_first = func(t0, y0, *args)
    counts["nfe"] += 1
    if opts.first_step is None:
        with torch.no_grad():
            h = _initial_step(func, t0.detach(), y0.detach(), k_first.detach(), direction.detach(), span.detach(),
                              tableau.error_order, rtol, atol, args, norm)
        counts["nfe"] += 1
    else:
        h = torch.minimum(torch.full_like(span, opts.first_step), span)
    if B == 1 and event is None and not fused and opts.callbacks is None and not opts.step_t and not opts.jump_t:
        from .adaptive_single import integrate_single  # the same arithmetic, control flow on the host

        return integrate_single(func, y0, t_out, tableau, rtol, atol, max_steps, controller, args, opts, norm,
                                k_first, h)
    t, y = t0, y0.clone()
    done = span == 0
    failure = torch.zeros(B, dtype=torch.int8, device=dev)
    last_h = h.clone()
    last_rejected = torch.zeros(B, dtype=torch.bool, device=dev)
    err_prev = torch.ones(B, dtype=y0.dtype, device=dev)
    next_out = torch.ones(B, dtype=torch.int64, device=dev)
    next_bar = torch.zeros(B, dtype=torch.int64, device=dev)
    out_cols = torch.arange(n, device=dev)
    per_attempt = tableau.stages - 1 if tableau.fsal else tableau.stages
    eps = torch.finfo(y0.dtype).eps
    span_floor = eps * eps * torch.where(torch.isfinite(span), span, torch.zeros_like(span)).detach()
    # loop invariants
    clamp_h = opts.min_step > 0 or opts.max_step < math.inf  # else clamping the (>= 0) step sizes changes nothing
    bar_first = bar[:, 0] if last_bar == 0 else None  # no step_t/jump_t: every sample's barrier is t1
    reuse_last = fsal_reuses_last_stage(tableau) and not fused
    interior = out_cols < n - 1
    event_t = sign0 = None
    if event is not None:
        sign0 = torch.sign(event.fn(t0, y0, *args))
        event_t = torch.full((B,), math.nan, dtype=y0.dtype, device=dev)

    for attempt in range(max_steps + 1):
        idx = torch.nonzero(~done).squeeze(1)  # the one host sync per step
        m = idx.numel()
        if m == 0:
            break
        if attempt == max_steps:
            failure = failure.index_fill(0, idx, 3)
            break
        full = m == B
        sel = _rows(None if full else idx)
        ti, yi, di = sel(t), sel(y), sel(direction)
        hi = sel(h).clamp(opts.min_step, opts.max_step) if clamp_h else sel(h)
        argi = tuple(sel(a) for a in args) if args else ()
        nbi = sel(next_bar)
        bari = sel(bar).gather(1, nbi[:, None]).squeeze(1) if bar_first is None else sel(bar_first)

        dist = bari - ti
        hit = hi >= dist.abs()
        step = torch.where(hit, dist, hi * di)
        _callback(opts, "step", ti, yi, step)
        t_end = at_jump = None
        if has_jumps:  # a step ending on a jump evaluates its last stages just before it
            at_jump = hit & sel(bar_jump).gather(1, nbi[:, None]).squeeze(1)
            t_end = torch.where(at_jump, torch.nextafter(bari, ti), ti + step)
        hb = expand_as_batch(step, yi)
        ks, y_last = _stages(func, tableau, ti, yi, step, sel(k_first) if tableau.fsal else None, argi, t_end, hb)
        y_new, err = _combine(tableau, yi, ks, step, rtol, atol, fused, norm, y_last if reuse_last and not y_last.requires_grad else None, hb)
        accept, bad_f, err_finite = _acceptance(ks[0], y_new, err, step, opts.min_step)
        rejected = ~accept
        err = err.detach()  # step-size control is not differentiated (torchdiffeq, Chen et al. 2018)
        astep = step.detach().abs()
        h_next = astep * controller.factor(err, sel(err_prev), tableau.error_order, sel(last_rejected),
                                           finite=err_finite)
        if clamp_h:
            h_next = h_next.clamp(opts.min_step, opts.max_step)
        reached = accept & hit
        finished = reached if bar_first is not None else reached & (nbi == last_bar)  # nbi = 0 = last_bar there
        floor = torch.maximum(0.25 * eps * ti.detach().abs(), sel(span_floor))  # below half an ulp of t: no progress
        collapse = ~bad_f & ~finished & (h_next <= floor)
        fault = bad_f | collapse
        t_next = torch.where(accept, torch.where(hit, bari, ti + step), ti)
        if opts.callbacks is not None:
            _callback(opts, "accept", ti, yi, step, accept)
            _callback(opts, "reject", ti, yi, step, rejected)
        accept_b = expand_as_batch(accept, yi)
        y_next = torch.where(accept_b, y_new, yi)

        if event is not None and sign0 is not None and event_t is not None:
            ev = event.fn(t_next, y_next, *argi)
            fired = accept & (torch.sign(ev) != sel(sign0))
            rows = torch.nonzero(fired).squeeze(1)
            if rows.numel():
                te, ye = locate(event, tableau, ti[rows], yi[rows], y_new[rows], [k[rows] for k in ks],
                                step[rows], sel(sign0)[rows], tuple(a[rows] for a in argi))
                t_next = t_next.index_put((rows,), te)
                y_next = y_next.index_put((rows,), ye)
                finished = finished | fired
                event_t = event_t.index_put((idx[rows],), te.detach())

        if n > 2:  # dense output at the interior times this step crossed
            ni, touts = sel(next_out), sel(t_out)
            crossed = (out_cols >= ni[:, None]) & interior & accept[:, None]
            crossed &= di[:, None] * (touts - t_next[:, None]) <= 0
            pairs = torch.nonzero(crossed)
            if pairs.numel():
                r, j = pairs[:, 0], pairs[:, 1]
                theta = (touts[r, j] - ti[r]) / step[r]
                ys[j, idx[r]] = rk_interpolate(tableau, yi[r], [k[r] for k in ks], step[r], theta)
            next_out_i = ni + crossed.sum(1)

        err_prev_next = torch.where(accept, err, sel(err_prev))
        done_next = finished | fault
        next_bar_next = next_bar if bar_first is not None else (nbi + reached.long()).clamp(max=last_bar)
        failure_next = torch.where(bad_f, 1, torch.where(collapse, 2, sel(failure))).to(torch.int8)
        k_new = k_first
        if tableau.fsal:
            k_new = torch.where(accept_b, ks[-1], ks[0])
            if at_jump is not None:  # re-evaluate just past a discontinuity, never reuse the stage at it
                jumped = torch.nonzero(at_jump & accept & ~finished).squeeze(1)
                if jumped.numel():
                    tj = torch.nextafter(t_next[jumped], t_next[jumped] + di[jumped])
                    k_new = k_new.index_put((jumped,), func(tj, y_next[jumped], *(a[jumped] for a in argi)))
                    counts["nfe"].index_add_(0, idx[jumped], torch.ones_like(jumped))
        if full:  # every sample active: the new values are the state
            t, y, h, last_h, err_prev = t_next, y_next, h_next, astep, err_prev_next
            done, last_rejected, next_bar, failure, k_first = done_next, rejected, next_bar_next, failure_next, k_new
            if n > 2:
                next_out = next_out_i
            counts["nfe"] += per_attempt
            counts["steps"] += accept
            counts["rejected"] += rejected
            continue
        t, y, h = t.index_copy(0, idx, t_next), y.index_copy(0, idx, y_next), h.index_copy(0, idx, h_next)
        last_h, err_prev = last_h.index_copy(0, idx, astep), err_prev.index_copy(0, idx, err_prev_next)
        done, last_rejected = done.index_copy(0, idx, done_next), last_rejected.index_copy(0, idx, rejected)
        if bar_first is None:
            next_bar = next_bar.index_copy(0, idx, next_bar_next)
        failure = failure.index_copy(0, idx, failure_next)
        if tableau.fsal:
            k_first = k_first.index_copy(0, idx, k_new)
        if n > 2:
            next_out = next_out.index_copy(0, idx, next_out_i)
        counts["nfe"].index_add_(0, idx, torch.full_like(idx, per_attempt))
        counts["steps"].index_add_(0, idx, accept.long())
        counts["rejected"].index_add_(0, idx, rejected.long())

    failed = torch.nonzero(failure).squeeze(1)
    # the last output is the end time, which failed samples did not reach (their y is where they stopped)
    ys[-1] = y if not failed.numel() else torch.where(expand_as_batch(failure == 0, y), y, math.nan)
    sol = AdaptiveSolution(y=y, ys=ys, event_t=event_t, failure=failure, **counts)
    if failed.numel():
        raise _failure_error(sol, failed, t, last_h, max_steps, rtol, atol, B)
    return sol


def _failure_error(sol, failed, t, last_h, max_steps, rtol, atol, B) -> ToleranceNotMetError:
    codes = sol.failure[failed].tolist()
    rows = failed.tolist()
    failures = [{"sample": r, "reason": FAILURES[c], "t": float(t[r]), "step": int(sol.steps[r]), "h": float(last_h[r])}
                for r, c in zip(rows, codes)]
    parts = []
    for code in sorted(set(codes)):
        group = [f for f, c in zip(failures, codes) if c == code]
        shown = ", ".join(f"{f['sample']} (t={f['t']:.6g}, h={f['h']:.3g}, after {f['step']} steps)" for f in group[:8])
        more = f" and {len(group) - 8} more" if len(group) > 8 else ""
        parts.append(f"{FAILURES[code]}: {len(group)} of {B} samples: {shown}{more}")
    hint = []
    if 3 in codes:
        hint.append(f"max_steps={max_steps} step attempts were not enough; raise max_steps or loosen the "
                    f"tolerances (rtol={_fmt(rtol)}, atol={_fmt(atol)})")
    if 1 in codes:
        hint.append("a non-finite derivative comes from func (the model) at a finite state")
    if 2 in codes:
        hint.append("a collapsed step size means the solution blows up or func is discontinuous there")
    msg = "; ".join(parts) + ". " + "; ".join(hint) + ". The other samples finished: their results are in .solution"
    return ToleranceNotMetError(msg, solution=sol, failures=failures)


def _fmt(tol) -> str:
    if isinstance(tol, torch.Tensor):
        return f"tensor(min={float(tol.min()):.3g}, max={float(tol.max()):.3g})"
    return f"{tol}"
