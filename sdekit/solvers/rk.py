"""One generic explicit Runge–Kutta stepper that reads :class:`~sdekit.solvers.tableaus.ButcherTableau` data.

Every function works on a batch with a per-sample signed step ``h`` of shape
``(b,)``; stages are combined with the tableau's weights, skipping zeros, so
the cost is one evaluation per stage and one fused multiply-add per nonzero
coefficient (Hairer, Nørsett & Wanner, "Solving ODEs I", §II.1, eq. 1.8).
"""

from __future__ import annotations

import functools

import torch

from .._checks import expand_as_batch
from .tableaus import ButcherTableau


def weighted_sum(ks, weights):
    """``Σᵢ wᵢ kᵢ`` over the nonzero weights (``None`` if all are zero)."""
    total = None
    for w, k in zip(weights, ks):
        if w != 0.0:
            total = w * k if total is None else total + w * k
    return total


def fsal_reuses_last_stage(tableau: ButcherTableau) -> bool:
    """Whether the last stage's state ``y + h Σⱼ aₛⱼkⱼ`` is the new solution ``y + h Σⱼ bⱼkⱼ`` bit for bit.

    True for FSAL tableaus whose ``b`` is the last row of ``a`` (same nonzero
    weights in the same order, so :func:`weighted_sum` does the same operations).
    """
    last = tuple(tableau.a[-1]) if tableau.a else ()
    return bool(tableau.fsal and last and tuple(tableau.b) == last + (0.0,) * (len(tableau.b) - len(last)))


def _stages(func, tableau: ButcherTableau, t, y, h, k_first, args, t_end, hb):
    """:func:`rk_stages` that also returns the last stage's state (``y`` for a one-stage method)."""
    ks = [func(t, y, *args) if k_first is None else k_first]
    yi = y
    for i in range(1, tableau.stages):
        incr = weighted_sum(ks, tableau.a[i])
        ti = t_end if (t_end is not None and tableau.c[i] == 1.0) else t + tableau.c[i] * h
        yi = y if incr is None else y + hb * incr
        ks.append(func(ti, yi, *args))
    return ks, yi


def rk_stages(func, tableau: ButcherTableau, t, y, h, k_first=None, args=(), t_end=None):
    """Evaluate the stages ``kᵢ = func(t + cᵢh, y + h Σⱼ aᵢⱼkⱼ)`` of one step.

    Args:
        func: ``func(t, y, *args)`` with ``t`` ``(b,)`` and ``y`` ``(b, *S)`` → ``(b, *S)``.
        tableau: the method.
        t: ``(b,)`` step start times; y: ``(b, *S)`` states; h: ``(b,)`` signed step sizes.
        k_first: ``func(t, y)`` if already known (FSAL), else ``None``.
        args: per-sample tensors passed on to ``func``.
        t_end: ``(b,)`` time at which the stages with ``cᵢ = 1`` are evaluated
            instead of ``t + h`` (one ulp inside a step that ends on a
            discontinuity of ``func``), or ``None``.
    Returns:
        list of the ``s`` stage derivatives, each ``(b, *S)``.
    """
    return _stages(func, tableau, t, y, h, k_first, args, t_end, expand_as_batch(h, y))[0]


def rk_advance(y, ks, h, weights):
    """``y + h Σᵢ wᵢkᵢ`` with per-sample ``h`` ``(b,)``."""
    incr = weighted_sum(ks, weights)
    return y if incr is None else y + expand_as_batch(h, y) * incr


def dense_weights(tableau: ButcherTableau, theta: torch.Tensor) -> torch.Tensor:
    """Continuous-extension weights ``bᵢ(θ)`` for each ``θ`` of shape ``(P,)`` → ``(P, s)``.

    Raises:
        ValueError: if the tableau has no continuous extension.
    """
    if tableau.dense is None:
        raise ValueError(f"tableau {tableau.name!r} has no dense output; outputs between steps need one")
    if torch.is_inference_mode_enabled() or torch.compiler.is_compiling():  # no cached tensors there
        coeffs_t = _dense_coefficients.__wrapped__(tableau.dense, theta.dtype, theta.device)
    else:
        coeffs_t = _dense_coefficients(tableau.dense, theta.dtype, theta.device)
    # Σₖ θᵏ cₖ with θᵏ by repeated products and the sum term by term (no pow, no matmul): both round
    # differently with the number of rows they are given, and a sample's dense output must not depend on
    # which other samples crossed an output time in the same step
    theta = theta[:, None]
    power = theta
    w = power * coeffs_t[0]
    for k in range(1, coeffs_t.shape[0]):
        power = power * theta
        w = w + power * coeffs_t[k]
    return w


@functools.lru_cache(maxsize=64)
def _dense_coefficients(dense: tuple, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """``coeffs.T`` ``(p, s)`` of a continuous extension (read-only; cached per dtype and device)."""
    return torch.tensor(dense, dtype=dtype, device=device).T.contiguous()


def rk_interpolate(tableau: ButcherTableau, y, ks, h, theta):
    """Dense output ``y(t + θh) = y + h Σᵢ bᵢ(θ) kᵢ`` of an accepted step, one ``θ`` per row.

    Args:
        y: ``(P, *S)`` states at the step start; ks: stage derivatives, each ``(P, *S)``;
        h: ``(P,)`` signed step sizes; theta: ``(P,)`` fractions of the step in [0, 1].
    Returns:
        ``(P, *S)``.
    """
    w = dense_weights(tableau, theta.to(y.dtype))  # (P, s)
    dense = tableau.dense
    assert dense is not None  # dense_weights raised otherwise
    incr = sum(expand_as_batch(w[:, i], y) * k for i, k in enumerate(ks) if any(dense[i]))
    return y + expand_as_batch(h, y) * incr
