"""Predictors: one reverse-time step from ``t`` down to ``t_next < t``.

Every predictor here is an affine update with per-step scalars,

    x_mean = a x + b s + d,    x = x_mean + c z,    s = score(x, t), z ~ N(0, I),

whose coefficients :meth:`AbstractPredictor.coefficients` returns (float64,
computed once for the whole time grid): that is the form the fused kernel
:func:`sdekit.kernels.affine_update` implements.  The one exception is
Euler–Maruyama on a non-linear SDE (or one with element-wise diffusion), whose
drift is not affine in ``x``: :meth:`EulerMaruyamaPredictor.coefficients` returns
``None`` and :meth:`EulerMaruyamaPredictor.keyed_step` applies the SDE's drift.

:meth:`AbstractPredictor.step` is the single reference step with explicit
noise ``z``; ``t`` and ``t_next`` are ``(B,)`` float64 there (coefficients are
computed in float64 then cast to ``x``'s dtype).
"""

from __future__ import annotations

import abc
import math
import warnings
from typing import NamedTuple

import torch

from .._checks import expand_as_batch
from ..kernels import affine_update, normal
from ..sdes.base import AbstractLinearSDE


class Affine(NamedTuple):
    """Coefficients of ``x_mean = a x + b s + d``, ``x = x_mean + c z`` (float64 tensors of ``t``'s shape)."""

    a: torch.Tensor
    b: torch.Tensor
    c: torch.Tensor
    d: torch.Tensor


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
    def coefficients(self, t: torch.Tensor, t_next: torch.Tensor) -> Affine | None:
        """Affine coefficients of the step from ``t`` to ``t_next`` (float64 tensors, any equal shape)."""

    def step(self, x, t, t_next, z):
        """Reference step: return ``(x_new, x_mean)``, both of ``x``'s shape.

        ``t``, ``t_next``: ``(B,)`` float64; ``z``: noise of ``x``'s shape.
        """
        co = self.coefficients(t, t_next)
        s = self.score(x, t.to(x.dtype))
        x_mean = _col(co.a, x) * x + _col(co.b, x) * s + _col(co.d, x)
        return x_mean + _col(co.c, x) * z, x_mean


class EulerMaruyamaPredictor(AbstractPredictor):
    """Euler–Maruyama on the reverse SDE: ``x − (f − g² s) Δ + g √Δ z``, ``Δ = t − t_next``.

    Source: Song et al. 2021, Appendix D.1 (``EulerMaruyamaPredictor``).  Works
    for any SDE.  For a linear SDE (drift ``α(t) x + β(t)``, read off the SDE's
    ``drift`` at ``x = 0`` and ``x = 1``) the step is affine:
    ``a = 1 − αΔ``, ``b = g²Δ``, ``d = −βΔ``, ``c = g√Δ``.
    """

    name = "euler_maruyama"

    def coefficients(self, t, t_next):
        if not isinstance(self.sde, AbstractLinearSDE):
            return None
        t, t_next = t.double(), t_next.double()
        dt = t_next - t
        probe = torch.zeros(t.shape + (1,), dtype=torch.float64, device=t.device)
        beta = self.sde.drift(probe, t)[..., 0]
        alpha = self.sde.drift(probe + 1, t)[..., 0] - beta
        g = self.sde.diffusion(probe, t)
        if g.shape != t.shape:  # element-wise diffusion: not a per-step scalar
            return None
        return Affine(1 + alpha * dt, -(g**2) * dt, g * (-dt).sqrt(), beta * dt)

    def step(self, x, t, t_next, z):
        """Reference step (as :meth:`AbstractPredictor.step`); without affine coefficients
        ``x_mean = x + (f(x, t) − g² s) Δt``, ``x = x_mean + g √(−Δt) z`` for any SDE."""
        if self.coefficients(t, t_next) is not None:
            return super().step(x, t, t_next, z)
        tx, dt = t.to(x.dtype), (t_next - t).to(x.dtype)
        g = self.sde.diffusion(x, tx)
        g = expand_as_batch(g, x) if g.dim() == 1 else g
        x_mean = x + (self.sde.drift(x, tx) - g**2 * self.score(x, tx)) * expand_as_batch(dt, x)
        return x_mean + g * expand_as_batch((-dt).sqrt(), x) * z, x_mean

    def keyed_step(self, x, s, tx, dt: float, *, seed, sample_index, stream, backend=None):
        """Keyed-noise step for SDEs without affine coefficients (``dt = t_next − t`` < 0, ``tx`` ``(B,)``).

        With a per-sample diffusion ``g`` ``(B,)`` the update is the fused
        ``affine_update(x, f − g² s, 1, Δt, c=g√(−Δt))``; with element-wise
        diffusion the keyed noise is drawn first.
        """
        g = self.sde.diffusion(x, tx)
        if g.dim() == 1:
            drift = self.sde.drift(x, tx) - expand_as_batch(g, x) ** 2 * s
            return affine_update(x, drift, 1.0, dt, g * math.sqrt(-dt), seed=seed, sample_index=sample_index,
                                 stream=stream, backend=backend)
        z = normal(seed, sample_index, stream, x.shape[1:], dtype=x.dtype, backend=backend)
        return x + (self.sde.drift(x, tx) - g**2 * s) * dt + g * math.sqrt(-dt) * z

    general_step = keyed_step  # its former name


class ReverseDiffusionPredictor(AbstractPredictor):
    """Reverse diffusion: ``x_mean = x − f_i + G_i² s``, ``x = x_mean + G_i z``.

    Source: Song et al. 2021, eq. 46 (Appendix E).  The forward discretisation
    ``x_t = x_s + f_i + G_i z`` is the SDE's *exact* transition from
    ``s = t_next`` to ``t``: ``f_i = (r − 1) x + c``, ``G_i² = σ(t)² − r² σ(s)²``,
    so ``a = 2 − r``, ``b = G²``, ``d = −c``.
    (score_sde uses first-order approximations of ``r``, ``c`` and ``G``.)
    """

    name = "reverse_diffusion"
    requires_linear = True

    def coefficients(self, t, t_next):
        r, c, G = self.sde.transition(t_next, t)
        return Affine(2 - r, G**2, G, -c)


class AncestralSamplingPredictor(AbstractPredictor):
    """Ancestral sampling from the Gaussian posterior ``q(x_s | x_t, x̂_0)``, ``s = t_next``.

    ``x̂_0 = (x − c(t) + σ(t)² s)/m(t)`` by Tweedie's formula, then with the
    exact transition ``x_t = r x_s + c + G z``:
    ``mean = (G² (m(s) x̂_0 + c(s)) + r σ(s)² (x − c)) / σ(t)²``,
    ``var = σ(s)² G² / σ(t)²``.
    Source: Ho et al. 2020, eqs. 6–7 (for VP this is DDPM's sampler with the
    posterior variance β̃); for VE it is exactly Song et al. 2021, eq. 47
    (score_sde's ``AncestralSamplingPredictor``).

    ``variance_type`` (diffusers' ``DDPMScheduler`` names): ``"fixed_small"``
    (default) is the posterior variance above, DDPM's ``σ_t² = β̃_t``;
    ``"fixed_large"`` keeps the mean and uses the forward transition's variance
    ``G² = σ(t)² − r² σ(s)²`` instead, DDPM's ``σ_t² = β_t`` (Ho et al. 2020,
    §3.2: both are optimal in the two extreme cases of the data, a point mass
    and ``N(0, I)``; score_sde's VP ``AncestralSamplingPredictor`` uses β).

    Raises:
        ValueError: ``variance_type`` not ``"fixed_small"`` or ``"fixed_large"``.
    """

    name = "ancestral"
    requires_linear = True
    VARIANCE_TYPES = ("fixed_small", "fixed_large")

    def __init__(self, sde, score, variance_type: str = "fixed_small"):
        if variance_type not in self.VARIANCE_TYPES:
            raise ValueError(f"variance_type must be one of {list(self.VARIANCE_TYPES)}, got {variance_type!r}")
        super().__init__(sde, score)
        self.variance_type = variance_type

    def coefficients(self, t, t_next):
        sde = self.sde
        r, c, G = sde.transition(t_next, t)
        m_t, m_s = sde.mean_coeff(t), sde.mean_coeff(t_next)
        off_t, off_s = sde.mean_offset(t), sde.mean_offset(t_next)
        var_t, var_s, G2 = sde.std(t) ** 2, sde.std(t_next) ** 2, G**2
        # x_mean = a x + b s + d, from substituting x̂_0 into the posterior mean.
        a = (G2 * m_s / m_t + r * var_s) / var_t
        b = G2 * m_s / m_t
        d = (G2 * (off_s - m_s * off_t / m_t) - r * var_s * c) / var_t
        c = G if self.variance_type == "fixed_large" else (var_s * G2 / var_t).sqrt()
        return Affine(a, b, c, d)


class DDIMPredictor(AbstractPredictor):
    """DDIM with noise fraction ``η``: ``x_s = α_s x̂_0 + c_s + √(σ_s² − σ_η²) ε̂ + σ_η z``, ``s = t_next``.

    Source: Song, Meng & Ermon 2021 ("DDIM"), eq. 12 with ``σ_η`` of eq. 16:
    ``σ_η² = η² σ_s² G²/σ_t²``, the posterior variance of :class:`AncestralSamplingPredictor`
    times ``η²`` (``G² = σ_t² − r² σ_s²`` from the exact transition
    ``x_t = r x_s + c + G z``).  ``x̂_0 = (x − c_t + σ_t² s)/α_t`` (Tweedie) and
    ``ε̂ = −σ_t s``, so the step is affine:
    ``a = α_s/α_t``, ``b = α_s σ_t²/α_t − σ_t √(σ_s² − σ_η²)``,
    ``d = c_s − α_s c_t/α_t``, ``c = σ_η``.  ``η = 0`` is the deterministic
    DDIM (an Euler step of the probability flow in ``σ/α``, DDIM §4.3),
    ``η = 1`` DDPM's ancestral step (:class:`AncestralSamplingPredictor`, same law).  On the
    scaled VE process it is k-diffusion's ancestral Euler step
    (:func:`sdekit.integrations.k_diffusion.sample_euler_ancestral`).

    Raises:
        ValueError: if ``eta`` is not a number in ``[0, 1]``.
    """

    name = "ddim"
    requires_linear = True

    def __init__(self, sde, score, eta: float = 0.0):
        if isinstance(eta, bool) or not isinstance(eta, (int, float)) or not 0.0 <= eta <= 1.0:
            raise ValueError(f"eta must lie in [0, 1], got {eta!r}")
        super().__init__(sde, score)
        self.eta = float(eta)

    def coefficients(self, t, t_next):
        sde = self.sde
        G = sde.transition(t_next, t)[2]
        m_t, m_s = sde.mean_coeff(t), sde.mean_coeff(t_next)
        sig_t, sig_s = sde.std(t), sde.std(t_next)
        noise = self.eta * sig_s * G / sig_t
        keep = (sig_s**2 - noise**2).clamp_min(0).sqrt()  # >= 0 up to round-off, as η <= 1
        a = m_s / m_t
        return Affine(a, a * sig_t**2 - sig_t * keep, noise, sde.mean_offset(t_next) - a * sde.mean_offset(t))


PREDICTORS = {cls.name: cls for cls in (EulerMaruyamaPredictor, ReverseDiffusionPredictor, AncestralSamplingPredictor,
                                        DDIMPredictor)}

#: The short names these classes had before they took score_sde's (``EulerMaruyamaPredictor``, …): still
#: importable, so that working programs keep working, with a DeprecationWarning and outside ``__all__``
#: (``sdekit.solvers.sde.EulerMaruyama`` is the forward SDE solver; one exported name per class).
DEPRECATED_NAMES = {"EulerMaruyama": EulerMaruyamaPredictor, "ReverseDiffusion": ReverseDiffusionPredictor,
                    "Ancestral": AncestralSamplingPredictor, "DDIM": DDIMPredictor}


def deprecated_name(module: str, name: str):
    """The class behind a :data:`DEPRECATED_NAMES` entry, with a DeprecationWarning naming its new name."""
    cls = DEPRECATED_NAMES[name]
    warnings.warn(f"{module}.{name} is {cls.__name__}; the short name is deprecated", DeprecationWarning,
                  stacklevel=3)
    return cls


def __getattr__(name: str):
    if name in DEPRECATED_NAMES:
        return deprecated_name(__name__, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
