"""Adams–Bashforth and Adams–Bashforth–Moulton multistep steppers on a given time grid.

Both integrate the polynomial ``p`` that interpolates past derivatives
``f_j = f(t_j, y_j)`` over one step (Hairer, Nørsett & Wanner, "Solving
Ordinary Differential Equations I", 2nd ed., §III.1):

* explicit Adams (Adams–Bashforth), order ``k``: ``p`` through
  ``f_n, …, f_{n−k+1}``, eqs. (1.5)–(1.6), coefficients in Table 1.1;
* implicit Adams (Adams–Moulton), order ``k``: ``p`` through
  ``f_{n+1}, f_n, …, f_{n−k+2}``, eqs. (1.8)–(1.9), Table 1.2, solved by
  predictor–corrector iteration ``P(EC)^m E`` (§III.1, "Predictor-corrector
  methods"; the final E is the next step's ``f_n``): an order ``k − 1`` Adams–Bashforth predictor (Euler for
  ``k ≤ 2``), then at most ``max_iters`` fixed-point corrections, stopping once
  a correction is within ``rtol``/``atol`` in RMS.

The weights are the integrals of the Lagrange basis on the actual nodes, so a
non-uniform grid keeps the method's order (the variable-step Adams methods of
§III.5); on a uniform grid they are the classical coefficients.  They are
computed in Python floats (no device work) unless the grid times require
gradients, in which case the same formula runs on 0-d tensors.

Start-up: the first ``k − 1`` (explicit) or ``max(k − 2, 0)`` (implicit) steps, before
the history holds enough derivatives, are taken by a one-step method supplied
by the caller (RK4 in :mod:`sdekit.solvers.fixed_grid`).  A fixed number of
order-4 steps adds an ``O(h⁵)`` global error, so orders up to 5 are kept from
the first step.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Callable

import torch

from .rk import weighted_sum

#: Largest order offered (the RK4 start-up keeps orders ≤ 5, see the module docstring).
MAX_ADAMS_ORDER = 5


def quadrature_weights(x: Sequence) -> list:
    """Weights ``w`` with ``∫₀¹ p(s) ds = Σⱼ wⱼ p(xⱼ)`` for every polynomial ``p`` of degree < ``len(x)``.

    ``wⱼ = ∫₀¹ ℓⱼ(s) ds`` for the Lagrange basis ``ℓⱼ`` on the nodes ``x``
    (HNW I, §III.1: the integrated interpolation polynomial behind eqs. (1.5) and (1.8)).
    Nodes are step fractions ``(t_j − t_n)/h``; on a uniform grid ``x = (0, −1, −2, −3)``
    gives Adams–Bashforth's ``(55, −59, 37, −9)/24`` and ``x = (1, 0, −1, −2)``
    Adams–Moulton's ``(9, 19, −5, 1)/24`` (Tables 1.1 and 1.2).

    Args:
        x: sequence of ``m ≥ 1`` distinct nodes, Python floats or 0-d tensors (dimensionless).
    Returns:
        list of ``m`` weights of the nodes' type (differentiable for tensors).
    """
    weights = []
    for j, xj in enumerate(x):
        coeffs: list = [1.0]  # ∏_{i≠j} (s − xᵢ), lowest power first
        denom = 1.0
        for i, xi in enumerate(x):
            if i == j:
                continue
            shifted: list = [0.0] + coeffs
            coeffs = [s - xi * c for s, c in zip(shifted, coeffs + [0.0])]
            denom = denom * (xj - xi)
        weights.append(sum(c / (p + 1) for p, c in enumerate(coeffs)) / denom)
    return weights


def _rms_ratio(new: torch.Tensor, old: torch.Tensor, rtol: float, atol: float) -> float:
    scale = atol + rtol * torch.maximum(new.abs(), old.abs())
    return float(((new - old) / scale).pow(2).mean().sqrt())


class AdamsStepper:
    """One Adams step per call, keeping the derivative history between calls.

    Call with consecutive steps of one grid: ``stepper(t0, t1, y0, f0, t0f, t1f) -> y1``.

    Args:
        call: ``call(t, y, side)`` evaluates ``f``; ``side`` is ``+1`` at a step start and
            ``−1`` at a step end (the caller nudges those times when perturbing).
        implicit: Adams–Bashforth–Moulton predictor–corrector if true, else Adams–Bashforth.
        order: the method's order ``k``, 1 ≤ k ≤ :data:`MAX_ADAMS_ORDER`.
        startup: one-step method ``startup(t0, t1, y0, f0) -> y1`` for the first steps.
        rtol, atol: corrector convergence tolerances (relative, absolute in units of ``y``).
        max_iters: at most this many corrector evaluations per step (≥ 1).
    Raises:
        ValueError: if ``order`` is out of range or ``max_iters < 1``.
    """

    def __init__(self, call: Callable, implicit: bool, order: int, startup: Callable,
                 rtol: float, atol: float, max_iters: int):
        if not 1 <= order <= MAX_ADAMS_ORDER:
            raise ValueError(f"max_order must be an integer in [1, {MAX_ADAMS_ORDER}], got {order}")
        if max_iters < 1:
            raise ValueError(f"max_iters must be an integer >= 1, got {max_iters}")
        self.call, self.implicit, self.order, self.startup = call, implicit, order, startup
        self.rtol, self.atol, self.max_iters = rtol, atol, max_iters
        # Past derivatives the step needs: k for Bashforth, k − 1 (at least 1, the predictor's) for Moulton.
        self.n_past = max(order - 1, 1) if implicit else order
        self.history: list[tuple[torch.Tensor, float, torch.Tensor]] = []  # (t, float(t), f), newest first
        self.not_converged = 0

    def _weights(self, nodes, t0, t1, t0f: float, t1f: float) -> list:
        """Weights of ``nodes`` (pairs of tensor and float times) for the step ``[t0, t1]``."""
        if torch.is_grad_enabled() and any(isinstance(t, torch.Tensor) and t.requires_grad
                                           for t in (t0, t1, *(n[0] for n in nodes))):
            h = t1 - t0
            return quadrature_weights([(n[0] - t0) / h for n in nodes])
        hf = t1f - t0f
        return quadrature_weights([(n[1] - t0f) / hf for n in nodes])

    def __call__(self, t0, t1, y0, f0, t0f: float, t1f: float):
        """Advance ``y0`` (``f0 = f(t0, y0)``, any shape) from ``t0`` to ``t1`` (0-d tensors; floats ``t0f, t1f``)."""
        self.history.insert(0, (t0, t0f, f0))
        del self.history[self.n_past:]
        if len(self.history) < self.n_past:
            return self.startup(t0, t1, y0, f0)
        h = t1 - t0
        fs = [n[2] for n in self.history]
        pred = self.history[: max(self.order - 1, 1)] if self.implicit else self.history
        y1 = y0 + h * weighted_sum(fs, self._weights(pred, t0, t1, t0f, t1f))
        if not self.implicit:
            return y1
        nodes = [(t1, t1f, None)] + self.history[: self.order - 1]
        w = self._weights(nodes, t0, t1, t0f, t1f)
        past = weighted_sum(fs, w[1:])
        base = y0 if past is None else y0 + h * past
        for _ in range(self.max_iters):
            y_new = base + (h * w[0]) * self.call(t1, y1, -1)
            done = _rms_ratio(y_new.detach(), y1.detach(), self.rtol, self.atol) <= 1.0
            y1 = y_new
            if done:
                return y1
        self.not_converged += 1
        if self.not_converged == 1:
            warnings.warn(f"implicit_adams: the corrector did not converge within max_iters={self.max_iters} "
                          f"at t={t1f:g}; the solution may be inaccurate (reduce the step size or raise "
                          f"max_iters)", RuntimeWarning, stacklevel=5)
        return y1
