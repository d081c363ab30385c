"""The adaptive Runge–Kutta loop for one whole system, with time and step control on the host in float64.

:func:`sdekit.odeint`'s default mode solves the state as one system
(torchdiffeq's contract).  There is no batch to keep apart, so this loop
holds time, step size, error norm and controller in Python floats (float64,
whatever the state's dtype, as torchdiffeq keeps time in float64), and
combines the stages with one fused ``y + (h aᵢⱼ) kⱼ`` per nonzero coefficient.
A step costs the stage evaluations, ``nnz(a) + nnz(b_error)`` tensor
operations and one host read (error norm, the new state's and the next
derivative's finiteness together).

Used for explicit embedded FSAL pairs without events, ``step_t``/``jump_t``,
callbacks or output times that need gradients (those go to the per-sample
engine, :mod:`sdekit.solvers.adaptive`, with a batch of one).  Method:
Hairer, Nørsett & Wanner, "Solving ODEs I", §II.4 (error control, eq. 4.11;
initial step, p. 169) and §II.6 (dense output); the PI controller of
:mod:`sdekit.solvers.controller`.
"""

from __future__ import annotations

import math
from typing import Callable

import torch

from .adaptive import AdaptiveSolution, StepOptions, _check_options, _check_tolerance, _failure_error
from .controller import StepController
from .rk import fsal_reuses_last_stage
from .tableaus import ButcherTableau


class _Stages:
    """The stage derivatives of one step and their weighted sums ``base + h Σⱼ wⱼ kⱼ``.

    Without an autograd graph the derivatives live in the rows of one ``(s, N)``
    buffer and each sum is one ``addmv`` on a view of it; with a graph (a state
    or ``func`` parameters that need gradients) they stay separate tensors,
    combined by one fused multiply-add per nonzero weight, so that nothing is
    overwritten that backward still needs.
    """

    def __init__(self, tableau: ButcherTableau, k0: torch.Tensor, graph: bool):
        s = tableau.stages
        self.graph = graph
        self.ks: list = [k0]
        assert tableau.b_error is not None  # an embedded pair (see supports)
        if graph:
            self.row_terms = [_terms(r) for r in tableau.a]
            self.b_terms, self.e_terms = _terms(tableau.b), _terms(tableau.b_error)
            return
        self.buf = k0.new_empty((s,) + tuple(k0.shape))
        self.rows = list(self.buf.unbind(0))  # row views, made once
        self.rows[0].copy_(k0)
        self.count = 1
        self.views = [self.buf[:i].T for i in range(s + 1)]  # (N, i)
        vec = lambda w: torch.tensor(w, dtype=k0.dtype, device=k0.device)
        self.row_vecs = [vec(r) for r in tableau.a]
        self.b_vec, self.e_vec = vec(tableau.b), vec(tableau.b_error)
        self.zero = torch.zeros_like(k0)

    @property
    def last(self) -> torch.Tensor:
        """The last stage derivative stored."""
        return self.ks[-1] if self.graph else self.rows[self.count - 1]

    def start(self) -> None:
        """Begin an attempt from the current first derivative."""
        if self.graph:
            self.ks = self.ks[:1]
        else:
            self.count = 1

    def accept(self) -> None:
        """The step was accepted: its last stage is the next step's first derivative (FSAL)."""
        if self.graph:
            self.ks = [self.ks[-1]]
        else:
            self.rows[0].copy_(self.rows[-1])

    def add(self, k: torch.Tensor) -> None:
        """Store the next stage derivative."""
        if self.graph:
            self.ks.append(k)
        else:
            self.rows[self.count].copy_(k)
            self.count += 1

    def stage_state(self, y, i: int, h: float) -> torch.Tensor:
        """``y + h Σⱼ aᵢⱼ kⱼ``, the state of stage ``i``."""
        if self.graph:
            return _combine(y, self.ks, self.row_terms[i], h)
        return torch.addmv(y, self.views[i], self.row_vecs[i], alpha=h)

    def new_state(self, y, h: float) -> torch.Tensor:
        """``y + h Σⱼ bⱼ kⱼ``."""
        if self.graph:
            return _combine(y, self.ks, self.b_terms, h)
        return torch.addmv(y, self.views[-1], self.b_vec, alpha=h)

    def error(self, h: float) -> torch.Tensor:
        """``h Σⱼ eⱼ kⱼ`` with ``e = b − b̂`` (outside any autograd graph)."""
        if self.graph:
            return _combine(None, [k.detach() for k in self.ks], self.e_terms, h)
        return torch.addmv(self.zero, self.views[-1], self.e_vec, beta=0, alpha=h)

    def dense(self, y, weights: list, h: float) -> torch.Tensor:
        """``y + h Σⱼ bⱼ(θ) kⱼ`` for the continuous extension's weights ``bⱼ(θ)`` (one per stage)."""
        if self.graph:
            return _combine(y, self.ks, _terms(weights), h)
        return torch.addmv(y, self.views[-1], self.b_vec.new_tensor(weights), alpha=h)


def _terms(weights) -> tuple:
    """The nonzero ``(j, wⱼ)`` of a weight row."""
    return tuple((j, float(w)) for j, w in enumerate(weights) if w != 0.0)


def _combine(base: torch.Tensor | None, ks, terms, h: float) -> torch.Tensor:
    """``base + Σⱼ (h wⱼ) kⱼ`` (``base`` ``None``: the sum alone), one fused multiply-add per term."""
    out = base
    for j, w in terms:
        out = ks[j] * (h * w) if out is None else torch.add(out, ks[j], alpha=h * w)
    assert out is not None
    return out


def supports(tableau: ButcherTableau, opts: StepOptions) -> bool:
    """Whether :func:`solve_whole` runs this method with these options (else use the per-sample engine)."""
    return bool(tableau.adaptive and tableau.fsal and tableau.dense is not None and opts.callbacks is None
                and not opts.step_t and not opts.jump_t)


def solve_whole(
    rhs: Callable,
    y0: torch.Tensor,
    t_out: list,
    tableau: ButcherTableau,
    rtol,
    atol,
    max_steps: int,
    controller: StepController,
    opts: StepOptions,
    norm: Callable | None = None,
) -> AdaptiveSolution:
    """Integrate one system ``dy/dt = rhs(t, y)`` over the output times ``t_out``, forwards or backwards.

    Args:
        rhs: ``rhs(t, y)`` with ``t`` a float and ``y`` ``(N,)`` → ``(N,)``.
        y0: ``(N,)`` state at ``t_out[0]``.
        t_out: ``n >= 2`` strictly monotone output times (floats).
        tableau: an embedded FSAL pair with dense output (see :func:`supports`).
        rtol, atol: floats or ``(N,)`` tensors in the state's real dtype.
        max_steps: bound on step attempts.
        controller: the step-size controller.
        opts: ``first_step``, ``min_step``, ``max_step``.
        norm: ``norm(v) -> 0-d`` of the scaled error ``(N,)``; ``None``: RMS.
    Returns:
        :class:`~sdekit.solvers.adaptive.AdaptiveSolution` with a batch of one: ``y`` ``(1, N)``,
        ``ys`` ``(n, 1, N)``, counts ``(1,)``.
    Raises:
        ValueError: tolerances not > 0, bad step options (as :func:`~sdekit.solvers.adaptive.solve_adaptive`).
        ToleranceNotMetError: a non-finite derivative, a collapsed step size or
            ``max_steps`` attempts (the message and partial solution of the per-sample engine).
    """
    rtol, atol = _check_tolerance("rtol", rtol), _check_tolerance("atol", atol)
    opts = _check_options(opts)
    real = y0.real.dtype if y0.is_complex() else y0.dtype
    # the default RMS: the 2-norm on the device, the 1/√N on the host
    norm_scale = 1.0 / math.sqrt(y0.numel()) if norm is None else 1.0
    norm = torch.linalg.vector_norm if norm is None else norm

    reuse_last = fsal_reuses_last_stage(tableau)
    dense = [tuple(map(float, row)) for row in tableau.dense or ()]
    # a non-finite last stage makes the error estimate non-finite (the step is rejected) unless its weight is 0
    check_last = tableau.b_error is not None and tableau.b_error[-1] == 0
    c = [float(v) for v in tableau.c]
    t0, t1 = float(t_out[0]), float(t_out[-1])
    span = abs(t1 - t0)
    d = 1.0 if t1 > t0 else -1.0
    eps = torch.finfo(torch.float64).eps
    floor_span = eps * eps * span
    per_attempt = tableau.stages - 1
    clamp_h = opts.min_step > 0 or opts.max_step < math.inf

    k0 = rhs(t0, y0)
    nfe = 1
    bad = not bool(torch.isfinite(k0).all())
    if opts.first_step is not None:
        h = min(float(opts.first_step), span)
    elif bad:
        h = math.nan
    else:
        h = _initial_step(rhs, t0, y0, k0, d, span, tableau.error_order, rtol, atol, norm, norm_scale)
        nfe += 1
    stages = _Stages(tableau, k0, torch.is_grad_enabled() and (k0.requires_grad or y0.requires_grad))
    outs = [y0]
    next_out = 1
    t, y = t0, y0
    y_abs = y0.detach().abs()
    steps = rejected = attempt = 0
    err_prev, last_rejected, last_h = 1.0, False, h
    failure = 1 if bad else 0
    while failure == 0:
        if attempt == max_steps:
            failure = 3
            break
        attempt += 1
        hi = min(max(h, opts.min_step), opts.max_step) if clamp_h else h
        dist = t1 - t
        hit = hi >= abs(dist)
        step = dist if hit else d * hi
        stages.start()
        yi = y
        for i in range(1, tableau.stages):
            yi = stages.stage_state(y, i, step)
            stages.add(rhs(t1 if hit and c[i] == 1.0 else t + c[i] * step, yi))
        # the last stage's state is the new solution (bitwise the same sum), except where backward
        # would then sum the gradients in another order
        y_new = yi if reuse_last and not stages.graph else stages.new_state(y, step)
        # step-size control is not differentiated (torchdiffeq, Chen et al. 2018)
        y_new_abs = y_new.detach().abs()
        scale = torch.maximum(y_abs, y_new_abs) * rtol + atol  # finite iff y_new is
        checks = [norm(stages.error(step) / scale).reshape(()).to(real), scale.amax()]
        if check_last:
            checks.append(stages.last.detach().abs().amax().to(real))
        err, scale_max, *k_max = torch.stack(checks).tolist()
        err *= norm_scale
        nfe += per_attempt
        finite_new = math.isfinite(scale_max)
        astep = abs(step)
        accept = (math.isfinite(err) and err <= 1.0 or opts.min_step > 0 and astep <= opts.min_step) and finite_new
        h_next = astep * controller.host_factor(err, err_prev, tableau.error_order, last_rejected)
        if clamp_h:
            h_next = min(max(h_next, opts.min_step), opts.max_step)
        last_h = astep
        if accept:
            t_next = t1 if hit else t + step
            while next_out < len(t_out) - 1 and d * (t_out[next_out] - t_next) <= 0:
                theta = (t_out[next_out] - t) / step
                weights = [sum(w * theta ** (m + 1) for m, w in enumerate(row)) for row in dense]
                outs.append(stages.dense(y, weights, step))
                next_out += 1
            t, y, y_abs, err_prev = t_next, y_new, y_new_abs, err
            stages.accept()
            steps += 1
            if hit:
                break
            if k_max and not math.isfinite(k_max[0]):
                failure = 1
        else:
            rejected += 1
        h, last_rejected = h_next, not accept
        if failure == 0 and h_next <= max(0.25 * eps * abs(t), floor_span):
            failure = 2
    return _solution(outs, y, len(t_out), nfe, steps, rejected, failure, t, last_h, max_steps, rtol, atol)


def _initial_step(f, t0: float, y0, f0, d: float, span: float, order: int, rtol, atol, norm, norm_scale) -> float:
    """The automatic first step (Hairer, Nørsett & Wanner, §II.4, p. 169); costs one evaluation."""
    with torch.no_grad():
        y0, f0 = y0.detach(), f0.detach()
        scale = y0.abs() * rtol + atol
        d0, d1 = (v * norm_scale for v in torch.stack([norm(y0 / scale).reshape(()),
                                                        norm(f0 / scale).reshape(())]).tolist())
        h0 = 1e-6 if d0 < 1e-5 or d1 < 1e-5 else 0.01 * d0 / d1
        h0 = min(h0, span)
        f1 = f(t0 + d * h0, torch.add(y0, f0, alpha=d * h0))
        d2 = float(norm((f1 - f0) / scale)) * norm_scale / h0
    dmax = max(d1, d2)
    h1 = max(h0 * 1e-3, 1e-6) if dmax <= 1e-15 else math.exp(math.log(0.01 / max(dmax, 1e-300)) / (order + 1))
    return min(100 * h0, h1, span)


def _solution(outs, y, n, nfe, steps, rejected, failure, t, last_h, max_steps, rtol, atol) -> AdaptiveSolution:
    """The per-sample engine's result for a batch of one (and its error when the solve failed)."""
    dev = y.device
    # the last output is the end time, which a failed solve did not reach
    outs = outs + ([torch.full_like(y, math.nan)] * (n - len(outs)) if failure else [y])
    ys = torch.stack(outs).unsqueeze(1)

    def count(v):
        return torch.tensor([v], dtype=torch.int64, device=dev)

    sol = AdaptiveSolution(y=y.unsqueeze(0), ys=ys, event_t=None, nfe=count(nfe), steps=count(steps),
                           rejected=count(rejected), failure=torch.tensor([failure], dtype=torch.int8, device=dev))
    if failure:
        raise _failure_error(sol, torch.zeros(1, dtype=torch.int64, device=dev), torch.tensor([t], dtype=torch.float64),
                             torch.tensor([last_h], dtype=torch.float64), max_steps, rtol, atol, 1)
    return sol
