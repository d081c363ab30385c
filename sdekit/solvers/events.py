"""Terminal events of an adaptive solve: a sign change of ``event_fn`` located on the step's dense output.

An event function ``g(t, y)`` is evaluated at the end of every accepted step;
when its sign differs from its sign at the start of the solve, the root is
bracketed in that step and located by bisection on the step's continuous
extension (Hairer, Nørsett & Wanner, "Solving ODEs I", §II.6, "Dense output,
discontinuities, derivatives"; torchdiffeq's ``event_fn`` convention).  The
bisection runs without autograd; the state at the located time is then taken
from the interpolant with autograd, so gradients reach ``y0`` and the
parameters through the solution (not through the event time itself).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch

from .rk import rk_interpolate
from .tableaus import ButcherTableau


@dataclass(frozen=True)
class EventSpec:
    """A terminal event of :func:`~sdekit.solvers.adaptive.solve_adaptive`.

    Attributes:
        fn: ``fn(t, y, *args) -> (b,)`` with ``t`` ``(b,)`` and ``y`` ``(b, *S)``;
            a sample stops where its value changes sign from the start.
        tol: bisection tolerance in ``t`` (> 0).
    """

    fn: Callable
    tol: float


def interpolate(tableau: ButcherTableau, y, y_new, ks, step, theta):
    """State at ``t + θ·step`` inside an accepted step, ``θ`` ``(P,)`` in [0, 1].

    The tableau's continuous extension when it has one, else linear
    interpolation between ``y`` and ``y_new`` (order 1).
    """
    if tableau.dense is not None:
        return rk_interpolate(tableau, y, ks, step, theta)
    th = theta.to(y.dtype).reshape(theta.shape + (1,) * (y.dim() - 1))
    return y + th * (y_new - y)


def locate(spec: EventSpec, tableau: ButcherTableau, t, y, y_new, ks, step, sign0, args):
    """Bisect each row's step for the event root.

    Args:
        t, step: ``(P,)`` start time and signed step of each row's accepted step.
        y, y_new: ``(P, *S)`` states at both ends; ks: the step's stages, each ``(P, *S)``.
        sign0: ``(P,)`` sign of the event function at the start of the solve.
        args: per-row tensors passed on to ``spec.fn``.
    Returns:
        ``(t_event, y_event)``, ``(P,)`` and ``(P, *S)``.
    """
    iters = max(1, math.ceil(math.log2(max(float(step.detach().abs().max()), spec.tol) / spec.tol)) + 1)
    with torch.no_grad():
        lo = torch.zeros_like(t)
        hi = torch.ones_like(t)
        for _ in range(iters):
            mid = 0.5 * (lo + hi)
            y_mid = interpolate(tableau, y, y_new, [k.detach() for k in ks], step.detach(), mid)
            same = torch.sign(spec.fn(t.detach() + mid * step.detach(), y_mid, *args)) == sign0
            lo = torch.where(same, mid, lo)
            hi = torch.where(same, hi, mid)
        theta = 0.5 * (lo + hi)
    return t + theta * step, interpolate(tableau, y, y_new, ks, step, theta)
