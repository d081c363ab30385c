"""Closed-form ODE reference problems and fixed-step order measurement for Runge–Kutta tableaus.

Problems: DETEST class A (Hull, Enright, Fellen & Sedgwick 1972, "Comparing
numerical methods for ordinary differential equations", SIAM J. Numer. Anal.
9(4)) and a random stable linear system ``y' = Ay`` whose flow is
``matrix_exp``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, TypedDict

import torch

from .convergence import OrderFit, fit_order


class _Float64(TypedDict):
    dtype: torch.dtype


f64: _Float64 = {"dtype": torch.float64}


@dataclass(frozen=True)
class ODEProblem:
    """A scalar ODE with a closed-form solution.

    Attributes:
        name: label.
        func: ``func(t, y)`` with ``t`` broadcastable against ``y`` ``(B, 1)``.
        y0: initial value at t = 0.
        t1: end time.
        exact: ``exact(t: float) -> float``.
        refine: step-count multiplier that puts fixed-step fits in the asymptotic regime.
    """

    name: str
    func: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    y0: float
    t1: float
    exact: Callable[[float], float]
    refine: int = 1


A1 = ODEProblem("A1 y'=-y", lambda t, y: -y, 1.0, 1.0, lambda t: math.exp(-t))
A2 = ODEProblem("A2 y'=-y^3/2", lambda t, y: -0.5 * y**3, 1.0, 1.0, lambda t: 1.0 / math.sqrt(1.0 + t))
YCOS = ODEProblem("y'=y cos t", lambda t, y: y * torch.cos(t), 1.0, 10.0, lambda t: math.exp(math.sin(t)), 8)
LOGISTIC = ODEProblem("A3 logistic", lambda t, y: y / 4 * (1 - y / 20), 1.0, 10.0,
                      lambda t: 20 / (1 + 19 * math.exp(-t / 4)))
#: DETEST problems A1, A2, y' = y cos t and A3 (logistic).
DETEST = (A1, A2, YCOS, LOGISTIC)


def linear_system(seed: int = 0, d: int = 4):
    """A random stable linear system ``y' = Ay`` (rotation plus decay); returns ``(A, func)``."""
    g = torch.Generator().manual_seed(seed)
    M = torch.randn(d, d, generator=g, **f64)
    A = (M - M.T) - 0.5 * torch.eye(d, **f64)
    return A, lambda t, y: y @ A.T


def integrate_fixed(func, tableau, weights, y0: torch.Tensor, t1: float, n: int) -> torch.Tensor:
    """``n`` fixed steps of ``tableau`` (with solution weights ``weights``) from t = 0 to ``t1``.

    The state is accumulated with compensated (Kahan) summation so that round-off
    does not bend convergence plots at fine steps.  ``func(t, y)`` gets ``t`` ``(B,)``.
    Returns the ``(B, *S)`` float64 state at ``t1``.
    """
    from ..solvers.rk import rk_stages, weighted_sum

    hi, lo = y0.clone(), torch.zeros_like(y0)
    h = t1 / n
    hv = torch.full((y0.shape[0],), h, **f64)
    for j in range(n):
        ks = rk_stages(func, tableau, torch.full((y0.shape[0],), j * h, **f64), hi + lo, hv)
        incr = h * weighted_sum(ks, weights)
        s = hi + incr
        lo = lo + ((hi - s) + incr)
        hi = s
    return hi + lo


def ode_order(tableau, problem: ODEProblem, steps, weights=None) -> tuple[OrderFit, list]:
    """Measured global order of ``tableau`` on ``problem`` with ``n·problem.refine`` steps for ``n`` in ``steps``.

    Returns ``(fit, errors)``; ``weights`` defaults to ``tableau.b`` (pass ``b − b_error`` for the embedded order).
    """
    weights = tableau.b if weights is None else weights
    func = lambda t, y: problem.func(t[:, None], y)
    y0 = torch.full((1, 1), problem.y0, **f64)
    ns = [n * problem.refine for n in steps]
    errs = [abs(integrate_fixed(func, tableau, weights, y0, problem.t1, n).item() - problem.exact(problem.t1))
            for n in ns]
    return fit_order([problem.t1 / n for n in ns], errs), errs
