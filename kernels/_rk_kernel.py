"""The stage-combination kernel of :mod:`sdekit.kernels.rk` (imports Triton: loaded at the first launch)."""

from __future__ import annotations

import triton
import triton.language as tl

from ._tile import load_coef, tile_index


@triton.jit
def _stage(acc_b, acc_e, k_ptr, offs, mask, bw, ew, USE_B: tl.constexpr, USE_E: tl.constexpr):
    if USE_B or USE_E:
        kv = tl.load(k_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        if USE_B:
            acc_b = acc_b + bw * kv
        if USE_E:
            acc_e = acc_e + ew * kv
    return acc_b, acc_e


@triton.jit
def _rk_kernel(
    ynew_ptr, part_ptr, y_ptr,
    k0, k1, k2, k3, k4, k5, k6, k7, k8, k9, k10, k11,
    b0, b1, b2, b3, b4, b5, b6, b7, b8, b9, b10, b11,
    e0, e1, e2, e3, e4, e5, e6, e7, e8, e9, e10, e11,
    h, h_stride, rtol, atol, B, N, chunks,
    BMASK: tl.constexpr, EMASK: tl.constexpr, H_VEC: tl.constexpr,
    BLOCK_S: tl.constexpr, BLOCK_E: tl.constexpr,
):
    k, rows, _cols, row_ok, mask, offs = tile_index(tl.program_id(0), chunks, B, N, BLOCK_S, BLOCK_E)
    acc_b = tl.zeros((BLOCK_S, BLOCK_E), tl.float32)
    acc_e = tl.zeros((BLOCK_S, BLOCK_E), tl.float32)
    acc_b, acc_e = _stage(acc_b, acc_e, k0, offs, mask, b0, e0, (BMASK >> 0) & 1, (EMASK >> 0) & 1)
    acc_b, acc_e = _stage(acc_b, acc_e, k1, offs, mask, b1, e1, (BMASK >> 1) & 1, (EMASK >> 1) & 1)
    acc_b, acc_e = _stage(acc_b, acc_e, k2, offs, mask, b2, e2, (BMASK >> 2) & 1, (EMASK >> 2) & 1)
    acc_b, acc_e = _stage(acc_b, acc_e, k3, offs, mask, b3, e3, (BMASK >> 3) & 1, (EMASK >> 3) & 1)
    acc_b, acc_e = _stage(acc_b, acc_e, k4, offs, mask, b4, e4, (BMASK >> 4) & 1, (EMASK >> 4) & 1)
    acc_b, acc_e = _stage(acc_b, acc_e, k5, offs, mask, b5, e5, (BMASK >> 5) & 1, (EMASK >> 5) & 1)
    acc_b, acc_e = _stage(acc_b, acc_e, k6, offs, mask, b6, e6, (BMASK >> 6) & 1, (EMASK >> 6) & 1)
    acc_b, acc_e = _stage(acc_b, acc_e, k7, offs, mask, b7, e7, (BMASK >> 7) & 1, (EMASK >> 7) & 1)
    acc_b, acc_e = _stage(acc_b, acc_e, k8, offs, mask, b8, e8, (BMASK >> 8) & 1, (EMASK >> 8) & 1)
    acc_b, acc_e = _stage(acc_b, acc_e, k9, offs, mask, b9, e9, (BMASK >> 9) & 1, (EMASK >> 9) & 1)
    acc_b, acc_e = _stage(acc_b, acc_e, k10, offs, mask, b10, e10, (BMASK >> 10) & 1, (EMASK >> 10) & 1)
    acc_b, acc_e = _stage(acc_b, acc_e, k11, offs, mask, b11, e11, (BMASK >> 11) & 1, (EMASK >> 11) & 1)
    hh = load_coef(h, h_stride, rows, row_ok, H_VEC)
    y = tl.load(y_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    y_new = y + hh * acc_b
    tl.store(ynew_ptr + offs, y_new.to(ynew_ptr.dtype.element_ty), mask=mask)
    scale = atol + rtol * tl.maximum(tl.abs(y), tl.abs(y_new))
    r = tl.where(mask, (hh * acc_e) / scale, 0.0)
    tl.store(part_ptr + rows.to(tl.int64) * chunks + k, tl.sum(r * r, axis=1), mask=row_ok)
