"""Euler–Maruyama."""

from __future__ import annotations

from .base import AbstractSDESolver, add_into


class EulerMaruyama(AbstractSDESolver):
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
