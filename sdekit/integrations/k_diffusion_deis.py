"""DEIS: the exponential-integrator multistep sampler (tAB in log σ), in k-diffusion's signature.

Re-exported by :mod:`sdekit.integrations.k_diffusion` (import it from there);
the conventions are that module's.

Source: Zhang & Chen 2023 ("Fast Sampling of Diffusion Models with Exponential
Integrator", DEIS), §4, the time-scaled Adams–Bashforth method "tAB-DEIS": in
``x̃ = x/α`` at ``ρ = σ/α`` the probability flow is ``dx̃/dρ = ε̂(x̃, ρ)`` (the
noise prediction, ``(x̃ − D)/ρ``; Zhang & Chen eq. 15 with their ``ρ``), and
a step integrates the polynomial interpolant of the last ``m`` values of ``ε̂``
*in* ``log ρ`` exactly over ``ρ``:

    x_{i+1} = x_i + Σ_j c_ij ε̂_{i−j},   c_ij = ∫_{ρ_i}^{ρ_{i+1}} ℓ_j(log τ) dτ,

``ℓ_j`` the Lagrange basis of the nodes ``log ρ_i, …, log ρ_{i−m+1}``
(diffusers' ``DEISMultistepScheduler``, ``solver_type="logrho"``, has the same
weights in closed form).  ``m = min(order, i + 1)``; with ``lower_order_final``
on grids of fewer than 15 steps the last step uses ``m = 1`` and the one before
``m <= 2`` (diffusers' rule).  A step to ``σ = 0`` is the Euler step, which returns
``D``.  The weights are computed once per call on the host in float64 by
24-point Gauss–Legendre quadrature in the step's own variable (exact to round-off
for ``|log(σ_{i+1}/σ_i)| < 5``; the integrand is a polynomial times an exponential).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from numpy.polynomial import polynomial as P

from .._checks import check_positive_int
from .k_diffusion_multistep import slope_multistep

__all__ = ["deis_coefficients", "sample_deis"]

_NODES, _WEIGHTS = np.polynomial.legendre.leggauss(24)
_V, _W = 0.5 * (_NODES + 1), 0.5 * _WEIGHTS  # on [0, 1]


def _orders(n: int, order: int, lower_order_final: bool) -> list[int]:
    orders = [min(order, i + 1) for i in range(n)]
    if lower_order_final and n < 15:
        orders[-1] = 1
        if n >= 2:
            orders[-2] = min(orders[-2], 2)
    return orders


def deis_coefficients(sigmas, order: int, lower_order_final: bool = True) -> list[list[float]]:
    """The tAB-DEIS weights ``c_ij`` (log-ρ interpolation) on the grid ``sigmas``.

    Args:
        sigmas: the ``n + 1`` grid points (floats, strictly decreasing, ``>= 0``; units of ``x``).
        order: the number of past slopes, ``>= 1``.
        lower_order_final: diffusers' lower orders on the last two steps of grids under 15 steps.
    Returns:
        ``n`` lists, list ``i`` holding ``m_i`` weights (units of σ), newest slope first;
        a step to 0 gets ``[−σ_i]`` (Euler).
    Raises:
        ValueError / TypeError: if ``order`` is not an integer ``>= 1``.
    """
    order = check_positive_int("order", order)
    sigmas = [float(s) for s in sigmas]
    n = len(sigmas) - 1
    weights = []
    for i, m in enumerate(_orders(n, order, lower_order_final)):
        if sigmas[i + 1] == 0:
            weights.append([-sigmas[i]])
            continue
        H = math.log(sigmas[i + 1] / sigmas[i])  # < 0
        nodes = [(math.log(sigmas[i - k]) - math.log(sigmas[i])) / H for k in range(m)]  # in v, log τ = log σ_i + H v
        density = sigmas[i] * H * np.exp(H * _V)  # dτ/dv
        row = []
        for j, node in enumerate(nodes):
            others = nodes[:j] + nodes[j + 1:]
            basis = P.polyfromroots(others) / math.prod(node - o for o in others)
            row.append(float(np.sum(_W * density * P.polyval(_V, basis))))
        weights.append(row)
    return weights


@torch.no_grad()
def sample_deis(model, x, sigmas, extra_args=None, callback=None, disable=None, order=3, lower_order_final=True):
    """tAB-DEIS (Zhang & Chen 2023, §4; log-ρ Adams–Bashforth) on the probability flow ``dx/dσ = (x − D)/σ``.

    One model call per step; weights from :func:`deis_coefficients`.

    Args:
        model: denoiser ``model(x, sigma, **extra_args)`` → ``(B, *D)``, ``sigma`` ``(B,)``.
        x: ``(B, *D)`` start, ``σ_0 ε``.
        sigmas: ``(n + 1,)`` strictly decreasing noise levels ``>= 0`` (units of ``x``).
        extra_args: per-sample keyword arguments for ``model`` (tensors ``(B, …)``).
        callback: called after each model call with ``{"x", "i", "sigma", "sigma_hat", "denoised"}``.
        disable: disable the tqdm bar.
        order: the number of slopes combined per step, ``>= 1`` (the paper's default 3;
            diffusers' ``solver_order`` defaults to 2).
        lower_order_final: as :func:`deis_coefficients`.
    Returns:
        ``(B, *D)`` the sample at ``sigmas[-1]``.
    Raises:
        ValueError / TypeError: as :func:`~sdekit.integrations.k_diffusion.sample_lms`.
    """
    order = check_positive_int("order", order)
    return slope_multistep(model, x, sigmas, extra_args, callback, disable, order,
                           lambda v, m: deis_coefficients(v, m, lower_order_final))
