"""The Brownian tree: exact law on nodes and in leaves, one path whatever the query, batch invariance.

Laws are checked against Brownian motion's: increments ``N(0, h)``, independent over
disjoint intervals; the space-time area ``ΔZ = ∫_s^t (W_u − W_s) du`` has ``Var = h³/3`` and
``Cov(ΔW, ΔZ) = h²/2`` (Kloeden & Platen 1992, §10.4).  Tolerances: 5 standard errors
(tests/stats.py).
"""

from __future__ import annotations

import math

import pytest
import torch

from sdekit.brownian import BrownianTree, SequentialBrownian, depth_for_step
from sdekit.brownian.bridge import interior_coefficients, interior_values, split_midpoint
from tests.stats import assert_mean_close

F64 = torch.float64
N = 20_000


def _tree(t0=0.0, t1=1.0, n=N, depth=6, seed=2024, **kw):
    return BrownianTree(t0, t1, (n, 1), seed=seed, depth=depth, dtype=F64, **kw)


def _increments(tree, times):
    W, K = tree.evaluate(times)
    t = torch.as_tensor(times, dtype=F64).reshape(-1, 1, 1)
    dW = W[1:] - W[:-1]
    dZ = K[1:] - K[:-1] - (t[1:] - t[:-1]) * W[:-1]
    return dW[..., 0], dZ[..., 0]  # (steps, N)


def _check_brownian_law(times, dW, dZ, what):
    """Variance, area moments and independence of consecutive increments (5 SE each)."""
    for i, (s, t) in enumerate(zip(times[:-1], times[1:])):
        h = t - s
        w, z = dW[i] / math.sqrt(h), dZ[i] / h**1.5
        assert_mean_close(w[:, None], [0.0], what=f"{what} mean of dW on [{s}, {t}]")
        assert_mean_close(w[:, None] ** 2, [1.0], what=f"{what} Var dW/h on [{s}, {t}]")
        assert_mean_close(z[:, None] ** 2, [1.0 / 3.0], what=f"{what} Var dZ/h³ on [{s}, {t}]")
        assert_mean_close((w * z)[:, None], [0.5], what=f"{what} Cov(dW, dZ)/h² on [{s}, {t}]")
        if i:
            prev = dW[i - 1] / math.sqrt(times[i] - times[i - 1])
            assert_mean_close((w * prev)[:, None], [0.0], what=f"{what} Cov of consecutive dW")
            assert_mean_close((z * prev)[:, None], [0.0], what=f"{what} Cov(dZ, previous dW)")


def test_node_increments_and_areas_have_the_brownian_law():
    times = [0.0, 0.125, 0.25, 0.5, 0.625, 1.0]  # nodes of levels ≤ 3
    dW, dZ = _increments(_tree(), times)
    _check_brownian_law(times, dW, dZ, "nodes")


def test_interior_points_one_per_leaf_have_the_brownian_law():
    # Depth 3: leaves of 1/8; each point below is strictly inside its own leaf.
    times = [0.0, 0.1, 0.3, 0.41, 0.77, 1.0]
    tree = _tree(depth=3)
    leaves = [math.floor(t * 8) for t in times[1:-1]]
    assert len(set(leaves)) == len(leaves)
    dW, dZ = _increments(tree, times)
    _check_brownian_law(times, dW, dZ, "interior")


def test_sums_of_increments_and_areas_compose_exactly():
    tree = _tree(n=64, depth=8)
    a, b, c = 0.1, 0.35, 0.9
    w_ab, z_ab = tree(a, b, return_U=True)
    w_bc, z_bc = tree(b, c, return_U=True)
    w_ac, z_ac = tree(a, c, return_U=True)
    torch.testing.assert_close(w_ab + w_bc, w_ac, rtol=0, atol=1e-13)
    # ∫_a^c (W − W_a) = ∫_a^b (W − W_a) + ∫_b^c (W − W_b) + (c − b)(W_b − W_a).
    torch.testing.assert_close(z_ab + z_bc + (c - b) * w_ab, z_ac, rtol=0, atol=1e-13)


def test_path_does_not_depend_on_query_order_batch_or_depth_at_nodes():
    times = torch.tensor([0.0, 0.75, 0.25, 0.3, 0.5, 1.0, 0.25], dtype=F64)
    tree = _tree(n=32, depth=6)
    W, K = tree.evaluate(times)
    perm = torch.tensor([3, 0, 6, 1, 5, 2, 4])
    W2, K2 = tree.evaluate(times[perm])
    assert torch.equal(W2, W[perm]) and torch.equal(K2, K[perm])
    # A sample keeps its path in any batch.
    rows = torch.tensor([31, 2, 17])
    sub = BrownianTree(0.0, 1.0, (3, 1), seed=2024, depth=6, dtype=F64, sample_index=rows)
    Ws, Ks = sub.evaluate(times)
    assert torch.equal(Ws, W[:, rows]) and torch.equal(Ks, K[:, rows])
    # Node values do not depend on the depth (children follow the parent's exact law).
    nodes = [0.0, 0.25, 0.5, 0.75, 1.0]
    for depth in (2, 3, 11):
        Wd, Kd = _tree(n=32, depth=depth).evaluate(nodes)
        Wr, Kr = tree.evaluate(nodes)
        torch.testing.assert_close(Wd, Wr, rtol=0, atol=1e-13)
        torch.testing.assert_close(Kd, Kr, rtol=0, atol=1e-13)
    # A different seed is a different path.
    assert not torch.isclose(_tree(n=32, seed=7).evaluate([1.0])[0], W[5:6]).any()


def test_increments_iterator_matches_evaluate_and_chunks():
    tree = _tree(n=8, depth=5, t0=0.5, t1=2.5)
    grid = [0.5 + 2.0 * j / 24 for j in range(25)]  # not dyadic: bridges in leaves of 1/16
    W, K = tree.evaluate(grid)
    steps = list(tree.increments(grid, area=True))
    assert len(steps) == 24
    dW = torch.stack([s[0] for s in steps])
    dZ = torch.stack([s[1] for s in steps])
    h = torch.tensor(grid[1:], dtype=F64) - torch.tensor(grid[:-1], dtype=F64)
    torch.testing.assert_close(dW, W[1:] - W[:-1], rtol=0, atol=1e-14)
    torch.testing.assert_close(dZ, K[1:] - K[:-1] - h.reshape(-1, 1, 1).to(F64) * W[:-1], rtol=0, atol=1e-14)
    assert all(s[1] is None for s in tree.increments(grid[:3], area=False))


def test_bridge_coefficients_match_the_midpoint_split_and_the_conditional_law():
    mB, mL, sBB, sLB, sLL = interior_coefficients(torch.tensor([0.5], dtype=F64))
    # split_midpoint on the unit interval: B_m = 1.5 H + x1/4, I_L = H/2 + x2/√192.
    torch.testing.assert_close(mB, torch.tensor([1.5], dtype=F64))
    torch.testing.assert_close(mL, torch.tensor([0.5], dtype=F64))
    torch.testing.assert_close(sBB, torch.tensor([0.25], dtype=F64))
    torch.testing.assert_close(sLB, torch.tensor([0.0], dtype=F64), atol=1e-15, rtol=0)
    torch.testing.assert_close(sLL, torch.tensor([1 / math.sqrt(192)], dtype=F64))
    g = torch.Generator().manual_seed(3)
    w, H, x1, x2 = (torch.randn(4, 50_000, generator=g, dtype=F64) * torch.tensor([[1.0], [12**-0.5], [1.0], [1.0]],
                                                                                      dtype=F64))
    wL, HL, wR, HR = split_midpoint(w, H, 1.0, x1, x2)
    dW, dU = interior_values(w, H, 1.0, torch.tensor(0.5, dtype=F64), x1, x2)
    torch.testing.assert_close(dW, wL)
    torch.testing.assert_close(dU, 0.5 * (HL + 0.5 * wL))
    # Halves: w ~ N(0, 1/2), H ~ N(0, 1/24), all four independent.
    for v, var in ((wL, 0.5), (wR, 0.5), (HL, 1 / 24), (HR, 1 / 24)):
        assert_mean_close((v**2)[:, None], [var], what="half-interval variance")
    for u, v in ((wL, wR), (wL, HL), (wL, HR), (HL, HR), (wR, HR)):
        assert_mean_close((u * v)[:, None], [0.0], what="half-interval covariance")
    # Interior point r = 0.3: Var(W_r − W_0) = r and Var(∫_0^r W) = r³/3, Cov = r²/2.
    r = 0.3
    dW, dU = interior_values(w, H, 1.0, torch.tensor(r, dtype=F64), x1, x2)
    assert_mean_close((dW**2)[:, None], [r], what="bridge variance")
    assert_mean_close((dU**2)[:, None], [r**3 / 3], what="bridge area variance")
    assert_mean_close((dW * dU)[:, None], [r**2 / 2], what="bridge covariance")


def test_torchsde_call_protocol_and_errors():
    tree = BrownianTree(0.0, 2.0, (5, 3), seed=1, depth=4)
    assert tree(0.5, 1.5).shape == (5, 3) and tree(0.5, 1.5).dtype == torch.float32
    w, u = tree(torch.tensor(0.5), torch.tensor(1.5), return_U=True)
    assert w.shape == u.shape == (5, 3)
    torch.testing.assert_close(tree(1.5), tree(0.0, 1.5))
    assert tree.levy_area_approximation == "space-time" and tree.shape == (5, 3)
    w, a = tree(0.0, 1.0, return_A=True)  # the Lévy area approximation (tests/test_brownian_levy_area.py)
    assert w.shape == (5, 3) and a.shape == (5, 3, 3)
    with pytest.raises(ValueError, match="times"):
        tree(0.0, 2.5)
    with pytest.raises(ValueError, match="ta <= tb"):
        tree(1.0, 0.5)
    for kwargs, name in ((dict(depth=32), "depth"), (dict(depth=-1), "depth"), (dict(tol=0.0), "tol"),
                         (dict(depth=3, tol=0.1), "depth or tol"), (dict(seed=-1), "seed"),
                         (dict(sample_index=torch.arange(4)), "sample_index")):
        args = dict(seed=1)
        args.update(kwargs)
        with pytest.raises(ValueError, match=name):
            BrownianTree(0.0, 2.0, (5, 3), **args)
    with pytest.raises(ValueError, match="t0 < t1"):
        BrownianTree(1.0, 1.0, (5, 3), seed=1)
    assert BrownianTree(0.0, 2.0, (5, 3), seed=1, tol=0.1).depth == depth_for_step(0.0, 2.0, 0.1) == 5


def test_sequential_source_law_and_reproducibility():
    src = SequentialBrownian((N, 1), generator=torch.Generator().manual_seed(5), dtype=F64)
    times = [0.0, 0.3, 0.45, 1.0]
    steps = list(src.increments(times, area=True))
    dW = torch.stack([s[0][:, 0] for s in steps])
    dZ = torch.stack([s[1][:, 0] for s in steps])
    _check_brownian_law(times, dW, dZ, "sequential")
    again = SequentialBrownian((N, 1), generator=torch.Generator().manual_seed(5), dtype=F64)
    assert torch.equal(next(again.increments(times, area=True))[0], steps[0][0])
