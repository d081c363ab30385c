"""Input validation shared by the public API.

Every check raises ``ValueError`` (or ``TypeError``) with a message that
names the offending argument and states what was expected.  Checks that
would need a device-to-host copy are only applied to user inputs, once, before
any solver loop starts.
"""

from __future__ import annotations

import functools
import math
import numbers

import torch


def compiler_disable(fn):
    """``torch.compiler.disable(fn)`` that imports ``torch._dynamo`` only when a compile traces ``fn``.

    ``torch.compiler.disable`` imports ``torch._dynamo`` (and with it Triton and
    sympy, ~2 s) at decoration time, i.e. at ``import sdekit``.  Here eager calls
    go straight to ``fn``; :func:`torch.compiler.is_compiling` is true only
    while Dynamo traces, and there the call goes to ``fn`` behind
    ``torch._compile._disable_dynamo`` (torch's own lazy ``disable``, in a file
    Dynamo never traces): a graph break, and ``fn`` and what it calls run
    eagerly, as under ``torch.compiler.disable``.  The graphs are the same;
    Dynamo counts one more graph break and compiles one more (empty) frame, the
    wrapper itself.
    """
    try:
        from torch._compile import _disable_dynamo
    except ImportError:  # pragma: no cover - private since torch 2.0; the plain decorator on any later rename
        return torch.compiler.disable(fn)
    disabled = _disable_dynamo(fn)

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        if torch.compiler.is_compiling():
            return disabled(*args, **kwargs)
        return fn(*args, **kwargs)

    return wrapper


def _real(name: str, value) -> float:
    """``float(value)`` for a real number (Python, NumPy or a one-element tensor); TypeError otherwise."""
    if isinstance(value, (bool, str, bytes, complex)) or value is None:
        raise TypeError(f"{name} must be a real number, got {type(value).__name__} {value!r}")
    try:
        return float(value)
    except (TypeError, ValueError, RuntimeError):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__} {value!r}") from None


def check_real(name: str, value) -> float:
    """Raise unless ``value`` is a finite real number; return it as a float."""
    v = _real(name, value)
    if not math.isfinite(v):
        raise ValueError(f"{name} must be a finite number, got {v}")
    return v


def check_tensor(name: str, value, *, min_dim: int = 0) -> torch.Tensor:
    """Return ``value`` if it is a floating tensor with at least ``min_dim`` dims."""
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    if not value.is_floating_point():
        raise TypeError(f"{name} must have a floating dtype, got {value.dtype}")
    if value.dim() < min_dim:
        raise ValueError(
            f"{name} must have at least {min_dim} dimension(s) (batch first), "
            f"got shape {tuple(value.shape)}"
        )
    return value


def check_finite(name: str, value: torch.Tensor) -> torch.Tensor:
    """Raise if ``value`` holds NaN or infinity (one host sync; inputs only)."""
    if not bool(torch.isfinite(value).all()):
        bad = int((~torch.isfinite(value)).sum())
        raise ValueError(f"{name} must be finite, found {bad} non-finite value(s)")
    return value


def check_positive(name: str, value: float) -> float:
    """Raise unless ``value`` is a finite number > 0."""
    value = _real(name, value)
    if not (value > 0.0 and value < float("inf")):
        raise ValueError(f"{name} must be a finite number > 0, got {value}")
    return value


def check_nonnegative(name: str, value: float) -> float:
    """Raise unless ``value`` is a finite number >= 0."""
    value = _real(name, value)
    if not (value >= 0.0 and value < float("inf")):
        raise ValueError(f"{name} must be a finite number >= 0, got {value}")
    return value


def check_positive_int(name: str, value) -> int:
    """Raise unless ``value`` is an integer >= 1 (an integral float such as ``4.0`` is accepted)."""
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        v = int(value)
    else:
        if isinstance(value, bool):
            raise TypeError(f"{name} must be an integer >= 1, got bool {value!r}")
        f = _real(name, value)  # TypeError for strings, None, ...
        if not (math.isfinite(f) and f == int(f)):
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        v = int(f)
    if v < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return v


def check_batch(name: str, value: torch.Tensor) -> torch.Tensor:
    """Raise unless the (already checked) tensor ``value`` has at least one row (``B >= 1``)."""
    if value.dim() >= 1 and value.shape[0] == 0:
        raise ValueError(f"{name} must have a batch of at least 1 sample, got shape {tuple(value.shape)}")
    return value


def check_sde(name: str, sde):
    """Raise ``TypeError`` unless ``sde`` looks like an SDE (``drift``, ``diffusion`` and ``T``)."""
    if isinstance(sde, (str, bytes)) or not all(
        hasattr(sde, a) for a in ("drift", "diffusion", "T")
    ):
        raise TypeError(
            f"{name} must be an SDE object (e.g. sdekit.VPSDE()) with drift, diffusion and T, "
            f"got {type(sde).__name__} {sde!r}"
        )
    return sde


def check_callable(name: str, value):
    """Raise ``TypeError`` unless ``value`` is callable."""
    if not callable(value):
        raise TypeError(f"{name} must be callable (a model or function), got {type(value).__name__}")
    return value


@compiler_disable
def check_eps(sde, eps) -> float:
    """Raise unless ``eps`` lies in ``(0, T)`` and (linear SDEs) ``σ(eps) > 0``; return it as a float.

    ``σ`` is evaluated on the host in float64 (no device sync); excluded from
    ``torch.compile`` tracing (host validation, read with ``.item()``-like conversion).
    """
    e = _real("eps", eps)
    T = float(sde.T)
    ok = 0.0 < e < T
    if ok and callable(getattr(sde, "std", None)):
        try:
            ok = bool(sde.std(torch.tensor([e], dtype=torch.float64))[0] > 0)
        except NotImplementedError:
            pass
    if not ok:
        raise ValueError(f"eps must lie in (0, T) = (0, {T}), where σ(eps) must be > 0; got {eps!r}")
    return e


def check_device(name: str, device) -> torch.device:
    """The canonical ``torch.device`` for ``device`` (``"cuda"`` → ``cuda:0``); ValueError if unusable."""
    try:
        return torch.empty(0, device=device).device
    except (AssertionError, RuntimeError, TypeError, ValueError) as e:
        raise ValueError(f"{name}={device!r} is not an available torch device ({e})") from None


def check_choice(name: str, value: str, choices) -> str:
    """Raise unless ``value`` is one of ``choices``."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {sorted(choices)}, got {value!r}")
    return value


def check_time_interval(name: str, value: float, T: float) -> float:
    """Raise unless ``0 <= value <= T``."""
    value = float(value)
    if not (0.0 <= value <= T):
        raise ValueError(f"{name} must lie in [0, T] = [0, {T}], got {value}")
    return value


def check_model_output(name: str, out, x: torch.Tensor) -> torch.Tensor:
    """Raise unless a model's output is a tensor of the same shape as ``x``."""
    if not isinstance(out, torch.Tensor):
        raise TypeError(f"{name} must return a torch.Tensor, got {type(out).__name__}")
    if out.shape != x.shape:
        raise ValueError(
            f"{name} returned shape {tuple(out.shape)}, expected the shape of its "
            f"input x {tuple(x.shape)}"
        )
    return out


def batch_time(t, x: torch.Tensor) -> torch.Tensor:
    """Broadcast a scalar or (B,) time to a (B,) tensor on ``x``'s device and dtype."""
    t = torch.as_tensor(t, device=x.device, dtype=x.dtype)
    if t.dim() == 0:
        return t.expand(x.shape[0])
    if t.shape != (x.shape[0],):
        raise ValueError(f"t must be a scalar or have shape (B,) = ({x.shape[0]},), got {tuple(t.shape)}")
    return t


def expand_as_batch(v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """View a (B,) tensor as (B, 1, ..., 1) so that it broadcasts against ``x``."""
    return v.reshape(v.shape + (1,) * (x.dim() - v.dim()))
