"""A stateless Brownian tree: Brownian motion keyed by (seed, sample index, time).

Each sample's path is a pure function of ``(seed, sample_index, t0, t1, depth, t)``,
so it can be queried at any times, in any order and in any batch, and the answer is
always the same path: solving at ``dt`` and at ``dt/2`` sees the same Brownian motion,
and a sample's noise does not depend on the batch it is drawn in.

Construction (dyadic bisection carrying the increment *and* the space-time Lévy area,
as in Foster, Lyons & Oberhauser 2020, §2, and torchsde's ``BrownianInterval``):

* the root ``[t0, t1]`` draws ``(w, H)`` from stream 0;
* node ``i`` of level ``ℓ`` (heap id ``2^ℓ + i``, the interval
  ``[t0 + i δ_ℓ, t0 + (i+1) δ_ℓ]``, ``δ_ℓ = (t1 − t0)/2^ℓ``) splits into its two halves by
  :func:`~sdekit.brownian.bridge.split_midpoint` with two normals drawn from stream
  ``2^ℓ + i``;
* a query strictly inside a leaf (level ``depth``) uses the Brownian bridge given that
  leaf's ``(w, H)`` (:func:`~sdekit.brownian.bridge.interior_values`) with two normals
  from stream ``2^depth + leaf``.

Normals come from :func:`sdekit.noise.counter_normal_unchecked` (Philox4x32-10 keyed by
``(seed, stream, sample index, element)``), so no state and no generator is kept.

Evaluation: on the CPU, with the native library built (:mod:`sdekit._native`), a C evaluator
(:mod:`~sdekit.brownian.native_tree`) takes each sample and block of elements through the
queries in order and splits each node on their paths once.  Elsewhere (CUDA, ``SDEKIT_NATIVE=0``,
no compiler) the torch code below takes the queries level by level.  Both compute the same path
from the same draws, to float64 rounding.

What is exact: a node's ``(w, H)`` does not depend on ``depth`` (children are drawn from
the parent's exact conditional law), so the increments and areas between *nodes* — every
multiple of ``(t1 − t0)/2^k`` for ``k ≤ depth`` — are exactly those of a Brownian motion,
whatever the depth and the query pattern.  Points strictly inside leaves are exact too
when each leaf holds at most one queried interior point (the bridge values in different
leaves are conditionally independent given the nodes); two interior points in one leaf
share that leaf's two normals, which is continuous and consistent but correlates them
beyond Brownian motion below the leaf length.

Lévy area between channels (approximate; for ``log_ode``).  For ``W`` of shape ``(B, m)``,
:meth:`BrownianTree.increments` with ``levy_area=True`` and ``tree(ta, tb, return_A=True)``
also give, per queried step ``[ta, tb]`` of length ``h``,

    A_jk = ½(∫ (W^j − W^j_ta) dW^k − ∫ (W^k − W^k_ta) dW^j)      (torchsde's convention),

approximated from the step's exact ``(w, H)`` (``H = ΔZ/h − w/2``, the space-time Lévy area
of :mod:`~sdekit.brownian.bridge`) as

    Ã_jk = H_j w_k − w_j H_k + σ_jk ξ_jk,    σ_jk² = h²/20 + h (H_j² + H_k²)/5,

``ξ`` antisymmetric with independent standard normals above the diagonal.  The first term is
``E[A_jk | w, H]`` and ``σ_jk²`` is ``Var(A_jk | w, H)`` exactly (Foster, Lyons & Oberhauser
2020, §2 and the log-ODE section; Foster 2020, DPhil thesis, Oxford, for the conditional mean
and this H-dependent correction of Davie's constant-variance approximation).  Derivation, unit
interval: with the bridge ``B = W − r w = 6r(1−r) H + Z`` (``Z`` independent of ``(w, H)``),
the ``w``-terms vanish (``Z`` has zero endpoints and zero integral), the ``H × Z`` terms are
``H_k K_j − H_j K_k`` with ``K = ∫ 6(1 − 2r) Z dr ~ N(0, 1/5)``, independent of ``H`` and
between channels, and the ``Z × Z`` area has the constant variance
``Var A − Var E[A|w,H] − 2·(1/12)/5 = 1/4 − 1/6 − 1/30 = 1/20``.  Hence ``Ã`` has the exact
conditional mean and conditional variance (only its conditional law, a Gaussian mixture vs
the true one, differs), ``E σ² = h²/12 = E Var(A | w, H)`` and ``Var Ã = h²/4 = Var A``.
Relation to torchsde's ``BrownianInterval``: its ``'davie'`` adds the constant-variance term
with variance ``h²/6`` (twice ``h²/12``: its noise ``N − Nᵀ`` has variance 2), and its
``'foster'`` the variance ``h²/50 + h (H_j² + H_k²)/5`` (expectation ``4h²/75 ≈ 0.053 h²``, below
``h²/12 ≈ 0.083 h²``: the constant part is ``h²/50`` where ``h²/20`` is exact).

Keying of the area noise: ``ξ`` for sample ``b`` and step ``[ta, tb]`` is a pure function of
``(seed, sample_index[b], ta, tb)`` — independent of the batch, the query order, the chunking
and of how many steps are asked at once.  The step is identified by its two snapped tree
positions (leaf index and fraction in the leaf, a node written as ``(node, 0)``), hashed by
BLAKE2b to 63 bits; the normals are Philox4x32-10 with the tree's key ``split_seed(seed)`` and
counter ``(element // 4, sample_index, id_lo, 2³¹ | id_hi)``.  Every other draw in sdekit
(the tree's nodes, :func:`sdekit.noise.counter_normal`, the Triton kernels) has counter word
``c3 = 0``, so these draws never coincide with any of them, for any seed; two distinct steps
share noise only on a 63-bit hash collision.  What this does *not* give: ``Ã`` is a consistent
approximation per queried interval, not a path functional — areas of adjacent steps are not
composed by Chen's relation (``Ã[a, c] ≠ Ã[a, b] + Ã[b, c] + ½(w_ab ⊗ w_bc − w_bc ⊗ w_ab)``),
exactly as for torchsde's approximations.
"""

from __future__ import annotations

import hashlib
import math
import numbers
import struct

import torch

from .._checks import check_device, check_positive, check_positive_int, check_real
from ..noise import MASK32, box_muller, check_sample_index, counter_normal_unchecked, philox4x32, split_seed
from . import native_tree
from .bridge import interior_values, root_values, split_midpoint

#: Largest depth: stream ids ``2^depth + leaf`` must fit in 32 bits.
MAX_DEPTH = 31
#: Depth used when neither ``depth`` nor ``tol`` is given (leaves of (t1 − t0)/65536).
DEFAULT_DEPTH = 16
#: Budget of float64 values per tree level when evaluating many times at once.
_CHUNK_VALUES = 2**21
#: Budget of values per output when the C evaluator takes a chunk of steps (it walks each chunk from the root).
_NATIVE_CHUNK_VALUES = 2**23
#: The error for ``levy_area=True`` of sources without it (``source``: the class name).
LEVY_AREA_UNAVAILABLE = (
    "{source} does not provide the Lévy area between noise channels, and log_ode needs the Lévy area A "
    "between noise channels: pass bm=torchsde.BrownianInterval(..., levy_area_approximation='davie' or 'foster') "
    "or use sdekit's BrownianTree (the default bm)"
)
#: Counter word ``c3`` tag of the Lévy-area draws (all other draws in sdekit have ``c3 = 0``).
_AREA_TAG = 1 << 31
#: Positions within this many leaf lengths of a node are that node (absorbs rounding of grids).
_SNAP = 1e-9


def depth_for_step(t0: float, t1: float, step: float) -> int:
    """Smallest depth whose leaves ``(t1 − t0)/2^depth`` are no longer than ``step``."""
    ratio = (t1 - t0) / step
    depth = max(0, math.ceil(math.log2(ratio) - 1e-12)) if ratio > 1 else 0
    if depth > MAX_DEPTH:
        raise ValueError(
            f"step {step} is too small for a Brownian tree over [{t0}, {t1}] (needs depth {depth} > {MAX_DEPTH})"
        )
    return depth


class BrownianTree:
    """Brownian motion on ``[t0, t1]`` for a batch of samples, queryable at any time.

    The path of sample ``b`` depends only on ``(seed, sample_index[b], t0, t1, depth)``;
    see the module docstring for the construction and what is exact.  Also usable as a
    torchsde ``bm``: ``tree(ta, tb)`` returns ``W(tb) − W(ta)``,
    ``tree(ta, tb, return_U=True)`` also ``∫_ta^tb (W_s − W_ta) ds`` (exact), and
    ``return_A=True`` also the Lévy area between channels, for ``W`` of shape ``(B, m)``
    (an approximation with the exact conditional mean and variance given the step's
    increment and space-time area, keyed per step; see the module docstring).
    ``levy_area_approximation`` stays ``"space-time"``: what is exact.

    Args:
        t0, t1: the time interval (SDE time), ``t0 < t1``, finite.
        size: ``(B, *S)``: batch size and the per-sample shape of ``W``.
        seed: integer in [0, 2⁶⁴), the Philox key.
        sample_index: int64 tensor ``(B,)`` of per-sample keys in [0, 2³²)
            (default ``arange(B)``); a sample keeps its path in any batch.
        depth: number of bisection levels (0 … 31); leaves have length
            ``(t1 − t0)/2^depth``.  Default: from ``tol``, else 16.
        tol: alternatively, the longest allowed leaf (> 0).
        dtype: dtype of returned tensors (the tree itself is evaluated in float64).
        device: device of returned tensors (default: ``sample_index``'s, else CPU).
    Raises:
        ValueError: on a bad interval, size, seed, sample_index, depth, tol or an
            unavailable ``device``.
        TypeError: if ``dtype`` is not a floating dtype (an integer dtype would
            truncate every increment to 0), or ``t0``/``t1``/``tol`` is not a real number.
    """

    levy_area_approximation = "space-time"  # torchsde's name for "provides ∫W ds"

    def __init__(self, t0, t1, size, *, seed: int, sample_index=None, depth=None, tol=None,
                 dtype=torch.float32, device=None):
        t0, t1 = check_real("t0", t0), check_real("t1", t1)
        if not t1 > t0:
            raise ValueError(f"t0 < t1 must be finite, got t0={t0}, t1={t1}")
        try:
            if isinstance(size, (str, bytes)):
                raise TypeError
            size = tuple(check_positive_int("size", s) for s in size)
        except (TypeError, ValueError):
            raise ValueError(f"size must be (B, *S) with positive integer entries, got {size!r}") from None
        if len(size) < 1:
            raise ValueError(f"size must be (B, *S) with positive entries, got {size}")
        if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
            raise TypeError(f"dtype must be a floating torch.dtype (Brownian increments are real), got {dtype!r}")
        if device is not None:
            device = check_device("device", device)
        self._key = split_seed(seed)
        self.seed = seed
        if sample_index is None:
            sample_index = torch.arange(size[0], device=device)
        self.sample_index = check_sample_index(sample_index, size[0])
        self.device = torch.device(device) if device is not None else self.sample_index.device
        self.sample_index = self.sample_index.to(self.device)
        if depth is not None and tol is not None:
            raise ValueError("give depth or tol, not both")
        if tol is not None:
            depth = depth_for_step(t0, t1, check_positive("tol", tol))
        elif depth is None:
            depth = DEFAULT_DEPTH
        if (isinstance(depth, bool) or not isinstance(depth, numbers.Real)
                or not math.isfinite(float(depth)) or float(depth) != round(float(depth))
                or not 0 <= float(depth) <= MAX_DEPTH):
            raise ValueError(f"depth must be an integer in [0, {MAX_DEPTH}], got {depth!r}")
        self.t0, self.t1, self.depth = t0, t1, int(float(depth))
        self.shape = size
        self.dtype = dtype

    def __repr__(self) -> str:
        return (f"BrownianTree(t0={self.t0}, t1={self.t1}, size={self.shape}, seed={self.seed}, "
                f"depth={self.depth}, dtype={self.dtype}, device={self.device})")

    # ------------------------------------------------------------------ internals

    def _normals(self, streams: torch.Tensor, count: int) -> torch.Tensor:
        """``count`` normals per (stream, sample) and element: float64 ``(N, count, B, *S)``."""
        B, S = self.shape[0], self.shape[1:]
        n = streams.shape[0]
        rows_stream = streams.to(self.device).repeat_interleave(B)
        rows_sample = self.sample_index.repeat(n)
        z = counter_normal_unchecked(*self._key, rows_stream, rows_sample, (count,) + S)
        return z.to(torch.float64).reshape((n, B, count) + S).transpose(1, 2)

    def _positions(self, times: torch.Tensor):
        """Leaf index (int64) and fraction ``r ∈ [0, 1]`` of each time, snapped to nodes."""
        x = (times - self.t0) / (self.t1 - self.t0) * float(2**self.depth)
        near = torch.round(x)
        x = torch.where((x - near).abs() <= _SNAP, near, x)
        leaf = torch.floor(x).clamp(0, 2**self.depth - 1)
        return leaf.to(torch.int64), (x - leaf).clamp(0.0, 1.0)

    def _evaluate_chunk(self, times: torch.Tensor):
        leaf, r = self._positions(times)
        wanted = torch.unique(leaf)  # sorted
        # Root: W(t0) = 0, K(t0) = 0 and the root's (w, H).
        z = self._normals(torch.zeros(1, dtype=torch.int64), 2)
        length = self.t1 - self.t0
        w, H = root_values(length, z[:, 0], z[:, 1])
        W_a = torch.zeros_like(w)
        K_a = torch.zeros_like(w)
        nodes = torch.zeros(1, dtype=torch.int64)
        for level in range(self.depth):
            x = self._normals(2**level + nodes, 2)
            wL, HL, wR, HR = split_midpoint(w, H, length, x[:, 0], x[:, 1])
            half = 0.5 * length
            uL = half * (HL + 0.5 * wL)  # ∫ over the left half of (W − W_a)
            W_m = W_a + wL
            K_m = K_a + uL
            children = torch.unique(wanted >> (self.depth - level - 1))
            parent = torch.searchsorted(nodes, children >> 1).to(self.device)
            right = (children & 1).to(torch.bool).to(self.device)
            shape = (-1,) + (1,) * (w.dim() - 1)
            right = right.reshape(shape)
            w = torch.where(right, wR[parent], wL[parent])
            H = torch.where(right, HR[parent], HL[parent])
            K_a = torch.where(right, K_m[parent] + half * W_a[parent], K_a[parent])
            W_a = torch.where(right, W_m[parent], W_a[parent])
            nodes, length = children, half
        # Per query: the leaf's values, then the bridge for interior points.  With one time per
        # row (times (n, B)), query (i, b) reads row b of its leaf's values.
        idx = torch.searchsorted(nodes, leaf).to(self.device)
        if times.dim() == 2:
            rows = torch.arange(self.shape[0], device=self.device).expand(idx.shape)

            def take(v, i):
                return v[i, rows]
        else:
            def take(v, i):
                return v[i]
        shape = tuple(times.shape) + (1,) * (w.dim() - times.dim())
        rq = r.to(self.device).reshape(shape)
        wq, Hq, Wq, Kq = take(w, idx), take(H, idx), take(W_a, idx), take(K_a, idx)
        interior = (r > 0) & (r < 1)
        if not bool(interior.any()):
            # Every query is a node (r = 0) or t1 (r = 1): no bridge needed.
            return Wq + rq * wq, Kq + (rq * length) * (Wq + Hq + 0.5 * wq)
        inner = torch.unique(leaf[interior])
        xb = self._normals(2**self.depth + inner, 2)
        sel = torch.searchsorted(inner, leaf).clamp(max=inner.numel() - 1).to(self.device)
        keep = interior.to(self.device).reshape(shape)
        x1 = torch.where(keep, take(xb[:, 0], sel), 0.0)
        x2 = torch.where(keep, take(xb[:, 1], sel), 0.0)
        dW, dU = interior_values(wq, Hq, length, rq, x1, x2)
        return Wq + dW, Kq + (rq * length) * Wq + dU

    def _check_levy_shape(self) -> int:
        if len(self.shape) != 2:
            raise ValueError(f"the Lévy area between noise channels needs W of shape (B, m), got size {self.shape} "
                             f"(per-sample shape {self.shape[1:]})")
        return self.shape[1]

    def _step_ids(self, times: torch.Tensor) -> list[int]:
        """63-bit ids of the steps ``[times[i], times[i+1]]`` from their snapped tree positions."""
        leaf, r = self._positions(times)
        at_end = r >= 1.0  # t1 (or the end of a leaf): the next node
        leaf = torch.where(at_end, leaf + 1, leaf).tolist()
        r = torch.where(at_end, torch.zeros_like(r), r).tolist()
        ids = []
        for i in range(len(leaf) - 1):
            digest = hashlib.blake2b(struct.pack("<qdqd", leaf[i], r[i], leaf[i + 1], r[i + 1]),
                                     digest_size=8, person=b"sdekit-levyarea").digest()
            ids.append(int.from_bytes(digest, "little") >> 1)
        return ids

    def _area_normals(self, ids: list[int], count: int) -> torch.Tensor:
        """``count`` float64 normals per (step id, sample): ``(N, B, count)``; counter ``(g, sample, lo, 2³¹|hi)``."""
        groups = -(-count // 4)
        words = torch.tensor(ids, dtype=torch.int64, device=self.device)
        c0 = torch.arange(groups, dtype=torch.int64, device=self.device).reshape(1, 1, -1)
        c1 = self.sample_index.reshape(1, -1, 1)
        c2 = (words & MASK32).reshape(-1, 1, 1)
        c3 = ((words >> 32) | _AREA_TAG).reshape(-1, 1, 1)
        i0, i1, i2, i3 = philox4x32(c0, c1, c2, c3, *self._key)
        shape = (len(ids), self.shape[0], groups)
        z = box_muller(*(torch.broadcast_to(i, shape) for i in (i0, i1, i2, i3)))  # as sdekit.noise's draws
        return z.reshape(shape[:2] + (groups * 4,))[..., :count].to(torch.float64)

    def _levy_area(self, times: torch.Tensor, dW: torch.Tensor, dZ: torch.Tensor) -> torch.Tensor:
        """Approximate Lévy areas ``(N, B, m, m)`` (float64) of the steps of ``times`` (see the module docstring).

        ``dW``, ``dZ``: the steps' exact float64 ``ΔW`` and ``∫ (W − W_ta) ds``, ``(N, B, m)``.
        """
        n, _, m = dW.shape
        h = (times[1:] - times[:-1]).to(self.device).reshape(-1, 1, 1)
        H = torch.where(h > 0, dZ / torch.where(h > 0, h, torch.ones_like(h)), torch.zeros_like(dZ)) - 0.5 * dW
        A = H.unsqueeze(-1) * dW.unsqueeze(-2) - dW.unsqueeze(-1) * H.unsqueeze(-2)
        if m < 2 or n == 0:
            return A
        j, k = torch.triu_indices(m, m, offset=1, device=self.device)
        H2 = H * H
        var = h * h / 20.0 + h * (H2[..., j] + H2[..., k]) / 5.0  # (N, B, P)
        extra = var.sqrt() * self._area_normals(self._step_ids(times), j.numel())
        noise = torch.zeros_like(A)
        noise[..., j, k] = extra
        noise[..., k, j] = -extra
        return A + noise

    # ------------------------------------------------------------------ public queries

    def _times(self, times) -> torch.Tensor:
        t = torch.as_tensor(times, dtype=torch.float64).reshape(-1).cpu()
        if t.numel() and not bool(((t >= self.t0 - 1e-12 * abs(self.t1 - self.t0)) &
                                   (t <= self.t1 + 1e-12 * abs(self.t1 - self.t0))).all()):
            raise ValueError(f"times must lie in [t0, t1] = [{self.t0}, {self.t1}], got {t.tolist()}")
        return t.clamp(self.t0, self.t1)

    def evaluate(self, times) -> tuple[torch.Tensor, torch.Tensor]:
        """Path values at ``times``: ``W(t) − W(t0)`` and ``∫_{t0}^t (W_s − W_{t0}) ds``.

        Args:
            times: 1-D sequence or tensor of times in ``[t0, t1]`` (any order, repeats allowed).
        Returns:
            two float64 tensors ``(len(times), B, *S)`` on the tree's device.
        Raises:
            ValueError: if a time lies outside ``[t0, t1]``.
        """
        t = self._times(times)
        lib = native_tree.available(self.sample_index)
        if lib is not None:
            leaf, r = self._positions(t)
            return native_tree.walk(lib, self, leaf, r, t, native_tree.VALUES, area=True)
        per_point = max(1, math.prod(self.shape))
        chunk = max(1, _CHUNK_VALUES // per_point)
        W, K = [], []
        for i in range(0, t.numel(), chunk):
            w, k = self._evaluate_chunk(t[i:i + chunk])
            W.append(w)
            K.append(k)
        if not W:
            empty = torch.zeros((0,) + self.shape, dtype=torch.float64, device=self.device)
            return empty, empty
        return torch.cat(W), torch.cat(K)

    def increments(self, times, area: bool = False, levy_area: bool = False):
        """Yield ``(ΔW, ΔZ)`` over consecutive steps ``[times[i], times[i+1]]``.

        ``ΔW = W(t_{i+1}) − W(t_i)`` and ``ΔZ = ∫_{t_i}^{t_{i+1}} (W_s − W_{t_i}) ds`` (``None``
        unless ``area``), each ``(B, *S)`` in the tree's dtype.  With ``levy_area`` the second
        element is instead the approximate Lévy area ``A`` between channels, ``(B, m, m)``
        (``area`` is then ignored; see the module docstring: exact conditional mean and
        variance given the step's ``(ΔW, ΔZ)``, keyed per step).  The path is evaluated
        in chunks of steps, one batch of counter-based draws per tree level.

        Raises:
            ValueError: with ``levy_area=True`` if ``W`` is not of shape ``(B, m)``.
        """
        m = self._check_levy_shape() if levy_area else 0
        t = self._times(times)
        lib = native_tree.available(self.sample_index)
        if lib is not None:
            yield from self._native_increments(lib, t, area, levy_area, m)
            return
        per_point = max(1, math.prod(self.shape) + m * m)
        chunk = max(1, _CHUNK_VALUES // per_point)
        for i in range(0, t.numel() - 1, chunk):
            tc = t[i:i + chunk + 1]
            W, K = self._evaluate_chunk(tc)
            dW64 = W[1:] - W[:-1]
            dW = dW64.to(self.dtype)
            if area or levy_area:
                h = (tc[1:] - tc[:-1]).to(self.device).reshape((-1,) + (1,) * (W.dim() - 1))
                dZ64 = K[1:] - K[:-1] - h * W[:-1]
                dZ = (self._levy_area(tc, dW64, dZ64) if levy_area else dZ64).to(self.dtype)
            for j in range(dW.shape[0]):
                yield dW[j], (dZ[j] if area or levy_area else None)

    def _increments_mode(self, exact: bool) -> int:
        """The C evaluator's output: float32 where that is the tree's dtype (and ``exact`` float64 values
        are not needed), else float64 (then cast)."""
        if self.dtype == torch.float32 and not exact:
            return native_tree.INCREMENTS_F32
        return native_tree.INCREMENTS_F64

    def _native_increments(self, lib, t: torch.Tensor, area: bool, levy_area: bool, m: int):
        """:meth:`increments` by the C evaluator, in chunks of steps of at most ``_NATIVE_CHUNK_VALUES``."""
        per_point = max(1, math.prod(self.shape) + m * m)
        chunk = max(1, _NATIVE_CHUNK_VALUES // per_point)
        mode = self._increments_mode(levy_area)
        for i in range(0, t.numel() - 1, chunk):
            tc = t[i:i + chunk + 1]
            leaf, r = self._positions(tc)
            dW, dZ = native_tree.walk(lib, self, leaf, r, tc, mode, area=area or levy_area)
            if levy_area:
                dZ = self._levy_area(tc, dW, dZ)
            dW = dW.to(self.dtype)
            dZ = dZ.to(self.dtype) if dZ is not None else None
            for j in range(dW.shape[0]):
                yield dW[j], (dZ[j] if dZ is not None else None)

    def increments_rows(self, times: torch.Tensor, area: bool = False) -> list:
        """Per-row steps: ``(ΔW, ΔZ)`` over ``[times[i, b], times[i+1, b]]`` for each row ``b``.

        ``times``: float ``(n, B)``, each column non-decreasing within ``[t0, t1]`` (per-sample
        adaptive steps, :func:`~sdekit.solvers.sde.adaptive.solve_adaptive_rows`).  Row ``b``'s
        values are those :meth:`increments` gives a batch of that row alone at its times: the
        path does not depend on the other rows' times.  Returns ``n − 1`` pairs of
        ``(B, *S)`` tensors in the tree's dtype (``ΔZ`` ``None`` unless ``area``).

        Raises:
            ValueError: if ``times`` is not ``(n, B)`` or leaves ``[t0, t1]``.
        """
        t = times.detach().to("cpu", torch.float64)
        if t.dim() != 2 or t.shape[1] != self.shape[0]:
            raise ValueError(f"times must have shape (n, {self.shape[0]}), got {tuple(t.shape)}")
        span = 1e-12 * abs(self.t1 - self.t0)
        if not bool(((t >= self.t0 - span) & (t <= self.t1 + span)).all()):
            raise ValueError(f"times must lie in [t0, t1] = [{self.t0}, {self.t1}]")
        t = t.clamp(self.t0, self.t1)
        lib = native_tree.available(self.sample_index)
        if lib is not None:
            leaf, r = self._positions(t)
            dW, dZ = native_tree.walk(lib, self, leaf, r, t, self._increments_mode(False), area=area)
            dW = dW.to(self.dtype)
            dZ = dZ.to(self.dtype) if dZ is not None else None
            return [(dW[i], dZ[i] if dZ is not None else None) for i in range(dW.shape[0])]
        W, K = self._evaluate_chunk(t)
        dW = (W[1:] - W[:-1]).to(self.dtype)
        out = []
        if area:
            h = (t[1:] - t[:-1]).to(self.device).reshape(tuple(t[1:].shape) + (1,) * (W.dim() - 2))
            dZ = (K[1:] - K[:-1] - h * W[:-1]).to(self.dtype)
        for i in range(dW.shape[0]):
            out.append((dW[i], dZ[i] if area else None))
        return out

    def __call__(self, ta, tb=None, return_U: bool = False, return_A: bool = False):
        """torchsde's ``bm`` protocol: ``W(tb) − W(ta)``, ``U = ∫_ta^tb (W_s − W_ta) ds``, ``A``.

        Returns ``W``, ``(W, U)``, ``(W, A)`` or ``(W, U, A)`` for ``return_U`` / ``return_A``
        (torchsde's ``BrownianInterval`` order); ``A`` ``(B, m, m)`` is the approximate Lévy
        area between channels of the module docstring (``W`` must be ``(B, m)``).  With
        ``tb=None`` returns ``W(ta) − W(t0)`` (and the areas over ``[t0, ta]``).

        Raises:
            ValueError: if ``ta > tb``, a time is outside ``[t0, t1]``, or ``return_A`` with
                ``W`` not of shape ``(B, m)``.
        """
        if return_A:
            self._check_levy_shape()
        if tb is None:
            ta, tb = self.t0, ta
        ta, tb = float(ta), float(tb)
        if tb < ta:
            raise ValueError(f"need ta <= tb, got ta={ta}, tb={tb}")
        t = self._times([ta, tb])
        W, K = self.evaluate(t)
        dW = W[1] - W[0]
        U = K[1] - K[0] - (tb - ta) * W[0]
        out = [dW.to(self.dtype)]
        if return_U:
            out.append(U.to(self.dtype))
        if return_A:
            out.append(self._levy_area(t, dW[None], U[None])[0].to(self.dtype))
        return out[0] if len(out) == 1 else tuple(out)
