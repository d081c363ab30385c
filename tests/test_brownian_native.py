"""The Brownian tree's C evaluator (``sdekit/_native_tree.c``) against the tree's torch code.

Both sides draw the same keyed normals (the native draw), so they compute the same path and differ
only by float64 rounding: the torch code takes a bridge with zero normals at nodes where the C code
takes the node formula.  The tolerance is 1e-13 × the largest value (about 450 ulp of a value near 1).
A wrong stream, element, level or leaf would put an O(1) difference there.  The bridge
coefficients are checked against exact rational arithmetic.
"""

from __future__ import annotations

import math
from fractions import Fraction

import pytest
import torch

from sdekit.brownian import BrownianTree, native_tree
from sdekit.brownian.bridge import interior_coefficients

F64 = torch.float64

pytestmark = pytest.mark.skipif(native_tree.available(torch.arange(1)) is None,
                                reason="the native library is not built here (no C compiler)")


def _torch_code(monkeypatch):
    monkeypatch.setattr(native_tree, "available", lambda sample_index: None)


def _close(a, b, what):
    scale = max(1.0, float(b.abs().max())) if b.numel() else 1.0
    torch.testing.assert_close(a, b, rtol=0, atol=1e-13 * scale, msg=lambda m: f"{what}: {m}")


def _tree(depth, shape, dtype=F64, t0=-0.3, t1=1.0):
    index = torch.tensor([0, 5, 2**32 - 1, 7, 123456789])[: shape[0]]
    return BrownianTree(t0, t1, shape, seed=2**64 - 3, sample_index=index, depth=depth, dtype=dtype)


# per-sample shapes: one element, not a multiple of 4, 2-D, more than one C block (128 elements)
SHAPES = [(3, 1), (2, 3), (4, 5, 7), (3, 130), (2, 301)]


@pytest.mark.parametrize("depth", [0, 1, 4, 9])
@pytest.mark.parametrize("shape", SHAPES)
def test_values_and_increments_match_the_torch_code(monkeypatch, depth, shape):
    tree = _tree(depth, shape)
    g = torch.Generator().manual_seed(depth)
    span = tree.t1 - tree.t0
    nodes = [tree.t0, tree.t1, tree.t0 + span / 2, tree.t0 + 3 * span / 2**max(depth, 2)]
    times = torch.cat([tree.t0 + span * torch.rand(15, generator=g, dtype=F64), torch.tensor(nodes, dtype=F64)])
    grid = torch.linspace(tree.t0, tree.t1, 30, dtype=F64)  # not dyadic: bridges inside leaves
    rows = torch.sort(tree.t0 + span * torch.rand(7, shape[0], generator=g, dtype=F64), dim=0).values
    W, K = tree.evaluate(times)
    steps = list(tree.increments(grid, area=True))
    per_row = tree.increments_rows(rows, area=True)
    call = tree(0.1, 0.7, return_U=True)
    _torch_code(monkeypatch)
    W0, K0 = tree.evaluate(times)
    _close(W, W0, "W")
    _close(K, K0, "K")
    for (dW, dZ), (dW0, dZ0) in zip(steps, tree.increments(grid, area=True), strict=True):
        _close(dW, dW0, "dW")
        _close(dZ, dZ0, "dZ")
    for (dW, dZ), (dW0, dZ0) in zip(per_row, tree.increments_rows(rows, area=True), strict=True):
        _close(dW, dW0, "per-row dW")
        _close(dZ, dZ0, "per-row dZ")
    for a, b in zip(call, tree(0.1, 0.7, return_U=True), strict=True):
        _close(a, b, "tree(ta, tb)")


def test_float32_increments_and_levy_area_match_the_torch_code(monkeypatch):
    tree = _tree(6, (4, 3), dtype=torch.float32)
    grid = torch.linspace(tree.t0, tree.t1, 41, dtype=F64)
    steps = list(tree.increments(grid, area=True))
    areas = list(tree.increments(grid, levy_area=True))
    assert steps[0][0].dtype == torch.float32 and areas[0][1].shape == (4, 3, 3)
    _torch_code(monkeypatch)
    for (dW, dZ), (dW0, dZ0) in zip(steps, tree.increments(grid, area=True), strict=True):
        # float32 outputs rounded from float64 values that agree to rounding: at most one ulp apart
        torch.testing.assert_close(dW, dW0, rtol=1.2e-7, atol=1e-12)
        torch.testing.assert_close(dZ, dZ0, rtol=1.2e-7, atol=1e-12)
    for (dW, A), (dW0, A0) in zip(areas, tree.increments(grid, levy_area=True), strict=True):
        torch.testing.assert_close(dW, dW0, rtol=1.2e-7, atol=1e-12)
        torch.testing.assert_close(A, A0, rtol=1e-6, atol=1e-9)


def test_deepest_tree_and_unsorted_repeated_queries(monkeypatch):
    # depth 31: stream ids 2^31 + leaf use the whole 32-bit word
    tree = _tree(31, (2, 4), t0=0.0, t1=1.0)
    times = torch.tensor([0.9, 0.1, 0.9, 1.0, 0.0, 0.5, 0.1 + 2**-33, 0.3], dtype=F64)
    W, K = tree.evaluate(times)
    assert torch.equal(W[0], W[2]) and torch.equal(K[0], K[2])
    assert torch.equal(W[4], torch.zeros_like(W[4]))
    _torch_code(monkeypatch)
    W0, K0 = tree.evaluate(times)
    _close(W, W0, "W at depth 31")
    _close(K, K0, "K at depth 31")


def test_rows_keep_their_path_in_any_batch_and_under_threads():
    times = torch.linspace(0.0, 1.0, 57, dtype=F64)
    big = BrownianTree(0.0, 1.0, (300, 9), seed=11, depth=8, dtype=F64)
    W, K = big.evaluate(times)
    rows = torch.tensor([299, 3, 150])
    small = BrownianTree(0.0, 1.0, (3, 9), seed=11, depth=8, dtype=F64, sample_index=rows)
    Ws, Ks = small.evaluate(times)
    assert torch.equal(Ws, W[:, rows]) and torch.equal(Ks, K[:, rows])
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        W1, K1 = big.evaluate(times)
    finally:
        torch.set_num_threads(before)
    assert torch.equal(W1, W) and torch.equal(K1, K)


@pytest.mark.parametrize("r", ["1/3", "1/1000", "999/1000", "999999/1000000", "1/1000000"])
def test_bridge_coefficients_are_accurate_at_every_fraction(r):
    """``interior_coefficients`` against exact rationals: the Cholesky factors of the conditional covariance
    (c_BB, c_BL, c_LL of its docstring) to 1e-14 relative, also as ``r → 0`` and ``r → 1``."""
    x = Fraction(float(Fraction(r)))  # the float64 fraction the code receives, exactly
    q = 1 - x
    cBB = x * q * (1 - 3 * x * q)
    cBL = x**2 * q * (Fraction(1, 2) - Fraction(3, 2) * x + x**2)
    cLL = x**3 / 3 - x**4 / 4 - 12 * (x**2 / 4 - x**3 / 6) ** 2
    sBB = math.sqrt(cBB)
    sLB = float(cBL) / sBB
    sLL = math.sqrt(float(cLL - cBL**2 / cBB))
    got = interior_coefficients(torch.tensor([float(x)], dtype=F64))
    for name, value, want in (("sBB", got[2], sBB), ("sLB", got[3], sLB), ("sLL", got[4], sLL)):
        assert abs(float(value) - want) <= 1e-13 * abs(want), (name, float(value), want)
