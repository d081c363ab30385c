"""Runge–Kutta stage combination with the embedded error norm, in one pass.

For an embedded explicit Runge–Kutta pair with weights ``b`` (propagated
solution) and ``b̂`` (embedded solution) and stages ``k_i``:

    y_new = y + h Σ bᵢ kᵢ,    err = h Σ (bᵢ − b̂ᵢ) kᵢ,
    ‖err‖ = RMS over each sample's elements of err / (atol + rtol·max(|y|, |y_new|))

(Hairer, Nørsett & Wanner, "Solving ODEs I", §II.4, eqs. 4.10–4.11; the step
is accepted where ``‖err‖ <= 1``).  Eagerly that is ~2s + 8 passes; the kernel
reads ``y`` and the stages with a non-zero weight once, writes ``y_new`` once,
and leaves one partial sum per (sample, tile) for a fixed-order reduction.

Stage weights are compile-time constants of the kernel's signature only through
which of them are zero (those stages are never read); up to
:data:`MAX_STAGES` stages.  ``b_err`` is ``b − b̂`` as in
:class:`sdekit.solvers.tableaus.ButcherTableau`.
"""

from __future__ import annotations

import math

import torch

from ._args import check_data, check_out, coef, compute_dtype
from ._triton import NUM_WARPS, cdiv, check_kernel_tensor, require_triton, tile_shape
from .backend import resolve_backend

MAX_STAGES = 12


def _weights(name: str, w, S: int) -> list[float]:
    try:
        w = [float(v) for v in w]
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a sequence of {S} numbers, got {w!r}") from None
    if len(w) != S or not all(math.isfinite(v) for v in w):
        raise ValueError(f"{name} must hold {S} finite numbers (one per stage), got {w}")
    return w


def _inputs(y, ks, b, b_err, h, rtol, atol, out):
    check_data("y", y)
    if isinstance(ks, torch.Tensor) or not isinstance(ks, (list, tuple)) or not ks:
        raise TypeError("ks must be a non-empty list or tuple of stage tensors (B, *D)")
    if len(ks) > MAX_STAGES:
        raise ValueError(f"ks may hold at most {MAX_STAGES} stages, got {len(ks)}")
    for i, k in enumerate(ks):
        check_data(f"ks[{i}]", k, y)
    S = len(ks)
    b, b_err = _weights("b", b, S), _weights("b_err", b_err, S)
    for name, v in (("rtol", rtol), ("atol", atol)):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not (0 <= v < float("inf")):
            raise ValueError(f"{name} must be a finite number >= 0, got {v!r}")
    if rtol == 0 and atol == 0:
        raise ValueError("rtol and atol must not both be 0")
    if out is not None:
        check_out(out, y)
    return b, b_err, coef("h", h, y.shape[0], y.device)


def rk_combine_ref(y, ks, b, b_err, h, rtol, atol, *, out=None):
    """PyTorch reference of :func:`rk_combine_triton` (same arguments and results, any device and float dtype).

    Arithmetic in float32 (float64 for float64 ``y``), stages with zero weight skipped.
    """
    b, b_err, h = _inputs(y, ks, b, b_err, h, rtol, atol, out)
    cdt = compute_dtype(y.dtype)
    acc_b = acc_e = 0.0
    for k, wb, we in zip(ks, b, b_err):
        if wb != 0.0 or we != 0.0:
            kc = k.to(cdt)
            acc_b = acc_b + wb * kc if wb != 0.0 else acc_b
            acc_e = acc_e + we * kc if we != 0.0 else acc_e
    hh = h.column(y, cdt)
    y_c = y.to(cdt)
    y_new = y_c + hh * acc_b
    scale = atol + rtol * torch.maximum(y_c.abs(), y_new.abs())
    r = ((hh * acc_e) / scale).flatten(1) if not isinstance(acc_e, float) else torch.zeros_like(y_c).flatten(1)
    err_norm = r.pow(2).mean(1).sqrt()
    y_new = y_new.to(y.dtype) if out is None else out.copy_(y_new)
    return y_new, err_norm


def rk_combine_triton(y, ks, b, b_err, h, rtol, atol, *, out=None):
    """``y_new = y + h Σ bᵢkᵢ`` and the per-sample error norm of ``h Σ (bᵢ − b̂ᵢ)kᵢ``, in one pass.

    Source: Hairer, Nørsett & Wanner, "Solving ODEs I", §II.4, eqs. 4.10–4.11
    (the norm ``solve_adaptive`` accepts steps with).

    Args:
        y: ``(B, *D)`` state at the start of the step.
        ks: list of the ``S <= 12`` stages ``kᵢ`` ``(B, *D)``.
        b: the ``S`` weights of the propagated solution.
        b_err: the ``S`` weights ``bᵢ − b̂ᵢ`` of the error estimate.
        h: step size, float or ``(B,)`` tensor (signed; per-sample steps).
        rtol, atol: tolerances >= 0, not both 0.
        out: optional contiguous output for ``y_new`` (``out=y`` in place).
    Returns:
        ``(y_new, err_norm)``: ``y_new`` ``(B, *D)`` in ``y``'s dtype, ``err_norm``
        ``(B,)`` float32 (NaN/inf where the error is not finite).
    Raises:
        ValueError / TypeError: on a bad argument (named), as :func:`affine_update_triton`.
    """
    require_triton("rk_combine_triton", "rk_combine_ref")
    from ._rk_kernel import _rk_kernel  # imports Triton (once)
    from .reduce import row_sum

    b, b_err, h = _inputs(y, ks, b, b_err, h, rtol, atol, out)
    check_kernel_tensor("y", y)
    for i, k in enumerate(ks):
        check_kernel_tensor(f"ks[{i}]", k, y)
    y = y.contiguous()
    ks = [k.contiguous() for k in ks]
    S = len(ks)
    B = y.shape[0]
    N = y.numel() // B
    BLOCK_S, BLOCK_E = tile_shape(N)
    chunks = cdiv(N, BLOCK_E)
    part = torch.empty((B, chunks), dtype=torch.float32, device=y.device)
    new = out if out is not None else torch.empty_like(y)
    pad = MAX_STAGES - S
    bmask = sum(1 << i for i, w in enumerate(b) if w != 0.0)
    emask = sum(1 << i for i, w in enumerate(b_err) if w != 0.0)
    _rk_kernel[(cdiv(B, BLOCK_S) * chunks,)](
        new, part, y, *ks, *([y] * pad), *b, *([0.0] * pad), *b_err, *([0.0] * pad),
        h.value, h.stride, float(rtol), float(atol), B, N, chunks,
        BMASK=bmask, EMASK=emask, H_VEC=h.is_vec, BLOCK_S=BLOCK_S, BLOCK_E=BLOCK_E, num_warps=NUM_WARPS,
    )
    return new, (row_sum(part) / N).sqrt()


def rk_combine(y, ks, b, b_err, h, rtol, atol, *, out=None, backend=None):
    """:func:`rk_combine_triton` or :func:`rk_combine_ref`, as ``backend`` resolves for ``y``."""
    fn = rk_combine_triton if resolve_backend(backend, y.device, y.dtype) == "triton" else rk_combine_ref
    return fn(y, ks, b, b_err, h, rtol, atol, out=out)


__all__ = ["MAX_STAGES", "rk_combine", "rk_combine_ref", "rk_combine_triton"]
