"""Dequantisation and bits/dim, with the convention stated explicitly.

Discrete data with ``levels`` values per dimension, ``k ∈ {0, …, levels−1}``,
is mapped to the continuous data range ``[lo, hi]`` by uniform dequantisation

    x = lo + (hi − lo) · (k + u) / levels,   u ~ U[0, 1)^D,

so each discrete value owns a bin of width ``Δ = (hi − lo)/levels``.  For a
continuous density ``p`` on ``[lo, hi]^D`` the discrete model
``P(k) = ∫_bin p`` satisfies ``log P(k) ≥ E_u[log p(x)] + D log Δ``
(Theis et al. 2016, "A note on the evaluation of generative models", §3.1;
Ho et al. 2019, Flow++, eq. 3), and the bits/dim reported is

    bits/dim = −(log p(x) + D log Δ) / (D ln 2).

For 8-bit images (levels = 256) on ``[0, 1]`` this adds the familiar 8 bits
(score_sde's "offset 8"); on ``[−1, 1]`` it adds 7.  No offset is hidden.
"""

from __future__ import annotations

import math

import torch

from .._checks import check_positive_int, check_real, check_tensor


def _bin_width(levels: int, data_range) -> float:
    levels = check_positive_int("levels", levels)
    try:
        if isinstance(data_range, (str, bytes)):
            raise TypeError
        lo, hi = (check_real("data_range", v) for v in data_range)
    except (TypeError, ValueError):
        raise ValueError(f"data_range must be a pair (lo, hi) of finite numbers, got {data_range!r}") from None
    if not hi > lo:
        raise ValueError(f"data_range must be (lo, hi) with hi > lo, got {tuple(data_range)}")
    return (hi - lo) / levels


def dequantize(k: torch.Tensor, levels: int, data_range=(0.0, 1.0), *, generator=None) -> torch.Tensor:
    """Uniformly dequantise integer data ``k`` (any shape) into ``data_range``.

    Args:
        k: integer-valued tensor with values in ``{0, …, levels−1}``.
        levels: number of discrete values per dimension.
        data_range: ``(lo, hi)`` of the continuous data space.
        generator: ``torch.Generator`` for the uniform noise.
    Returns:
        float tensor of ``k``'s shape (float32 unless ``k`` is floating).
    Raises:
        ValueError: if ``k`` has values outside ``[0, levels−1]`` or non-integers,
            ``levels`` is not an integer >= 1, or ``data_range`` is not a pair
            ``(lo, hi)`` of finite numbers with ``hi > lo``.
        TypeError: if ``k`` is not a tensor.
    """
    if not isinstance(k, torch.Tensor):
        raise TypeError(f"k must be a torch.Tensor of integer values, got {type(k).__name__}")
    width = _bin_width(levels, data_range)
    kf = k if k.is_floating_point() else k.to(torch.float32)
    if bool(((kf < 0) | (kf > levels - 1) | (kf != kf.round())).any()):
        raise ValueError(f"k must hold integers in [0, levels-1] = [0, {levels - 1}]")
    u = torch.rand(kf.shape, generator=generator, device=kf.device, dtype=kf.dtype)
    return float(data_range[0]) + width * (kf + u)


def bits_per_dim(log_prob: torch.Tensor, dim: int, levels: int, data_range=(0.0, 1.0)) -> torch.Tensor:
    """Convert continuous log-densities (nats) of dequantised data into bits/dim.

    Args:
        log_prob: ``(B,)`` log-density in nats of dequantised points ``x`` in
            ``data_range`` (e.g. ``sdekit.log_likelihood(...).log_prob``).
        dim: number of dimensions ``D`` per sample.
        levels: discrete values per dimension of the original data.
        data_range: ``(lo, hi)`` the data was dequantised into.
    Returns:
        ``(B,)`` bits/dim, ``−(log p + D log Δ)/(D ln 2)`` with ``Δ = (hi − lo)/levels``.
    Raises:
        ValueError: on a bad ``dim``, ``levels`` or ``data_range``.
        TypeError: if ``log_prob`` is not a floating tensor.
    """
    check_tensor("log_prob", log_prob)
    dim = check_positive_int("dim", dim)
    width = _bin_width(levels, data_range)
    return -(log_prob + dim * math.log(width)) / (dim * math.log(2.0))
