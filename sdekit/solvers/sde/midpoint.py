"""Stochastic midpoint method (Stratonovich)."""

from __future__ import annotations

from .base import CommutativeStratonovichSolver


class Midpoint(CommutativeStratonovichSolver):
    """Midpoint: ``ỹ = y + ½ f h + ½ G·ΔW``, ``y₁ = y + f(t + h/2, ỹ) h + G(t + h/2, ỹ)·ΔW``.

    Converges to the Stratonovich solution (Burrage, Burrage & Tian 2004, §4; torchsde's
    default Stratonovich method): strong order 1.0 for commutative noise (diagonal,
    scalar, additive), 0.5 for general noise; weak order 1.0.  Two drift and two
    diffusion evaluations per step.
    """

    name = "midpoint"

    def step(self, t0, h, y, state, dW, dZ):
        p = self.problem
        f, gdW = p.drift_and_g_prod(t0, y, dW)
        f1, gdW1 = p.drift_and_g_prod(t0 + 0.5 * h, y + 0.5 * f * h + 0.5 * gdW, dW)
        return y + f1 * h + gdW1, state
