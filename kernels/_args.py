"""Argument handling shared by the kernels and their references: noise keys and coefficients.

Nothing here reads device memory: the launchers stay free of host syncs, so
they can run inside a captured CUDA graph.  Values of ``sample_index`` are
therefore not range-checked here (:func:`sdekit.noise.check_sample_index`
does that, with one sync, for user input).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch

from sdekit.noise import MASK32, split_seed


@dataclass(frozen=True)
class NoiseKey:
    """Philox key words and per-sample counters of one draw: ``z[b, j]`` is keyed by
    ``(seed, sample_index[b], j, stream)`` (see :mod:`sdekit.noise`)."""

    k0: int
    k1: int
    stream: int
    sample_index: torch.Tensor  # (B,) int64 on the data's device


def noise_key(seed, sample_index, stream, batch: int, device) -> NoiseKey:
    """Validate ``seed`` (int in [0, 2⁶⁴)), ``stream`` (int in [0, 2³²)) and ``sample_index``.

    ``sample_index`` ``None`` means ``arange(batch)``; otherwise an integer tensor of
    shape ``(batch,)`` on ``device`` (values in [0, 2³²), not checked here).

    Raises:
        ValueError / TypeError: naming the bad argument.
    """
    if seed is None:
        raise ValueError("seed must be given (an integer in [0, 2**64)) when the noise is drawn in the kernel; "
                         "or pass z explicitly")
    k0, k1 = split_seed(seed)
    if isinstance(stream, bool) or not isinstance(stream, int) or not 0 <= stream <= MASK32:
        raise ValueError(f"stream must be an integer in [0, 2**32), got {stream!r}")
    if sample_index is None:
        sample_index = torch.arange(batch, dtype=torch.int64, device=device)
    else:
        if not isinstance(sample_index, torch.Tensor) or sample_index.dtype.is_floating_point \
                or sample_index.dtype == torch.bool or sample_index.is_complex():
            raise TypeError(f"sample_index must be an integer torch.Tensor, got {sample_index!r}")
        if tuple(sample_index.shape) != (batch,):
            raise ValueError(f"sample_index must have shape ({batch},), got {tuple(sample_index.shape)}")
        if sample_index.device != torch.device(device):
            raise ValueError(f"sample_index must be on the data's device {device}, got {sample_index.device}")
    return NoiseKey(k0, k1, stream, sample_index)


@dataclass(frozen=True)
class Coef:
    """A coefficient: a Python float, or a tensor of one value per sample (``stride`` 0: one shared value)."""

    value: float | torch.Tensor
    stride: int

    @property
    def is_vec(self) -> bool:
        return isinstance(self.value, torch.Tensor)

    def is_zero(self) -> bool:
        return not isinstance(self.value, torch.Tensor) and self.value == 0.0  # is_vec, spelled so the type narrows

    def column(self, x: torch.Tensor, dtype: torch.dtype):
        """The coefficient in ``dtype``, shaped to broadcast against ``x`` ``(B, *D)`` (a float stays a float)."""
        if not isinstance(self.value, torch.Tensor):  # not is_vec
            return self.value
        v = self.value.to(dtype)
        v = v.expand(x.shape[0]) if v.dim() == 0 else v
        return v.reshape((x.shape[0],) + (1,) * (x.dim() - 1))


class AffineCoefs(NamedTuple):
    """The four coefficients of the affine update ``a·x + b·s + d + c·z`` (:mod:`sdekit.kernels.affine`)."""

    a: Coef
    b: Coef
    c: Coef
    d: Coef


def affine_coefs(a, b, c, d, batch: int, device) -> AffineCoefs:
    """:func:`coef` of each of ``a``, ``b``, ``c``, ``d`` (named in its error)."""
    return AffineCoefs(*(coef(n, v, batch, device) for n, v in zip("abcd", (a, b, c, d))))


def coef(name: str, v, batch: int, device) -> Coef:
    """Normalise a coefficient: a finite real number, or a floating tensor of shape ``()`` or ``(batch,)``.

    Raises:
        ValueError / TypeError: naming ``name``.
    """
    if isinstance(v, torch.Tensor):
        if not v.is_floating_point():
            raise TypeError(f"{name} must be a float or a floating tensor, got dtype {v.dtype}")
        if v.device != torch.device(device):
            raise ValueError(f"{name} must be on the data's device {device}, got {v.device}")
        if v.dim() == 0:
            return Coef(v, 0)
        if tuple(v.shape) != (batch,):
            raise ValueError(f"{name} must be a number or have shape () or ({batch},), got {tuple(v.shape)}")
        return Coef(v, v.stride(0))
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise TypeError(f"{name} must be a finite real number or a tensor, got {v!r}")
    return Coef(float(v), 0)


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """Arithmetic dtype of the references: float32 for 16/32-bit storage, float64 for float64."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def check_data(name: str, t, like: torch.Tensor | None = None) -> torch.Tensor:
    """Raise unless ``t`` is a floating tensor with a batch dimension (and ``like``'s shape and device)."""
    if not isinstance(t, torch.Tensor) or not t.is_floating_point():
        raise TypeError(f"{name} must be a floating torch.Tensor, got {t!r:.80}")
    if t.dim() < 1 or t.shape[0] < 1:
        raise ValueError(f"{name} must have shape (B, *D) with B >= 1, got {tuple(t.shape)}")
    if like is not None:
        if t.shape != like.shape:
            raise ValueError(f"{name} must have the shape of x {tuple(like.shape)}, got {tuple(t.shape)}")
        if t.device != like.device:
            raise ValueError(f"{name} must be on x's device {like.device}, got {t.device}")
    return t


def check_out(out, x: torch.Tensor, name: str = "out") -> None:
    """Raise unless ``out`` is a contiguous tensor of ``x``'s shape, dtype and device."""
    if not isinstance(out, torch.Tensor) or out.shape != x.shape or out.dtype != x.dtype or out.device != x.device:
        raise ValueError(f"{name} must be a tensor of x's shape {tuple(x.shape)}, dtype {x.dtype} and device "
                         f"{x.device}, got {out!r:.80}")
    if not out.is_contiguous():
        raise ValueError(f"{name} must be contiguous (it is written in place)")
