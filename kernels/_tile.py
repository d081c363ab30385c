"""The tile every kernel works on, and per-sample coefficients on it (imports Triton: loaded by the kernel
modules, at the first launch)."""

from __future__ import annotations

import triton
import triton.language as tl


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


@triton.jit
def load_coef(v, stride, rows, row_ok, IS_VEC: tl.constexpr):
    """A coefficient as a ``(BLOCK_S, 1)`` float32 column: a scalar argument, or loaded per sample."""
    if IS_VEC:
        col = tl.load(v + rows * stride, mask=row_ok, other=0.0).to(tl.float32)[:, None]
    else:
        col = tl.zeros((rows.shape[0], 1), tl.float32) + v
    return col
