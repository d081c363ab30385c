"""torchdiffeq's ``scipy_solver`` method: a thin wrapper over ``scipy.integrate.solve_ivp``.

scipy is imported inside :func:`solve_scipy`, so ``import sdekit`` does not
import it.  scipy integrates in float64 (complex128 for complex states) on the
CPU; ``func`` is still called with tensors of ``y0``'s dtype on ``y0``'s
device, and each call's result is copied to the host.

No autograd: the results carry no gradient to ``y0``, ``t`` or any parameter
of ``func``; train through :func:`~sdekit.odeint_adjoint`, whose backward
integrates the augmented dynamics with a fresh solve (``func`` is not called
under ``torch.no_grad()``, so vector–Jacobian products computed inside ``func``
with ``torch.enable_grad()`` work).  A ``UserWarning`` says so when gradients
were expected (see :func:`solve_scipy`).

Sources: Virtanen et al. (2020), "SciPy 1.0", Nat. Methods 17; the solvers'
own references are in scipy's ``solve_ivp`` documentation (RK45: Dormand &
Prince 1980; RK23: Bogacki & Shampine 1989; DOP853: Hairer, Nørsett & Wanner,
"Solving ODEs I", §II.10; Radau: Hairer & Wanner, "Solving ODEs II", §IV.8;
BDF: Shampine & Reichelt 1997; LSODA: Petzold 1983, ODEPACK).
"""

from __future__ import annotations

import warnings
from typing import Any, Callable, NamedTuple

import torch

from .adaptive import ToleranceNotMetError

#: The ``solver`` names :func:`solve_scipy` accepts (scipy's ``method`` strings).
SCIPY_SOLVERS = ("RK45", "RK23", "DOP853", "Radau", "BDF", "LSODA")
#: Solvers that scipy can run in the complex domain (per its ``solve_ivp`` documentation).
COMPLEX_SOLVERS = ("RK45", "RK23", "DOP853", "BDF")


class ScipySolution(NamedTuple):
    """Result of :func:`solve_scipy`; unpacks as ``ys, nfe = solve_scipy(...)``.

    Attributes:
        ys: ``(len(t), *y0.shape)`` states at ``t``, in ``y0``'s dtype and on its device, without gradient.
        nfe: number of calls of ``func`` (including scipy's finite-difference Jacobians for Radau, BDF and LSODA).
    """

    ys: torch.Tensor
    nfe: int


class _Stalled(Exception):
    def __init__(self, t: float):
        super().__init__(t)
        self.t = t


def _as_float(name: str, v: Any) -> float:
    if isinstance(v, torch.Tensor):
        if v.numel() != 1:
            raise ValueError(f"{name} must be a float (or a one-element tensor), got shape {tuple(v.shape)}")
        v = v.item()
    try:
        out = float(v)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a float, got {type(v).__name__}") from None
    return out


def solve_scipy(
    func: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    y0: torch.Tensor,
    t: torch.Tensor,
    *,
    rtol: float = 1e-7,
    atol: float | torch.Tensor = 1e-9,
    solver: str = "LSODA",
    min_step: float = 0.0,
    max_step: float = float("inf"),
    **solve_ivp_options: Any,
) -> ScipySolution:
    """Solve ``dy/dt = func(t, y)`` from ``y(t[0]) = y0`` with ``scipy.integrate.solve_ivp``, output at ``t``.

    Args:
        func: ``func(t, y) -> dy/dt`` with ``t`` a 0-d tensor (``y0``'s real
            dtype, on ``y0``'s device) and ``y`` a tensor of ``y0``'s shape,
            dtype and device; returns a tensor with ``y0.numel()`` elements
            (normally ``y0``'s shape).  It is called under the caller's grad
            mode (not under ``torch.no_grad()``); its result is detached.
        y0: initial state, any shape (0-d included), floating or complex.
        t: 1-D strictly increasing tensor (or sequence) of output times, same
            units as ``func``'s ``t``; ``t[0]`` is the initial time.
        rtol: relative tolerance (a float; a one-element tensor is accepted).
        atol: absolute tolerance: a float, or a flat tensor of ``y0.numel()``
            per-component values (passed to scipy as an array).
        solver: one of :data:`SCIPY_SOLVERS`; ``"LSODA"`` (torchdiffeq's default).
        min_step: smallest step LSODA may take (``>= 0``, ``0`` = no bound).
            Only LSODA has this option; a nonzero value with another solver is
            ignored with a ``UserWarning`` (scipy would warn too).
        max_step: largest step (``> 0``; every solver accepts it).
        **solve_ivp_options: passed to ``solve_ivp`` unchanged (for example
            ``first_step``, or ``jac`` as a numpy-level callable).
    Returns:
        :class:`ScipySolution` ``(ys, nfe)``: ``ys`` of shape
        ``(len(t), *y0.shape)`` in ``y0``'s dtype and device (``ys[0] == y0``),
        ``nfe`` the number of ``func`` calls.  ``ys`` never requires grad;
        when grad mode is on and ``y0``, ``t`` or ``func``'s first result
        requires grad, a ``UserWarning`` says that no gradient flows (use
        :func:`~sdekit.odeint_adjoint` to train).  Warning, not raising, keeps
        torchdiffeq's behaviour, whose ``scipy_solver`` also returns
        non-differentiable results.
    Raises:
        ValueError: unknown ``solver``; ``t`` not 1-D, finite and strictly
            increasing; negative or non-finite tolerances; ``atol`` of the wrong
            size; bad ``min_step``/``max_step``; ``func`` returning the wrong
            number of elements.
        TypeError: ``y0`` not a floating or complex tensor; a complex ``y0``
            with ``Radau`` or ``LSODA`` (scipy integrates complex states only with
            :data:`COMPLEX_SOLVERS`); ``func`` not returning a tensor.
        ToleranceNotMetError: scipy reports failure (``status == -1``; the
            message is scipy's), returns non-finite values (LSODA reports
            success on a NaN derivative), or stalls: ``3·y0.numel() + 1000``
            consecutive calls of ``func`` at one ``t`` (LSODA otherwise loops
            forever once its step falls below the spacing of ``t``).
    """
    import numpy as np
    from scipy.integrate import solve_ivp

    if solver not in SCIPY_SOLVERS:
        raise ValueError(f"solver must be one of {SCIPY_SOLVERS}, got {solver!r}")
    if not isinstance(y0, torch.Tensor) or not (y0.is_floating_point() or y0.is_complex()):
        raise TypeError(f"y0 must be a floating or complex tensor, got {getattr(y0, 'dtype', type(y0).__name__)}")
    if y0.is_complex() and solver not in COMPLEX_SOLVERS:
        raise TypeError(f"scipy solver {solver!r} cannot integrate a complex state; use one of {COMPLEX_SOLVERS}")
    real_dtype = y0.real.dtype if y0.is_complex() else y0.dtype
    np_dtype = np.complex128 if y0.is_complex() else np.float64

    grad_expected = torch.is_grad_enabled() and (y0.requires_grad or (isinstance(t, torch.Tensor) and t.requires_grad))
    t_np = (t.detach().to("cpu", torch.float64) if isinstance(t, torch.Tensor)
            else torch.as_tensor(t, dtype=torch.float64)).numpy()
    if t_np.ndim != 1 or t_np.size == 0:
        raise ValueError(f"t must be a non-empty 1-D tensor, got shape {tuple(t_np.shape)}")
    if not np.all(np.isfinite(t_np)) or np.any(np.diff(t_np) <= 0):
        raise ValueError("t must be finite and strictly increasing (negate a decreasing grid first)")

    rtol_f = _as_float("rtol", rtol)
    if not (np.isfinite(rtol_f) and rtol_f >= 0):
        raise ValueError(f"rtol must be finite and >= 0, got {rtol_f}")
    n = y0.numel()
    atol_v: float | Any
    if isinstance(atol, torch.Tensor) and atol.numel() != 1:
        if atol.shape != (n,):
            raise ValueError(f"atol as a tensor must have shape ({n},) (one value per element of y0), "
                             f"got {tuple(atol.shape)}")
        atol_v = atol.detach().to("cpu", torch.float64).numpy()
        if not (np.all(np.isfinite(atol_v)) and np.all(atol_v >= 0)):
            raise ValueError("atol must be finite and >= 0")
    else:
        atol_v = _as_float("atol", atol)
        if not (np.isfinite(atol_v) and atol_v >= 0):
            raise ValueError(f"atol must be finite and >= 0, got {atol_v}")

    min_step, max_step = _as_float("min_step", min_step), _as_float("max_step", max_step)
    if not (min_step >= 0 and np.isfinite(min_step)):
        raise ValueError(f"min_step must be finite and >= 0, got {min_step}")
    if not (max_step > 0) or max_step < min_step:
        raise ValueError(f"max_step must be > 0 and >= min_step, got max_step={max_step}, min_step={min_step}")
    step_options: dict[str, float] = {"max_step": max_step}
    if solver == "LSODA":
        step_options["min_step"] = min_step
    elif min_step > 0:
        warnings.warn(f"min_step is ignored by scipy solver {solver!r} (only LSODA has it)", UserWarning,
                      stacklevel=2)

    nfe = 0
    checked = False
    # Stall guard: scipy's LSODA keeps "succeeding" with steps below the spacing of
    # t (a blow-up, say) and would loop forever; so many calls at one t mean a stall.
    stall_limit = 3 * n + 1000
    last_s, same_s = None, 0

    def rhs(s, y):
        nonlocal nfe, checked, grad_expected, last_s, same_s
        nfe += 1
        same_s = same_s + 1 if s == last_s else 0
        last_s = s
        if same_s > stall_limit:
            raise _Stalled(float(s))
        ts = torch.tensor(s, dtype=real_dtype, device=y0.device)
        yt = torch.from_numpy(np.array(y, dtype=np_dtype)).to(device=y0.device, dtype=y0.dtype).reshape(y0.shape)
        out = func(ts, yt)
        if not checked:
            if not isinstance(out, torch.Tensor):
                raise TypeError(f"func must return a tensor, got {type(out).__name__}")
            if out.numel() != n:
                raise ValueError(f"func returned shape {tuple(out.shape)}; expected y0's shape {tuple(y0.shape)}")
            grad_expected = grad_expected or (torch.is_grad_enabled() and out.requires_grad)
            checked = True
        # A copy: scipy keeps derivatives between steps, and func may reuse its output buffer.
        return np.array(out.detach().to("cpu").resolve_conj().reshape(-1).numpy(), dtype=np_dtype)

    y0_np = np.array(y0.detach().to("cpu").resolve_conj().reshape(-1).numpy(), dtype=np_dtype)
    if t_np.size == 1 or n == 0:
        ys = y0.detach().reshape(1, *y0.shape).expand(t_np.size, *y0.shape).clone()
        return ScipySolution(ys, 0)
    try:
        sol = solve_ivp(rhs, (float(t_np[0]), float(t_np[-1])), y0_np, method=solver, t_eval=t_np, rtol=rtol_f,
                        atol=atol_v, **step_options, **solve_ivp_options)
    except _Stalled as err:
        raise ToleranceNotMetError(f"scipy_solver ({solver}) stalled at t={err.t:g}: {stall_limit} consecutive "
                                   f"evaluations without advancing t (step size below the spacing of t; the "
                                   f"solution may blow up)") from None
    if sol.status == -1:
        reached = float(sol.t[-1]) if sol.t.size else float(t_np[0])
        raise ToleranceNotMetError(f"scipy_solver ({solver}) failed after the output at t={reached:g} "
                                   f"({nfe} evaluations): {sol.message}")
    if not np.all(np.isfinite(sol.y)):
        bad = int(np.argmax(~np.all(np.isfinite(sol.y), axis=0)))
        raise ToleranceNotMetError(f"scipy_solver ({solver}) returned non-finite values from t={t_np[bad]:g} on "
                                   f"(scipy reported: {sol.message})")
    if grad_expected:
        warnings.warn("scipy_solver returns results without gradient: no gradient flows to y0, t or func's "
                      "parameters; use odeint_adjoint to train through a scipy solve", UserWarning, stacklevel=2)
    ys = torch.from_numpy(np.ascontiguousarray(sol.y.T)).to(device=y0.device, dtype=y0.dtype)
    ys = ys.reshape(t_np.size, *y0.shape)
    ys[0] = y0.detach()
    return ScipySolution(ys, nfe)
