"""Which implementation runs: the Triton kernels or the PyTorch references.

``"auto"`` picks Triton for CUDA tensors of a kernel dtype (float32, float16,
bfloat16) when Triton imports, the reference otherwise (CPU tensors, float64,
no Triton).  ``"triton"`` forces the kernels (and raises if they cannot run),
``"torch"`` forces the references.  ``None`` reads the ``SDEKIT_BACKEND``
environment variable (default ``"auto"``), so a whole program can be switched
without touching its calls.

Triton is imported here (once) only when the answer depends on it: for CUDA
data of a kernel dtype, or ``"triton"`` asked for; CPU data, float64 and
``"torch"`` never import it.
"""

from __future__ import annotations

import os

import torch

from ._triton import KERNEL_DTYPES, interpreted, triton_available

BACKENDS = ("auto", "triton", "torch")
ENV_VAR = "SDEKIT_BACKEND"


def resolve_backend(backend, device, dtype) -> str:
    """Return ``"triton"`` or ``"torch"`` for data on ``device`` with ``dtype``.

    Args:
        backend: ``"auto"`` | ``"triton"`` | ``"torch"`` | ``None`` (``$SDEKIT_BACKEND`` or ``"auto"``).
        device, dtype: of the data the step works on.
    Raises:
        ValueError: on an unknown backend name (argument or environment variable).
        RuntimeError: for ``"triton"`` when Triton does not import, the device is
            not CUDA (unless ``TRITON_INTERPRET=1`` was set before import), or the
            dtype is not float32/float16/bfloat16.
    """
    name = "backend"
    if backend is None:
        backend, name = os.environ.get(ENV_VAR, "auto").strip().lower() or "auto", f"${ENV_VAR}"
    if backend not in BACKENDS:
        raise ValueError(f"{name} must be one of {list(BACKENDS)}, got {backend!r}")
    device = torch.device(device)
    if backend == "torch":
        return "torch"
    if backend == "auto":
        # the cheap tests first: triton_available() imports Triton (once)
        return "triton" if device.type == "cuda" and dtype in KERNEL_DTYPES and triton_available() else "torch"
    has_triton = triton_available()
    usable = has_triton and dtype in KERNEL_DTYPES and (device.type == "cuda" or (interpreted() and device.type == "cpu"))
    if not usable:
        why = ("Triton does not import" if not has_triton else
               f"dtype {dtype} is not float32/float16/bfloat16" if dtype not in KERNEL_DTYPES else
               f"device {device} is not CUDA (set TRITON_INTERPRET=1 before importing sdekit to interpret on the CPU)")
        raise RuntimeError(f"backend='triton' cannot run here: {why}")
    return "triton"
