"""Fused affine update with in-kernel noise: ``x ← a·x + b·s + d + c·z``, z ~ N(0, I).

Every reverse-time predictor of :mod:`sdekit.sampling` is this update with
per-step scalars (Euler–Maruyama on a linear SDE, reverse diffusion,
ancestral sampling: Song et al. 2021, App. D–E; Ho et al. 2020, eqs. 6–7),
and so are the annealed Langevin corrector and the final Tweedie step.  In
eager PyTorch it takes a normal draw plus 4–6 element-wise passes; the kernel
reads ``x`` and ``s`` once and writes the result once (and optionally the
noise-free mean ``a·x + b·s + d`` in the same pass), with ``z`` generated in
registers by Philox keyed on ``(seed, sample index, element, stream)``.

:func:`affine_update_ref` is the PyTorch reference (the same arithmetic, with
the noise from :func:`sdekit.noise.counter_normal_unchecked`);
:func:`affine_update_triton` the kernel; :func:`affine_update` picks one
(:func:`sdekit.kernels.resolve_backend`).
"""

from __future__ import annotations

import torch

from sdekit.noise import _native_eager

from ._args import AffineCoefs, affine_coefs, check_data, check_out, compute_dtype, noise_key
from ._triton import NUM_WARPS, as_int32_word, cdiv, check_kernel_tensor, require_triton, tile_shape
from .backend import resolve_backend
from .normal import key_normal_ref


def _inputs(x, s, a, b, c, d, seed, sample_index, stream, z, out):
    """Shared argument checks; returns ``(coefs, noise)`` with noise ``None``, ``("z", z)`` or ``("key", key)``."""
    check_data("x", x)
    check_data("s", s, x)
    B = x.shape[0]
    coefs = affine_coefs(a, b, c, d, B, x.device)
    if out is not None:
        check_out(out, x)
    noise = None
    if not coefs.c.is_zero():
        if z is not None:
            noise = ("z", check_data("z", z, x))
        else:
            noise = ("key", noise_key(seed, sample_index, stream, B, x.device))
    return coefs, noise


def affine_update_ref(x, s, a, b, c=0.0, d=0.0, *, seed=None, sample_index=None, stream=0, z=None, out=None,
                      return_mean=False):
    """PyTorch reference of :func:`affine_update_triton` (same arguments, same arithmetic, any device).

    Computes in float32 (float64 for float64 ``x``); the noise is
    :func:`sdekit.noise.counter_normal_unchecked` with the same key, so it equals
    the kernel's up to float32 rounding of ``log``/``cos``/``sin``.

    On the CPU, for contiguous float32/float64 ``x`` and ``s`` (and ``z``) outside
    autograd, ``torch.compile`` and tracing, the update runs in one pass in C
    (:func:`sdekit._native.affine`, noise drawn in place): the same bits as the
    torch code (same operations in the same order, same noise); elsewhere, or
    without the C library, the torch code runs.
    """
    coefs, noise = _inputs(x, s, a, b, c, d, seed, sample_index, stream, z, out)
    if _NATIVE_FUSED and x.device.type == "cpu":
        fused = _native_affine(x, s, coefs, noise, out, return_mean)
        if fused is not None:
            return fused
    cdt = compute_dtype(x.dtype)
    col = AffineCoefs(*(v.column(x, cdt) for v in coefs))
    mean = col.a * x.to(cdt)
    mean = mean + col.b * s.to(cdt)
    if not coefs.d.is_zero():
        mean = mean + col.d
    new = mean
    if noise is not None:
        zz = noise[1].to(cdt) if noise[0] == "z" else key_normal_ref(noise[1], x.shape[1:]).to(cdt)
        new = mean + col.c * zz
    new = _write(new, out, x.dtype)
    return (new, mean.to(x.dtype)) if return_mean else new


#: Private switch (tests): ``False`` keeps :func:`affine_update_ref` on the eager torch code everywhere.
_NATIVE_FUSED = True
_NATIVE_DTYPES = (torch.float32, torch.float64)


def _overlap(a: torch.Tensor, b: torch.Tensor | None) -> bool:
    """Whether contiguous ``a`` and ``b`` share memory without being the same memory."""
    if b is None or a.data_ptr() == b.data_ptr():
        return False
    pa, pb = a.data_ptr(), b.data_ptr()
    return pa < pb + b.numel() * b.element_size() and pb < pa + a.numel() * a.element_size()


def native_affine_applies(x, s, z, out, tensors) -> bool:
    """Whether the C one-pass update (:func:`sdekit._native.affine`) can stand in for the eager code, bit for bit.

    ``x``, ``s`` (and ``z``) contiguous CPU tensors of one dtype, float32 or float64 (their own compute
    dtype; float16/bfloat16 take the eager path); ``out`` not partly overlapping them; every tensor
    (``tensors`` adds the coefficients and the key's) plain, outside compile/tracing/functorch, no
    autograd (:func:`sdekit.noise._native_eager`).
    """
    if x.dtype not in _NATIVE_DTYPES or s.dtype != x.dtype or not (x.is_contiguous() and s.is_contiguous()):
        return False
    if z is not None and (z.dtype != x.dtype or not z.is_contiguous()):
        return False
    if out is not None and (_overlap(out, x) or _overlap(out, s) or _overlap(out, z)):
        return False
    return _native_eager(x, s, z, out, *tensors)


def _native_affine(x, s, coefs: AffineCoefs, noise, out, return_mean):
    """:func:`affine_update_ref` by the C one-pass update where it applies (CPU), else ``None``.

    Same bits as the eager code: the C loop evaluates ``a·x``, ``+ b·s``, ``+ d``, ``+ c·z`` in the
    reference's order with the same rounding, and its in-place ``z`` is the native draw's.
    """
    z = noise[1] if noise is not None and noise[0] == "z" else None
    key = noise[1] if noise is not None and noise[0] == "key" else None
    values = [v.value for v in coefs]
    tensors = [v for v in values if isinstance(v, torch.Tensor)]
    if key is not None:  # an int stream and a (B,) index: _native_eager covers _use_native's conditions
        tensors.append(key.sample_index)
    if not native_affine_applies(x, s, z, out, tensors):
        return None
    from sdekit import _native

    new = out if out is not None else torch.empty(x.shape, dtype=x.dtype)
    mean = torch.empty(x.shape, dtype=x.dtype) if return_mean and (noise is not None or out is not None) else None
    native_key = None if key is None else (key.k0, key.k1, key.stream, key.sample_index)
    if not _native.affine(x, s, values, not coefs.d.is_zero(), key=native_key, z=z, out=new, mean=mean):
        return None
    if return_mean:  # without noise and out the reference's mean is its result, one tensor
        return new, (mean if mean is not None else new)
    return new


def _write(v, out, dtype):
    if out is None:
        return v.to(dtype)
    out.copy_(v)
    return out


def affine_update_triton(x, s, a, b, c=0.0, d=0.0, *, seed=None, sample_index=None, stream=0, z=None, out=None,
                         return_mean=False):
    """``x_new = a·x + b·s + d + c·z`` in one pass, z ~ N(0, I) drawn in the kernel.

    Source of the noise layout: :mod:`sdekit.noise` (Philox4x32-10, Salmon et al.
    2011; Box–Muller).  Arithmetic in float32, storage float32/float16/bfloat16.

    Args:
        x: ``(B, *D)`` state.  s: ``(B, *D)`` (usually the score), any float dtype.
        a, b, c, d: Python floats, or tensors of shape ``()`` or ``(B,)`` on ``x``'s
            device (per-sample coefficients, e.g. per-sample times); ``c = 0.0`` (a
            Python zero) means no noise, ``d = 0.0`` no offset.
        seed: Philox key, int in [0, 2⁶⁴) (needed when the noise is drawn).
        sample_index: int64 ``(B,)`` global sample indices, default ``arange(B)``.
        stream: int in [0, 2³²), e.g. the step number.
        z: optional explicit noise ``(B, *D)`` instead of Philox (for tests).
        out: optional contiguous output of ``x``'s shape and dtype; ``out=x`` updates in place.
        return_mean: also return the noise-free ``a·x + b·s + d`` (same pass).
    Returns:
        ``x_new`` ``(B, *D)`` in ``x``'s dtype, or ``(x_new, x_mean)``.
    Raises:
        ValueError / TypeError: on a bad argument (named); a float64 tensor or a
            non-CUDA tensor without ``TRITON_INTERPRET=1``.

    Non-contiguous ``x``/``s``/``z`` are copied to contiguous memory first.
    """
    require_triton("affine_update_triton", "affine_update_ref")
    coefs, noise = _inputs(x, s, a, b, c, d, seed, sample_index, stream, z, out)
    check_kernel_tensor("x", x)
    check_kernel_tensor("s", s, x)
    new = out if out is not None else torch.empty_like(x, memory_format=torch.contiguous_format)
    mean = torch.empty_like(new) if return_mean else None
    _launch(new, mean, x.contiguous(), s.contiguous(), coefs, noise)
    return (new, mean) if return_mean else new


def _launch(new, mean, x, s, coefs: AffineCoefs, noise):
    """Launch the affine kernel on contiguous ``x``/``s``; ``mean`` may be ``None``, as may the noise."""
    from ._affine_kernel import _affine_kernel  # imports Triton (once)

    B = new.shape[0]
    N = new.numel() // B
    if N >= 2**31:
        raise ValueError(f"each sample must have fewer than 2**31 elements, got {N}")
    BLOCK_S, BLOCK_E = tile_shape(N)
    chunks = cdiv(N, BLOCK_E)
    k0 = k1 = stream = 0
    z = idx = None
    if noise is not None and noise[0] == "key":
        key = noise[1]
        k0, k1, stream, idx = as_int32_word(key.k0), as_int32_word(key.k1), as_int32_word(key.stream), \
            key.sample_index
    elif noise is not None:
        z = noise[1].contiguous()
        check_kernel_tensor("z", z, new)
    args = [v.value for v in coefs] + [v.stride for v in coefs]
    _affine_kernel[(cdiv(B, BLOCK_S) * chunks,)](
        new, x, None if coefs.b.is_zero() else s, mean, z, idx, *args, B, N, chunks, k0, k1, stream,
        A_VEC=coefs.a.is_vec, B_VEC=coefs.b.is_vec, C_VEC=coefs.c.is_vec, D_VEC=coefs.d.is_vec,
        BLOCK_S=BLOCK_S, BLOCK_E=BLOCK_E, num_warps=NUM_WARPS,
    )


def affine_update(x, s, a, b, c=0.0, d=0.0, *, seed=None, sample_index=None, stream=0, z=None, out=None,
                  return_mean=False, backend=None):
    """:func:`affine_update_triton` or :func:`affine_update_ref`, as ``backend`` resolves for ``x``.

    ``backend``: ``"auto"`` (Triton for CUDA tensors of a kernel dtype when Triton
    imports), ``"triton"``, ``"torch"``, or ``None`` (the ``SDEKIT_BACKEND``
    environment variable, else ``"auto"``); see :func:`sdekit.kernels.resolve_backend`.
    """
    fn = affine_update_triton if resolve_backend(backend, x.device, x.dtype) == "triton" else affine_update_ref
    return fn(x, s, a, b, c, d, seed=seed, sample_index=sample_index, stream=stream, z=z, out=out,
              return_mean=return_mean)


__all__ = ["affine_update", "affine_update_ref", "affine_update_triton"]
