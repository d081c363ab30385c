"""Reversible Heun method (Stratonovich, algebraically reversible)."""

from __future__ import annotations

from .base import CommutativeStratonovichSolver


class ReversibleHeun(CommutativeStratonovichSolver):
    """Reversible Heun (Kidger, Foster, Li & Lyons 2021, "Efficient and accurate gradients
    for neural SDEs", NeurIPS, §3, eq. (4)).

    State ``(f, G, z)`` besides ``y`` (torchsde's order, so ``sdeint(..., extra=True)`` and
    ``extra_solver_state=`` exchange it with torchsde), with ``z₀ = y₀``:

        z₁ = 2y − z + f h + G·ΔW,   (f₁, G₁) = (f, G)(t₁, z₁),
        y₁ = y + ½(f + f₁) h + ½(G + G₁)·ΔW.

    The step can be inverted exactly (it is what makes reversible adjoints possible).
    Converges to the Stratonovich solution: strong order 1.0 for commutative noise
    (diagonal, scalar, additive), 0.5 for general noise; weak order 1.0 (the paper, §3;
    diffrax's SDE solver table).  One drift and one diffusion evaluation per step.
    """

    name = "reversible_heun"
    needs_diffusion = True
    source = "Kidger et al. 2021, §3, eq. (4)"

    def init(self, t0, y0):
        f, G = self.problem.drift_and_diffusion(t0, y0)
        return (f, G, y0)

    def step(self, t0, h, y, state, dW, dZ):
        p = self.problem
        f, G, z = state
        z1 = 2.0 * y - z + f * h + p.prod(G, dW)
        f1, G1 = p.drift_and_diffusion(t0 + h, z1)
        y1 = y + 0.5 * (f + f1) * h + p.prod(G + G1, 0.5 * dW)
        return y1, (f1, G1, z1)
