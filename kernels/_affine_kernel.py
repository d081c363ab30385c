"""The affine-update kernel of :mod:`sdekit.kernels.affine` (imports Triton: loaded at the first launch)."""

from __future__ import annotations

import triton
import triton.language as tl

from ._tile import tile_index
from .philox import key_words, normal_tile


@triton.jit
def load_coef(v, stride, rows, row_ok, IS_VEC: tl.constexpr):
    """A coefficient as a ``(BLOCK_S, 1)`` float32 column: a scalar argument, or loaded per sample."""
    if IS_VEC:
        col = tl.load(v + rows * stride, mask=row_ok, other=0.0).to(tl.float32)[:, None]
    else:
        col = tl.zeros((rows.shape[0], 1), tl.float32) + v
    return col


# Key words and stream are data, not compile-time constants (Triton would specialise a 1).
@triton.jit(do_not_specialize=["k0", "k1", "stream"])
def _affine_kernel(
    out_ptr, mean_ptr, x_ptr, s_ptr, z_ptr, idx_ptr,
    a, b, c, d, a_stride, b_stride, c_stride, d_stride,
    B, N, chunks, k0, k1, stream,
    A_VEC: tl.constexpr, B_VEC: tl.constexpr, C_VEC: tl.constexpr, D_VEC: tl.constexpr,
    HAS_X: tl.constexpr, HAS_S: tl.constexpr, HAS_D: tl.constexpr,
    NOISE: tl.constexpr, WRITE_MEAN: tl.constexpr,
    BLOCK_S: tl.constexpr, BLOCK_E: tl.constexpr,
):
    # NOISE: 0 none, 1 Philox in the kernel, 2 z read from z_ptr.
    k, rows, _cols, row_ok, mask, offs = tile_index(tl.program_id(0), chunks, B, N, BLOCK_S, BLOCK_E)
    acc = tl.zeros((BLOCK_S, BLOCK_E), tl.float32)
    if HAS_X:
        xv = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        acc = load_coef(a, a_stride, rows, row_ok, A_VEC) * xv
    if HAS_S:
        sv = tl.load(s_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        acc = acc + load_coef(b, b_stride, rows, row_ok, B_VEC) * sv
    if HAS_D:
        acc = acc + load_coef(d, d_stride, rows, row_ok, D_VEC)
    if WRITE_MEAN:
        tl.store(mean_ptr + offs, acc.to(mean_ptr.dtype.element_ty), mask=mask)
    if NOISE == 1:
        kw0, kw1, st = key_words(k0, k1, stream)
        sample = tl.load(idx_ptr + rows, mask=row_ok, other=0).to(tl.uint32)
        z = normal_tile(k, sample, st, kw0, kw1, BLOCK_S, BLOCK_E)
        acc = acc + load_coef(c, c_stride, rows, row_ok, C_VEC) * z
    elif NOISE == 2:
        z = tl.load(z_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        acc = acc + load_coef(c, c_stride, rows, row_ok, C_VEC) * z
    tl.store(out_ptr + offs, acc.to(out_ptr.dtype.element_ty), mask=mask)
