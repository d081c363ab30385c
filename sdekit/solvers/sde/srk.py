"""Rößler's stochastic Runge–Kutta methods of strong order 1.5: SRA (additive noise), SRI (diagonal noise)."""

from __future__ import annotations

import torch

from .base import AbstractSDESolver, add_into, axpy, records_graph, sqrt_step
from .problem import result_fits
from .srk_tableaus import SRA1, SRA3, SRI2, SRATableau, SRITableau


class _SRA(AbstractSDESolver):
    """Explicit SRA scheme (Rößler 2010, eq. (6.1)) for ``dy = f(t, y) dt + g(t) dW``:

        H_i = y + Σ_j A0_ij f(t + c0_j h, H_j) h + Σ_j B0_ij g(t + c1_j h) · I_(1,0)/h,
        y₁  = y + Σ_i α_i f(t + c0_i h, H_i) h + Σ_i g(t + c1_i h) · (β1_i I_(1) + β2_i I_(1,0)/h),

    with ``I_(1) = ΔW`` and ``I_(1,0) = ∫ (W_s − W_t) ds = ΔZ`` from the Brownian object
    (space-time Lévy area).  Additive noise only, where Itô and Stratonovich coincide.
    """

    tableau: SRATableau = SRA1
    noise_types = ("additive",)
    sde_types = ("ito", "stratonovich")
    uses_area = True
    source = "Rößler 2010, SIAM J. Numer. Anal. 48(3), eq. (6.1), §6.1"

    @classmethod
    def strong_order(cls, noise_type):
        return 1.5

    def step(self, t0, h, y, state, dW, dZ):
        p, tab = self.problem, self.tableau
        # The diffusion does not depend on y: evaluate it once per distinct node c1.
        G = {c: p.diffusion(t0 + c * h, y) for c in sorted(set(tab.c1))} if p.has_diffusion else None

        def noise(total, c, terms):
            """``total + G(t + c h)·Σ β s v`` over ``terms`` = ((β, s, v), …) (β a tableau weight, s a float or
            per-row scale), fused where ``G`` is elementwise."""
            terms = [(beta * scale, v) for beta, scale, v in terms if beta]
            if not terms:
                return total
            if G is not None and p.form == "elementwise" and len(terms) == 1:
                (a, v), = terms
                return _noise_term(total, a, G[c], v, total is not y)
            v0, a0 = terms[0][1], terms[0][0]
            # work tensors reused every step, unless a graph could save them (G's product saves w;
            # prod itself writes into its scratch only without a graph)
            into = isinstance(a0, float) and not records_graph(y, *([G[c]] if G is not None else []))
            w = torch.mul(v0, a0, out=self.scratch(v0, "w")) if into else v0 * a0
            for a, v in terms[1:]:
                w = axpy(w, a, v, True)
            gw = p.prod(G[c], w, out=self.scratch(y, "gw")) if G is not None else p.g_prod(t0 + c * h, y, w)
            return total + gw if total is y else add_into(total, gw)

        inv_h = 1.0 / h  # I_(1,0)/h = ΔZ·(1/h), folded into the weights
        fs = []
        y1 = y
        for i in range(tab.stages):
            H = y
            for j in range(i):
                if tab.A0[i][j]:
                    H = axpy(H, tab.A0[i][j] * h, fs[j], H is not y)
                H = noise(H, tab.c1[j], ((tab.B0[i][j], inv_h, dZ),))
            fs.append(p.drift(t0 + tab.c0[i] * h, H))
            if tab.alpha[i]:
                y1 = axpy(y1, tab.alpha[i] * h, fs[i], y1 is not y)
            y1 = noise(y1, tab.c1[i], ((tab.beta1[i], 1.0, dW), (tab.beta2[i], inv_h, dZ)))
        return y1, state


class SRA1Solver(_SRA):
    """SRA1 (two drift evaluations per step): strong order 1.5, weak order 2.0 (Rößler 2010, Table 6.1;
    diffrax's SDE solver table)."""

    name = "sra1"
    tableau = SRA1

    @classmethod
    def weak_order(cls, noise_type):
        return 2.0


class SRA3Solver(_SRA):
    """SRA3 (three drift evaluations per step): strong order 1.5, deterministic order 3 (Rößler 2010, Table 6.2).

    Weak order not declared: we have no source stating it (strong order 1.5 implies weak
    order ≥ 1.5 for Lipschitz test functions; benchmarks/orders_sde.py measures it).
    """

    name = "sra3"
    tableau = SRA3

    @classmethod
    def weak_order(cls, noise_type):
        return None


class SRI2Solver(AbstractSDESolver):
    """SRI2 for Itô SDEs with scalar or diagonal noise (Rößler 2010, eq. (6.2), Table 6.3):

        H0_i = y + Σ_j A0_ij f(t + c0_j h, H0_j) h + Σ_j B0_ij g(t + c1_j h, H1_j) I_(1,0)/h,
        H1_i = y + Σ_j A1_ij f(t + c0_j h, H0_j) h + Σ_j B1_ij g(t + c1_j h, H1_j) √h,
        y₁ = y + Σ_i α_i f_i h + Σ_i (β1_i I_(1) + β2_i I_(1,1)/√h + β3_i I_(1,0)/h + β4_i I_(1,1,1)/h) g_i,

    with ``I_(1,1) = (ΔW² − h)/2``, ``I_(1,1,1) = (ΔW³ − 3hΔW)/6`` per noise channel (diagonal
    noise decouples the channels).  Strong order 1.5.  Weak order not declared: we have no
    source stating it (strong order 1.5 implies weak order ≥ 1.5 for Lipschitz test
    functions; benchmarks/orders_sde.py measures it).
    """

    name = "sri2"
    tableau: SRITableau = SRI2
    noise_types = ("diagonal", "scalar")
    sde_types = ("ito",)
    uses_area = True
    needs_diffusion = True
    source = "Rößler 2010, SIAM J. Numer. Anal. 48(3), eq. (6.2), Table 6.3"

    @classmethod
    def strong_order(cls, noise_type):
        return 1.5

    @classmethod
    def weak_order(cls, noise_type):
        return None

    def step(self, t0, h, y, state, dW, dZ):
        p, tab = self.problem, self.tableau
        sqrt_h = sqrt_step(h)
        # The iterated integrals as raw tensors times scalars, the scalars folded into the weights:
        # I_(1,0)/h = ΔZ·(1/h), I_(1,1)/√h = (ΔW² − h)·(1/(2√h)), I_(1,1,1)/h = ΔW(ΔW² − 3h)·(1/(6h)).
        # The integrals are built in work tensors reused every step: they never require grad, and the
        # weights made from them are the only values a graph could save (then they are new tensors).
        reuse = not dW.requires_grad and isinstance(h, float)
        dW2 = torch.mul(dW, dW, out=self.scratch(dW, "dW2")) if reuse else dW * dW
        u11 = torch.sub(dW2, h, out=self.scratch(dW, "u11")) if reuse else dW2 - h
        u111 = dW2.sub_(3.0 * h).mul_(dW)
        integrals = ((dW, 1.0), (u11, 0.5 / sqrt_h), (dZ, 1.0 / h), (u111, 1.0 / (6.0 * h)))
        fs, gs = [], []
        y1 = y
        for i in range(tab.stages):
            H0 = H1 = y
            for j in range(i):
                if tab.A0[i][j]:
                    H0 = axpy(H0, tab.A0[i][j] * h, fs[j], H0 is not y)
                if tab.A1[i][j]:
                    H1 = axpy(H1, tab.A1[i][j] * h, fs[j], H1 is not y)
                if tab.B0[i][j]:  # B0 g_j I_(1,0)/h
                    H0 = _noise_term(H0, tab.B0[i][j] / h, gs[j], dZ, H0 is not y)
                if tab.B1[i][j]:
                    H1 = axpy(H1, tab.B1[i][j] * sqrt_h, gs[j], H1 is not y)
            needs_f = tab.alpha[i] or any(row[i] for row in tab.A0[i + 1:] + tab.A1[i + 1:] if len(row) > i)
            fs.append(p.drift(t0 + tab.c0[i] * h, H0) if needs_f else None)
            gs.append(p.diffusion_column(t0 + tab.c1[i] * h, H1))
            if tab.alpha[i]:
                y1 = axpy(y1, tab.alpha[i] * h, fs[i], y1 is not y)
            # Σ_k β_k,i I_k: one fused multiply-add per nonzero weight
            weight = None
            # a graph through g or y1 saves the weight (addcmul's operand): then it must be a new tensor
            into = reuse and not records_graph(gs[i], y1)
            for beta, (integral, scale) in zip((tab.beta1[i], tab.beta2[i], tab.beta3[i], tab.beta4[i]), integrals):
                if not beta:
                    continue
                if weight is None:
                    weight = (torch.mul(integral, beta * scale, out=self.scratch(integral, "weight")) if into
                              else integral * (beta * scale))
                else:
                    weight = axpy(weight, beta * scale, integral, True)
            if weight is not None:
                y1 = _noise_term(y1, 1.0, gs[i], weight, y1 is not y)
        return y1, state


def _noise_term(total, a, g, v, owned: bool):
    """``total + a·g·v``; ``g`` ``(B, d)`` and ``v`` ``(B, d)`` or, for scalar noise, ``(B, 1)``."""
    return axpy(total, a, g, owned and result_fits(total, g, v), v)
