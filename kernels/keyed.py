"""The keyed updates of the kernels with the noise key and the backend bound once, for the steps of a loop.

A fixed-step sampler (:func:`sdekit.sample`) calls :func:`~sdekit.kernels.affine_update` (every predictor,
the σ-rule and annealed Langevin correctors) or :func:`~sdekit.kernels.langevin_step` (the snr-rule
corrector) once or twice per step, on one batch with one key.  Each plain call checks all its arguments and,
on the CPU, whether the C one-pass update of :mod:`sdekit._native` may run; at batch 1 that costs more than
the update itself.  :class:`KeyedUpdate` does what holds for the whole loop once, and per call only what can
change between steps, with the plain calls' bits.
"""

from __future__ import annotations

import math

import torch

from sdekit.noise import MASK32

from . import affine as _affine
from ._args import check_data, noise_key
from .affine import affine_update, native_affine_applies
from .backend import resolve_backend
from .langevin import langevin_step, norm_step_size


class KeyedUpdate:
    """:func:`~sdekit.kernels.affine_update` and :func:`~sdekit.kernels.langevin_step` with the noise key
    ``(seed, sample_index)`` and the backend bound, for the steps of a loop on one batch.

    ``update.affine(x, s, a, b, c, d, stream=i)`` is
    ``affine_update(x, s, a, b, c, d, seed=seed, sample_index=sample_index, stream=i, backend=backend)``, and
    ``update.langevin(x, s, snr, alpha, per_sample_norm=p, stream=i)`` the new state of
    ``langevin_step(x, s, snr, alpha, per_sample_norm=p, seed=seed, sample_index=sample_index, stream=i,
    backend=backend)``: the same bits.  Checked here, once: the key (:func:`~sdekit.kernels._args.noise_key`),
    the backend, and whether the C one-pass update can run on data like ``x`` at all (CPU, float32/float64,
    no compile, tracing or functorch transform: :func:`~sdekit.kernels.affine.native_affine_applies`).  Per
    call, what can change between steps: ``x`` and ``s`` plain contiguous CPU tensors of ``x``'s shape and
    dtype outside autograd, the scalars finite Python floats, ``stream`` an int in [0, 2³²).  A call that
    fails any of these, and every call on the Triton backend, is the plain call.

    Args:
        x: ``(B, *D)`` data the loop updates (its shape, dtype and device are the loop's).
        seed, sample_index, backend: as :func:`~sdekit.kernels.affine_update`.
    Raises:
        ValueError / TypeError: on a bad ``x``, ``seed``, ``sample_index`` or ``backend`` (as
            :func:`~sdekit.kernels.affine_update`).
        RuntimeError: ``backend="triton"`` where the kernels cannot run.
    """

    def __init__(self, x: torch.Tensor, *, seed, sample_index=None, backend=None):
        check_data("x", x)
        self.backend = resolve_backend(backend, x.device, x.dtype)
        key = noise_key(seed, sample_index, 0, x.shape[0], x.device)
        self.seed, self.sample_index = seed, key.sample_index  # arange(B) for None, made once
        self._shape, self._dtype = x.shape, x.dtype
        self._native = None
        if self.backend == "torch" and _affine._NATIVE_FUSED and native_affine_applies(x, x, None, None,
                                                                                      (key.sample_index,)):
            from sdekit import _native

            self._native = _native.keyed_loop(x.dtype, x.shape, key.k0, key.k1, key.sample_index)

    def _plain(self, t) -> bool:
        """Whether ``t`` is data the bound C update takes as it is (the per-tensor part of
        :func:`~sdekit.kernels.affine.native_affine_applies`; the rest was checked once)."""
        return (type(t) is torch.Tensor and t.is_cpu and t.dtype == self._dtype and t.shape == self._shape
                and t.is_contiguous() and not (t.requires_grad and torch.is_grad_enabled()))

    def affine(self, x: torch.Tensor, s: torch.Tensor, a, b, c=0.0, d=0.0, *, stream: int) -> torch.Tensor:
        """``a·x + b·s + d + c·z``, ``z`` keyed by ``(seed, sample_index, stream)`` (``c = 0.0``: no noise)."""
        loop = self._native
        if (loop is not None and _finite_floats(a, b, c, d) and _is_stream(stream) and self._plain(x)
                and self._plain(s)):
            new = torch.empty_like(x)  # contiguous, as x is
            if loop.affine(x, s, a, b, c, d, stream, new):
                return new
        return affine_update(x, s, a, b, c, d, seed=self.seed, sample_index=self.sample_index, stream=stream,
                             backend=self.backend)

    def langevin(self, x: torch.Tensor, s: torch.Tensor, snr: float, alpha, *, per_sample_norm: bool,
                 stream: int) -> torch.Tensor:
        """``x + ε s + √(2ε) z`` with ``ε = 2 α (snr ‖z‖/‖s‖)²``, ``z`` keyed by ``(seed, sample_index, stream)``
        (the new state of :func:`~sdekit.kernels.langevin_step`)."""
        loop = self._native
        if (loop is not None and _finite_floats(snr, alpha) and snr > 0 and _is_stream(stream) and self._plain(x)
                and self._plain(s)):
            z = loop.normals(stream).to(self._dtype)
            eps = norm_step_size(s, z, snr, alpha, per_sample_norm)
            new = torch.empty_like(x)  # contiguous, as x is
            if loop.langevin(x, s, z, eps, (2 * eps).sqrt(), new):
                return new
        return langevin_step(x, s, snr, alpha, per_sample_norm=per_sample_norm, seed=self.seed,
                             sample_index=self.sample_index, stream=stream, backend=self.backend)[0]


def _finite_floats(*values) -> bool:
    for v in values:
        if type(v) is not float or not math.isfinite(v):
            return False
    return True


def _is_stream(stream) -> bool:
    return type(stream) is int and 0 <= stream <= MASK32


__all__ = ["KeyedUpdate"]
