"""Implicit Runge–Kutta methods on a fixed grid: tableaus as data and a Newton stage solver.

The methods are torchdiffeq's implicit fixed-grid ones (same names, same
orders).  One step of an ``s``-stage method with coefficients ``(c, A, b)``
solves the stage equations

    ``Kᵢ = f(t₀ + cᵢh, y₀ + h Σⱼ aᵢⱼKⱼ)``,  ``i = 1 … s``,

and returns ``y₁ = y₀ + h Σᵢ bᵢKᵢ`` (Hairer & Wanner, "Solving Ordinary
Differential Equations II", 2nd ed., §IV.5, eq. (5.1)).

Stages whose row of ``A`` is zero are explicit (a first stage with ``c = 0``
is ``f(t₀, y₀)``, already known).  A diagonally implicit method (``A`` lower
triangular: SDIRK, ESDIRK) is solved stage by stage, an ``n``-dimensional
system each; a fully implicit one (Gauss, Radau IIA) as one coupled system in
all its implicit stages (``m·n`` unknowns).

Newton's method (simplified): the residual ``R(K) = K − f(t₀ + ch, y₀ + hAK)``
is driven to zero by ``(I − h A ⊗ J₀) ΔK = −R(K)`` with ``J₀ = ∂f/∂y(t₀, y₀)``
(by autograd, one evaluation of ``f`` and one batched backward pass per step),
the matrix factorised once per step (HNW II, §IV.8, eq. (8.2)).  The start
value is ``Kᵢ = f(t₀, y₀)``.  The iteration stops once the RMS of ``h ΔK``
relative to ``atol + rtol·|y₀| + 4ε(|y₀| + |h f(t₀, y₀)|)`` (``ε`` the dtype's
machine epsilon: increments at roundoff level count as converged) is at most
1, or after ``max_iters``
iterations (then a ``RuntimeWarning``, once per solve).  Each iteration costs
one evaluation of ``f`` per stage of the system.  If ``f`` does not depend on
``y`` (or has no autograd graph in ``y``), ``J₀ = 0`` and the iteration is
plain fixed-point iteration.

Gradients (with respect to ``y₀``, the times and the parameters of ``f``):
the iteration runs without an autograd graph; then, with grad mode on, the
residual is evaluated once more with a graph at the converged stages ``K*``
and the stages are returned as

    ``K = K* − M⁻¹ (R(K*) − R(K*).detach())``,  ``M = ∂R/∂K(K*)`` (detached),

whose value is exactly ``K*`` and whose first derivative is the
implicit-function-theorem derivative ``dK*/dθ = −M⁻¹ ∂R/∂θ`` of the exact
stage solution (``M`` from the Jacobians of ``f`` at the converged stage
states).  So the values do not depend on grad mode, memory does not grow with
the number of Newton iterations, and first-order gradients are those of the
exactly solved step (``torch.autograd.gradcheck`` passes at tight
``rtol``/``atol``).  Higher-order derivatives are not exact (``M`` is a
constant).  With grad mode on the graph residual costs one more evaluation
per implicit stage even when nothing requires grad, and when something does,
one Jacobian per implicit stage; run under ``torch.no_grad()`` when no
gradients are needed.

Host syncs: one per Newton iteration (the convergence test) and one per
factorisation (the singularity check).  A singular Newton matrix falls back to
fixed-point iteration (``M = I``) with a ``RuntimeWarning``.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Callable

import torch

from .rk import weighted_sum

#: Default cap on Newton iterations per step (torchdiffeq's ``max_iters`` default for these methods).
MAX_NEWTON_ITERS = 100

#: States up to this size take ``n`` plain backward passes for a Jacobian (cheaper than batching).
_LOOP_UP_TO = 4

_SQ2, _SQ3, _SQ6, _SQ15 = (math.sqrt(v) for v in (2.0, 3.0, 6.0, 15.0))


@dataclass(frozen=True)
class ImplicitTableau:
    """An implicit Runge–Kutta method ``(c, A, b)`` with a full ``s × s`` stage matrix.

    Attributes:
        name: short name (the ``method`` string of :func:`~sdekit.odeint`).
        c: nodes, length s (dimensionless step fractions).
        a: stage matrix, s rows of s entries.
        b: weights, length s.
        order: classical order of the method.
        source: where the coefficients are published.
    Raises:
        ValueError: (on construction) if the lengths disagree, ``s = 0``, a row of ``A``
            does not sum to its node (``Σⱼ aᵢⱼ = cᵢ``, to 1e-12) or ``order < 1``.
    """

    name: str
    c: tuple
    a: tuple
    b: tuple
    order: int
    source: str = ""

    def __post_init__(self):
        s = len(self.c)
        if s == 0 or len(self.b) != s or len(self.a) != s or any(len(row) != s for row in self.a):
            raise ValueError(f"{self.name}: need s >= 1 nodes, an s x s matrix a and s weights b, got "
                             f"{len(self.c)} nodes, rows {[len(r) for r in self.a]} and {len(self.b)} weights")
        for i, (ci, row) in enumerate(zip(self.c, self.a)):
            if abs(sum(row) - ci) > 1e-12:
                raise ValueError(f"{self.name}: row {i} of a sums to {sum(row)!r}, not to c[{i}] = {ci!r}")
        if self.order < 1:
            raise ValueError(f"{self.name}: order must be >= 1, got {self.order}")

    @property
    def stages(self) -> int:
        return len(self.c)

    @property
    def diagonally_implicit(self) -> bool:
        """Whether ``A`` is lower triangular, so the stages can be solved one at a time."""
        return all(self.a[i][j] == 0.0 for i in range(self.stages) for j in range(i + 1, self.stages))

    def plan(self) -> tuple:
        """Order of solution: ``((stage indices, implicit), …)``.

        Lower-triangular ``A``: one entry per stage, implicit iff ``aᵢᵢ ≠ 0``.  Otherwise the
        stages with a zero row of ``A`` first (explicit), then all others as one coupled system.
        """
        s = self.stages
        if self.diagonally_implicit:
            return tuple(((i,), self.a[i][i] != 0.0) for i in range(s))
        explicit = [i for i in range(s) if all(v == 0.0 for v in self.a[i])]
        coupled = tuple(i for i in range(s) if i not in explicit)
        return tuple(((i,), False) for i in explicit) + ((coupled, True),)


def _tableau(name, c, a, b, order, source) -> ImplicitTableau:
    return ImplicitTableau(name, tuple(float(v) for v in c), tuple(tuple(float(v) for v in row) for row in a),
                           tuple(float(v) for v in b), order, source)


#: Backward Euler = Radau IIA, s = 1 (HNW II, §IV.5, Table 5.5).
IMPLICIT_EULER = _tableau("implicit_euler", [1], [[1]], [1], 1,
                          "Hairer & Wanner, Solving ODEs II, §IV.5, Table 5.5 (Radau IIA, s = 1)")
#: Implicit midpoint rule = Gauss, s = 1 (HNW II, §IV.5, Table 5.1).
IMPLICIT_MIDPOINT = _tableau("implicit_midpoint", [0.5], [[0.5]], [1], 2,
                             "Hairer & Wanner, Solving ODEs II, §IV.5, Table 5.1 (Gauss, s = 1)")
#: Trapezoidal rule = Lobatto IIIA, s = 2 (HNW II, §IV.5); first stage explicit.
TRAPEZOID = _tableau("trapezoid", [0, 1], [[0, 0], [0.5, 0.5]], [0.5, 0.5], 2,
                     "Hairer & Wanner, Solving ODEs II, §IV.5 (Lobatto IIIA, s = 2)")
#: Radau IIA, order 3 (HNW II, §IV.5, Table 5.5).
RADAU_IIA_3 = _tableau("radauIIA3", [1 / 3, 1], [[5 / 12, -1 / 12], [3 / 4, 1 / 4]], [3 / 4, 1 / 4], 3,
                       "Hairer & Wanner, Solving ODEs II, §IV.5, Table 5.5 (Radau IIA, s = 2)")
#: Gauss–Legendre, order 4 (HNW II, §IV.5, Table 5.1).
GL4 = _tableau("gl4", [0.5 - _SQ3 / 6, 0.5 + _SQ3 / 6],
               [[1 / 4, 1 / 4 - _SQ3 / 6], [1 / 4 + _SQ3 / 6, 1 / 4]], [0.5, 0.5], 4,
               "Hairer & Wanner, Solving ODEs II, §IV.5, Table 5.1 (Gauss, s = 2)")
#: Radau IIA, order 5 (HNW II, §IV.5, Table 5.6).
RADAU_IIA_5 = _tableau(
    "radauIIA5", [(4 - _SQ6) / 10, (4 + _SQ6) / 10, 1],
    [[(88 - 7 * _SQ6) / 360, (296 - 169 * _SQ6) / 1800, (-2 + 3 * _SQ6) / 225],
     [(296 + 169 * _SQ6) / 1800, (88 + 7 * _SQ6) / 360, (-2 - 3 * _SQ6) / 225],
     [(16 - _SQ6) / 36, (16 + _SQ6) / 36, 1 / 9]],
    [(16 - _SQ6) / 36, (16 + _SQ6) / 36, 1 / 9], 5,
    "Hairer & Wanner, Solving ODEs II, §IV.5, Table 5.6 (Radau IIA, s = 3)")
#: Gauss–Legendre, order 6 (HNW II, §IV.5, Table 5.1).
GL6 = _tableau(
    "gl6", [0.5 - _SQ15 / 10, 0.5, 0.5 + _SQ15 / 10],
    [[5 / 36, 2 / 9 - _SQ15 / 15, 5 / 36 - _SQ15 / 30],
     [5 / 36 + _SQ15 / 24, 2 / 9, 5 / 36 - _SQ15 / 24],
     [5 / 36 + _SQ15 / 30, 2 / 9 + _SQ15 / 15, 5 / 36]],
    [5 / 18, 4 / 9, 5 / 18], 6,
    "Hairer & Wanner, Solving ODEs II, §IV.5, Table 5.1 (Gauss, s = 3)")
_G = 1 - _SQ2 / 2  # γ = (2 − √2)/2: the L-stable root of the two-stage SDIRK order conditions
#: Two-stage L-stable, stiffly accurate SDIRK of order 2 (Alexander 1977; HNW II, §IV.6).
SDIRK2 = _tableau("sdirk2", [_G, 1], [[_G, 0], [1 - _G, _G]], [1 - _G, _G], 2,
                  "Alexander 1977, SIAM J. Numer. Anal. 14(6), 1006-1021; Hairer & Wanner, Solving ODEs II, §IV.6")
_D, _W = 1 - _SQ2 / 2, _SQ2 / 4  # d = γ/2 with γ = 2 − √2, w = (1 − d)/2
#: TR-BDF2 as a three-stage ESDIRK: a trapezoidal stage to ``t₀ + γh`` then BDF2 (order 2, L-stable).
TRBDF2 = _tableau("trbdf2", [0, 2 * _D, 1], [[0, 0, 0], [_D, _D, 0], [_W, _W, _D]], [_W, _W, _D], 2,
                  "Bank et al. 1985, IEEE Trans. CAD 4(4), 436-451; Hosea & Shampine 1996, "
                  "Appl. Numer. Math. 20, 21-37 (γ = 2 − √2)")

#: Implicit fixed-grid methods by name (torchdiffeq's names); kept out of ``tableaus.TABLEAUS``.
IMPLICIT_METHODS = {t.name: t for t in (IMPLICIT_EULER, IMPLICIT_MIDPOINT, TRAPEZOID, RADAU_IIA_3, GL4,
                                        RADAU_IIA_5, GL6, SDIRK2, TRBDF2)}


def jacobian(call: Callable, t: torch.Tensor, y: torch.Tensor, side: int = 0) -> torch.Tensor:
    """``∂f/∂y`` at ``(t, y)`` as a detached ``(n, n)`` matrix, ``n = y.numel()`` (row ``i``: ``∂fᵢ/∂y``).

    One evaluation ``call(t, y, side)`` and one batched backward pass (a loop of ``n``
    backward passes for small ``n`` or if batching fails).  Zero if the output has no graph in ``y``.

    Raises:
        ValueError: if ``f`` does not return a tensor shaped like ``y``.
    """
    n = y.numel()
    with torch.enable_grad():
        x = y.detach().requires_grad_(True)
        fx = call(t.detach(), x, side)
        if not isinstance(fx, torch.Tensor) or fx.shape != y.shape:
            raise ValueError(f"func must return a tensor shaped like y {tuple(y.shape)}, got "
                             f"{tuple(fx.shape) if isinstance(fx, torch.Tensor) else type(fx).__name__}")
        zero = torch.zeros(n, n, dtype=y.dtype, device=y.device)
        if not fx.requires_grad:
            return zero
        eye = torch.eye(n, dtype=fx.dtype, device=fx.device).reshape(n, *fx.shape)
        rows = None
        if n > _LOOP_UP_TO:
            try:
                (rows,) = torch.autograd.grad(fx, x, eye, retain_graph=True, is_grads_batched=True, allow_unused=True)
                if rows is None:
                    return zero
            except RuntimeError:  # an operation without a batching rule: one backward pass per row
                rows = None
        if rows is None:
            grads = [torch.autograd.grad(fx, x, eye[k], retain_graph=k < n - 1, allow_unused=True)[0]
                     for k in range(n)]
            if grads[0] is None:
                return zero
            rows = torch.stack(grads)
    return rows.detach().reshape(n, n)


def _factor(m: torch.Tensor, name: str):
    """LU factors of ``m``; ``None`` (and a warning) if ``m`` is singular or not finite."""
    lu, piv, info = torch.linalg.lu_factor_ex(m)
    if not bool((info == 0) & torch.isfinite(lu).all()):
        warnings.warn(f"{name}: singular Newton matrix; falling back to fixed-point iteration for this step",
                      RuntimeWarning, stacklevel=6)
        return None
    return lu, piv


def _solve(factors, rhs: torch.Tensor) -> torch.Tensor:
    """``M⁻¹ rhs`` for a 1-D ``rhs`` (``M = I`` when ``factors`` is ``None``); differentiable in ``rhs``."""
    if factors is None:
        return rhs
    return torch.linalg.lu_solve(factors[0], factors[1], rhs[:, None])[:, 0]


class ImplicitStepper:
    """One implicit Runge–Kutta step per call: ``stepper(t0, t1, y0, f0, t0f, t1f) -> y1``.

    Args:
        call: ``call(t, y, side)`` evaluates ``f`` (``side`` ``+1``/``−1`` marks a step
            start/end; see :class:`~sdekit.solvers.fixed_grid._Counted`).
        tableau: the method.
        rtol, atol: Newton tolerances (relative; absolute in units of ``y``; floats or
            tensors broadcastable to ``y0``).
        max_iters: at most this many Newton iterations per system (≥ 1).
    Raises:
        ValueError: if ``max_iters < 1``.
    """

    def __init__(self, call: Callable, tableau: ImplicitTableau, rtol, atol, max_iters: int):
        if max_iters < 1:
            raise ValueError(f"max_iters must be an integer >= 1, got {max_iters}")
        self.call, self.tableau, self.rtol, self.atol, self.max_iters = call, tableau, rtol, atol, max_iters
        self.plan = tableau.plan()
        self.not_converged = 0
        self.newton_iters = 0  # total Newton iterations (all steps)
        self._j0: torch.Tensor | None = None  # J₀ of the current step
        self._lus: dict = {}  # Newton matrix factors of the current step, by block of A
        self._scale: torch.Tensor | None = None  # convergence scale of the current step

    def _stage(self, i: int, t0, t1, h, y0, ks, at_state: bool = False):
        """``f`` at stage ``i`` (or, with ``at_state``, its ``(t, y, side)``) from the stages ``ks``."""
        incr = weighted_sum(ks, self.tableau.a[i])
        y = y0 if incr is None else y0 + h * incr
        c = self.tableau.c[i]
        t, side = (t1, -1) if c == 1.0 else (t0, 1) if c == 0.0 else (t0 + c * h, 0)
        return (t, y, side) if at_state else self.call(t, y, side)

    def __call__(self, t0, t1, y0, f0, t0f: float, t1f: float):
        """Advance ``y0`` (any shape; ``f0 = f(t0, y0)``) from ``t0`` to ``t1`` (0-d tensors; floats ``t0f, t1f``)."""
        tab = self.tableau
        h = t1 - t0
        ks: list = [None] * tab.stages
        self._j0, self._lus, self._scale = None, {}, None
        for idx, implicit in self.plan:
            if not implicit:
                i = idx[0]
                ks[i] = f0 if tab.c[i] == 0.0 and not any(tab.a[i]) else self._stage(i, t0, t1, h, y0, ks)
                continue
            for i, k in zip(idx, self._solve_system(idx, t0, t1, h, y0, f0, ks, t1f)):
                ks[i] = k
        return y0 + h * weighted_sum(ks, tab.b)

    def _solve_system(self, idx, t0, t1, h, y0, f0, ks, t1f: float) -> list:
        """The stages ``idx`` from the stage equations, the earlier stages ``ks`` known."""
        tab, m, n, shape = self.tableau, len(idx), y0.numel(), y0.shape
        d = [v.detach() if isinstance(v, torch.Tensor) else v for v in (t0, t1, h, y0)]
        dt0, dt1, dh, dy0 = d
        dks = [None if k is None else k.detach() for k in ks]
        a_blk = tuple(tuple(tab.a[i][j] for j in idx) for i in idx)
        with torch.no_grad():
            if self._j0 is None:
                self._j0 = jacobian(self.call, dt0, dy0, 1)
            if a_blk not in self._lus:
                a_t = torch.tensor(a_blk, dtype=y0.dtype, device=y0.device)
                eye = torch.eye(m * n, dtype=y0.dtype, device=y0.device)
                self._lus[a_blk] = _factor(eye - dh * torch.kron(a_t, self._j0), tab.name)
            lu = self._lus[a_blk]
            if self._scale is None:
                eps, ay = torch.finfo(y0.dtype).eps, dy0.abs()
                tols = [torch.as_tensor(v, dtype=y0.dtype, device=y0.device) for v in (self.atol, self.rtol)]
                floor = (4 * eps) * (ay + (dh * f0.detach()).abs())  # roundoff level
                self._scale = (tols[0] + tols[1] * ay + floor).broadcast_to(shape).clamp_min(torch.finfo(y0.dtype).tiny)
            scale = self._scale
            for i in idx:
                dks[i] = f0.detach()
            converged = False
            for _ in range(self.max_iters):
                self.newton_iters += 1
                res = torch.stack([dks[i] - self._stage(i, dt0, dt1, dh, dy0, dks) for i in idx]).reshape(-1)
                delta = _solve(lu, -res)
                err = float((dh * delta.reshape(m, *shape) / scale).pow(2).mean().sqrt())
                if not math.isfinite(err) and not bool(torch.isfinite(delta).all()):
                    break  # diverged: keep the last finite stages
                for p, i in enumerate(idx):
                    dks[i] = dks[i] + delta[p * n:(p + 1) * n].reshape(shape)
                if err <= 1.0:
                    converged = True
                    break
        if not converged:
            self.not_converged += 1
            if self.not_converged == 1:
                warnings.warn(f"{tab.name}: the Newton iteration did not converge within max_iters={self.max_iters} "
                              f"at t={t1f:g}; the solution may be inaccurate (reduce the step size, raise "
                              f"max_iters or loosen rtol/atol)", RuntimeWarning, stacklevel=5)
        k_star = [dks[i] for i in idx]
        if not torch.is_grad_enabled():
            return k_star
        # Implicit-function-theorem gradient: value K*, derivative −M⁻¹ ∂R/∂θ (module docstring).
        mixed = list(ks)
        for i in idx:
            mixed[i] = dks[i]
        fs = [self._stage(i, t0, t1, h, y0, mixed) for i in idx]
        if not any(f.requires_grad for f in fs):
            return k_star
        res_g = -torch.stack(fs).reshape(-1)  # R(K*) = K* − F up to the constant K*
        with torch.no_grad():
            jacs = []
            for i in idx:
                ti, yi, side = self._stage(i, dt0, dt1, dh, dy0, dks, at_state=True)
                jacs.append(jacobian(self.call, ti, yi, side))
            a_t = torch.tensor(a_blk, dtype=y0.dtype, device=y0.device)
            blocks = a_t[:, :, None, None] * torch.stack(jacs)[:, None]  # (i, j) block: aᵢⱼ Jᵢ
            eye = torch.eye(m * n, dtype=y0.dtype, device=y0.device)
            exact = _factor(eye - dh * blocks.permute(0, 2, 1, 3).reshape(m * n, m * n), tab.name)
        corr = _solve(exact, res_g - res_g.detach())
        return [k_star[p] - corr[p * n:(p + 1) * n].reshape(shape) for p in range(m)]
