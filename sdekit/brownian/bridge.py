"""Conditional Gaussian laws of a Brownian path given its increment and space-time Lévy area.

On an interval ``[a, b]`` of length ``h`` a Brownian motion ``W`` has the increment
``w = W_b − W_a`` and the *space-time Lévy area*

    H = (1/h) ∫_a^b (W_s − W_a − (s − a)/h · w) ds,

the mean of the Brownian bridge ``B_s = W_s − W_a − (s − a) w/h`` over the interval.
``w ~ N(0, h)`` and ``H ~ N(0, h/12)`` are independent (Foster, Lyons & Oberhauser 2020,
"An optimal polynomial approximation of Brownian motion", SIAM J. Numer. Anal. 58(3), §2;
Kloeden & Platen 1992, §10.4, for the equivalent pair ``(ΔW, ΔZ)`` with
``ΔZ = ∫_a^b (W_s − W_a) ds = h(w/2 + H)``, ``Cov(ΔW, ΔZ) = h²/2``, ``Var ΔZ = h³/3``).

Everything below follows from the bridge covariance ``Cov(B_s, B_u) = min(s,u) − s u``
(unit interval) by Gaussian conditioning; the derivations are in the docstrings.  Inputs
are tensors of one shape (or broadcastable) in float64; ``h`` is a Python float or a
broadcastable tensor.
"""

from __future__ import annotations

import math

import torch

_SQRT3 = math.sqrt(3.0)


def root_values(h: float, z0: torch.Tensor, z1: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(w, H)`` of an interval of length ``h`` from two independent standard normals."""
    return math.sqrt(h) * z0, math.sqrt(h / 12.0) * z1


def split_midpoint(w, H, h: float, x1, x2):
    """Exact law of both halves ``(w_L, H_L, w_R, H_R)`` of ``[a, b]`` given its ``(w, H)``.

    With ``S = ∫B = hH``, the bridge midpoint ``B_m`` and the left integral
    ``I_L = ∫_a^m B`` are, given ``S``, independent Gaussians (unit interval:
    ``Var B_m = 1/4``, ``Cov(B_m, S) = 1/8``, ``Cov(I_L, S) = 1/24``, ``Var I_L = 5/192``,
    ``Var S = 1/12``; conditional covariance ``diag(1/16, 1/192)``):

        B_m = (3/2) H + (√h / 4) x1,        I_L = hH/2 + h^{3/2}/(8√3) x2.

    Then ``w_{L,R} = w/2 ± B_m`` and ``H_{L,R} = H/4 − (√h/8) x1 ± (√h/(4√3)) x2``:
    each half has ``w ~ N(0, h/2)``, ``H ~ N(0, h/24)``, and all four are independent.

    Args:
        w, H: the parent's increment and space-time Lévy area.
        h: the parent's length (> 0).
        x1, x2: independent standard normals of the shape of ``w``.
    Returns:
        ``(w_L, H_L, w_R, H_R)``.
    """
    sh = math.sqrt(h)
    b_mid = 1.5 * H + (0.25 * sh) * x1
    common = 0.25 * H - (0.125 * sh) * x1
    spread = (sh / (4.0 * _SQRT3)) * x2
    return 0.5 * w + b_mid, common + spread, 0.5 * w - b_mid, common - spread


def interior_coefficients(r: torch.Tensor):
    """Coefficients of the bridge at the fraction ``r ∈ [0, 1]`` of a unit interval.

    Returns ``(mB, mL, sBB, sLB, sLL)`` (tensors of ``r``'s shape) such that, given
    ``S = ∫_0^1 B`` and two independent standard normals ``x1, x2``,

        B_r   = mB · S + sBB · x1,
        I_L(r) = ∫_0^r B = mL · S + sLB · x1 + sLL · x2

    has the exact conditional law.  Unconditional moments (unit interval):
    ``Var B_r = r(1−r)``, ``Cov(B_r, I_L) = r²(1−r)/2``, ``Cov(B_r, S) = r(1−r)/2``,
    ``Var I_L = r³/3 − r⁴/4``, ``Cov(I_L, S) = r²/4 − r³/6``, ``Var S = 1/12``, so
    ``mB = 6r(1−r)``, ``mL = 3r² − 2r³`` and the conditional covariance is

        c_BB = r(1−r)(1 − 3r(1−r)),  c_BL = r²(1−r)(1/2 − 3r/2 + r²) = r²(1−r)²(1/2 − r),
        c_LL = r³/3 − r⁴/4 − 12(r²/4 − r³/6)² = r³(1−r)³/3,

    factored by Cholesky: ``sBB = √c_BB``, ``sLB = c_BL/sBB`` and, with ``u = r(1−r) ≤ 1/4`` and
    ``(1/2 − r)² = 1/4 − u``, ``sLL² = c_LL − sLB² = r³(1−r)³/(12(1 − 3u))``.  These factored forms
    have no cancellation (the expanded ``c_LL`` loses all its digits as ``r → 1``), so the
    coefficients are accurate to rounding at every ``r`` (the native evaluator, ``_native_tree.c``,
    uses the same forms).  At ``r = 1/2`` this is :func:`split_midpoint`.
    """
    r = r.to(torch.float64)
    q = 1.0 - r
    u = r * q
    mB = 6.0 * r * q
    mL = 3.0 * r**2 - 2.0 * r**3
    spread = 1.0 - 3.0 * u  # in [1/4, 1]
    sBB = (u * spread).clamp_min(0.0).sqrt()
    safe = sBB > 1e-300
    cBL = u * u * (0.5 - r)
    sLB = torch.where(safe, cBL / torch.where(safe, sBB, torch.ones_like(sBB)), torch.zeros_like(sBB))
    sLL = (u * u * u / (12.0 * spread)).clamp_min(0.0).sqrt()
    return mB, mL, sBB, sLB, sLL


def interior_values(w, H, h, r, x1, x2):
    """Increment and area from ``a`` to ``s = a + r h`` inside ``[a, b]`` given its ``(w, H)``.

    Returns ``(W_s − W_a, ∫_a^s (W_u − W_a) du)``: ``r w + B_s`` and
    ``r² h w / 2 + I_L(s)``, with ``(B_s, I_L(s))`` drawn from their exact law given
    ``S = hH`` (see :func:`interior_coefficients`; bridge values scale as ``√h``,
    integrals as ``h^{3/2}``).  ``h`` and ``r`` broadcast against ``w``.
    """
    mB, mL, sBB, sLB, sLL = interior_coefficients(r)
    sh = h**0.5 if isinstance(h, float) else h.sqrt()
    b = mB * H + sh * sBB * x1
    i_left = mL * h * H + h * sh * (sLB * x1 + sLL * x2)
    return r * w + b, 0.5 * r * r * h * w + i_left
