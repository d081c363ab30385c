"""The CPU evaluator of :class:`~sdekit.brownian.BrownianTree`: ``sdekit/_native_tree.c`` through ctypes.

The torch code takes a batch of queries level by level, with a split, a gather and a select per level,
each a pass over the whole batch.  The C code takes one sample and a block of its elements through every
query in order.  It keeps the current root-to-leaf path and the split of each node on it, so queries in
time order split each node on their paths once.  It uses the same draws and the same float64 formulas
(:mod:`~sdekit.brownian.bridge`), so the path is the torch code's to float64 rounding.  The one
difference is that each query picks the node formula or the bridge for itself; the torch code takes the
bridge for every query of a chunk that has an interior one.

:func:`available` says where it applies: a CPU tree, the native draws on (not ``SDEKIT_NATIVE=0``,
not traced), the library built.  Elsewhere the tree runs its torch code.

Source: the construction of :mod:`sdekit.brownian.tree` (dyadic bisection carrying the increment and the
space-time Lévy area, Foster, Lyons & Oberhauser 2020, §2) and the conditional laws of
:mod:`sdekit.brownian.bridge`; time is SDE time ``t ∈ [t0, t1]``.
"""

from __future__ import annotations

import math

import torch

from ..noise import _use_native

#: ``sdekit_tree``'s modes.
VALUES, INCREMENTS_F32, INCREMENTS_F64 = 0, 1, 2


def available(sample_index: torch.Tensor):
    """The loaded library where the C evaluator applies to a tree keyed by ``sample_index``, else ``None``."""
    if _use_native(0, sample_index) is not True:
        return None
    from .. import _native

    return _native.library()


def walk(lib, tree, leaf: torch.Tensor, r: torch.Tensor, t: torch.Tensor, mode: int, area: bool):
    """Evaluate ``tree`` at ``n`` queries given by their leaf (int64), fraction in the leaf and time (float64).

    ``leaf``, ``r``, ``t``: ``(n,)`` (the same times for every row) or ``(n, B)`` (row ``b``'s own times).
    ``mode`` :data:`VALUES`: returns float64 ``(W, K)`` of shape ``(n, B, *S)``, ``W(t) − W(t0)`` and
    ``∫_{t0}^t (W − W(t0)) ds``.  :data:`INCREMENTS_F32` / :data:`INCREMENTS_F64`: float32 / float64
    ``(dW, dZ)`` of shape ``(n − 1, B, *S)`` over consecutive queries.  ``K`` / ``dZ`` is ``None`` unless
    ``area``.

    Raises:
        MemoryError: if the C code cannot allocate its work buffers.
    """
    batch, shape = tree.shape[0], tuple(tree.shape)
    numel = math.prod(shape[1:])
    n = leaf.shape[0]
    rows = leaf.dim() == 2
    leaf = leaf.to(torch.int64).contiguous()
    r = r.to(torch.float64).contiguous()
    t = t.to(torch.float64).contiguous()
    index = tree.sample_index.to(torch.int64).contiguous()
    count = n if mode == VALUES else max(n - 1, 0)
    dtype = torch.float32 if mode == INCREMENTS_F32 else torch.float64
    out_w = torch.empty((count,) + shape, dtype=dtype)
    out_k = torch.empty((count,) + shape, dtype=dtype) if area else None
    if count == 0:
        return out_w, out_k
    sq, sb = (batch, 1) if rows else (1, 0)
    threads = torch.get_num_threads()
    status = lib.sdekit_tree(tree._key[0], tree._key[1], index.data_ptr(), batch, numel, tree.depth,
                             float(tree.t1 - tree.t0), n, leaf.data_ptr(), r.data_ptr(), t.data_ptr(), sq, sb,
                             mode, out_w.data_ptr(), None if out_k is None else out_k.data_ptr(), threads)
    if status != 0:
        raise MemoryError("the Brownian tree's C evaluator could not allocate its work buffers")
    return out_w, out_k
