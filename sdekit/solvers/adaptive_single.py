"""The adaptive Runge–Kutta loop for a batch of one, with its control flow on the host.

:func:`sdekit.solve_adaptive` runs a per-sample loop whose acceptance, output
and bookkeeping are masked tensor operations, so that every sample of a batch
keeps its own step.  For a single sample (a one-row ``per_sample`` solve, a
likelihood of one sample) those masks cost more than the arithmetic of a
small state: this loop does the same arithmetic — the same stages, error
norm, controller and step-size floor, operation for operation, so its results
are bitwise those of the batched loop — and decides acceptance, hitting the
end and dense output with Python branches on one host read per attempt.  (``odeint``'s
whole-state mode, which need not be bitwise a batch row, has its own leaner
loop: :mod:`sdekit.solvers.adaptive_whole`.)

Used when the batch is one row and there are no events, ``step_t``/``jump_t``
or callbacks (those stay in the batched loop).  Source of the method: as
:mod:`sdekit.solvers.adaptive` (Dormand & Prince 1980; Hairer, Nørsett &
Wanner, "Solving ODEs I", §II.4).
"""

from __future__ import annotations

import math

import torch

from .._checks import expand_as_batch
from .adaptive import AdaptiveSolution, StepOptions, _acceptance, _combine, _failure_error
from .rk import _stages, fsal_reuses_last_stage, rk_interpolate


def integrate_single(func, y0, t_out, tableau, rtol, atol, max_steps, controller, args, opts: StepOptions,
                     norm, k_first, h) -> AdaptiveSolution:
    """The adaptive loop of :func:`sdekit.solvers.adaptive._integrate` for ``B = 1``.

    Args:
        func: ``func(t, y, *args)`` with ``t`` ``(1,)``, ``y`` ``(1, *S)`` → ``(1, *S)``.
        y0: ``(1, *S)`` start; ``t_out``: ``(1, n)`` output times, ``n >= 2``.
        tableau, rtol, atol, max_steps, controller, args, opts, norm: as the batched loop.
        k_first: ``func(t_out[:, 0], y0)``, already evaluated (one evaluation).
        h: ``(1,)`` first step size (its choice may have cost one more evaluation).
    Returns:
        the :class:`AdaptiveSolution` the batched loop returns (``nfe`` counts ``k_first`` and,
        without ``opts.first_step``, the evaluation that chose ``h``).
    Raises:
        ToleranceNotMetError: as the batched loop (the same message and partial solution).
    """
    n = t_out.shape[1]
    t0, t1 = t_out[:, 0].clone(), t_out[:, -1].clone()
    direction = torch.sign(t1 - t0)
    span = (t1 - t0).abs()
    eps = torch.finfo(y0.dtype).eps
    span_floor = eps * eps * torch.where(torch.isfinite(span), span, torch.zeros_like(span)).detach()
    clamp_h = opts.min_step > 0 or opts.max_step < math.inf
    reuse_last = fsal_reuses_last_stage(tableau)
    per_attempt = tableau.stages - 1 if tableau.fsal else tableau.stages
    ys = torch.full((n,) + tuple(y0.shape), math.nan, dtype=y0.dtype, device=y0.device)
    ys[0] = y0
    outs = t_out[0].tolist()  # output times on the host (compared in float64: the sign of a difference is exact)
    sign = float(direction[0].detach())
    next_out = 1
    nfe = 1 + (opts.first_step is None)
    steps = rejected = 0
    t, y = t0, y0.clone()
    err_prev = torch.ones(1, dtype=y0.dtype, device=y0.device)
    last_rejected = torch.zeros(1, dtype=torch.bool, device=y0.device)
    last_h = h.clone()
    span0 = float(span[0].detach())
    failure = 0 if span0 > 0 or not math.isfinite(span0) else -1
    attempt = 0
    while failure == 0:
        if attempt == max_steps:
            failure = 3
            break
        attempt += 1
        hi = h.clamp(opts.min_step, opts.max_step) if clamp_h else h
        dist = t1 - t
        hit_t = hi >= dist.abs()
        step = torch.where(hit_t, dist, hi * direction)
        hb = expand_as_batch(step, y)
        ks, y_last = _stages(func, tableau, t, y, step, k_first if tableau.fsal else None, args, None, hb)
        y_new, err = _combine(tableau, y, ks, step, rtol, atol, False, norm,
                              y_last if reuse_last and not y_last.requires_grad else None, hb)
        accept_t, bad_f, err_finite = _acceptance(ks[0], y_new, err, step, opts.min_step)
        err = err.detach()
        astep = step.detach().abs()
        h_next = astep * controller.factor(err, err_prev, tableau.error_order, last_rejected, finite=err_finite)
        if clamp_h:
            h_next = h_next.clamp(opts.min_step, opts.max_step)
        floor = torch.maximum(0.25 * eps * t.detach().abs(), span_floor)
        t_step = t + step
        # the one host read of the attempt: accepted, ends on t1, bad derivative, step below the floor (and,
        # for dense output, where the step ends)
        flags = torch.cat([accept_t, hit_t, bad_f, h_next <= floor])
        if n > 2:
            *bits, t_end = torch.cat([flags.to(t_step.dtype), t_step.detach()]).tolist()
            accept, hit, bad, low = (bool(v) for v in bits)
        else:
            accept, hit, bad, low = flags.tolist()
        nfe += per_attempt
        finished = accept and hit
        if accept:
            t_new = t1 if hit else t_step
            if n > 2:
                t_next = outs[-1] if hit else t_end
                crossed = []
                while next_out < n - 1 and sign * (outs[next_out] - t_next) <= 0:
                    crossed.append(next_out)
                    next_out += 1
                if crossed:
                    j = torch.tensor(crossed, device=y0.device)
                    r = torch.zeros_like(j)
                    theta = (t_out[r, j] - t[r]) / step[r]
                    ys[j, 0] = rk_interpolate(tableau, y[r], [k[r] for k in ks], step[r], theta)
            t, y = t_new, y_new
            err_prev = err
            if tableau.fsal:
                k_first = ks[-1]
            steps += 1
        else:
            rejected += 1
        h, last_h, last_rejected = h_next, astep, ~accept_t
        if bad:
            failure = 1
        elif not finished and low:
            failure = 2
        elif finished:
            break
    failure = max(failure, 0)

    def count(v):
        return torch.tensor([v], dtype=torch.int64, device=y0.device)

    code = torch.tensor([failure], dtype=torch.int8, device=y0.device)
    ys[-1] = y if failure == 0 else torch.full_like(y, math.nan)
    sol = AdaptiveSolution(y=y, ys=ys, event_t=None, failure=code, nfe=count(nfe), steps=count(steps),
                           rejected=count(rejected))
    if failure:
        raise _failure_error(sol, torch.zeros(1, dtype=torch.int64, device=y0.device), t, last_h, max_steps,
                             rtol, atol, 1)
    return sol
