"""Empirical convergence order: the slope of a log–log fit of error against step size."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class OrderFit:
    """Least-squares fit ``log err = order · log h + log C``.

    Attributes:
        order: the fitted slope (the measured convergence order).
        stderr: its standard error from the fit residuals (0 for two points).
        constant: ``C``, the error constant.
    """

    order: float
    stderr: float
    constant: float


def fit_order(step_sizes, errors) -> OrderFit:
    """Measure a convergence order from errors at several step sizes.

    An order-``p`` method has ``err ≈ C hᵖ`` in the asymptotic range, so ``p``
    is the slope of ``log err`` against ``log h`` (ordinary least squares).

    Args:
        step_sizes: 1-D sequence of at least 2 positive step sizes (SDE time units).
        errors: 1-D sequence of positive errors, one per step size.
    Returns:
        :class:`OrderFit`.
    Raises:
        ValueError: if the lengths differ, fewer than 2 points are given, or a
            step size or error is not positive and finite (an error of exactly 0
            means the problem cannot show the order).
    """
    h = np.asarray(step_sizes, dtype=np.float64).reshape(-1)
    e = np.asarray(errors, dtype=np.float64).reshape(-1)
    if h.size != e.size:
        raise ValueError(f"step_sizes and errors must have the same length, got {h.size} and {e.size}")
    if h.size < 2:
        raise ValueError(f"need at least 2 (step size, error) pairs, got {h.size}")
    for name, v in (("step_sizes", h), ("errors", e)):
        if not (np.all(np.isfinite(v)) and np.all(v > 0)):
            raise ValueError(f"{name} must be positive and finite, got {v.tolist()}")
    x, y = np.log(h), np.log(e)
    A = np.stack([x, np.ones_like(x)], axis=1)
    (slope, intercept), *_ = np.linalg.lstsq(A, y, rcond=None)
    if h.size > 2:
        resid = y - A @ np.array([slope, intercept])
        s2 = float(resid @ resid) / (h.size - 2)
        stderr = float(np.sqrt(s2 / np.sum((x - x.mean()) ** 2)))
    else:
        stderr = 0.0
    return OrderFit(order=float(slope), stderr=stderr, constant=float(np.exp(intercept)))
