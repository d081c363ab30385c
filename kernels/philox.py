"""Philox4x32-10 and Box–Muller inside Triton kernels: the in-kernel twin of :mod:`sdekit.noise`.

The layout is :mod:`sdekit.noise`'s, bit for bit: key ``(k0, k1)`` = the
64-bit seed's low and high words; counter ``(element // 4, sample index,
stream, 0)``; the four outputs of one call give elements ``4j … 4j+3`` as
``r₀cos θ₀, r₀sin θ₀, r₁cos θ₁, r₁sin θ₁`` with ``u = ((i >> 8) + ½)·2⁻²⁴``,
``r = √(−2 ln u_even)``, ``θ = 2π u_odd``.  The 32-bit words are identical to
the reference's; the normals agree up to the float32 rounding of ``log``,
``cos`` and ``sin``.

Source: Salmon et al. 2011, "Parallel random numbers: as easy as 1, 2, 3"
(SC'11), §4.2 (Philox round function and constants); Box & Muller 1958.

Imports Triton: the kernel modules import this at the first launch, never ``import sdekit``.
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def philox4x32(c0, c1, c2, c3, k0, k1):
    """Ten Philox4x32 rounds on uint32 blocks; returns the four output words."""
    for _ in tl.static_range(10):
        p0 = c0
        p2 = c2
        c0 = tl.umulhi(p2, 0xCD9E8D57) ^ c1 ^ k0
        c2 = tl.umulhi(p0, 0xD2511F53) ^ c3 ^ k1
        c1 = tl.mul(p2, 0xCD9E8D57, sanitize_overflow=False)
        c3 = tl.mul(p0, 0xD2511F53, sanitize_overflow=False)
        k0 = tl.add(k0, 0x9E3779B9, sanitize_overflow=False)
        k1 = tl.add(k1, 0xBB67AE85, sanitize_overflow=False)
    return c0, c1, c2, c3


@triton.jit
def _unit(i):
    # (i >> 8 + 1/2) 2^-24 in (0, 1): exactly sdekit.noise.uint32_to_unit.
    return ((i >> 8).to(tl.float32) + 0.5) * 5.9604644775390625e-08


@triton.jit
def normal_tile(k, sample, stream, k0, k1, BLOCK_S: tl.constexpr, BLOCK_E: tl.constexpr):
    """Standard normals for elements ``k·BLOCK_E … (k+1)·BLOCK_E − 1`` of ``BLOCK_S`` samples.

    ``sample``: ``(BLOCK_S,)`` uint32 sample indices; ``stream``, ``k0``,
    ``k1``: uint32 scalars.  Returns a float32 ``(BLOCK_S, BLOCK_E)`` tile.
    """
    BLOCK_G: tl.constexpr = BLOCK_E // 4
    group = (k * BLOCK_G + tl.arange(0, BLOCK_G)).to(tl.uint32)
    c0 = group[None, :] + tl.zeros((BLOCK_S, BLOCK_G), tl.uint32)
    c1 = sample[:, None] + tl.zeros((BLOCK_S, BLOCK_G), tl.uint32)
    c2 = tl.zeros((BLOCK_S, BLOCK_G), tl.uint32) + stream
    c3 = tl.zeros((BLOCK_S, BLOCK_G), tl.uint32)
    i0, i1, i2, i3 = philox4x32(c0, c1, c2, c3, k0, k1)
    r0 = tl.sqrt_rn(-2.0 * tl.log(_unit(i0)))
    r1 = tl.sqrt_rn(-2.0 * tl.log(_unit(i2)))
    t0 = 6.283185307179586 * _unit(i1)
    t1 = 6.283185307179586 * _unit(i3)
    # join(join(a, c), join(b, d)) reshaped row-major gives the lane order a, b, c, d.
    z = tl.join(tl.join(r0 * tl.cos(t0), r1 * tl.cos(t1)), tl.join(r0 * tl.sin(t0), r1 * tl.sin(t1)))
    return tl.reshape(z, (BLOCK_S, BLOCK_E))


@triton.jit
def key_words(k0, k1, stream):
    """Kernel arguments (int32 bit patterns) → uint32 scalars."""
    return k0.to(tl.uint32, bitcast=True), k1.to(tl.uint32, bitcast=True), stream.to(tl.uint32, bitcast=True)


@triton.jit
def keyed_normal_tile(idx_ptr, k, rows, row_ok, k0, k1, stream, BLOCK_S: tl.constexpr, BLOCK_E: tl.constexpr):
    """:func:`normal_tile` for the tile's samples: their indices loaded from ``idx_ptr`` (int64 ``(B,)``),
    the key words and stream from the kernel's int32 arguments (:func:`key_words`)."""
    kw0, kw1, st = key_words(k0, k1, stream)
    sample = tl.load(idx_ptr + rows, mask=row_ok, other=0).to(tl.uint32)
    return normal_tile(k, sample, st, kw0, kw1, BLOCK_S, BLOCK_E)
