"""Sub-variance-preserving SDE."""

from __future__ import annotations

import torch

from .vp import VPSDE


class SubVPSDE(VPSDE):
    """Sub-VP SDE ``dx = −½ β(t) x dt + √(β(t) (1 − e^{−2B(t)})) dW``.

    Source: Song et al. 2021, eq. 12 and Appendix B (eq. 29): marginal
    ``N(m(t) x_0, (1 − m(t)²)² I)`` with the VP SDE's ``m(t) = exp(−½ B(t))``;
    its variance is bounded by the VP SDE's.  Prior ``N(0, I)``.  Defaults are
    score_sde's (β_min = 0.1, β_max = 20, T = 1).

    Raises:
        ValueError: as :class:`sdekit.VPSDE`.
    """

    def diffusion(self, x, t):
        return torch.sqrt(self.beta(t) * -torch.expm1(-2.0 * self.integrated_beta(t)))

    def std(self, t):
        return -torch.expm1(-self.integrated_beta(t))

    def transition_var(self, s, t):
        # σ(t)² − r² σ(s)² = (1 − e^{−(B(t)−B(s))}) (1 − e^{−(B(t)+B(s))}), free of cancellation.
        bt, bs = self.integrated_beta(t), self.integrated_beta(s)
        return torch.expm1(-(bt - bs)) * torch.expm1(-(bt + bs))
