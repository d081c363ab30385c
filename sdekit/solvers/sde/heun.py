"""Stochastic Heun method (Stratonovich)."""

from __future__ import annotations

from .base import CommutativeStratonovichSolver


class Heun(CommutativeStratonovichSolver):
    """Stochastic Heun: predictor ``ỹ = y + f h + G·ΔW``, then
    ``y₁ = y + ½(f + f(t₁, ỹ)) h + ½(G + G(t₁, ỹ))·ΔW``.

    Converges to the Stratonovich solution (Burrage, Burrage & Tian 2004, Proc. R. Soc.
    Lond. A 460, §4; Rümelin 1982): strong order 1.0 for commutative noise (diagonal,
    scalar, additive), 0.5 for general noise; weak order 1.0.  Two drift and two
    diffusion evaluations per step.
    """

    name = "heun"

    def step(self, t0, h, y, state, dW, dZ):
        p = self.problem
        f, gdW = p.drift_and_g_prod(t0, y, dW)
        f1, gdW1 = p.drift_and_g_prod(t0 + h, y + f * h + gdW, dW)
        return y + 0.5 * (f + f1) * h + 0.5 * (gdW + gdW1), state
