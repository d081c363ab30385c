"""Optional Triton import, and the checks and launch geometry every launcher shares.

Triton decides at decoration time whether ``@triton.jit`` compiles for the GPU
or builds an interpreted function (``TRITON_INTERPRET=1``, numpy on the CPU).
The kernels of :mod:`sdekit.kernels` are decorated when this package is first
imported, so set ``TRITON_INTERPRET=1`` *before* ``import sdekit`` to run them
on CPU tensors (that is how the test suite runs them without a GPU).
"""

from __future__ import annotations

import os

import torch

try:  # triton wheels exist for Linux x86_64/aarch64 only; a broken install counts as absent
    import triton
    import triton.language as tl

    HAS_TRITON = True
except Exception:  # noqa: BLE001 - ImportError, or e.g. a missing C compiler at import
    triton = tl = None
    HAS_TRITON = False



def _interpreting() -> bool:
    """Triton's own reading of ``TRITON_INTERPRET`` (its ``knobs``), or the variable itself on old versions."""
    knobs = getattr(triton, "knobs", None)
    if knobs is not None:
        return bool(knobs.runtime.interpret)
    return os.environ.get("TRITON_INTERPRET", "0").strip().lower() in ("1", "true", "on", "yes")


#: Whether the kernels were built by Triton's interpreter (they then also accept CPU tensors).
INTERPRETED = HAS_TRITON and _interpreting()

#: Storage dtypes the kernels read and write (arithmetic is always float32).
KERNEL_DTYPES = (torch.float32, torch.float16, torch.bfloat16)

#: Elements per program: one tile of ``BLOCK_S`` samples × ``BLOCK_E`` elements.
TILE = 2048
NUM_WARPS = 4


def tile_shape(n: int) -> tuple[int, int]:
    """``(BLOCK_S, BLOCK_E)`` for samples of ``n`` elements each.

    The shape depends on ``n`` only, never on the batch size, so per-sample
    reductions add in the same order whatever the batch: this is what makes the
    norms (and hence the samples) batch-size invariant.  ``BLOCK_E`` is a power
    of two >= 4 (whole Philox groups).
    """
    block_e = min(TILE, max(4, triton.next_power_of_2(n)))
    return max(1, TILE // block_e), block_e


def check_kernel_tensor(name: str, t: torch.Tensor, like: torch.Tensor | None = None) -> None:
    """Raise unless ``t`` can be handed to a kernel: a supported dtype, on a kernel device, matching ``like``."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dtype not in KERNEL_DTYPES:
        raise TypeError(f"{name} must be float32, float16 or bfloat16 for the Triton kernels, got {t.dtype} "
                        "(float64 runs on the PyTorch reference: backend='torch')")
    if t.device.type != "cuda" and not INTERPRETED:
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


if HAS_TRITON:

    @triton.jit
    def tile_index(pid, chunks, B, N, BLOCK_S: tl.constexpr, BLOCK_E: tl.constexpr):
        """Program ``pid``'s tile: ``BLOCK_S`` samples × ``BLOCK_E`` elements of chunk ``pid % chunks``.

        Returns ``(k, rows, cols, row_ok, mask, offs)``: the chunk number, sample and
        element indices, the in-range masks and the int64 element offsets ``rows·N + cols``.
        """
        rb = pid // chunks
        k = pid - rb * chunks
        rows = rb * BLOCK_S + tl.arange(0, BLOCK_S)
        cols = k * BLOCK_E + tl.arange(0, BLOCK_E)
        row_ok = rows < B
        mask = row_ok[:, None] & (cols < N)[None, :]
        offs = rows.to(tl.int64)[:, None] * N + cols[None, :]
        return k, rows, cols, row_ok, mask, offs
else:
    tile_index = None
