"""Langevin corrector step with the snr rule, in two passes over the data.

``ε = 2 α (snr ‖z‖ / ‖s‖)²`` and ``x ← x + ε s + √(2ε) z`` (Song et al. 2021,
Algorithm 5 for VE, 6 for VP with ``α = 1 − β_i``; ``α = 1`` is Alg. 5), with
the norms per sample (default) or their batch mean (score_sde's rule), and
``ε = 0`` where ``‖s‖ = 0``.  Pass 1 reads ``s`` and draws ``z`` in registers
to accumulate per-sample ``‖s‖²`` and ``‖z‖²``; a tiny kernel adds the
partials in a fixed order; ``ε`` is formed on the ``(B,)`` norms; pass 2 is
the affine kernel, which reads ``x`` and ``s``, draws the same ``z`` again and
writes ``x``.  Minimal traffic is one read of ``x`` and ``s`` and one write of
``x``; the two passes read ``s`` twice.

:func:`langevin_step_ref` is the PyTorch reference, :func:`langevin_step_triton`
the kernels, :func:`langevin_step` dispatches.
"""

from __future__ import annotations

import torch

from . import affine as _affine
from ._args import AffineCoefs, Coef, check_data, check_out, coef, compute_dtype, noise_key
from ._triton import NUM_WARPS, as_int32_word, cdiv, check_kernel_tensor, require_triton, tile_shape
from .affine import _launch
from .backend import resolve_backend
from .normal import key_normal_ref


def step_size(s_norm: torch.Tensor, z_norm: torch.Tensor, snr: float, alpha, per_sample_norm: bool) -> torch.Tensor:
    """``ε = 2 α (snr ‖z‖/‖s‖)²`` from per-sample norms ``(B,)``; 0 where ``‖s‖ = 0``.

    ``per_sample_norm=False`` replaces both norms by their batch means first
    (score_sde's ``LangevinCorrector``, which couples the samples of a batch).
    ``alpha``: float or ``(B,)`` tensor.
    """
    if not per_sample_norm:
        s_norm, z_norm = s_norm.mean().expand_as(s_norm), z_norm.mean().expand_as(z_norm)
    positive = s_norm > 0
    ratio = torch.where(positive, z_norm / torch.where(positive, s_norm, 1.0), 0.0)
    return 2 * alpha * (snr * ratio) ** 2


def norm_step_size(s: torch.Tensor, z: torch.Tensor, snr: float, alpha, per_sample_norm: bool) -> torch.Tensor:
    """:func:`step_size` from ``s`` and ``z`` ``(B, *D)`` of one compute dtype: their per-sample norms accumulated
    in float64, rounded to that dtype (the reference's rule, see :func:`langevin_step_ref`); ``(B,)``."""
    s_norm = s.double().flatten(1).pow(2).sum(1).sqrt().to(s.dtype)
    z_norm = z.double().flatten(1).pow(2).sum(1).sqrt().to(s.dtype)
    return step_size(s_norm, z_norm, snr, alpha, per_sample_norm)


def _inputs(x, s, snr, alpha, seed, sample_index, stream, z, out):
    check_data("x", x)
    check_data("s", s, x)
    if isinstance(snr, bool) or not isinstance(snr, (int, float)) or not snr > 0 or snr == float("inf"):
        raise ValueError(f"snr must be a finite number > 0, got {snr!r}")
    alpha = coef("alpha", alpha, x.shape[0], x.device)
    if out is not None:
        check_out(out, x)
    if z is not None:
        return alpha, ("z", check_data("z", z, x))
    return alpha, ("key", noise_key(seed, sample_index, stream, x.shape[0], x.device))


def langevin_step_ref(x, s, snr, alpha=1.0, *, per_sample_norm=True, seed=None, sample_index=None, stream=0, z=None,
                      out=None, return_mean=False):
    """PyTorch reference of :func:`langevin_step_triton` (same arguments and results).

    Arithmetic in float32 (float64 for float64 ``x``); the squared norms are
    accumulated in float64, so the result does not depend on how torch splits
    the reduction for a given batch size.
    """
    alpha, noise = _inputs(x, s, snr, alpha, seed, sample_index, stream, z, out)
    cdt = compute_dtype(x.dtype)
    zz = noise[1] if noise[0] == "z" else key_normal_ref(noise[1], x.shape[1:])
    s_c, z_c = s.to(cdt), zz.to(cdt)
    a = alpha.value.to(cdt) if alpha.is_vec else alpha.value
    eps = norm_step_size(s_c, z_c, float(snr), a, per_sample_norm)
    if _affine._NATIVE_FUSED and x.device.type == "cpu":
        fused = _native_update(x, s_c, z_c, eps, out, return_mean)
        if fused is not None:
            return fused
    col = lambda v: v.reshape((-1,) + (1,) * (x.dim() - 1))
    mean = x.to(cdt) + col(eps) * s_c
    new = mean + col((2 * eps).sqrt()) * z_c
    new = new.to(x.dtype) if out is None else out.copy_(new)
    return (new, mean.to(x.dtype), eps) if return_mean else (new, eps)


def _native_update(x, s_c, z_c, eps, out, return_mean):
    """The update ``x + ε s + √(2ε) z`` of :func:`langevin_step_ref` by the C one-pass affine update
    (``a = 1``, ``b = ε``, ``c = √(2ε)``, the given ``z``; ``1·x`` is ``x`` and ``+`` commutes, so the bits
    are the eager code's), where :func:`sdekit.kernels.affine.native_affine_applies`; else ``None``."""
    if not _affine.native_affine_applies(x, s_c, z_c, out, (eps,)):
        return None
    from sdekit import _native

    new = out if out is not None else torch.empty(x.shape, dtype=x.dtype)
    mean = torch.empty(x.shape, dtype=x.dtype) if return_mean else None
    if not _native.affine(x, s_c, (1.0, eps, (2 * eps).sqrt(), 0.0), False, z=z_c, out=new, mean=mean):
        return None
    return (new, mean, eps) if return_mean else (new, eps)


def langevin_step_triton(x, s, snr, alpha=1.0, *, per_sample_norm=True, seed=None, sample_index=None, stream=0,
                         z=None, out=None, return_mean=False):
    """One Langevin corrector step ``x ← x + ε s + √(2ε) z`` with ``ε = 2 α (snr ‖z‖/‖s‖)²``.

    Source: Song et al. 2021, Algorithms 5–6 (score_sde's ``LangevinCorrector``
    with per-sample norms by default).  Two passes over the data (plus a
    ``(B, chunks)`` reduction); arithmetic float32, storage float32/float16/bfloat16.

    Args:
        x: ``(B, *D)`` state.  s: ``(B, *D)`` score at ``x``.
        snr: signal-to-noise ratio ``r > 0``.
        alpha: ``α`` (float or ``(B,)`` tensor; 1 for VE, ``1 − β_i`` for VP).
        per_sample_norm: per-sample norms (True) or batch-mean norms (False).
        seed, sample_index, stream: the noise key (see :func:`sdekit.kernels.affine_update`).
        z: optional explicit noise ``(B, *D)`` instead of Philox (for tests).
        out: optional contiguous output; ``out=x`` updates in place.
        return_mean: also return ``x + ε s``.
    Returns:
        ``(x_new, eps)`` or ``(x_new, x_mean, eps)``; ``eps`` is float32 ``(B,)``.
    Raises:
        ValueError / TypeError: on a bad argument (named), as :func:`affine_update_triton`.
    """
    require_triton("langevin_step_triton", "langevin_step_ref")
    from ._langevin_kernel import _sq_norms_kernel  # imports Triton (once)
    from .reduce import row_sum

    alpha, noise = _inputs(x, s, snr, alpha, seed, sample_index, stream, z, out)
    check_kernel_tensor("x", x)
    check_kernel_tensor("s", s, x)
    x, s = x.contiguous(), s.contiguous()
    B = x.shape[0]
    N = x.numel() // B
    BLOCK_S, BLOCK_E = tile_shape(N)
    chunks = cdiv(N, BLOCK_E)
    part = torch.empty((2, B, chunks), dtype=torch.float32, device=x.device)
    if noise[0] == "key":
        key = noise[1]
        zt, idx = None, key.sample_index
        k0, k1, st = as_int32_word(key.k0), as_int32_word(key.k1), as_int32_word(key.stream)
    else:
        zt = noise[1].contiguous()
        check_kernel_tensor("z", zt, x)
        idx, k0, k1, st = None, 0, 0, 0
        noise = ("z", zt)
    _sq_norms_kernel[(cdiv(B, BLOCK_S) * chunks,)](
        part, s, zt, idx, B, N, chunks, k0, k1, st, BLOCK_S=BLOCK_S, BLOCK_E=BLOCK_E, num_warps=NUM_WARPS)
    norms = row_sum(part.view(2 * B, chunks)).view(2, B).sqrt()
    a = alpha.value.to(torch.float32) if alpha.is_vec else alpha.value
    eps = step_size(norms[0], norms[1], float(snr), a, per_sample_norm)
    new = out if out is not None else torch.empty_like(x)
    mean = torch.empty_like(new) if return_mean else None
    c = (2 * eps).sqrt()
    coefs = AffineCoefs(Coef(1.0, 0), Coef(eps, eps.stride(0)), Coef(c, c.stride(0)), Coef(0.0, 0))
    _launch(new, mean, x, s, coefs, noise)
    return (new, mean, eps) if return_mean else (new, eps)


def langevin_step(x, s, snr, alpha=1.0, *, per_sample_norm=True, seed=None, sample_index=None, stream=0, z=None,
                  out=None, return_mean=False, backend=None):
    """:func:`langevin_step_triton` or :func:`langevin_step_ref`, as ``backend`` resolves for ``x``."""
    fn = langevin_step_triton if resolve_backend(backend, x.device, x.dtype) == "triton" else langevin_step_ref
    return fn(x, s, snr, alpha, per_sample_norm=per_sample_norm, seed=seed, sample_index=sample_index, stream=stream,
              z=z, out=out, return_mean=return_mean)


__all__ = ["langevin_step", "langevin_step_ref", "langevin_step_triton", "norm_step_size", "step_size"]
