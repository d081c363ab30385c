"""The tile every kernel works on (imports Triton: loaded by the kernel modules, at the first launch)."""

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
