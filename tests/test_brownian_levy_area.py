"""The Lévy area between channels of :class:`~sdekit.brownian.BrownianTree` (for ``log_ode``).

``A_jk = ½(∫ (W^j − W^j_ta) dW^k − ∫ (W^k − W^k_ta) dW^j)``; the tree approximates it by
``H_j w_k − w_j H_k + σ_jk ξ_jk`` with ``σ_jk² = h²/20 + h(H_j² + H_k²)/5`` (module docstring of
:mod:`sdekit.brownian.tree`).  The statistics compare with "exact" areas of the same tree path:
the Chen composition of ``n`` fine steps' exact ``(w, H)`` plus their conditional means, whose
error given the fine ``(w, H)`` has the known variance ``n (h/n)²/12 = h²/(12 n)`` (subtracted).
"""

from __future__ import annotations

import math

import pytest
import torch

import sdekit
from sdekit.brownian import BrownianTree
from sdekit.testing import fit_order

F64 = torch.float64
Z = 5.0  # standard errors allowed in statistical checks (tests/stats.py)


def _mean_term(w, H):
    """``E[A | w, H] = H ⊗ w − w ⊗ H`` for ``(..., m)`` tensors."""
    return H.unsqueeze(-1) * w.unsqueeze(-2) - w.unsqueeze(-1) * H.unsqueeze(-2)


def _space_time(w, U, h):
    return U / h - 0.5 * w


def _close(samples, expected, bias=0.0, what=""):
    """``|mean(samples) − expected| ≤ Z · SE + bias``."""
    m, se = float(samples.mean()), float(samples.std()) / samples.numel() ** 0.5
    assert abs(m - expected) <= Z * se + bias, f"{what}: mean {m:.5g} ± {se:.2g}, expected {expected:.5g}"
    return m, se


# ------------------------------------------------------------------ structure


def test_shapes_antisymmetry_and_call_protocol():
    tree = BrownianTree(0.0, 1.0, (5, 3), seed=3, depth=8, dtype=F64)
    W, U, A = tree(0.1, 0.35, return_U=True, return_A=True)
    assert W.shape == U.shape == (5, 3) and A.shape == (5, 3, 3) and A.dtype == F64
    assert torch.equal(A, -A.transpose(-1, -2))
    assert torch.equal(torch.diagonal(A, dim1=-2, dim2=-1), torch.zeros(5, 3, dtype=F64))
    assert torch.equal(W, tree(0.1, 0.35)) and torch.equal(U, tree(0.1, 0.35, return_U=True)[1])
    W2, A2 = tree(0.1, 0.35, return_A=True)  # torchsde's order: (W, A) without U
    assert torch.equal(W2, W) and torch.equal(A2, A)
    # increments(levy_area=True) yields (dW, A), the same per step as the call protocol.
    steps = list(tree.increments([0.0, 0.1, 0.35, 1.0], area=True, levy_area=True))
    assert torch.equal(steps[1][0], W) and torch.equal(steps[1][1], A)
    assert torch.equal(steps[0][1], tree(0.0, 0.1, return_A=True)[1])
    # tb=None: from t0.
    assert torch.equal(tree(0.35, return_A=True)[1], tree(0.0, 0.35, return_A=True)[1])
    # float32 output, one channel (A = 0), an empty step.
    tree32 = BrownianTree(0.0, 1.0, (4, 2), seed=3, depth=5)
    assert tree32(0.0, 0.5, return_A=True)[1].dtype == torch.float32
    one = BrownianTree(0.0, 1.0, (4, 1), seed=3, depth=5, dtype=F64)
    assert torch.equal(next(one.increments([0.0, 0.3], levy_area=True))[1], torch.zeros(4, 1, 1, dtype=F64))
    assert torch.equal(tree(0.5, 0.5, return_A=True)[1], torch.zeros(5, 3, 3, dtype=F64))
    # Other per-sample shapes are refused clearly.
    bad = BrownianTree(0.0, 1.0, (4, 3, 2), seed=3, depth=5)
    with pytest.raises(ValueError, match=r"needs W of shape \(B, m\)"):
        bad(0.0, 0.5, return_A=True)
    with pytest.raises(ValueError, match=r"needs W of shape \(B, m\)"):
        next(bad.increments([0.0, 0.5], levy_area=True))


def test_determinism_across_batches_query_order_and_chunking():
    grid = [0.0, 0.125, 0.3, 0.3001, 0.5, 0.75, 1.0]
    idx = torch.tensor([7, 0, 123456, 3, 2**32 - 1])
    tree = BrownianTree(0.0, 1.0, (5, 3), seed=2**40 + 9, sample_index=idx, depth=6, dtype=F64)
    A = torch.stack([a for _, a in tree.increments(grid, levy_area=True)])
    # Another batch holding some of the same samples: the same bits.
    sub = BrownianTree(0.0, 1.0, (2, 3), seed=2**40 + 9, sample_index=idx[[3, 0]], depth=6, dtype=F64)
    assert torch.equal(torch.stack([a for _, a in sub.increments(grid, levy_area=True)]), A[:, [3, 0]])
    # One step at a time in reverse order: the same up to the rounding of the tree's ∫W ds, which
    # depends on the query pattern in the last bits (the area noise itself is keyed per step).
    for i in reversed(range(len(grid) - 1)):
        torch.testing.assert_close(sub(grid[i], grid[i + 1], return_A=True)[1], A[i][[3, 0]], rtol=0, atol=1e-14)
    # Step times given as a tensor give the same bits; nodes moved by rounding-level amounts (snapped
    # to the node) the same steps, hence the same area noise (only h's last bits differ).
    again = torch.stack([a for _, a in tree.increments(torch.tensor(grid, dtype=F64), levy_area=True)])
    assert torch.equal(again, A)
    moved = [t + (1e-13 if t in (0.125, 0.5, 0.75) else 0.0) for t in grid]
    again = torch.stack([a for _, a in tree.increments(moved, levy_area=True)])
    torch.testing.assert_close(again, A, rtol=0, atol=1e-11)
    # A different seed or another step gives other noise (beyond the conditional mean).
    other = BrownianTree(0.0, 1.0, (5, 3), seed=2**40 + 10, sample_index=idx, depth=6, dtype=F64)
    assert not torch.equal(other(0.0, 0.125, return_A=True)[1], A[0])
    # The area noise is not the tree's own normals: it is uncorrelated with the (w, H) of the step.
    big = BrownianTree(0.0, 1.0, (4000, 2), seed=5, depth=3, dtype=F64)
    w, U, A = big(0.25, 0.5, return_U=True, return_A=True)
    xi = (A - _mean_term(w, _space_time(w, U, 0.25)))[:, 0, 1]
    for v in (w[:, 0], w[:, 1], U[:, 0], U[:, 1]):
        c = float(torch.corrcoef(torch.stack([xi, v]))[0, 1])
        assert abs(c) < Z / 4000**0.5, c


# ------------------------------------------------------------------ statistics vs exact areas


def _coarse_and_fine(seed, B=8000, coarse=4, fine=64):
    """Per coarse step of ``[0, 1]``: its ``(w, H)``, the tree's ``Ã`` and the fine-grid area (float64)."""
    h = 1.0 / coarse
    depth = int(math.log2(coarse * fine))
    tree = BrownianTree(0.0, 1.0, (B, 2), seed=seed, depth=depth, dtype=F64)
    times = torch.linspace(0.0, 1.0, coarse * fine + 1, dtype=F64)
    W, K = tree.evaluate(times)
    out = []
    for c in range(coarse):
        sl = slice(c * fine, (c + 1) * fine + 1)
        Wc, Kc = W[sl] - W[sl][0], K[sl]
        dw = Wc[1:] - Wc[:-1]
        dU = Kc[1:] - Kc[:-1] - (h / fine) * W[sl][:-1]
        # Chen: the piecewise-linear area plus each fine step's conditional mean.
        chain = 0.5 * (Wc[:-1, :, 0] * dw[:, :, 1] - Wc[:-1, :, 1] * dw[:, :, 0]).sum(0)
        fine_mean = _mean_term(dw, _space_time(dw, dU, h / fine))[..., 0, 1].sum(0)
        w, U, A = tree(c * h, (c + 1) * h, return_U=True, return_A=True)
        out.append((w, _space_time(w, U, h), A[:, 0, 1], chain + fine_mean))
    w, H, A, exact = (torch.cat(x) for x in zip(*out))
    return h, fine, w, H, A, exact


def test_conditional_mean_and_variance_match_exact_areas():
    h, n, w, H, A, exact = _coarse_and_fine(seed=11)
    mean = (H[:, 0] * w[:, 1] - w[:, 0] * H[:, 1])
    R = exact - mean  # exact residual given the coarse (w, H)
    D = A - mean  # the tree's added term
    S = H[:, 0] ** 2 + H[:, 1] ** 2
    fine_var = h**2 / (12 * n)  # E Var(exact | fine (w, H)): missing from R's variance
    # E[A | w, H] = H ⊗ w − w ⊗ H: the residual is centred and uncorrelated with the mean, w and H.
    for v in (torch.ones_like(mean), mean / h, w[:, 0] * H[:, 1] / h, w[:, 0] / h**0.5, H[:, 1] / h**0.5):
        _close(R * v / h, 0.0, what="exact residual")
        _close(D * v / h, 0.0, what="tree residual")
    # The mean's own sign is right: the residual of the opposite sign has a much larger variance.
    assert float(((exact + mean) ** 2).mean()) > 2 * float((R**2).mean())
    # Var A = h²/4, E Var(A | w, H) = h²/12, and its H-dependence E[Var(A | w, H) S] = 7h³/360.
    _close(exact**2 / h**2, 1 / 4, bias=fine_var / h**2 * 1.01, what="Var A (exact)")
    _close(A**2 / h**2, 1 / 4, what="Var Ã (tree)")
    _close(R**2 / h**2, 1 / 12 - fine_var / h**2, what="E Var(A | w, H) (exact)")
    _close(D**2 / h**2, 1 / 12, what="E σ² (tree)")
    _close(R**2 * S / h**3, 7 / 360, bias=2 * fine_var / h**2 * (1 / 6), what="E[Var(A|w,H) S] (exact)")
    _close(D**2 * S / h**3, 7 / 360, what="E[σ² S] (tree)")
    # torchsde's davie (E σ² = h²/6) and foster (E σ² = 4h²/75) are ≥ 5 SE off the exact h²/12 here.
    se = float((R**2 / h**2).std()) / R.numel() ** 0.5
    assert abs(1 / 6 - float((R**2).mean()) / h**2) > Z * se and abs(4 / 75 - float((R**2).mean()) / h**2) > Z * se


# ------------------------------------------------------------------ sdeint with the default tree


class CommutativeGeneral:
    """``dy = μ y dt + Σ_j σ_j y ∘ dW^j`` (general noise, m = 2, commutative): ``y = y₀ exp(μt + σ·W_t)``."""

    noise_type, sde_type = "general", "stratonovich"

    def __init__(self, mu=0.1, sigma=(0.4, 0.3)):
        self.mu, self.sigma = mu, torch.tensor(sigma, dtype=F64)

    def f(self, t, y):
        return self.mu * y

    def g(self, t, y):
        return y.unsqueeze(-1) * self.sigma


class Heisenberg:
    """``dy = g₁ ∘ dW¹ + g₂ ∘ dW²``, ``g₁ = (1, 0, −y₂)``, ``g₂ = (0, 1, y₁)``: ``y₃(T) = 2 A₁₂(0, T)``."""

    noise_type, sde_type = "general", "stratonovich"

    def f(self, t, y):
        return torch.zeros_like(y)

    def g(self, t, y):
        one, zero = torch.ones_like(y[:, 0]), torch.zeros_like(y[:, 0])
        return torch.stack([torch.stack([one, zero], -1), torch.stack([zero, one], -1),
                            torch.stack([-y[:, 1], y[:, 0]], -1)], 1)


def test_sdeint_log_ode_runs_with_the_default_tree_and_is_keyed():
    sde = CommutativeGeneral()
    y0 = torch.full((6, 1), 0.5, dtype=F64)
    ts = torch.linspace(0.0, 0.5, 3, dtype=F64)
    a = sdekit.sdeint(sde, y0, ts, method="log_ode", dt=0.05, seed=4)
    b = sdekit.sdeint(sde, y0[:2], ts, method="log_ode", dt=0.05, seed=4, sample_index=torch.tensor([3, 1]))
    assert a.shape == (3, 6, 1) and bool(torch.isfinite(a).all())
    torch.testing.assert_close(b, a[:, [3, 1]], rtol=0, atol=0)
    sdekit.sdeint(Heisenberg(), torch.zeros(3, 3, dtype=F64), ts, method="log_ode", dt=0.05)  # no seed


def test_sdeint_log_ode_adaptive_with_the_default_tree():
    sde = CommutativeGeneral()
    y0 = torch.full((6, 1), 0.5, dtype=F64)
    ts = torch.tensor([0.0, 0.5], dtype=F64)
    y = sdekit.sdeint(sde, y0, ts, method="log_ode", dt=0.05, adaptive=True, rtol=1e-4, atol=1e-5, seed=4)[-1]
    W = BrownianTree(0.0, 0.5, (6, 2), seed=4, dtype=F64)(0.5)
    exact = y0 * torch.exp(sde.mu * 0.5 + (W * sde.sigma).sum(-1, keepdim=True))
    assert float((y - exact).abs().max()) < 1e-2


def test_strong_order_with_the_default_tree():
    """Commutative general noise: order 1.0 against the known solution on the same (seeded) tree path."""
    sde = CommutativeGeneral()
    B, T, seed, ks = 400, 1.0, 2024, range(3, 8)
    y0 = torch.full((B, 1), 0.5, dtype=F64)
    ts = torch.tensor([0.0, T], dtype=F64)
    W = BrownianTree(0.0, T, (B, 2), seed=seed, dtype=F64)(T)  # a node: the same at every depth
    exact = y0 * torch.exp(sde.mu * T + (W * sde.sigma).sum(-1, keepdim=True))
    errors = [float((sdekit.sdeint(sde, y0, ts, method="log_ode", dt=T / 2**k, seed=seed)[-1] - exact).abs().mean())
              for k in ks]
    fit = fit_order([T / 2**k for k in ks], errors)
    assert abs(fit.order - 1.0) <= Z * fit.stderr + 0.1, (fit, errors)


def test_heisenberg_area_error_has_the_predicted_variance():
    """Non-commutative noise: ``y₃/2`` chains the steps' ``Ã``; its error vs the exact area of the same
    path has ``E (y₃/2 − A)² = Σ E Var(Ã − A | w, H) = n · 2 h²/12 = T h/6`` (order 0.5)."""
    B, T, seed, fine = 4000, 1.0, 8, 256
    tree = BrownianTree(0.0, T, (B, 2), seed=seed, depth=8, dtype=F64)
    times = torch.linspace(0.0, T, fine + 1, dtype=F64)
    W, K = tree.evaluate(times)
    dw, dU = W[1:] - W[:-1], K[1:] - K[:-1] - (T / fine) * W[:-1]
    exact = (0.5 * (W[:-1, :, 0] * dw[:, :, 1] - W[:-1, :, 1] * dw[:, :, 0]).sum(0)
             + _mean_term(dw, _space_time(dw, dU, T / fine))[..., 0, 1].sum(0))
    ts = torch.tensor([0.0, T], dtype=F64)
    for n in (4, 16):
        h = T / n
        y = sdekit.sdeint(Heisenberg(), torch.zeros(B, 3, dtype=F64), ts, bm=tree, method="log_ode", dt=h)[-1]
        torch.testing.assert_close(y[:, :2], W[-1], rtol=0, atol=1e-12)
        _close((0.5 * y[:, 2] - exact) ** 2 / (T * h), 1 / 6, bias=1 / (12 * fine) / h, what=f"n={n}")
