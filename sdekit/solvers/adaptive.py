"""Adaptive embedded Runge–Kutta integration with per-sample error control.

Each sample of the batch has its own time, step size and error norm, so a
sample takes the steps *it* needs (score_sde's ``solve_ivp`` route and
torchdiffeq share one step size across the flattened batch; torchode keeps
evaluating finished samples).  Samples that have reached their end time are
dropped from the active set, so they stop costing function evaluations.
Outputs between steps come from the tableau's continuous extension.

Host syncs: one per step, ``torch.nonzero`` on the "not finished" mask, which
both ends the loop and selects the active samples; plus, only when there are
interior output times, one ``nonzero`` selecting the (sample, output) pairs
that the step crossed.  Everything else stays on the device.
"""

from __future__ import annotations

from dataclasses import dataclass
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
from .rk import rk_combine, rk_interpolate, rk_stages, weighted_sum
from .tableaus import DOPRI5, ButcherTableau


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
        ys: ``(n, B, *S)`` states at the output times (``ys[-1] = y``).
    """

    y: torch.Tensor
    nfe: torch.Tensor
    steps: torch.Tensor
    rejected: torch.Tensor
    ys: torch.Tensor | None = None


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
        batch_invariant_pow(0.01 / dmax.clamp_min(1e-300), 1.0 / (order + 1)),
    )
    return torch.minimum(torch.minimum(100 * h0, h1), span)


def _check_tableau(tableau: ButcherTableau) -> ButcherTableau:
    if not isinstance(tableau, ButcherTableau) or not tableau.adaptive:
        raise ValueError(f"tableau must be an embedded ButcherTableau (with b_error), got {tableau!r}")
    return tableau


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
    controller: StepController = PI_CONTROLLER,
    args: tuple = (),
    t_eval: torch.Tensor | None = None,
    backend: str | None = "auto",
) -> AdaptiveSolution:
    """Integrate ``dy/dt = func(t, y)`` from ``t0`` to ``t1``, each sample with its own steps.

    Error control per sample: a step is accepted when
    ``RMS(err / (atol + rtol · max(|y|, |y_new|))) <= 1`` over that sample's
    elements (Hairer, Nørsett & Wanner, §II.4, eq. 4.11); the next step comes
    from ``controller`` (default: the PI controller of
    :mod:`sdekit.solvers.controller`).  Default tableau: Dormand–Prince 5(4)
    (RK45, :data:`~sdekit.solvers.tableaus.DOPRI5`).

    Args:
        func: ``func(t, y, *args)`` with ``t`` ``(b,)``, ``y`` ``(b, *S)`` and each
            of ``args`` gathered to the same ``b`` active samples → ``(b, *S)``.
            Samples must not interact: ``func`` is called on subsets of the batch.
        y0: ``(B, *S)`` initial state.
        t0, t1: start and end times, scalars or ``(B,)``; ``t1 < t0`` integrates backwards.
        rtol, atol: relative and absolute tolerances (> 0).
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
    Returns:
        :class:`AdaptiveSolution` with the end state, per-sample counts and ``ys``.
    Raises:
        ValueError: on non-finite ``y0`` or one with no rows (``B = 0``), bad
            tolerances, ``max_steps`` or ``args``.
        TypeError: ``func`` not callable, ``y0`` not a floating tensor, a
            tolerance that is not a real number.
        ToleranceNotMetError: if some sample has not reached ``t1`` after
            ``max_steps`` attempts (the message says how many and where).
    """
    check_callable("func", func)
    check_tensor("y0", y0, min_dim=1)
    check_batch("y0", y0)
    check_finite("y0", y0)
    rtol, atol = check_positive("rtol", rtol), check_positive("atol", atol)
    max_steps = check_positive_int("max_steps", max_steps)
    tableau = _check_tableau(tableau)
    B = y0.shape[0]
    for i, a in enumerate(args):
        if a.shape[0] != B:
            raise ValueError(f"args[{i}] must have leading dimension B={B}, got {tuple(a.shape)}")
    if t_eval is None:
        t0 = torch.as_tensor(t0, dtype=y0.dtype, device=y0.device).expand(B)
        t1 = torch.as_tensor(t1, dtype=y0.dtype, device=y0.device).expand(B)
        t_eval = torch.stack([t0, t1], dim=1)
    fused = resolve_backend(backend, y0.device, y0.dtype) == "triton"
    return _integrate(func, y0, t_eval.to(y0.dtype), tableau, rtol, atol, max_steps, controller, args, fused)


def _combine(tableau, yi, ks, step, rtol, atol, fused):
    """New state and per-sample error norm of one step (fused Triton pass or PyTorch ops)."""
    if fused:
        y_new, err = rk_combine_triton(yi, ks, tableau.b, tableau.b_error, step, rtol, atol)
        return y_new, err.to(yi.dtype)
    y_new = rk_combine(yi, ks, step, tableau.b)
    error = expand_as_batch(step, yi) * weighted_sum(ks, tableau.b_error)
    return y_new, _rms(error / (atol + rtol * torch.maximum(yi.abs(), y_new.abs())))


def _rows(idx: torch.Tensor | None) -> Callable[[torch.Tensor], torch.Tensor]:
    """Selection of the rows ``idx`` of a batched tensor (every row, unchanged, when ``idx`` is ``None``)."""
    if idx is None:
        return lambda v: v
    return lambda v: v.index_select(0, idx)


def _integrate(func, y0, t_out, tableau, rtol, atol, max_steps, controller, args, fused=False) -> AdaptiveSolution:
    """The per-sample adaptive loop; ``t_out`` is ``(B, n)`` with ``n >= 2``."""
    B, n = t_out.shape
    dev = y0.device
    t0, t1 = t_out[:, 0].clone(), t_out[:, -1].clone()
    direction = torch.sign(t1 - t0)
    span = (t1 - t0).abs()
    counts = {k: torch.zeros(B, dtype=torch.int64, device=dev) for k in ("nfe", "steps", "rejected")}
    ys = y0.new_empty((n,) + tuple(y0.shape))
    ys[0] = y0
    k_first = func(t0, y0, *args)
    h = _initial_step(func, t0, y0, k_first, direction, span, tableau.error_order, rtol, atol, args)
    counts["nfe"] += 2
    t, y = t0, y0.clone()
    done = span == 0
    last_rejected = torch.zeros(B, dtype=torch.bool, device=dev)
    err_prev = torch.ones(B, dtype=y0.dtype, device=dev)
    next_out = torch.ones(B, dtype=torch.int64, device=dev)
    out_cols = torch.arange(n, device=dev)
    per_attempt = tableau.stages - 1 if tableau.fsal else tableau.stages

    for attempt in range(max_steps + 1):
        idx = torch.nonzero(~done).squeeze(1)  # the one host sync per step
        m = idx.numel()
        if m == 0:
            break
        if attempt == max_steps:
            raise ToleranceNotMetError(
                f"max_steps={max_steps} step attempts were not enough for {m} of {B} samples "
                f"to reach t1 with rtol={rtol}, atol={atol} (sample indices {idx[:8].tolist()}..., "
                f"at t={t[idx[:8]].tolist()}); raise max_steps or loosen the tolerances"
            )
        full = m == B
        sel = _rows(None if full else idx)
        ti, yi, hi, di, t1i = sel(t), sel(y), sel(h), sel(direction), sel(t1)
        argi = tuple(sel(a) for a in args)

        hit = hi >= (t1i - ti).abs()
        step = torch.where(hit, t1i - ti, hi * di)
        ks = rk_stages(func, tableau, ti, yi, step, sel(k_first) if tableau.fsal else None, argi)
        y_new, err = _combine(tableau, yi, ks, step, rtol, atol, fused)
        accept = torch.isfinite(err) & (err <= 1.0)
        h_next = step.abs() * controller.factor(err, sel(err_prev), tableau.error_order, sel(last_rejected))
        t_next = torch.where(accept, torch.where(hit, t1i, ti + step), ti)

        if n > 2:  # dense output at the interior times this step crossed
            ni, touts = sel(next_out), sel(t_out)
            crossed = (out_cols >= ni[:, None]) & (out_cols < n - 1) & accept[:, None]
            crossed &= di[:, None] * (touts - t_next[:, None]) <= 0
            pairs = torch.nonzero(crossed)
            if pairs.numel():
                r, j = pairs[:, 0], pairs[:, 1]
                theta = (touts[r, j] - ti[r]) / step[r]
                ys[j, idx[r]] = rk_interpolate(tableau, yi[r], [k[r] for k in ks], step[r], theta)
            next_out_i = ni + crossed.sum(1)

        acc = expand_as_batch(accept, yi)
        updates = {
            "t": t_next,
            "y": torch.where(acc, y_new, yi),
            "h": h_next,
            "err_prev": torch.where(accept, err, sel(err_prev)),
            "done": accept & hit,
            "last_rejected": ~accept,
        }
        if tableau.fsal:
            updates["k_first"] = torch.where(acc, ks[-1], ks[0])
        if n > 2:
            updates["next_out"] = next_out_i
        state = {"t": t, "y": y, "h": h, "err_prev": err_prev, "done": done, "last_rejected": last_rejected,
                 "k_first": k_first, "next_out": next_out}
        for key, value in updates.items():
            state[key] = value if full else state[key].index_copy(0, idx, value)
        t, y, h, err_prev = state["t"], state["y"], state["h"], state["err_prev"]
        done, last_rejected, k_first, next_out = state["done"], state["last_rejected"], state["k_first"], state["next_out"]
        counts["nfe"].index_add_(0, idx, torch.full_like(idx, per_attempt))
        counts["steps"].index_add_(0, idx, accept.long())
        counts["rejected"].index_add_(0, idx, (~accept).long())

    ys[-1] = y
    return AdaptiveSolution(y=y, ys=ys, **counts)
