"""Euler–Heun method (Stratonovich)."""

from __future__ import annotations

from .base import CommutativeStratonovichSolver


class EulerHeun(CommutativeStratonovichSolver):
    """Euler–Heun: ``ỹ = y + G·ΔW``, ``y₁ = y + f h + ½(G + G(t₁, ỹ))·ΔW``.

    The stochastic Heun method with the drift taken explicitly: one drift and two
    diffusion evaluations per step (Burrage, Burrage & Tian 2004, §4; torchsde's
    ``euler_heun``).  Converges to the Stratonovich solution: strong order 1.0 for
    commutative noise (diagonal, scalar, additive), 0.5 for general noise; weak order 1.0.
    """

    name = "euler_heun"

    def step(self, t0, h, y, state, dW, dZ):
        p = self.problem
        f, gdW = p.drift_and_g_prod(t0, y, dW)
        gdW1 = p.g_prod(t0 + h, y + gdW, dW)
        return y + f * h + 0.5 * (gdW + gdW1), state
