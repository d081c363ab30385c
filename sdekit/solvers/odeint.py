"""``sdekit.odeint``: torchdiffeq's ``odeint`` contract, plus per-sample adaptive steps as an opt-in."""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Callable

import torch

from .._checks import check_batch, check_callable, check_finite, check_model_output, check_positive, check_positive_int
from .adaptive import StepOptions, solve_adaptive
from .adaptive_whole import solve_whole, supports
from .controller import PI_CONTROLLER, StepController
from .fixed import solve_fixed
from .implicit import IMPLICIT_METHODS
from .state import FlatState
from .tableaus import TABLEAUS
from .whole_state import WholeState, option_times

#: torchdiffeq's other names for methods.
METHOD_ALIASES = {"heun2": "heun", "fixed_adams": "implicit_adams"}
#: Multistep methods on a fixed grid (:mod:`sdekit.solvers.adams`).
ADAMS_METHODS = ("explicit_adams", "implicit_adams")
#: Every ``method`` odeint accepts.
ODEINT_METHODS = tuple(TABLEAUS) + ADAMS_METHODS + tuple(IMPLICIT_METHODS) + ("scipy_solver",) + tuple(METHOD_ALIASES)

#: The former name, kept so that programs importing it keep working.
METHODS = ODEINT_METHODS

_ADAPTIVE_OPTIONS = {"first_step", "min_step", "max_step", "step_t", "jump_t", "norm", "max_num_steps"}
_FIXED_OPTIONS = {"step_size", "grid_constructor", "perturb", "interp", "max_num_steps"}
_ADAMS_OPTIONS = _FIXED_OPTIONS | {"max_iters", "max_order"}
_IMPLICIT_OPTIONS = _FIXED_OPTIONS | {"max_iters"}
_SCIPY_OPTIONS = {"solver", "min_step", "max_step", "first_step"}
HALF = (torch.float16, torch.bfloat16)


@dataclass
class ODESolution:
    """Result of :func:`odeint` with ``return_solution=True``.

    Attributes:
        ys: ``(len(t), *y0.shape)`` states at the requested times (a tuple for a tuple state).
        nfe: ``(B,)`` int64 function evaluations per sample (``(1,)`` for one whole system).
        steps: ``(B,)`` int64 accepted steps per sample.
        rejected: ``(B,)`` int64 rejected steps per sample (0 for fixed-step methods).
        event_t: event time(s) when ``event_fn`` was given: 0-d for one system, ``(B,)`` per sample.
    """

    ys: torch.Tensor | tuple
    nfe: torch.Tensor
    steps: torch.Tensor
    rejected: torch.Tensor
    event_t: torch.Tensor | None = None


def _check_times(t, y0: torch.Tensor, event: bool) -> torch.Tensor:
    """``t`` as a 1-D strictly monotone tensor in the state's real dtype, keeping its autograd graph."""
    if isinstance(t, torch.Tensor):
        if not t.is_floating_point():
            raise TypeError(f"t must be a floating point tensor, got dtype {t.dtype}")
    else:
        t = torch.as_tensor(t, dtype=torch.float64)
    if t.dim() != 1 or t.numel() < 1:
        raise ValueError(f"t must be a 1-D tensor of output times, got shape {tuple(t.shape)}")
    real = y0.real.dtype if y0.is_complex() else y0.dtype
    t = t.to(device=y0.device, dtype=real)
    if not bool(torch.isfinite(t).all()):
        raise ValueError("t must be finite")
    if event and t.numel() != 2:
        raise ValueError(f"with event_fn, t must be [t0, t1] (t1 only gives the direction), got {t.numel()} times")
    if t.numel() > 1:
        d = t[1:] - t[:-1]
        if not (bool((d > 0).all()) or bool((d < 0).all())):
            raise ValueError("t must be strictly increasing or strictly decreasing")
    return t


def _resolve_method(method) -> str:
    if method is None:
        return "dopri5"
    if not isinstance(method, str) or METHOD_ALIASES.get(method, method) not in ODEINT_METHODS:
        raise ValueError(f"method must be one of {sorted(ODEINT_METHODS)}, got {method!r}")
    return METHOD_ALIASES.get(method, method)


def _warn_unused(options: dict, known: set, method: str) -> None:
    unused = sorted(set(options) - known)
    if unused:
        warnings.warn(f"options {unused} are not used by method {method!r} and are ignored "
                      f"(it uses {sorted(known)})", stacklevel=3)


def odeint(
    func,
    y0,
    t,
    rtol=1e-7,
    atol=1e-9,
    method: str | None = None,
    options: dict | None = None,
    event_fn: Callable | None = None,
    *,
    per_sample: bool = False,
    args: tuple = (),
    step_size: float | None = None,
    max_steps: int | None = None,
    controller: StepController = PI_CONTROLLER,
    return_solution: bool = False,
):
    """Solve ``dy/dt = func(t, y)`` and return ``y`` at the times ``t`` — torchdiffeq's ``odeint``.

    **Default: torchdiffeq's contract.**  The whole state is one system:
    ``func(t, y)`` gets a 0-d ``t`` and ``y`` of ``y0``'s structure (a tensor
    of any shape, 0-d included, or a tuple of tensors) and returns the same
    structure; one error norm covers the state (RMS; the largest per-tensor
    RMS for a tuple, or ``options["norm"]``).  ``t`` may increase or decrease.

    **Per-sample steps** (``per_sample=True``, sdekit's opt-in): every row
    ``y0[b]`` of a ``(B, *S)`` state is its own ODE with its own step sizes,
    error norm and (with ``event_fn``) stopping time; finished rows stop
    costing evaluations.  ``func(t, y, *args)`` then gets ``t`` of shape
    ``(b, 1, …, 1)`` and the ``b`` rows still active, with each of ``args``
    (``(B, …)`` tensors) gathered to the same rows — pass per-row tensors
    (parameters, conditioning) there, never by closure.

    Methods: adaptive ``dopri5`` (default; Dormand & Prince 1980), ``tsit5``
    (Tsitouras 2011), ``bosh3`` (Bogacki & Shampine 1989) and every other
    embedded pair in :data:`~sdekit.solvers.tableaus.TABLEAUS`, with a PI
    step-size controller and dense output (Hairer, Nørsett & Wanner,
    "Solving ODEs I", §II.4–II.6); fixed-grid ``euler``, ``midpoint``,
    ``heun`` (``heun2``), ``rk4`` and the other explicit tableaus, Adams
    ``explicit_adams`` / ``implicit_adams`` (``fixed_adams``; Hairer et al.
    §III.1); ``scipy_solver`` (``scipy.integrate.solve_ivp``, no autograd).

    Options (torchdiffeq's keys).  Adaptive: ``first_step``, ``min_step``,
    ``max_step``, ``step_t`` (times to step onto), ``jump_t`` (discontinuities
    of ``func``), ``norm`` (``norm(state) -> scalar``), ``max_num_steps``.
    Fixed grid: ``step_size`` (default: step on the ``t`` grid),
    ``grid_constructor(func, y0, t)``, ``perturb``, ``interp`` (``"linear"`` or
    ``"cubic"``); Adams also ``max_iters``, ``max_order``.  scipy:
    ``solver`` (default ``"LSODA"``), ``min_step``, ``max_step``.  Options a
    method does not use are ignored with a warning, as in torchdiffeq.
    Callbacks ``func.callback_step(t0, y0, dt)``, ``callback_accept_step``,
    ``callback_reject_step`` are called as torchdiffeq calls them.

    Args:
        func: ``func(t, y)`` (``func(t, y, *args)`` per sample) → ``dy/dt``.
        y0: initial state at ``t[0]``: a floating tensor or a tuple of them;
            ``(B, *S)`` with ``per_sample=True``.
        t: 1-D strictly monotone output times (with ``event_fn``: ``[t0, t1]``,
            where ``t1`` only gives the direction).  Gradients flow to ``t``.
        rtol, atol: tolerances of the adaptive methods (torchdiffeq's 1e-7,
            1e-9): numbers, tensors broadcastable to the state, or one per
            tensor of a tuple state.
        method: see above; ``None`` → ``dopri5``.
        options: dict, see above.
        event_fn: ``event_fn(t, y) -> tensor``: the solve ends where it changes
            sign (any component); returns ``(event_t, solution)`` with
            ``solution`` ``(2, …)`` = ``[y0, y(event_t)]``.  Per sample:
            ``event_fn(t, y, *args) -> (b,)`` and each row stops at its own
            root; ``event_t`` is then ``(B,)``.
        per_sample: see above.
        args: per-sample tensors for ``func`` (per-sample mode only).
        step_size: shorthand for ``options["step_size"]``.
        max_steps: shorthand for ``options["max_num_steps"]`` (default: unbounded
            as torchdiffeq for one system, 10 000 per sample).
        controller: step-size controller of the adaptive methods.
        return_solution: return an :class:`ODESolution` with NFE and step counts.
    Returns:
        ``(len(t), *y0.shape)`` states (a tuple of such for a tuple state), or
        ``(event_t, solution)`` with ``event_fn``, or an :class:`ODESolution`.
    Raises:
        ValueError: unknown ``method``, bad tolerances, non-finite ``y0``, ``t``
            not 1-D, finite and strictly monotone, ``func`` returning a wrong
            shape, ``args`` without ``per_sample=True``, a per-sample ``y0``
            without rows, bad option values.
        TypeError: ``func`` not callable, ``y0`` not a floating tensor or tuple of them.
        RuntimeError: in per-sample mode, ``func`` failing on a subset of the
            rows (it must treat rows independently; the message says so).
        ToleranceNotMetError: an adaptive solve that cannot finish (non-finite
            derivative, step-size collapse, ``max_num_steps``); per sample, the
            other samples' results ride on the error.
    """
    check_callable("func", func)
    method = _resolve_method(method)
    options = dict(options or {})
    if step_size is not None:
        options.setdefault("step_size", step_size)
    if max_steps is not None:
        options.setdefault("max_num_steps", check_positive_int("max_steps", max_steps))
    if per_sample:
        return _odeint_per_sample(func, y0, t, rtol, atol, method, options, event_fn, args, controller,
                                  return_solution)
    if args:
        raise ValueError("args= carries per-row tensors through the per-sample active set: pass per_sample=True "
                         "(with per_sample=False, close over the tensors in func)")
    return _odeint_whole(func, y0, t, rtol, atol, method, options, event_fn, controller, return_solution)


def _odeint_whole(func, y0, t, rtol, atol, method, options, event_fn, controller, return_solution):
    flat_state, y = FlatState.of(y0)
    if y.numel() == 0:
        raise ValueError(f"y0 has no elements (shapes {[tuple(s) for s in flat_state.shapes]}): nothing to integrate")
    check_finite("y0", y)
    times = _check_times(t, y, event_fn is not None)
    sign = -1.0 if times.numel() > 1 and bool(times[0] > times[1]) else 1.0
    ws = WholeState(flat_state, sign, func, y.dtype)
    s = times * sign
    rtol_f, atol_f = flat_state.tolerance("rtol", rtol), flat_state.tolerance("atol", atol)
    one = torch.ones(1, dtype=torch.int64, device=y.device)
    event_t = None
    if times.numel() == 1 and event_fn is None:
        ys, nfe, steps, rejected = y.unsqueeze(0), 0 * one, 0 * one, 0 * one
    elif method == "scipy_solver":
        ys, nfe, steps, rejected = _scipy(ws, y, s, rtol_f, atol_f, options, event_fn)
    elif method in ADAMS_METHODS or method in IMPLICIT_METHODS or not TABLEAUS[method].adaptive:
        ys, nfe, steps, event_t = _fixed_grid(ws, y, s, method, rtol_f, atol_f, options, event_fn)
        rejected = 0 * one
    else:
        t64 = torch.as_tensor(t).detach().to(device="cpu", dtype=torch.float64)
        sol = _adaptive_whole(ws, y, s, t64, TABLEAUS[method], rtol_f, atol_f, options, event_fn, controller)
        assert sol.ys is not None
        ys, nfe, steps, rejected = sol.ys[:, 0], sol.nfe, sol.steps, sol.rejected
        if sol.event_t is not None:
            event_t = sol.event_t[0]
    if event_t is not None:
        ys = torch.stack([y, ys[-1]])
        event_t = ws.time(event_t)
    out = flat_state.unflatten(ys, (ys.shape[0],))
    if return_solution:
        return ODESolution(ys=out, nfe=torch.as_tensor(nfe).reshape(1).to(one), steps=torch.as_tensor(steps).reshape(1).to(one),
                           rejected=torch.as_tensor(rejected).reshape(1).to(one), event_t=event_t)
    return out if event_fn is None else (event_t, out)


def _tol(tol, like: torch.Tensor):
    return tol.to(device=like.device, dtype=like.real.dtype if like.is_complex() else like.dtype) \
        if isinstance(tol, torch.Tensor) else tol


def _adaptive_whole(ws: WholeState, y, s, s_host, tableau, rtol, atol, options, event_fn, controller):
    """The adaptive solve of one system; ``s_host``: the user's times in float64 (stepped in float64 there)."""
    _warn_unused(options, _ADAPTIVE_OPTIONS, tableau.name)
    opts = StepOptions(
        first_step=options.get("first_step"),
        min_step=float(options.get("min_step", 0.0)),
        max_step=float(options.get("max_step", math.inf)),
        step_t=ws.times(options.get("step_t"), "step_t"),
        jump_t=ws.times(options.get("jump_t"), "jump_t"),
        norm=ws.norm(options.get("norm")),
        callbacks=ws.callbacks(),
    )
    max_steps = check_positive_int("options['max_num_steps']", options.get("max_num_steps", 2**31 - 1))
    if opts.first_step is not None:
        opts = StepOptions(**{**opts.__dict__, "first_step": float(opts.first_step)})
    if event_fn is None and supports(tableau, opts) and not s.requires_grad and y.dtype not in HALF:
        real = y.real.dtype if y.is_complex() else y.dtype
        return solve_whole(ws.host_rhs(real, y.device), y, s_host.tolist(), tableau, _tol(rtol, y), _tol(atol, y), max_steps,
                           controller, opts, ws.flat_norm(options.get("norm")))
    y0 = y.unsqueeze(0)
    if event_fn is not None:
        t_eval = torch.stack([s[0], s[0] + math.inf]).unsqueeze(0)
        event = ws.event(event_fn, s[0], y)
        ev = (lambda tt, yy: event(tt[0], yy[0]).reshape(1))
    else:
        t_eval, ev = s.unsqueeze(0), None
    return solve_adaptive(ws.batched_rhs, y0, None, None, rtol=_tol(rtol, y), atol=_tol(atol, y), max_steps=max_steps,
                          tableau=tableau, controller=controller, t_eval=t_eval, backend="torch", options=opts,
                          event_fn=ev)


def _fixed_grid(ws: WholeState, y, s, method, rtol, atol, options, event_fn):
    from .fixed_grid import solve_fixed_grid

    known = (_ADAMS_OPTIONS if method in ADAMS_METHODS else _IMPLICIT_OPTIONS if method in IMPLICIT_METHODS
             else _FIXED_OPTIONS)
    _warn_unused(options, known, method)
    ws.warn_unsupported_callbacks(method, ("callback_step",))
    cb = getattr(ws.func, "callback_step", None)
    callback = None if not callable(cb) else (lambda t0, y0, dt: cb(ws.time(t0), ws.flat.unflatten(y0), dt))
    step_size = options.get("step_size")
    if step_size is not None:
        step_size = check_positive("options['step_size']", float(step_size))
    extra = {k: options[k] for k in ("max_iters", "max_order") if k in options}
    res = solve_fixed_grid(
        ws.rhs, y, s, method if method in ADAMS_METHODS or method in IMPLICIT_METHODS else TABLEAUS[method],
        step_size=step_size, grid_constructor=ws.grid_constructor(options.get("grid_constructor")),
        perturb=bool(options.get("perturb", False)), interp=options.get("interp", "linear"),
        event_fn=None if event_fn is None else ws.event(event_fn, s[0], y), callback_step=callback,
        rtol=rtol, atol=atol, max_num_steps=options.get("max_num_steps"), **extra,
    )
    return res.ys, res.nfe, res.steps, res.event_t


def _scipy(ws: WholeState, y, s, rtol, atol, options, event_fn):
    from .scipy_solver import solve_scipy

    if event_fn is not None:
        raise ValueError("method 'scipy_solver' does not support event_fn (as in torchdiffeq); use an sdekit method")
    ws.warn_unsupported_callbacks("scipy_solver", ())
    if isinstance(rtol, torch.Tensor):  # scipy's solve_ivp takes one rtol
        raise ValueError("method 'scipy_solver' takes a scalar rtol, got one per component")  # noqa: TRY004
    ys, nfe = solve_scipy(ws.rhs, y, s, rtol=rtol, atol=atol, **options)
    one = torch.ones(1, dtype=torch.int64, device=y.device)
    return ys, nfe * one, 0 * one, 0 * one


def _odeint_per_sample(func, y0, t, rtol, atol, method, options, event_fn, args, controller, return_solution):
    if not isinstance(y0, torch.Tensor):
        raise TypeError(f"per_sample=True needs y0 as one tensor (B, *S), got {type(y0).__name__}")
    if y0.dim() < 1:
        raise ValueError("per_sample=True needs y0 with a batch dimension (B, *S), got a 0-d tensor")
    _, flat = FlatState.of(y0)
    check_finite("y0", flat)
    check_batch("y0", y0)
    if method in ADAMS_METHODS or method in IMPLICIT_METHODS or method == "scipy_solver":
        raise ValueError(f"method {method!r} solves one whole system: use per_sample=False")
    tableau = TABLEAUS[method]
    times = _check_times(t, y0, event_fn is not None)
    B = y0.shape[0]
    for i, a in enumerate(args):
        if not isinstance(a, torch.Tensor) or a.dim() < 1 or a.shape[0] != B:
            raise ValueError(f"args[{i}] must be a tensor with leading dimension B={B}")

    def call(tt, y, *a):
        tb = tt.reshape(tt.shape + (1,) * (y.dim() - 1))
        try:
            out = func(tb, y, *a)
        except (RuntimeError, ValueError, IndexError) as err:
            if y.shape[0] == B:
                raise
            raise RuntimeError(
                f"func failed on {y.shape[0]} of the {B} rows: with per_sample=True, func is called on the rows "
                f"still being integrated, so it must treat rows independently; pass per-row tensors as "
                f"args=(...) (gathered with the rows) instead of closing over them, or use per_sample=False"
            ) from err
        return check_model_output("func", out, y)

    zeros = torch.zeros(B, dtype=torch.int64, device=y0.device)
    event_t = None
    if times.numel() == 1 and event_fn is None:
        ys, nfe, steps, rejected = y0.unsqueeze(0), zeros, zeros, zeros
    elif tableau.adaptive:
        _warn_unused(options, _ADAPTIVE_OPTIONS, method)
        rtol = rtol if isinstance(rtol, torch.Tensor) else check_positive("rtol", rtol)
        atol = atol if isinstance(atol, torch.Tensor) else check_positive("atol", atol)
        norm = options.get("norm")
        if norm is not None:
            check_callable("options['norm']", norm)
        opts = StepOptions(
            first_step=None if options.get("first_step") is None else float(options["first_step"]),
            min_step=float(options.get("min_step", 0.0)), max_step=float(options.get("max_step", math.inf)),
            step_t=option_times(options.get("step_t"), "step_t"), jump_t=option_times(options.get("jump_t"), "jump_t"),
            norm=norm)
        max_steps = check_positive_int("max_steps", options.get("max_num_steps", 10_000))
        if event_fn is not None:
            check_callable("event_fn", event_fn)
            direction = 1.0 if bool(times[1] > times[0]) else -1.0
            t_out = torch.stack([times[0], times[0] + direction * math.inf]).unsqueeze(0).expand(B, -1)

            def ev(tt, y, *a):
                return event_fn(tt.reshape(tt.shape + (1,) * (y.dim() - 1)), y, *a).reshape(-1)
        else:
            t_out, ev = times.unsqueeze(0).expand(B, -1), None
        sol = solve_adaptive(call, y0, None, None, rtol=rtol, atol=atol, max_steps=max_steps, tableau=tableau,
                             controller=controller, args=args, t_eval=t_out, options=opts, event_fn=ev)
        assert sol.ys is not None
        ys, nfe, steps, rejected, event_t = sol.ys, sol.nfe, sol.steps, sol.rejected, sol.event_t
    else:
        if event_fn is not None:
            raise ValueError("per-sample events need an adaptive method (e.g. dopri5)")
        _warn_unused(options, {"step_size"}, method)
        step = options.get("step_size")
        step = math.inf if step is None else check_positive("step_size", float(step))
        ys, n = solve_fixed(call, y0, times.tolist(), tableau, step, args)
        nfe, steps, rejected = zeros + n, zeros + n // tableau.stages, zeros
    if return_solution:
        return ODESolution(ys=ys, nfe=nfe, steps=steps, rejected=rejected, event_t=event_t)
    return ys if event_fn is None else (event_t, ys)
