"""The squared-norms kernel of :mod:`sdekit.kernels.langevin` (imports Triton: loaded at the first launch)."""

from __future__ import annotations

import triton
import triton.language as tl

from ._tile import tile_index
from .philox import keyed_normal_tile


# Key words and stream are data, not compile-time constants (Triton would specialise a 1).
@triton.jit(do_not_specialize=["k0", "k1", "stream"])
def _sq_norms_kernel(part_ptr, s_ptr, z_ptr, idx_ptr, B, N, chunks, k0, k1, stream,
                     BLOCK_S: tl.constexpr, BLOCK_E: tl.constexpr):
    """``part[0, b, k] = Σ s²``, ``part[1, b, k] = Σ z²`` over chunk ``k`` of sample ``b``; ``z`` keyed Philox
    where ``idx_ptr`` is given (then ``z_ptr`` is ``None``), else read from ``z_ptr``."""
    k, rows, _cols, row_ok, mask, offs = tile_index(tl.program_id(0), chunks, B, N, BLOCK_S, BLOCK_E)
    s = tl.load(s_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    if idx_ptr is not None:
        z = tl.where(mask, keyed_normal_tile(idx_ptr, k, rows, row_ok, k0, k1, stream, BLOCK_S, BLOCK_E), 0.0)
    else:
        z = tl.load(z_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    part = rows.to(tl.int64) * chunks + k
    tl.store(part_ptr + part, tl.sum(s * s, axis=1), mask=row_ok)
    tl.store(part_ptr + B * chunks + part, tl.sum(z * z, axis=1), mask=row_ok)
