"""Triton, imported on first use, and the checks and launch geometry every launcher shares.

Nothing here imports Triton at ``import sdekit`` (it takes ~0.4 s, more with a
cold cache): :func:`triton_available` imports it the first time a backend is
resolved for CUDA data (or ``backend="triton"`` is asked for), and the
``@triton.jit`` kernels (``_tile``, ``philox``, ``reduce`` and the ``_*_kernel``
modules) are imported by the launchers at their first launch.

Triton decides at decoration time whether ``@triton.jit`` compiles for the GPU
or builds an interpreted function (``TRITON_INTERPRET=1``, numpy on the CPU),
and :data:`INTERPRETED` is read once, when Triton is first imported here; so
set ``TRITON_INTERPRET=1`` before the first kernel is used (before ``import
sdekit`` is always early enough) to run them on CPU tensors (that is how the
test suite runs them without a GPU).

``HAS_TRITON``, ``INTERPRETED``, ``triton`` and ``tl`` are still attributes of
this module (and the first two of :mod:`sdekit.kernels`), computed on first access.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
from typing import Any

import torch

_AVAILABLE: bool | None = None  # triton_available(), once known
_INTERPRETED: bool | None = None  # interpreted(), once known


def triton_available() -> bool:
    """Whether ``triton`` and ``triton.language`` import (imports them on the first call; cached).

    triton wheels exist for Linux x86_64/aarch64 only; a broken install (one that
    fails at import, e.g. for a missing C compiler) counts as absent.  The answer
    is kept in a module global (not ``functools.lru_cache``), which Dynamo reads
    as a constant when it traces a caller.
    """
    global _AVAILABLE
    if _AVAILABLE is None:
        try:
            _AVAILABLE = importlib.util.find_spec("triton") is not None
            if _AVAILABLE:
                importlib.import_module("triton")
                importlib.import_module("triton.language")
        except Exception:  # noqa: BLE001 - ImportError, or e.g. a missing C compiler at import
            _AVAILABLE = False
    return _AVAILABLE


def _interpreting() -> bool:
    """Triton's own reading of ``TRITON_INTERPRET`` (its ``knobs``), or the variable itself on old versions."""
    import triton

    knobs = getattr(triton, "knobs", None)
    if knobs is not None:
        return bool(knobs.runtime.interpret)
    return os.environ.get("TRITON_INTERPRET", "0").strip().lower() in ("1", "true", "on", "yes")


def interpreted() -> bool:
    """Whether the kernels are built by Triton's interpreter (they then also accept CPU tensors); cached."""
    global _INTERPRETED
    if _INTERPRETED is None:
        _INTERPRETED = triton_available() and _interpreting()
    return _INTERPRETED


def __getattr__(name: str) -> Any:
    """``HAS_TRITON``, ``INTERPRETED``, ``triton`` and ``tl`` (``None`` without Triton), computed on first access."""
    if name == "HAS_TRITON":
        return triton_available()
    if name == "INTERPRETED":
        return interpreted()
    if name in ("triton", "tl"):
        return importlib.import_module("triton" if name == "triton" else "triton.language") \
            if triton_available() else None
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


#: Storage dtypes the kernels read and write (arithmetic is always float32).
KERNEL_DTYPES = (torch.float32, torch.float16, torch.bfloat16)

#: Elements per program: one tile of ``BLOCK_S`` samples × ``BLOCK_E`` elements.
TILE = 2048
NUM_WARPS = 4


def next_power_of_2(n: int) -> int:
    """The smallest power of two >= ``n`` (``triton.next_power_of_2`` for ``n >= 1``)."""
    return 1 << max(0, n - 1).bit_length()


def cdiv(a: int, b: int) -> int:
    """``ceil(a / b)`` for ``b > 0`` (``triton.cdiv``)."""
    return -(-a // b)


def tile_shape(n: int) -> tuple[int, int]:
    """``(BLOCK_S, BLOCK_E)`` for samples of ``n`` elements each.

    The shape depends on ``n`` only, never on the batch size, so per-sample
    reductions add in the same order whatever the batch: this is what makes the
    norms (and hence the samples) batch-size invariant.  ``BLOCK_E`` is a power
    of two >= 4 (whole Philox groups).
    """
    block_e = min(TILE, max(4, next_power_of_2(n)))
    return max(1, TILE // block_e), block_e


def require_triton(what: str, ref: str) -> None:
    """Raise ``RuntimeError`` naming ``what`` and its reference ``ref`` unless Triton imports."""
    if not triton_available():
        raise RuntimeError(f"{what} needs Triton (pip install 'sdekit[triton]'); use {ref}")


def check_kernel_tensor(name: str, t: torch.Tensor, like: torch.Tensor | None = None) -> None:
    """Raise unless ``t`` can be handed to a kernel: a supported dtype, on a kernel device, matching ``like``."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dtype not in KERNEL_DTYPES:
        raise TypeError(f"{name} must be float32, float16 or bfloat16 for the Triton kernels, got {t.dtype} "
                        "(float64 runs on the PyTorch reference: backend='torch')")
    if t.device.type != "cuda" and not interpreted():
        raise ValueError(f"{name} must be a CUDA tensor for the Triton kernels, got device {t.device} "
                         "(set TRITON_INTERPRET=1 before importing sdekit to run them on the CPU)")
    if like is not None:
        if t.shape != like.shape:
            raise ValueError(f"{name} must have the shape of x {tuple(like.shape)}, got {tuple(t.shape)}")
        if t.device != like.device:
            raise ValueError(f"{name} must be on x's device {like.device}, got {t.device}")


def as_int32_word(v: int) -> int:
    """A 32-bit word in [0, 2³²) as the signed int32 with the same bits (one kernel signature for all keys)."""
    return v - (1 << 32) if v >= (1 << 31) else v
