"""The CPU fast path of :mod:`sdekit.noise`: ``_native_noise.c`` built on first use and called through ctypes.

The same library holds the Brownian tree's evaluator (``_native_tree.c``, called by
:mod:`sdekit.brownian.native_tree`); both sources share the Philox and Box–Muller code of
``_native_philox.h``.

It also holds the one-pass affine update with in-place noise of
:func:`sdekit.kernels.affine_update_ref` (and the Langevin reference's update), :func:`affine`,
and :class:`KeyedLoop`, the same entry points bound once for the steps of a sampling loop
(:class:`sdekit.kernels.keyed.KeyedUpdate`).  The affine update is called with its arguments
packed in one array (``sdekit_affine_packed_*``): ctypes converts each argument through Python.

The C source (no Python or torch headers) is compiled with the system C compiler
(``$CC``, else ``cc``, ``gcc`` or ``clang``) the first time keyed noise is drawn
on the CPU, into the cache folder ``$SDEKIT_CACHE`` (else
``$XDG_CACHE_HOME/sdekit``, else ``~/.cache/sdekit``).  The library's name holds
a hash of the source, the compiler and the platform, so an edited source or
another compiler builds a new one; it is built into a temporary file and moved
into place atomically, so concurrent processes never load a half-written file.
Flags: ``-O3 -fPIC -shared -ffp-contract=off -fno-math-errno``, with
``-fopenmp`` where it links (each set is tried in turn, the first that builds
and loads is kept).

Nothing here runs at ``import sdekit``: :mod:`sdekit.noise` imports this module
at the first CPU draw.  Where no compiler is found or the build fails,
:func:`library` returns ``None`` (logged once at DEBUG level) and the caller
uses the torch reference.  ``SDEKIT_NATIVE=0`` disables the fast path (checked
by :mod:`sdekit.noise` at every call).
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import torch

_log = logging.getLogger(__name__)

#: The C sources compiled into the one library, and the header they share (hashed with them).
SOURCES = tuple(Path(__file__).with_name(name) for name in ("_native_noise.c", "_native_tree.c"))
HEADERS = (Path(__file__).with_name("_native_philox.h"),)
_BASE_FLAGS = ["-O3", "-fPIC", "-shared", "-ffp-contract=off", "-fno-math-errno"]
#: Tried in order: OpenMP and per-ISA clones, then without OpenMP, then without clones (other compilers).
_FLAG_SETS = [["-fopenmp"], [], ["-fopenmp", "-DSDEKIT_NO_CLONES"], ["-DSDEKIT_NO_CLONES"]]
#: Below this many elements one thread draws them (a parallel region costs more than it saves).
PARALLEL_MIN = 2**15

_lock = threading.Lock()
_state: dict = {}  # "lib": the loaded library or None once tried


def cache_dir() -> Path:
    """The folder holding the built library (``$SDEKIT_CACHE``, ``$XDG_CACHE_HOME/sdekit`` or ``~/.cache/sdekit``)."""
    if os.environ.get("SDEKIT_CACHE"):
        return Path(os.environ["SDEKIT_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "sdekit"


def _compiler() -> str | None:
    names = [os.environ["CC"]] if os.environ.get("CC") else ["cc", "gcc", "clang"]
    for name in names:
        found = shutil.which(name)
        if found:
            return os.path.realpath(found)
    return None


def _library_path(cc: str, source: bytes) -> Path:
    st = os.stat(cc)
    ident = repr((cc, st.st_size, st.st_mtime_ns, _BASE_FLAGS, _FLAG_SETS, platform.machine(), sys.platform))
    digest = hashlib.sha256(source + ident.encode()).hexdigest()[:16]
    suffix = ".dll" if sys.platform == "win32" else ".so"
    return cache_dir() / f"noise-{digest}{suffix}"


def _declare(lib: ctypes.CDLL) -> ctypes.CDLL:
    u32, i64, ptr = ctypes.c_uint32, ctypes.c_int64, ctypes.c_void_p
    for name in ("sdekit_normals", "sdekit_rademacher", "sdekit_words"):
        fn = getattr(lib, name)
        fn.argtypes = [u32, u32, ptr, i64, ptr, i64, i64, ptr, ctypes.c_int]
        fn.restype = None
    for name in ("sdekit_affine_packed_f32", "sdekit_affine_packed_f64"):
        fn = getattr(lib, name)
        fn.argtypes = [ptr, ptr]
        fn.restype = None
    lib.sdekit_affine_packed_slots.restype = ctypes.c_int
    if lib.sdekit_affine_packed_slots() != _SLOTS:
        raise AttributeError(f"packed affine layout mismatch: {lib.sdekit_affine_packed_slots()} != {_SLOTS} slots")
    lib.sdekit_box_muller.argtypes = [ptr, i64, ptr]
    lib.sdekit_box_muller.restype = None
    lib.sdekit_tree.argtypes = [u32, u32, ptr, i64, i64, ctypes.c_int, ctypes.c_double, i64, ptr, ptr, ptr, i64,
                                i64, ctypes.c_int, ptr, ptr, ctypes.c_int]
    lib.sdekit_tree.restype = ctypes.c_int
    lib.sdekit_has_openmp.argtypes = []
    lib.sdekit_has_openmp.restype = ctypes.c_int
    return lib


def _build(cc: str, target: Path) -> ctypes.CDLL:
    target.parent.mkdir(parents=True, exist_ok=True)
    errors = []
    for extra in _FLAG_SETS:
        fd, tmp = tempfile.mkstemp(prefix=target.stem + "-", suffix=target.suffix + ".tmp", dir=target.parent)
        os.close(fd)
        try:
            cmd = [cc, *_BASE_FLAGS, *extra, *map(str, SOURCES), "-o", tmp]
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
            if out.returncode != 0:
                errors.append(f"{' '.join(cmd)}: {out.stderr.strip()[-500:]}")
                continue
            lib = _declare(ctypes.CDLL(tmp))  # loads before it is published: a library that does not load is not kept
            os.replace(tmp, target)
            return lib
        except (OSError, subprocess.SubprocessError, AttributeError) as e:
            errors.append(f"{extra}: {e}")
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    raise RuntimeError("; ".join(errors))


def _load() -> ctypes.CDLL | None:
    cc = _compiler()
    source = b"".join(path.read_bytes() for path in SOURCES + HEADERS)
    if cc is None:
        raise RuntimeError("no C compiler found (set CC)")
    target = _library_path(cc, source)
    if target.exists():
        try:
            return _declare(ctypes.CDLL(str(target)))
        except (OSError, AttributeError) as e:
            _log.debug("sdekit native noise: cached %s does not load (%s); rebuilding", target, e)
    return _build(cc, target)


def library() -> ctypes.CDLL | None:
    """The loaded library, building it on the first call; ``None`` where it cannot be built (then never retried)."""
    if "lib" in _state:
        return _state["lib"]
    with _lock:
        if "lib" not in _state:
            try:
                _state["lib"] = _load()
            except Exception as e:  # noqa: BLE001 - any failure means the torch path, never an error
                _log.debug("sdekit native noise unavailable, using the torch path: %s", e)
                _state["lib"] = None
    return _state["lib"]


def _threads(total: int) -> int:
    return torch.get_num_threads() if total >= PARALLEL_MIN else 1


def _draw(fn_name: str, k0: int, k1: int, stream, sample_index: torch.Tensor, numel: int, dtype) -> torch.Tensor | None:
    lib = library()
    if lib is None:
        return None
    index = sample_index.to(torch.int64).contiguous()
    batch = index.shape[0]
    out = torch.empty((batch, numel), dtype=dtype)
    if batch * numel == 0:
        return out
    if isinstance(stream, torch.Tensor):
        streams = stream.to(device="cpu", dtype=torch.int64).contiguous()
        sptr, s0 = streams.data_ptr(), 0
    else:
        streams, sptr, s0 = None, None, int(stream)
    getattr(lib, fn_name)(k0, k1, sptr, s0, index.data_ptr(), batch, numel, out.data_ptr(), _threads(batch * numel))
    del streams  # kept alive through the call
    return out


def normals(k0: int, k1: int, stream, sample_index: torch.Tensor, numel: int) -> torch.Tensor | None:
    """Float32 ``(B, numel)`` normals of :func:`sdekit.noise.counter_normal_unchecked`, or ``None`` without the library."""
    return _draw("sdekit_normals", k0, k1, stream, sample_index, numel, torch.float32)


def rademacher(k0: int, k1: int, stream, sample_index: torch.Tensor, numel: int) -> torch.Tensor | None:
    """Float32 ``(B, numel)`` ±1 of :func:`sdekit.noise.counter_rademacher`, or ``None`` without the library."""
    return _draw("sdekit_rademacher", k0, k1, stream, sample_index, numel, torch.float32)


def words(k0: int, k1: int, stream, sample_index: torch.Tensor, groups: int) -> torch.Tensor | None:
    """Philox words ``(B, groups, 4)`` as int64 in [0, 2³²) (:func:`sdekit.noise._philox_words`, stacked)."""
    out = _draw("sdekit_words", k0, k1, stream, sample_index, 4 * groups, torch.int32)
    return None if out is None else out.to(torch.int64).reshape(-1, groups, 4) & 0xFFFFFFFF


def box_muller(words: torch.Tensor) -> torch.Tensor:
    """The native Box–Muller transform of words ``(n, 4)`` (int64 in [0, 2³²)) to float32 ``(n, 4)`` (for tests)."""
    lib = library()
    if lib is None:
        raise RuntimeError("sdekit native noise library unavailable")
    w = words.to(torch.int64)
    w = torch.where(w >= 2**31, w - 2**32, w).to(torch.int32).contiguous()
    out = torch.empty(w.shape, dtype=torch.float32)
    lib.sdekit_box_muller(w.data_ptr(), w.shape[0], out.data_ptr())
    return out


_AFFINE = {torch.float32: "sdekit_affine_packed_f32", torch.float64: "sdekit_affine_packed_f64"}
_FLOAT32_MAX = float(torch.finfo(torch.float32).max)
#: Slots of the packed argument array of ``sdekit_affine_packed_*`` (the enum in ``_native_noise.c``).
_MODE, _K0, _K1, _STREAMS, _STREAM0, _INDEX, _BATCH, _NUMEL, _X, _S, _Z = range(11)
_COEF_PTR, _COEF_STRIDE, _HAS_D, _OUT, _MEAN, _THREADS, _SLOTS = 11, 15, 19, 20, 21, 22, 23


def _affine_fn(lib: ctypes.CDLL, dtype: torch.dtype):
    """The library's packed affine update for ``dtype`` (float32 or float64), looked up once."""
    fn = _state.get(dtype)
    if fn is None:
        fn = _state[dtype] = getattr(lib, _AFFINE[dtype])
    return fn


class _Packed:
    """A packed argument array of the affine update and its coefficient values (the ctypes arrays and
    their addresses, which is what a call passes: two conversions instead of eighteen)."""

    def __init__(self):
        self.args, self.values = (ctypes.c_int64 * _SLOTS)(), (ctypes.c_double * 4)()
        self.addresses = ctypes.addressof(self.args), ctypes.addressof(self.values)


def affine(x: torch.Tensor, s: torch.Tensor, coefs, has_d: bool, *, key=None, z: torch.Tensor | None = None,
           out: torch.Tensor, mean: torch.Tensor | None = None) -> bool:
    """The one-pass affine update of :func:`sdekit.kernels.affine_update_ref` into ``out`` (and ``mean``).

    ``x``, ``s``, ``z`` (given noise), ``out`` and ``mean``: contiguous CPU tensors of one shape ``(B, *D)``
    and one dtype, float32 or float64 (the compute dtype); ``out`` may be ``x``, ``s`` or ``z``.
    ``coefs``: ``(a, b, c, d)``, each a Python float or a tensor of shape ``()`` or ``(B,)`` (any strides,
    converted to the dtype as the reference does).  ``key``: ``(k0, k1, stream, sample_index)`` (stream an
    int or an int64 ``(B,)`` tensor) draws ``z`` in place, the bits of :func:`normals`; neither ``key`` nor
    ``z``: no noise (``out`` is the mean).  Per element, in the reference's order and rounding:
    ``m = a x + b s``, ``m = m + d`` (if ``has_d``), ``new = m + c z``.

    Returns ``False`` (nothing written) without the library, or for a float coefficient that float32 cannot
    hold (torch raises there); the caller then runs the torch code.
    """
    lib = library()
    if lib is None:
        return False
    dtype = x.dtype
    batch = x.shape[0]
    keep = []
    packed = _Packed()
    args, values = packed.args, packed.values
    for j, v in enumerate(coefs):
        if isinstance(v, torch.Tensor):
            v = v.to(dtype)
            keep.append(v)
            args[_COEF_PTR + j] = v.data_ptr()
            args[_COEF_STRIDE + j] = v.stride(0) if v.dim() else 0
        else:
            if dtype == torch.float32 and abs(v) > _FLOAT32_MAX:
                return False
            values[j] = v
    numel = x.numel() // batch if batch else 0
    if key is not None:
        k0, k1, stream, index = key
        if index.dtype != torch.int64 or not index.is_contiguous():
            index = index.to(torch.int64).contiguous()
            keep.append(index)
        args[_MODE], args[_K0], args[_K1], args[_INDEX] = 1, k0, k1, index.data_ptr()
        if isinstance(stream, torch.Tensor):
            streams = stream.to(device="cpu", dtype=torch.int64).contiguous()
            keep.append(streams)
            args[_STREAMS] = streams.data_ptr()
        else:
            args[_STREAM0] = int(stream)
    elif z is not None:
        args[_MODE], args[_Z] = 2, z.data_ptr()
    if batch * numel == 0:
        return True
    args[_BATCH], args[_NUMEL], args[_X], args[_S] = batch, numel, x.data_ptr(), s.data_ptr()
    args[_HAS_D], args[_OUT], args[_THREADS] = int(has_d), out.data_ptr(), _threads(batch * numel)
    if mean is not None:
        args[_MEAN] = mean.data_ptr()
    _affine_fn(lib, dtype)(*packed.addresses)
    del keep  # alive through the call
    return True


class KeyedLoop:
    """The C entry points bound to one dtype, batch shape and noise key, for the steps of a sampling loop.

    :func:`affine` and :func:`normals` convert and check their arguments and build their ctypes arrays at
    every call; a fixed-step sampler calls them once or twice per step with the same key, so this binds the
    library functions, the key words, the index, the thread count and the packed argument arrays once
    (build it with :func:`keyed_loop`); a call writes the slots that change.  The same bits as the plain calls:

    * ``affine(x, s, a, b, c, d, stream, out)``: ``affine(x, s, (a, b, c, d), d != 0.0,
      key=(k0, k1, stream, sample_index) if c != 0.0 else None, out=out)``, Python-float coefficients;
    * ``normals(stream)``: ``normals(k0, k1, stream, sample_index, numel)`` shaped ``(B, *D)``;
    * ``langevin(x, s, z, eps, c, out)``: ``affine(x, s, (1.0, eps, c, 0.0), False, z=z, out=out)``,
      ``eps`` and ``c`` ``(B,)`` tensors of the dtype (the Langevin reference's update).

    The caller guarantees what those require: ``x``, ``s``, ``z`` and ``out`` contiguous CPU tensors of
    ``shape`` and ``dtype`` (``out`` may be ``x`` or ``s``), ``stream`` an int in [0, 2³²), the float
    coefficients finite.
    """

    def __init__(self, lib: ctypes.CDLL, dtype: torch.dtype, shape, k0: int, k1: int, sample_index: torch.Tensor):
        self._affine, self._normals = _affine_fn(lib, dtype), lib.sdekit_normals
        self._index = sample_index.to(torch.int64).contiguous()  # alive as long as the loop
        self._k0, self._k1, self._iptr = k0, k1, self._index.data_ptr()
        self._shape, self._batch, self._numel = tuple(shape), shape[0], math.prod(shape[1:])
        self._threads = _threads(self._batch * self._numel)
        self._limit = _FLOAT32_MAX if dtype == torch.float32 else math.inf
        self._keyed, self._given = _Packed(), _Packed()  # noise drawn in place (affine) / given z (langevin)
        for packed in (self._keyed, self._given):
            args = packed.args
            args[_BATCH], args[_NUMEL], args[_THREADS] = self._batch, self._numel, self._threads
        self._keyed.args[_K0], self._keyed.args[_K1], self._keyed.args[_INDEX] = k0, k1, self._iptr
        self._given.args[_MODE] = 2
        self._given.values[0], self._given.values[3] = 1.0, 0.0

    def affine(self, x: torch.Tensor, s: torch.Tensor, a: float, b: float, c: float, d: float, stream: int,
               out: torch.Tensor) -> bool:
        """Write ``a x + b s (+ d) (+ c z)`` into ``out``; ``False`` (nothing written) where :func:`affine`
        would refuse (a coefficient float32 cannot hold)."""
        limit = self._limit
        if abs(a) > limit or abs(b) > limit or abs(c) > limit or abs(d) > limit:
            return False
        packed = self._keyed
        args, values = packed.args, packed.values
        values[0], values[1], values[2], values[3] = a, b, c, d
        args[_MODE], args[_STREAM0], args[_HAS_D] = 1 if c != 0.0 else 0, stream, d != 0.0
        args[_X], args[_S], args[_OUT] = x.data_ptr(), s.data_ptr(), out.data_ptr()
        self._affine(*packed.addresses)
        return True

    def normals(self, stream: int) -> torch.Tensor:
        """Float32 ``(B, *D)`` keyed normals of ``stream``."""
        out = torch.empty(self._shape, dtype=torch.float32)
        self._normals(self._k0, self._k1, None, stream, self._iptr, self._batch, self._numel, out.data_ptr(),
                      self._threads)
        return out

    def langevin(self, x: torch.Tensor, s: torch.Tensor, z: torch.Tensor, eps: torch.Tensor, c: torch.Tensor,
                 out: torch.Tensor) -> bool:
        """Write ``x + eps s + c z`` into ``out`` (row ``b`` with ``eps[b]``, ``c[b]``); always ``True``."""
        packed = self._given
        args = packed.args
        args[_COEF_PTR + 1], args[_COEF_STRIDE + 1] = eps.data_ptr(), eps.stride(0)
        args[_COEF_PTR + 2], args[_COEF_STRIDE + 2] = c.data_ptr(), c.stride(0)
        args[_X], args[_S], args[_Z], args[_OUT] = x.data_ptr(), s.data_ptr(), z.data_ptr(), out.data_ptr()
        self._affine(*packed.addresses)
        return True


def keyed_loop(dtype: torch.dtype, shape, k0: int, k1: int, sample_index: torch.Tensor) -> KeyedLoop | None:
    """A :class:`KeyedLoop` for data of ``shape`` ``(B, *D)`` and ``dtype`` (float32 or float64) keyed by
    ``(k0, k1)`` and the ``(B,)`` CPU ``sample_index``; ``None`` without the library."""
    lib = library()
    return None if lib is None else KeyedLoop(lib, dtype, shape, k0, k1, sample_index)
