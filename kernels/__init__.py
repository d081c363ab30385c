"""Fused Triton kernels for the sampling update steps, each beside its PyTorch reference.

* :func:`affine_update` — ``x ← a·x + b·s + d + c·z`` with ``z`` drawn in the
  kernel (every predictor, annealed Langevin, Tweedie), optional noise-free mean;
* :func:`langevin_step` — the snr-rule Langevin corrector step (Song et al. 2021,
  Alg. 5) in two passes over the data;
* :func:`rk_combine` — ``y + h Σ bᵢkᵢ``, the embedded error estimate and its
  per-sample RMS norm in one pass (embedded Runge–Kutta pairs);
* :func:`normal` — keyed standard normals (the noise alone, its own kernel).

Noise is keyed on ``(seed, sample index, element, stream)`` exactly as in
:mod:`sdekit.noise`, so a sample's noise does not depend on the batch it is
drawn in, on either implementation.  Each function has ``*_ref`` (PyTorch, any
device and float dtype) and ``*_triton`` (CUDA, or CPU under
``TRITON_INTERPRET=1``) variants; the plain name dispatches through
:func:`resolve_backend` (``backend=`` argument or ``$SDEKIT_BACKEND``).

This package lives in the repository's top-level ``kernels/`` folder and is
installed as ``sdekit.kernels`` (never as a top-level ``kernels``).  Importing
it does not import Triton: that happens when a backend is first resolved for
CUDA data (or ``backend="triton"``), and the kernels are compiled (or, under
``TRITON_INTERPRET=1``, built for the interpreter) at their first launch.
``HAS_TRITON`` and ``INTERPRETED`` are computed on first access.
"""

from typing import Any

from .affine import affine_update, affine_update_ref, affine_update_triton
from .backend import BACKENDS, ENV_VAR, resolve_backend
from .langevin import langevin_step, langevin_step_ref, langevin_step_triton
from .normal import normal, normal_ref, normal_triton
from .rk import MAX_STAGES, rk_combine, rk_combine_ref, rk_combine_triton


def __getattr__(name: str) -> Any:
    """``HAS_TRITON`` (Triton imports) and ``INTERPRETED`` (its interpreter builds the kernels), on first access."""
    if name in ("HAS_TRITON", "INTERPRETED"):
        from . import _triton

        return getattr(_triton, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "BACKENDS",
    "ENV_VAR",
    "HAS_TRITON",
    "INTERPRETED",
    "MAX_STAGES",
    "affine_update",
    "affine_update_ref",
    "affine_update_triton",
    "langevin_step",
    "langevin_step_ref",
    "langevin_step_triton",
    "normal",
    "normal_ref",
    "normal_triton",
    "resolve_backend",
    "rk_combine",
    "rk_combine_ref",
    "rk_combine_triton",
]
