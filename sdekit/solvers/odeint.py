"""``sdekit.odeint``: torchdiffeq-style ODE solving with per-sample adaptive steps."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .._checks import (
    check_batch,
    check_callable,
    check_choice,
    check_finite,
    check_model_output,
    check_positive,
    check_positive_int,
    check_tensor,
)
from .adaptive import solve_adaptive
from .controller import PI_CONTROLLER, StepController
from .fixed import solve_fixed
from .tableaus import TABLEAUS

_OPTION_KEYS = {"step_size", "max_num_steps"}


@dataclass
class ODESolution:
    """Result of :func:`odeint` with ``return_solution=True``.

    Attributes:
        ys: ``(len(t), *y0.shape)`` states at the requested times.
        nfe: ``(B,)`` int64 function evaluations per sample (``(1,)`` when ``per_sample=False``).
        steps: ``(B,)`` int64 accepted steps per sample (fixed-step: steps per sample).
        rejected: ``(B,)`` int64 rejected steps per sample (0 for fixed-step methods).
    """

    ys: torch.Tensor
    nfe: torch.Tensor
    steps: torch.Tensor
    rejected: torch.Tensor


def _check_times(t, device, dtype):
    t = torch.as_tensor(t)
    if t.dim() != 1 or t.numel() < 1:
        raise ValueError(f"t must be a 1-D tensor of output times, got shape {tuple(t.shape)}")
    t = t.to(device=device, dtype=torch.float64)
    if not bool(torch.isfinite(t).all()):
        raise ValueError("t must be finite")
    if t.numel() > 1:
        d = t[1:] - t[:-1]
        if not (bool((d > 0).all()) or bool((d < 0).all())):
            raise ValueError("t must be strictly increasing or strictly decreasing")
    return t


def odeint(
    func,
    y0: torch.Tensor,
    t,
    *,
    method: str = "dopri5",
    rtol: float = 1e-7,
    atol: float = 1e-9,
    options: dict | None = None,
    step_size: float | None = None,
    max_steps: int = 10_000,
    per_sample: bool | None = None,
    controller: StepController = PI_CONTROLLER,
    args: tuple = (),
    return_solution: bool = False,
):
    """Solve ``dy/dt = func(t, y)`` and return ``y`` at the times ``t`` (torchdiffeq's ``odeint`` call).

    Methods (Butcher tableaus in :mod:`sdekit.solvers.tableaus`, one generic
    stepper): fixed-step ``euler`` (order 1), ``midpoint`` (2), ``heun`` (2),
    ``rk4`` (4); adaptive ``bosh3`` (3(2)), ``dopri5`` (5(4), default) and
    ``tsit5`` (5(4)) with a PI step-size controller and dense output at the
    requested times (Hairer, Nørsett & Wanner, "Solving ODEs I", §II.4–II.6).

    **Per-sample steps** (``per_sample=True``, the default when ``y0`` has a
    batch dimension, ``y0.dim() >= 2``): every sample ``y0[b]`` is its own
    ODE with its own step sizes and error norm, finished samples stop costing
    evaluations, and ``func`` receives ``t`` of shape ``(b, 1, …, 1)`` (one
    time per row, broadcastable against ``y``) and ``y`` of shape ``(b, *S)``
    for the ``b`` samples still active.  ``func`` must therefore treat rows
    independently.  With ``per_sample=False`` (the default for 1-D ``y0``)
    the whole tensor is one system as in torchdiffeq: ``t`` is a 0-d tensor,
    ``y`` has ``y0``'s shape, and one RMS error norm covers all elements.

    Args:
        func: ``func(t, y, *args) -> dy/dt`` of ``y``'s shape.
        y0: initial state at ``t[0]``, floating tensor.
        t: 1-D strictly monotone output times (increasing or decreasing).
        method: one of ``euler, midpoint, heun, rk4, bosh3, dopri5, tsit5``.
        rtol, atol: tolerances of the adaptive methods (torchdiffeq's defaults 1e-7, 1e-9).
        options: torchdiffeq-style dict, keys ``step_size`` and ``max_num_steps``.
        step_size: step of the fixed-step methods (required for them).
        max_steps: bound on step attempts per sample (adaptive methods).
        per_sample: see above.
        controller: step-size controller (:data:`~sdekit.solvers.controller.I_CONTROLLER` for the classical one).
        args: tensors with leading dimension ``B`` passed on to ``func`` (per-sample mode).
        return_solution: return an :class:`ODESolution` with per-sample NFE instead of ``ys``.
    Returns:
        ``(len(t), *y0.shape)`` tensor, or an :class:`ODESolution`.
    Raises:
        ValueError: unknown ``method`` or ``options`` key, missing or non-positive
            ``step_size`` for a fixed-step method, bad tolerances, non-finite ``y0``,
            ``t`` not 1-D, not finite or not strictly monotone, ``func`` returning
            a wrong shape, a per-sample ``y0`` with no rows (``B = 0``), ``max_steps``
            not an integer >= 1.
        TypeError: ``func`` not callable, ``y0`` not a floating tensor.
        ToleranceNotMetError: an adaptive method needs more than ``max_steps`` attempts.
    """
    check_callable("func", func)
    check_tensor("y0", y0)
    check_finite("y0", y0)
    check_choice("method", method, TABLEAUS)
    tableau = TABLEAUS[method]
    options = dict(options or {})
    unknown = set(options) - _OPTION_KEYS
    if unknown:
        raise ValueError(f"options has unknown key(s) {sorted(unknown)}; supported: {sorted(_OPTION_KEYS)}")
    step_size = options.pop("step_size", step_size)
    max_steps = check_positive_int("max_steps", options.pop("max_num_steps", max_steps))
    times = _check_times(t, y0.device, y0.dtype)
    if per_sample is None:
        per_sample = y0.dim() >= 2
    if per_sample and y0.dim() < 1:
        raise ValueError("per_sample=True needs y0 with a batch dimension (B, *S)")
    if per_sample:
        check_batch("y0", y0)

    if per_sample:
        batched, shape = y0, None

        def call(tt, y, *a):
            tb = tt.reshape(tt.shape + (1,) * (y.dim() - 1))
            return check_model_output("func", func(tb, y, *a), y)
    else:
        batched, shape = y0.unsqueeze(0), y0.shape

        def call(tt, y, *a):
            return check_model_output("func", func(tt[0], y[0], *a), y[0]).unsqueeze(0)

    B = batched.shape[0]
    zeros = torch.zeros(B, dtype=torch.int64, device=y0.device)
    if times.numel() == 1:
        ys, nfe, steps, rejected = batched.unsqueeze(0), zeros, zeros, zeros
    elif tableau.adaptive:
        rtol, atol = check_positive("rtol", rtol), check_positive("atol", atol)
        t_out = times.to(y0.dtype).unsqueeze(0).expand(B, -1)
        sol = solve_adaptive(call, batched, None, None, rtol=rtol, atol=atol, max_steps=max_steps,
                             tableau=tableau, controller=controller, args=args, t_eval=t_out)
        assert sol.ys is not None  # solve_adaptive returns the states at every t_eval
        ys, nfe, steps, rejected = sol.ys, sol.nfe, sol.steps, sol.rejected
    else:
        if step_size is None:
            raise ValueError(f"method {method!r} is fixed-step: pass step_size (or options={{'step_size': ...}})")
        step_size = check_positive("step_size", step_size)
        ys, n = solve_fixed(call, batched, times.tolist(), tableau, step_size, args)
        nfe, steps, rejected = zeros + n, zeros + n // tableau.stages, zeros
    if shape is not None:
        ys = ys.squeeze(1)
    if return_solution:
        return ODESolution(ys=ys, nfe=nfe, steps=steps, rejected=rejected)
    return ys
