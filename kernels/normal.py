"""Keyed standard normals alone: ``z[b, j]`` keyed by ``(seed, sample_index[b], j, stream)``.

The noise of every fused update (:mod:`sdekit.kernels.affine`, :mod:`sdekit.kernels.langevin`), drawn on
its own: a sampler's start ``x_T``, the k-diffusion ``noise_sampler`` and the diffusers scheduler's step
noise.  :func:`normal_ref` is :func:`sdekit.noise.counter_normal_unchecked` (Philox4x32-10, Salmon et al.
2011; Box–Muller), :func:`normal_triton` the kernel with the same 32-bit words (the normals agree up to
float32 rounding of ``log``/``cos``/``sin``), :func:`normal` picks one
(:func:`sdekit.kernels.resolve_backend`).  No host sync: ``sample_index`` values are not range-checked
(:func:`sdekit.noise.check_sample_index` does that for user input).
"""

from __future__ import annotations

import torch

from sdekit.noise import counter_normal_unchecked

from ._args import NoiseKey, noise_key
from ._triton import NUM_WARPS, as_int32_word, cdiv, check_kernel_tensor, require_triton, tile_shape
from .backend import resolve_backend


def key_normal_ref(key: NoiseKey, shape) -> torch.Tensor:
    """The reference draw for a checked key: float32 (float64 never: the words fix float32) ``(B, *shape)``."""
    return counter_normal_unchecked(key.k0, key.k1, key.stream, key.sample_index, tuple(shape))


def normal_ref(seed: int, sample_index: torch.Tensor, stream: int, shape, *, dtype=torch.float32) -> torch.Tensor:
    """PyTorch reference of :func:`normal_triton` (same arguments; any device and float dtype)."""
    key = noise_key(seed, sample_index, stream, _batch(sample_index), sample_index.device)
    return key_normal_ref(key, shape).to(dtype)


def normal_triton(seed: int, sample_index: torch.Tensor, stream: int, shape, *,
                  dtype=torch.float32) -> torch.Tensor:
    """Standard normals ``(B, *shape)`` in ``dtype``, drawn by the keyed-normals kernel.

    Args:
        seed: Philox key, an int in [0, 2⁶⁴).
        sample_index: integer ``(B,)`` global sample indices, on the device the normals are drawn on.
        stream: an int in [0, 2³²) (e.g. the step number).
        shape: the per-sample shape ``D``.
        dtype: float32, float16 or bfloat16 (arithmetic float32).
    Raises:
        ValueError / TypeError: naming a bad argument; a non-CUDA ``sample_index`` without
            ``TRITON_INTERPRET=1``.
        RuntimeError: without Triton.
    """
    require_triton("normal_triton", "normal_ref")
    key = noise_key(seed, sample_index, stream, _batch(sample_index), sample_index.device)
    B = key.sample_index.shape[0]
    new = torch.empty((B,) + tuple(shape), dtype=dtype, device=sample_index.device)
    check_kernel_tensor("output", new)
    if new.numel() == 0:
        return new
    from ._normal_kernel import _normal_kernel  # imports Triton (once)

    N = new.numel() // B
    if N >= 2**31:
        raise ValueError(f"each sample must have fewer than 2**31 elements, got {N}")
    BLOCK_S, BLOCK_E = tile_shape(N)
    chunks = cdiv(N, BLOCK_E)
    _normal_kernel[(cdiv(B, BLOCK_S) * chunks,)](
        new, key.sample_index, B, N, chunks, as_int32_word(key.k0), as_int32_word(key.k1),
        as_int32_word(key.stream), BLOCK_S=BLOCK_S, BLOCK_E=BLOCK_E, num_warps=NUM_WARPS)
    return new


def normal(seed: int, sample_index: torch.Tensor, stream: int, shape, *, dtype=torch.float32,
           backend=None) -> torch.Tensor:
    """Standard normals ``(B, *shape)`` keyed like :func:`sdekit.noise.counter_normal`, on ``sample_index``'s
    device: :func:`normal_triton` or :func:`normal_ref`, as ``backend`` resolves for that device and ``dtype``."""
    fn = normal_triton if resolve_backend(backend, sample_index.device, dtype) == "triton" else normal_ref
    return fn(seed, sample_index, stream, shape, dtype=dtype)


def _batch(sample_index) -> int:
    if not isinstance(sample_index, torch.Tensor) or sample_index.dim() != 1:
        raise ValueError(f"sample_index must be an integer tensor of shape (B,), got {sample_index!r:.80}")
    return sample_index.shape[0]


__all__ = ["normal", "normal_ref", "normal_triton"]
