"""Milstein's method (with forward-mode derivatives) and its derivative-free Runge–Kutta variant."""

from __future__ import annotations

import torch

from .base import AbstractSDESolver, add_into, axpy, sqrt_step
from .euler import StepFromNormals
from .problem import mul_maybe_into


class _MilsteinBase(StepFromNormals, AbstractSDESolver):
    noise_types = ("diagonal", "scalar", "additive")
    sde_types = ("ito", "stratonovich")
    needs_diffusion = True

    @classmethod
    def strong_order(cls, noise_type):
        return 1.0

    @classmethod
    def weak_order(cls, noise_type):
        return 1.0

    def _square(self, dW, h):
        """``ΔW² − h`` (Itô: 2 I_(1,1)) or ``ΔW²`` (Stratonovich: 2 J_(1,1)); a new tensor."""
        sq = dW * dW
        return sq.sub_(h) if self.problem.sde_type == "ito" else sq

    def euler_update(self) -> bool:
        """Additive noise: Milstein's correction vanishes and the step is Euler–Maruyama's."""
        return self.problem.noise_type == "additive" and type(self).step in (Milstein.step, DerivativeFreeMilstein.step)

    def _additive(self, t0, h, y, dW):
        """Additive noise: the correction vanishes, ``y + f h + G·ΔW``."""
        p = self.problem
        f = p.drift(t0, y)
        return add_into(f * h, y, p.g_prod(t0, y, dW, out=self.scratch(y)))


class Milstein(_MilsteinBase):
    """Milstein: ``y₁ = y + f h + g ΔW + ½ (g·∇g) (ΔW² − h)`` (Itô; ``ΔW²`` for Stratonovich).

    Kloeden & Platen 1992, §10.3, eq. (3.3) (Itô) and eq. (3.6) (Stratonovich); strong
    order 1.0 and weak order 1.0 for diagonal, scalar and additive noise.  ``g·∇g`` is
    computed by forward-mode AD (``torch.func.jvp``), never by reverse autograd:

    * diagonal noise (``g_i`` depends on ``y_i`` only): ``∂g/∂y · 1 = (∂g_i/∂y_i)_i`` in one
      evaluation, then ``g ⊙ (∂g_i/∂y_i)``;
    * scalar noise: the Jacobian-vector product ``∂g/∂y · g`` (two evaluations);
    * additive noise: the correction vanishes and the step is Euler–Maruyama.

    The diffusion must be differentiable by ``torch.func`` (pure torch operations); use
    ``derivative_free_milstein`` otherwise.

    Difference from torchsde (``milstein``, its ``gdg_prod``), when ``g_i`` depends on all
    of ``y`` (e.g. a neural net; write ``J = ∂g/∂y``, ``v = ΔW² − h`` or ``ΔW²``): torchsde
    adds ``½ Jᵀ (g ⊙ v)`` (a reverse-mode vector-Jacobian product, for both noise types);
    sdekit adds ``½ (J·1) ⊙ g ⊙ v`` (diagonal) and ``½ (J g) v`` (scalar).  Where ``J`` is
    diagonal (``g_i`` depends on ``y_i`` alone: diagonal noise in Kloeden & Platen's sense,
    torchsde's "element-wise") all three equal ``½ g_i ∂g_i/∂y_i v_i`` and the libraries agree
    to round-off.  Otherwise:

    * scalar noise: ``J g = Σ_j g_j ∂g_i/∂y_j`` is the Milstein term (K&P eq. (3.3) with
      ``m = 1``; scalar noise is always commutative); torchsde's ``Jᵀ g`` is not, and its
      Stratonovich variant then has the wrong drift.  sdekit keeps ``J g``.
    * diagonal noise: ``dy_i = g_i(y) dW_i`` with ``∂g_i/∂y_j ≠ 0`` (``j ≠ i``) is
      non-commutative general noise; Milstein needs the Lévy areas ``I_(j,i)``, and no
      ``v``-only formula has strong order 1.  Neither library's term is Milstein's; both
      (and ``derivative_free_milstein``, which approximates ``(J g) ⊙ v``) keep Itô
      consistency (the term has mean 0) but give a Stratonovich drift other than
      ``½ g_i ∂g_i/∂y_i``, so the Stratonovich variants converge to a different SDE.  Use
      ``euler`` (Itô) or ``midpoint`` / ``heun`` (Stratonovich) for such diffusions.
    """

    name = "milstein"
    source = "Kloeden & Platen 1992, §10.3, eqs. (3.3), (3.6)"

    def step(self, t0, h, y, state, dW, dZ):
        p = self.problem
        if p.noise_type == "additive":
            return self._additive(t0, h, y, dW), state
        f = p.drift(t0, y)
        if p.noise_type == "diagonal":
            g, dg = p.diffusion_column_jvp(t0, y, torch.ones_like(y))
            ggp = g * dg
        else:  # scalar: g is (B, d), dW is (B, 1)
            g = p.diffusion_column(t0, y)
            _, ggp = p.diffusion_column_jvp(t0, y, g)
        square = self._square(dW, h)
        if torch.broadcast_shapes(g.shape, dW.shape) == y.shape == ggp.shape and not y.is_complex():
            # y + f h + g ΔW + ½ (g·∇g) (ΔW² − h): three fused multiply-adds
            out = axpy(y, h, f, False)
            return axpy(axpy(out, 1.0, g, True, dW), 0.5, ggp, True, square), state
        correction = 0.5 * ggp * square
        return add_into(f * h, y, mul_maybe_into(g, dW, self.scratch(y)), correction), state


class DerivativeFreeMilstein(_MilsteinBase):
    """Milstein with ``g·∇g`` replaced by a finite difference along the noise (no derivatives).

    ``ȳ = y + f h + g √h`` (Itô; ``ȳ = y + g √h`` for Stratonovich) and
    ``y₁ = y + f h + g ΔW + (g(ȳ) − g(y)) (ΔW² − h) / (2√h)`` (``ΔW²`` for Stratonovich):
    Kloeden & Platen 1992, §11.1, eq. (1.5) (Platen's explicit order-1.0 strong scheme).
    Strong order 1.0, weak order 1.0; two diffusion evaluations per step.  Matches
    torchsde's ``milstein`` with ``grad_free=True`` term for term; ``g(ȳ) − g(y) ≈ (J g) √h``,
    so for diagonal noise whose ``g_i`` depends on all of ``y`` see :class:`Milstein`.
    """

    name = "derivative_free_milstein"
    source = "Kloeden & Platen 1992, §11.1, eq. (1.5)"

    def step(self, t0, h, y, state, dW, dZ):
        p = self.problem
        if p.noise_type == "additive":
            return self._additive(t0, h, y, dW), state
        f = p.drift(t0, y)
        g = p.diffusion_column(t0, y)
        sqrt_h = sqrt_step(h)
        support = y + g * sqrt_h + (f * h if p.sde_type == "ito" else 0.0)
        g_bar = p.diffusion_column(t0, support)
        # y + f h + g ΔW + (ḡ − g)(ΔW² − h)/(2√h), summed left to right.
        correction = (g_bar - g) * self._square(dW, h) / (2.0 * sqrt_h)
        return add_into(f * h, y, g * dW, correction), state
