"""Counter-based Gaussian noise keyed by (seed, stream, sample index, element index).

A sample's noise depends only on its own key, never on the batch it is drawn
in, so results do not change with the batch size, chunking or sharding.  The
generator is Philox4x32-10 (Salmon et al. 2011, "Parallel random numbers: as
easy as 1, 2, 3", SC'11, §4.2), the counter-based generator of cuRAND,
Random123 and Triton, turned into normals by the Box–Muller transform (Box &
Muller 1958).  The same bits are produced by the Triton kernels in
:mod:`sdekit.kernels`, which is why this module fixes the layout:

* key ``(k0, k1)`` = the 64-bit ``seed`` split into low and high 32-bit words;
* counter ``(c0, c1, c2, c3)`` = ``(element // 4, sample_index, stream, 0)``;
* Philox's four 32-bit outputs ``(i0, i1, i2, i3)`` give elements
  ``4j … 4j+3`` as ``r₀cos θ₀, r₀sin θ₀, r₁cos θ₁, r₁sin θ₁`` with
  ``u = (i >> 8 + ½)·2⁻²⁴ ∈ (0, 1)``, ``r = √(−2 ln u_even)``, ``θ = 2π u_odd``.

``stream`` separates independent draws for the same sample (a sampler uses the
step number; a Brownian tree uses the node number).  Arithmetic is float32;
``|z|`` is at most ``√(50 ln 2) ≈ 5.9`` (probability of a larger normal: 4e-9).

Everything here runs in plain PyTorch on any device, with 32-bit unsigned
arithmetic emulated in int64: that code is the reference.  On the CPU the draws
(:func:`counter_normal_unchecked`, hence :func:`counter_normal`, and
:func:`counter_rademacher`) go through a small C library instead
(:mod:`sdekit._native`, built with the system C compiler at the first CPU draw
and cached in ``$SDEKIT_CACHE`` or ``~/.cache/sdekit``): the same Philox words
bit for bit, and normals within 4 float32 ulp of the reference's (its ln, sin
and cos are float32 polynomials of its own, accurate to ~1.4 ulp; torch's to
~1 ulp), at less than the cost of ``torch.randn``.  It is used for CPU
``sample_index`` tensors outside ``torch.compile``/``torch.jit`` tracing and
functorch transforms; without a C compiler, or with the environment variable
``SDEKIT_NATIVE=0``, the torch code runs.
"""

from __future__ import annotations

import math
import os

import torch

MASK32 = 0xFFFFFFFF
PHILOX_M0 = 0xD2511F53
PHILOX_M1 = 0xCD9E8D57
PHILOX_W0 = 0x9E3779B9
PHILOX_W1 = 0xBB67AE85
PHILOX_ROUNDS = 10


def _mulhilo(a: torch.Tensor, m: int) -> tuple[torch.Tensor, torch.Tensor]:
    """High and low 32-bit words of ``a·m`` for ``a`` in [0, 2³²) (int64) and a 32-bit constant ``m``."""
    # int64 multiplication wraps modulo 2⁶⁴, so the product's 64 bits are exact: the low word is
    # its low 32 bits, the high word bits 32–63 (the mask drops the arithmetic shift's sign bits).
    p = a * m
    return (p >> 32) & MASK32, p & MASK32


def philox4x32(c0, c1, c2, c3, k0: int, k1: int, rounds: int = PHILOX_ROUNDS):
    """Philox4x32 bijection (Salmon et al. 2011, §4.2) on int64 tensors holding 32-bit words.

    Args:
        c0, c1, c2, c3: counter words, broadcastable int64 tensors with values in [0, 2³²).
        k0, k1: key words, Python ints in [0, 2³²).
        rounds: number of rounds (10 is the standard, crush-resistant choice).
    Returns:
        four int64 tensors of the broadcast shape with values in [0, 2³²).
    """
    for r in range(rounds):
        hi0, lo0 = _mulhilo(c0, PHILOX_M0)
        hi1, lo1 = _mulhilo(c2, PHILOX_M1)
        ka = (k0 + r * PHILOX_W0) & MASK32
        kb = (k1 + r * PHILOX_W1) & MASK32
        c0, c1, c2, c3 = hi1 ^ c1 ^ ka, lo1, hi0 ^ c3 ^ kb, lo0
    return c0, c1, c2, c3


def uint32_to_unit(x: torch.Tensor) -> torch.Tensor:
    """Map 32-bit words (int64 tensor) to float32 uniforms ``(x >> 8 + ½)·2⁻²⁴`` in the open interval (0, 1)."""
    return ((x >> 8).to(torch.float32) + 0.5) * (2.0**-24)


def split_seed(seed: int) -> tuple[int, int]:
    """Return the Philox key ``(low word, high word)`` of a 64-bit ``seed``.

    Raises:
        ValueError: if ``seed`` is not an integer in [0, 2⁶⁴).
    """
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**64:
        raise ValueError(f"seed must be an integer in [0, 2**64), got {seed!r}")
    return seed & MASK32, seed >> 32


def noise_kind(seed, sample_index, generator, *, what: str = "the noise", index_needs_seed: bool = True) -> str:
    """The rule every front door applies to its noise arguments: ``"keyed"`` (``seed``) or ``"generator"``.

    ``seed`` (an int in [0, 2⁶⁴)) means counter-based noise keyed by ``(seed, sample_index)``; otherwise
    ``generator`` (a ``torch.Generator``, or ``None`` for torch's global one) supplies it.  Used by
    :func:`sdekit.sample`, the k-diffusion samplers, the diffusers scheduler and the likelihood's probes.

    Raises:
        ValueError: both ``seed`` and ``generator``; ``sample_index`` without ``seed`` (where
            ``index_needs_seed``: the index keys the draws and means nothing to a generator); a bad ``seed``.
        TypeError: a ``generator`` that is not a ``torch.Generator``.
    """
    if seed is not None:
        if generator is not None:
            raise ValueError(f"pass either seed or generator for {what}, not both (seed= keys it, "
                             f"generator= draws it)")
        split_seed(seed)
        return "keyed"
    if sample_index is not None and index_needs_seed:
        raise ValueError(f"sample_index needs seed= as well (it keys {what}; a generator has no use for it)")
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    return "generator"


def check_sample_index(sample_index: torch.Tensor, batch: int | None = None) -> torch.Tensor:
    """Validate per-sample indices (one host sync): a 1-D integer tensor with values in [0, 2³²).

    Raises:
        ValueError: on a wrong shape or out-of-range values; TypeError on a non-integer dtype.
    """
    if not isinstance(sample_index, torch.Tensor) or sample_index.dtype.is_floating_point or sample_index.dtype == torch.bool:
        raise TypeError(f"sample_index must be an integer torch.Tensor, got {sample_index!r}")
    if sample_index.dim() != 1 or (batch is not None and sample_index.shape[0] != batch):
        want = f"({batch},)" if batch is not None else "1-D"
        raise ValueError(f"sample_index must have shape {want}, got {tuple(sample_index.shape)}")
    if sample_index.numel() and not bool(((sample_index >= 0) & (sample_index <= MASK32)).all()):
        raise ValueError("sample_index values must lie in [0, 2**32)")
    return sample_index.to(torch.int64)


def counter_normal(seed: int, stream, sample_index: torch.Tensor, shape, *, dtype=torch.float32) -> torch.Tensor:
    """Standard normal noise keyed by ``(seed, stream, sample index, element index)``.

    Row ``b`` depends only on ``(seed, stream, sample_index[b])``: drawing the
    same sample in a batch of 1 or of 10,000 gives the same bits.

    Args:
        seed: integer in [0, 2⁶⁴), the Philox key.
        stream: integer in [0, 2³²) or int64 tensor of shape ``(B,)`` (e.g. the step number).
        sample_index: int64 tensor ``(B,)`` with values in [0, 2³²); its device is the output's.
        shape: per-sample shape ``D`` (tuple of ints); the output is ``(B, *D)``.
        dtype: output dtype (the draw itself is float32).
    Returns:
        ``(B, *D)`` tensor of independent N(0, 1) values.
    Raises:
        ValueError: on an out-of-range ``seed``, ``stream`` or ``sample_index``.
    """
    k0, k1 = split_seed(seed)
    sample_index = check_sample_index(sample_index)
    if isinstance(stream, torch.Tensor):
        if stream.shape != sample_index.shape or not bool(((stream >= 0) & (stream <= MASK32)).all()):
            raise ValueError(f"stream must have shape {tuple(sample_index.shape)} and values in [0, 2**32)")
    elif isinstance(stream, bool) or not isinstance(stream, int) or not 0 <= stream <= MASK32:
        raise ValueError(f"stream must be an integer in [0, 2**32), got {stream!r}")
    return counter_normal_unchecked(k0, k1, stream, sample_index, tuple(shape)).to(dtype)


def counter_normal_unchecked(k0: int, k1: int, stream, sample_index: torch.Tensor, shape: tuple) -> torch.Tensor:
    """:func:`counter_normal` without argument checks or host syncs (for solver loops and graph capture).

    ``stream`` is an int or an int64 tensor ``(B,)``; returns float32 ``(B, *shape)``.
    """
    numel = math.prod(shape)
    native = _use_native(stream, sample_index)
    if native == "op":  # traced by torch.compile: the same C draw as eager, as one opaque graph node
        tensor_stream = stream if isinstance(stream, torch.Tensor) else None
        z = torch.ops.sdekit.keyed_normal(sample_index, tensor_stream, 0 if tensor_stream is not None else stream,
                                          k0, k1, numel)
        return z.reshape((sample_index.shape[0],) + shape)
    if native:
        z = _native_normals(k0, k1, stream, sample_index, numel)
        if z is not None:
            return z.reshape((sample_index.shape[0],) + shape)
    return _reference_normals(k0, k1, stream, sample_index, numel).reshape((sample_index.shape[0],) + shape)


def _reference_normals(k0: int, k1: int, stream, sample_index: torch.Tensor, numel: int) -> torch.Tensor:
    """The torch code (the reference, any device): float32 ``(B, numel)``."""
    groups = -(-numel // 4)
    z = box_muller(*_philox_words(k0, k1, stream, sample_index, groups))
    return z.reshape(sample_index.shape[0], groups * 4)[:, :numel]


def box_muller(i0: torch.Tensor, i1: torch.Tensor, i2: torch.Tensor, i3: torch.Tensor) -> torch.Tensor:
    """Four Philox words (int64 tensors of one shape ``S``) → float32 normals ``(*S, 4)`` (Box & Muller 1958).

    ``(r₀cos θ₀, r₀sin θ₀, r₁cos θ₁, r₁sin θ₁)`` with ``r = √(−2 ln u(i₀ or i₂))`` and
    ``θ = 2π u(i₁ or i₃)``, ``u`` = :func:`uint32_to_unit` (the layout in the module docstring).
    """
    r0 = torch.sqrt(-2.0 * torch.log(uint32_to_unit(i0)))
    r1 = torch.sqrt(-2.0 * torch.log(uint32_to_unit(i2)))
    th0 = (2.0 * math.pi) * uint32_to_unit(i1)
    th1 = (2.0 * math.pi) * uint32_to_unit(i3)
    return torch.stack([r0 * torch.cos(th0), r0 * torch.sin(th0), r1 * torch.cos(th1), r1 * torch.sin(th1)], dim=-1)


def _use_native(stream, sample_index: torch.Tensor):
    """Whether the C path (:mod:`sdekit._native`) draws: plain CPU tensors, not ``SDEKIT_NATIVE=0``.

    Returns ``"op"`` under ``torch.compile`` (the draw is the custom op ``sdekit::keyed_normal``, so a
    compiled loop gives the eager bits), else a bool; never under ``torch.jit`` or functorch transforms.
    """
    if os.environ.get("SDEKIT_NATIVE", "1") == "0":
        return False
    if type(sample_index) is not torch.Tensor and not torch.compiler.is_compiling():
        return False
    if sample_index.device.type != "cpu" or sample_index.dim() != 1:
        return False
    if isinstance(stream, torch.Tensor) and (stream.device.type != "cpu" or stream.shape != sample_index.shape):
        return False
    if torch.jit.is_scripting() or torch._C._get_tracing_state() is not None:
        return False
    if torch.compiler.is_compiling():
        return "op" if _KEYED_NORMAL_OP else False
    if isinstance(stream, torch.Tensor) and type(stream) is not torch.Tensor:
        return False
    functorch = getattr(torch._C, "_functorch", None)
    wrapped = getattr(functorch, "is_functorch_wrapped_tensor", None)
    return not (wrapped is not None and (wrapped(sample_index) or (isinstance(stream, torch.Tensor) and wrapped(stream))))


def _native_eager(*tensors) -> bool:
    """Whether the C library may compute eagerly on ``tensors`` (the other C entry points, e.g. the fused
    affine update of :func:`sdekit.kernels.affine_update_ref`): the conditions under which
    :func:`_use_native` returns ``True`` (for an int stream and a 1-D index among ``tensors``), for every
    tensor (``None`` entries skipped), and no autograd graph to record.
    """
    if os.environ.get("SDEKIT_NATIVE", "1") == "0" or torch.compiler.is_compiling():
        return False
    if torch.jit.is_scripting() or torch._C._get_tracing_state() is not None:
        return False
    grad = torch.is_grad_enabled()
    for t in tensors:
        if t is not None and (type(t) is not torch.Tensor or not t.is_cpu or (grad and t.requires_grad)):
            return False
    functorch = getattr(torch._C, "_functorch", None)
    peek = getattr(functorch, "peek_interpreter_stack", None)
    if peek is not None:  # no functorch transform active: no tensor is wrapped (one call, not one per tensor)
        return peek() is None
    wrapped = getattr(functorch, "is_functorch_wrapped_tensor", None)
    return wrapped is None or not any(t is not None and wrapped(t) for t in tensors)


def _native_normals(k0: int, k1: int, stream, sample_index: torch.Tensor, numel: int):
    from . import _native

    return _native.normals(k0, k1, stream, sample_index, numel)


def _keyed_normal_op(sample_index: torch.Tensor, stream: torch.Tensor | None, stream0: int, k0: int, k1: int,
                     numel: int) -> torch.Tensor:
    """``sdekit::keyed_normal``: float32 ``(B, numel)`` normals, the C draw (the torch code without the library)."""
    s = stream if stream is not None else stream0
    z = _native_normals(k0, k1, s, sample_index, numel)
    if z is None:
        with torch.no_grad():
            z = _reference_normals(k0, k1, s, sample_index, numel)
    return z


def _keyed_normal_fake(sample_index, stream, stream0, k0, k1, numel):
    return sample_index.new_empty((sample_index.shape[0], numel), dtype=torch.float32)


try:  # a registration, no import: about 4 ms
    torch.library.custom_op("sdekit::keyed_normal", _keyed_normal_op, mutates_args=()).register_fake(
        _keyed_normal_fake)
    _KEYED_NORMAL_OP = True
except (AttributeError, RuntimeError):  # pragma: no cover - torch without custom_op, or registered twice
    _KEYED_NORMAL_OP = hasattr(torch.ops.sdekit, "keyed_normal")


def _philox_words(k0: int, k1: int, stream, sample_index: torch.Tensor, groups: int):
    """Philox outputs for counters ``(g, sample_index[b], stream, 0)``, ``g < groups``: four int64 ``(B, groups)``."""
    device = sample_index.device
    c0 = torch.arange(groups, dtype=torch.int64, device=device).unsqueeze(0)
    c1 = sample_index.to(torch.int64).unsqueeze(1)
    if isinstance(stream, torch.Tensor):
        c2 = stream.to(device=device, dtype=torch.int64).unsqueeze(1)
    else:
        c2 = torch.full((1, 1), stream, dtype=torch.int64, device=device)
    zero = torch.zeros((1, 1), dtype=torch.int64, device=device)
    words = philox4x32(c0, c1, c2, zero, k0, k1)
    return tuple(torch.broadcast_to(i, (sample_index.shape[0], groups)) for i in words)


def counter_rademacher(seed: int, stream: int, sample_index: torch.Tensor, shape, *, dtype=torch.float32) -> torch.Tensor:
    """Rademacher (±1 with probability ½ each) noise keyed like :func:`counter_normal`.

    Element ``4j + w`` of sample ``b`` is the top bit of Philox word ``w`` of
    counter ``(j, sample_index[b], stream, 0)``: ``+1`` if set, ``−1`` if not.
    Used for Hutchinson probes that do not depend on the batch
    (:func:`sdekit.log_likelihood` with ``seed=``).

    Args:
        seed: integer in [0, 2⁶⁴); stream: integer in [0, 2³²);
        sample_index: int64 ``(B,)`` in [0, 2³²); shape: per-sample shape ``D``.
    Returns:
        ``(B, *D)`` tensor of ``dtype`` with values ±1.
    Raises:
        ValueError: on an out-of-range ``seed``, ``stream`` or ``sample_index``.
    """
    k0, k1 = split_seed(seed)
    sample_index = check_sample_index(sample_index)
    if isinstance(stream, bool) or not isinstance(stream, int) or not 0 <= stream <= MASK32:
        raise ValueError(f"stream must be an integer in [0, 2**32), got {stream!r}")
    shape = tuple(shape)
    numel = math.prod(shape)
    if _use_native(stream, sample_index) is True:
        from . import _native

        pm = _native.rademacher(k0, k1, stream, sample_index, numel)
        if pm is not None:
            return pm.to(dtype).reshape((sample_index.shape[0],) + shape)
    words = _philox_words(k0, k1, stream, sample_index, -(-numel // 4))
    bits = torch.stack([w >> 31 for w in words], dim=-1).reshape(sample_index.shape[0], -1)[:, :numel]
    return (bits.to(dtype) * 2 - 1).reshape((sample_index.shape[0],) + shape)
