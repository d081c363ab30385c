"""The affine-update kernel of :mod:`sdekit.kernels.affine` (imports Triton: loaded at the first launch)."""

from __future__ import annotations

import triton
import triton.language as tl

from ._tile import load_coef, tile_index
from .philox import keyed_normal_tile


# Key words and stream are data, not compile-time constants (Triton would specialise a 1).
@triton.jit(do_not_specialize=["k0", "k1", "stream"])
def _affine_kernel(
    out_ptr, x_ptr, s_ptr, mean_ptr, z_ptr, idx_ptr,
    a, b, c, d, a_stride, b_stride, c_stride, d_stride,
    B, N, chunks, k0, k1, stream,
    A_VEC: tl.constexpr, B_VEC: tl.constexpr, C_VEC: tl.constexpr, D_VEC: tl.constexpr,
    BLOCK_S: tl.constexpr, BLOCK_E: tl.constexpr,
):
    """``out = a·x + b·s + d + c·z`` on one tile; ``mean = a·x + b·s + d`` where ``mean_ptr`` is given.

    Optional inputs are ``None`` (Triton compiles each combination once): ``s_ptr`` (no ``b·s`` term),
    ``idx_ptr`` (``z`` keyed Philox for those sample indices), ``z_ptr`` (``z`` read from memory); with
    neither noise input there is no ``c·z`` term.  ``*_VEC``: that coefficient is a per-sample pointer.
    """
    k, rows, _cols, row_ok, mask, offs = tile_index(tl.program_id(0), chunks, B, N, BLOCK_S, BLOCK_E)
    xv = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    acc = load_coef(a, a_stride, rows, row_ok, A_VEC) * xv
    if s_ptr is not None:
        sv = tl.load(s_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        acc = acc + load_coef(b, b_stride, rows, row_ok, B_VEC) * sv
    acc = acc + load_coef(d, d_stride, rows, row_ok, D_VEC)
    if mean_ptr is not None:
        tl.store(mean_ptr + offs, acc.to(mean_ptr.dtype.element_ty), mask=mask)
    if idx_ptr is not None:
        z = keyed_normal_tile(idx_ptr, k, rows, row_ok, k0, k1, stream, BLOCK_S, BLOCK_E)
        acc = acc + load_coef(c, c_stride, rows, row_ok, C_VEC) * z
    elif z_ptr is not None:
        z = tl.load(z_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        acc = acc + load_coef(c, c_stride, rows, row_ok, C_VEC) * z
    tl.store(out_ptr + offs, acc.to(out_ptr.dtype.element_ty), mask=mask)
