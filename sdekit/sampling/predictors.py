"""Predictors: one reverse-time step from ``t`` down to ``t_next < t``.

Each predictor returns ``(x, x_mean)``: the new state and its noise-free
mean.  ``t`` and ``t_next`` are ``(B,)`` float64 (coefficients are computed in
float64 then cast to ``x``'s dtype).  ``z`` is standard normal noise of ``x``'s
shape.  Every predictor is an affine update ``x_mean = a x + b s + c``,
``x = x_mean + d z`` with per-sample scalars, which is the form the fused
kernels implement.
"""

from __future__ import annotations

import abc

import torch

from .._checks import expand_as_batch
from ..sdes.base import AbstractLinearSDE


def _col(v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return expand_as_batch(v.to(x.dtype), x)


class AbstractPredictor(abc.ABC):
    """A reverse-time step.  ``requires_linear`` predictors need exact transitions."""

    requires_linear: bool = False

    def __init__(self, sde, score):
        if self.requires_linear and not isinstance(sde, AbstractLinearSDE):
            raise TypeError(
                f"method={self.name!r} needs a linear SDE with closed-form transitions "
                f"(VPSDE, SubVPSDE, VESDE, OrnsteinUhlenbeck), got {type(sde).__name__}"
            )
        self.sde, self.score = sde, score

    @abc.abstractmethod
    def step(self, x, t, t_next, z):
        """Return ``(x_new, x_mean)``, both of ``x``'s shape."""


class EulerMaruyama(AbstractPredictor):
    """Euler–Maruyama on the reverse SDE: ``x − (f − g² s) Δ + g √Δ z``, ``Δ = t − t_next``.

    Source: Song et al. 2021, Appendix D.1 (``EulerMaruyamaPredictor``).  Works
    for any SDE.
    """

    name = "euler_maruyama"

    def step(self, x, t, t_next, z):
        dt = (t_next - t).to(x.dtype)
        tx = t.to(x.dtype)
        g = self.sde.diffusion(x, tx)
        g = expand_as_batch(g, x) if g.dim() == 1 else g
        drift = self.sde.drift(x, tx) - g**2 * self.score(x, tx)
        x_mean = x + drift * expand_as_batch(dt, x)
        return x_mean + g * expand_as_batch((-dt).sqrt(), x) * z, x_mean


class ReverseDiffusion(AbstractPredictor):
    """Reverse diffusion: ``x_mean = x − f_i + G_i² s``, ``x = x_mean + G_i z``.

    Source: Song et al. 2021, eq. 46 (Appendix E).  The forward discretisation
    ``x_t = x_s + f_i + G_i z`` is the SDE's *exact* transition from
    ``s = t_next`` to ``t``: ``f_i = (r − 1) x + c``, ``G_i² = σ(t)² − r² σ(s)²``.
    (score_sde uses first-order approximations of ``r``, ``c`` and ``G``.)
    """

    name = "reverse_diffusion"
    requires_linear = True

    def step(self, x, t, t_next, z):
        r, c, G = self.sde.transition(t_next, t)
        s = self.score(x, t.to(x.dtype))
        x_mean = (2 - _col(r, x)) * x - _col(c, x) + _col(G**2, x) * s
        return x_mean + _col(G, x) * z, x_mean


class Ancestral(AbstractPredictor):
    """Ancestral sampling from the Gaussian posterior ``q(x_s | x_t, x̂_0)``, ``s = t_next``.

    ``x̂_0 = (x − c(t) + σ(t)² s)/m(t)`` by Tweedie's formula, then with the
    exact transition ``x_t = r x_s + c + G z``:
    ``mean = (G² (m(s) x̂_0 + c(s)) + r σ(s)² (x − c)) / σ(t)²``,
    ``var = σ(s)² G² / σ(t)²``.
    Source: Ho et al. 2020, eqs. 6–7 (for VP this is DDPM's sampler with the
    posterior variance β̃); for VE it is exactly Song et al. 2021, eq. 47
    (score_sde's ``AncestralSamplingPredictor``).  score_sde's VP variant uses
    the variance β instead of β̃.
    """

    name = "ancestral"
    requires_linear = True

    def step(self, x, t, t_next, z):
        sde = self.sde
        r, c, G = sde.transition(t_next, t)
        m_t, m_s = sde.mean_coeff(t), sde.mean_coeff(t_next)
        off_t, off_s = sde.mean_offset(t), sde.mean_offset(t_next)
        var_t, var_s, G2 = sde.std(t) ** 2, sde.std(t_next) ** 2, G**2
        # x_mean = a x + b s + e, from substituting x̂_0 into the posterior mean.
        a = (G2 * m_s / m_t + r * var_s) / var_t
        b = G2 * m_s / m_t
        e = (G2 * (off_s - m_s * off_t / m_t) - r * var_s * c) / var_t
        s = self.score(x, t.to(x.dtype))
        x_mean = _col(a, x) * x + _col(b, x) * s + _col(e, x)
        return x_mean + _col((var_s * G2 / var_t).sqrt(), x) * z, x_mean


PREDICTORS = {cls.name: cls for cls in (EulerMaruyama, ReverseDiffusion, Ancestral)}
