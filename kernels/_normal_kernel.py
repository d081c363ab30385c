"""The keyed-normals kernel of :mod:`sdekit.kernels.normal` (imports Triton: loaded at the first launch)."""

from __future__ import annotations

import triton
import triton.language as tl

from ._tile import tile_index
from .philox import keyed_normal_tile


# Key words and stream are data, not compile-time constants (Triton would specialise a 1).
@triton.jit(do_not_specialize=["k0", "k1", "stream"])
def _normal_kernel(out_ptr, idx_ptr, B, N, chunks, k0, k1, stream, BLOCK_S: tl.constexpr, BLOCK_E: tl.constexpr):
    """``out[b, j]`` = the standard normal keyed by ``(seed, idx[b], j, stream)`` on one tile."""
    k, rows, _cols, row_ok, mask, offs = tile_index(tl.program_id(0), chunks, B, N, BLOCK_S, BLOCK_E)
    z = keyed_normal_tile(idx_ptr, k, rows, row_ok, k0, k1, stream, BLOCK_S, BLOCK_E)
    tl.store(out_ptr + offs, z.to(out_ptr.dtype.element_ty), mask=mask)
