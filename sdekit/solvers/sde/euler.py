"""Euler–Maruyama."""

from __future__ import annotations

import torch

from .base import AbstractSDESolver, add_into
from .problem import SDEProblem, result_fits


class StepFromNormals:
    """Solvers whose step is ``y + f h + G ΔW`` on some problems (Euler–Maruyama; Milstein on additive noise).

    There ``sdeint`` on generator noise runs :meth:`step_normal` on the standard normals ``z``
    (``ΔW = √h z``): the update of a hand-written loop, two fused operations per step.
    """

    problem: SDEProblem

    def euler_update(self) -> bool:
        """Whether this solver's step on its problem is exactly the Euler–Maruyama update."""
        return False

    def fuses(self, y: torch.Tensor) -> bool:
        """Whether :meth:`step_normal` applies: the Euler update with an elementwise ``G`` given by ``g``."""
        p = self.problem
        return (self.euler_update() and p.form == "elementwise" and p.has_diffusion and p._g_prod is None
                and not y.is_complex())

    def step_normal(self, t0, h: float, y: torch.Tensor, z: torch.Tensor, sqrt_h: float,
                    out: torch.Tensor | None = None) -> torch.Tensor:
        """The step from the standard normal ``z`` (``ΔW = √h z``): ``y + h f + √h G z`` in two fused operations.

        The loop a user writes by hand (``torch.add(y, f, alpha=h).addcmul_(G, z, value=√h)``); the same
        value as :meth:`step` on ``ΔW = √h z`` up to the rounding of the fused operations.  ``out``: a
        buffer (not ``y``) the new state is written into when no gradient is recorded.
        """
        f, G = self.problem.drift_and_diffusion(t0, y)
        if G.requires_grad:  # backward needs this step's z, and the buffer holds the next step's draw
            z = z.clone()
        if out is not None and (f.requires_grad or y.requires_grad or out.shape != y.shape or out.dtype != y.dtype):
            out = None
        out = torch.add(y, f, alpha=h, out=out)
        if result_fits(out, G, z):
            return out.addcmul_(G, z, value=sqrt_h)
        return out + self.problem.prod(G, z * sqrt_h)


class EulerMaruyama(StepFromNormals, AbstractSDESolver):
    """``y₁ = y + f(t, y) h + G(t, y) · ΔW`` (Kloeden & Platen 1992, §10.2, eq. 2.1; seed notes 002).

    Itô SDEs of any noise type, and Stratonovich SDEs with additive noise (where the two
    coincide).  Strong order 0.5 (1.0 for additive noise), weak order 1.0
    (Kloeden & Platen, Theorems 10.2.2 and 14.5.1).  One drift and one diffusion
    evaluation per step.
    """

    name = "euler"
    sde_types = ("ito",)
    source = "Kloeden & Platen 1992, §10.2"

    @classmethod
    def strong_order(cls, noise_type):
        return 1.0 if noise_type == "additive" else 0.5

    @classmethod
    def weak_order(cls, noise_type):
        return 1.0

    def step(self, t0, h, y, state, dW, dZ):
        f, gdW = self.problem.drift_and_g_prod(t0, y, dW, out=self.scratch(y))
        return add_into(f * h, y, gdW), state  # = y + f h + G·ΔW

    def euler_update(self) -> bool:
        """Always, unless a subclass has its own ``step`` (which then runs as it is)."""
        return type(self).step is EulerMaruyama.step
