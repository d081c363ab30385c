"""Adaptive embedded Runge–Kutta integration with per-sample error control.

Each sample of the batch has its own time, step size and error norm, so a
sample takes the steps *it* needs (score_sde's ``solve_ivp`` route and
torchdiffeq share one step size across the flattened batch).  Samples that
have reached their end time are dropped from the active set, so they stop
costing function evaluations.

Host syncs: exactly one per step, ``torch.nonzero`` on the "not finished"
mask, which both ends the loop and selects the active samples.  Everything
else (error norms, acceptance, step-size control) stays on the device.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .._checks import check_finite, check_positive, check_positive_int, check_tensor, expand_as_batch
from .tableaus import DOPRI5, ButcherTableau

#: Step-size controller constants (Hairer, Nørsett & Wanner, "Solving ODEs I",
#: §II.4, eq. 4.13; the same as scipy's RK45): safety factor and the bounds
#: on the ratio of successive step sizes.
SAFETY, MIN_FACTOR, MAX_FACTOR = 0.9, 0.2, 10.0


class ToleranceNotMetError(RuntimeError):
    """An adaptive solver could not reach its end time within ``max_steps``."""


@dataclass
class AdaptiveSolution:
    """Result of :func:`solve_adaptive`.

    Attributes:
        y: ``(B, *S)`` state at each sample's end time.
        nfe: ``(B,)`` int64, function evaluations spent on each sample.
        steps: ``(B,)`` int64, accepted steps of each sample.
        rejected: ``(B,)`` int64, rejected steps of each sample.
    """

    y: torch.Tensor
    nfe: torch.Tensor
    steps: torch.Tensor
    rejected: torch.Tensor


def _rms(v: torch.Tensor) -> torch.Tensor:
    return v.flatten(1).pow(2).mean(1).sqrt()


def _initial_step(func, t0, y0, f0, direction, span, order, rtol, atol, args):
    """Per-sample initial step (Hairer, Nørsett & Wanner, §II.4, p. 169); costs one evaluation."""
    scale = atol + y0.abs() * rtol
    d0, d1 = _rms(y0 / scale), _rms(f0 / scale)
    h0 = torch.where((d0 < 1e-5) | (d1 < 1e-5), torch.full_like(d0, 1e-6), 0.01 * d0 / d1)
    h0 = torch.minimum(h0, span)
    y1 = y0 + expand_as_batch(h0 * direction, y0) * f0
    f1 = func(t0 + h0 * direction, y1, *args)
    d2 = _rms((f1 - f0) / scale) / h0
    dmax = torch.maximum(d1, d2)
    h1 = torch.where(
        dmax <= 1e-15,
        torch.clamp(h0 * 1e-3, min=1e-6),
        (0.01 / dmax.clamp_min(1e-300)) ** (1.0 / (order + 1)),
    )
    return torch.minimum(torch.minimum(100 * h0, h1), span)


def _rk_step(func, tableau: ButcherTableau, t, y, k_first, h, args):
    """One embedded RK step of signed size ``h`` (B,); returns (y_new, error, k_last)."""
    hb = expand_as_batch(h, y)
    ks = [k_first]
    for i in range(1, tableau.stages):
        incr = sum(a * k for a, k in zip(tableau.a[i], ks) if a != 0.0)
        ks.append(func(t + tableau.c[i] * h, y + hb * incr, *args))
    y_new = y + hb * sum(b * k for b, k in zip(tableau.b, ks) if b != 0.0)
    error = hb * sum(e * k for e, k in zip(tableau.b_error, ks) if e != 0.0)
    return y_new, error, ks[-1]


def solve_adaptive(
    func,
    y0: torch.Tensor,
    t0,
    t1,
    *,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    max_steps: int = 10_000,
    tableau: ButcherTableau = DOPRI5,
    args: tuple = (),
) -> AdaptiveSolution:
    """Integrate ``dy/dt = func(t, y)`` from ``t0`` to ``t1``, each sample with its own steps.

    Error control per sample: a step is accepted when
    ``RMS(err / (atol + rtol · max(|y|, |y_new|))) <= 1`` over that sample's
    elements (Hairer, Nørsett & Wanner, §II.4, eq. 4.11), and the next step is
    ``h · clamp(0.9 · err^{-1/(q+1)}, 0.2, 10)`` with ``q`` the error order (no
    growth right after a rejection).  Default tableau: Dormand–Prince 5(4)
    (RK45, :data:`~sdekit.solvers.tableaus.DOPRI5`).

    Args:
        func: ``func(t, y, *args)`` with ``t`` ``(b,)``, ``y`` ``(b, *S)`` and each
            of ``args`` gathered to the same ``b`` active samples → ``(b, *S)``.
        y0: ``(B, *S)`` initial state.
        t0, t1: start and end times, scalars or ``(B,)``; ``t1 < t0`` integrates backwards.
        rtol, atol: relative and absolute tolerances (> 0).
        max_steps: bound on step attempts (accepted + rejected) per sample.
        tableau: an embedded RK pair.
        args: tensors with leading dimension ``B`` passed on to ``func``.
    Returns:
        :class:`AdaptiveSolution` with the end state and per-sample counts.
    Raises:
        ValueError: on non-finite ``y0``, bad tolerances or ``max_steps``.
        ToleranceNotMetError: if some sample has not reached ``t1`` after
            ``max_steps`` attempts (the message says how many and where).
    """
    check_tensor("y0", y0, min_dim=1)
    check_finite("y0", y0)
    rtol, atol = check_positive("rtol", rtol), check_positive("atol", atol)
    max_steps = check_positive_int("max_steps", max_steps)
    B = y0.shape[0]
    t0 = torch.as_tensor(t0, dtype=y0.dtype, device=y0.device).expand(B).clone()
    t1 = torch.as_tensor(t1, dtype=y0.dtype, device=y0.device).expand(B).clone()
    for i, a in enumerate(args):
        if a.shape[0] != B:
            raise ValueError(f"args[{i}] must have leading dimension B={B}, got {tuple(a.shape)}")

    direction = torch.sign(t1 - t0)
    span = (t1 - t0).abs()
    counts = {k: torch.zeros(B, dtype=torch.int64, device=y0.device) for k in ("nfe", "steps", "rejected")}
    k_first = func(t0, y0, *args)
    h = _initial_step(func, t0, y0, k_first, direction, span, tableau.error_order, rtol, atol, args)
    counts["nfe"] += 2
    t, y = t0, y0.clone()
    done = span == 0
    last_rejected = torch.zeros(B, dtype=torch.bool, device=y0.device)
    per_attempt = tableau.stages - 1 if tableau.fsal else tableau.stages
    exponent = -1.0 / (tableau.error_order + 1)

    for attempt in range(max_steps + 1):
        idx = torch.nonzero(~done).squeeze(1)  # the one host sync per step
        n = idx.numel()
        if n == 0:
            break
        if attempt == max_steps:
            raise ToleranceNotMetError(
                f"max_steps={max_steps} step attempts were not enough for {n} of {B} samples "
                f"to reach t1 with rtol={rtol}, atol={atol} (sample indices {idx[:8].tolist()}..., "
                f"at t={t[idx[:8]].tolist()}); raise max_steps or loosen the tolerances"
            )
        full = n == B
        sel = (lambda v: v) if full else (lambda v: v.index_select(0, idx))
        ti, yi, ki, hi, di, t1i = sel(t), sel(y), sel(k_first), sel(h), sel(direction), sel(t1)
        argi = tuple(sel(a) for a in args)

        hit = hi >= (t1i - ti).abs()
        step = torch.where(hit, t1i - ti, hi * di)
        y_new, error, k_last = _rk_step(func, tableau, ti, yi, ki, step, argi)
        scale = atol + rtol * torch.maximum(yi.abs(), y_new.abs())
        err = _rms(error / scale)
        finite = torch.isfinite(err)
        accept = finite & (err <= 1.0)

        factor = SAFETY * err.clamp_min(1e-10) ** exponent
        factor = torch.where(finite, factor.clamp(MIN_FACTOR, MAX_FACTOR), torch.full_like(err, MIN_FACTOR))
        factor = torch.where(sel(last_rejected), factor.clamp(max=1.0), factor)
        h_next = step.abs() * factor

        t_next = torch.where(accept, torch.where(hit, t1i, ti + step), ti)
        acc = expand_as_batch(accept, yi)
        updates = {
            "t": t_next,
            "y": torch.where(acc, y_new, yi),
            "k_first": torch.where(acc, k_last, ki),
            "h": h_next,
            "done": accept & hit,
            "last_rejected": ~accept,
        }
        if full:
            t, y, k_first, h = updates["t"], updates["y"], updates["k_first"], updates["h"]
            done, last_rejected = updates["done"], updates["last_rejected"]
        else:
            t, y, k_first, h = (v.index_copy(0, idx, updates[k]) for v, k in ((t, "t"), (y, "y"), (k_first, "k_first"), (h, "h")))
            done = done.index_copy(0, idx, updates["done"])
            last_rejected = last_rejected.index_copy(0, idx, updates["last_rejected"])
        counts["nfe"].index_add_(0, idx, torch.full_like(idx, per_attempt))
        counts["steps"].index_add_(0, idx, accept.long())
        counts["rejected"].index_add_(0, idx, (~accept).long())

    return AdaptiveSolution(y=y, **counts)
