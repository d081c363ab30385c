"""``sdeint(..., adaptive=True)``: step doubling with torchsde's controller.

Checked: torchsde's numbers bitwise (Euler on the same BrownianInterval), outputs that are
solution values at every ``ts[k]`` (not interpolations), convergence as the tolerance
tightens on GBM's exact solution, ``dt_min`` and its warning, logqp and extra state,
non-finite states, and the errors for sources that cannot be queried at any time.
"""

from __future__ import annotations

import math
import warnings

import pytest
import torch

import sdekit
from sdekit.brownian import BrownianTree
from sdekit.solvers.sde.adaptive import Controller, error_estimate, next_step

try:
    import torchsde
except ImportError:
    torchsde = None

F64 = torch.float64


class Neural(torch.nn.Module):
    """A small torchsde-style SDE with state-dependent drift and diffusion."""

    def __init__(self, noise_type="diagonal", sde_type="ito", d=3, m=2):
        super().__init__()
        self.noise_type, self.sde_type, self.m = noise_type, sde_type, m
        gen = torch.Generator().manual_seed(0)
        self.A = torch.nn.Parameter(0.4 * torch.randn(d, d, generator=gen, dtype=F64))
        self.C = torch.nn.Parameter(0.3 * torch.randn(d, m, generator=gen, dtype=F64))

    def f(self, t, y):
        return torch.tanh(y @ self.A) - 0.5 * y

    def g(self, t, y):
        if self.noise_type == "diagonal":
            return 0.3 * torch.sin(y) + 0.2
        if self.noise_type == "additive":
            return self.C.expand(y.shape[0], -1, -1)
        return torch.tanh(y).unsqueeze(-1) * self.C + 0.1


def _interval(size, t1=1.0, levy="space-time", entropy=11):
    return torchsde.BrownianInterval(0.0, t1, size, dtype=F64, levy_area_approximation=levy, entropy=entropy)


@pytest.mark.skipif(torchsde is None, reason="torchsde is not installed")
@pytest.mark.parametrize("noise_type", ["diagonal", "additive", "general"])
def test_euler_is_torchsdes_bitwise_on_the_same_brownian_interval(noise_type):
    sde = Neural(noise_type)
    y0 = torch.linspace(-0.5, 0.7, 8 * 3, dtype=F64).reshape(8, 3)
    m = 3 if noise_type == "diagonal" else 2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # torchsde's adaptive-Euler caveat, which both give
        theirs = torchsde.sdeint(sde, y0, [0.0, 1.0], _interval((8, m)), method="euler", dt=0.1,
                                 adaptive=True, rtol=1e-3, atol=1e-4)
        ours = sdekit.sdeint(sde, y0, [0.0, 1.0], _interval((8, m)), method="euler", dt=0.1,
                             adaptive=True, rtol=1e-3, atol=1e-4)
    assert torch.equal(ours, theirs)


def _gbm_error(method, tol, seed=3, batch=256):
    """Mean |y(T) − exact| for dy = μ y dt + σ y dW (Itô), on one keyed Brownian tree."""
    mu, sigma = 0.5, 0.8

    class GBM:
        noise_type, sde_type = "diagonal", "ito"

        def f(self, t, y):
            return mu * y

        def g(self, t, y):
            return sigma * y

    bm = BrownianTree(0.0, 1.0, (batch, 1), seed=seed, depth=20, dtype=F64)
    y0 = torch.ones(batch, 1, dtype=F64)
    ys = sdekit.sdeint(GBM(), y0, [0.0, 1.0], bm, method=method, dt=0.25, adaptive=True, rtol=tol, atol=tol,
                       dt_min=1e-6)
    exact = torch.exp((mu - 0.5 * sigma**2) + sigma * bm(0.0, 1.0))
    return float((ys[-1] - exact).abs().mean())


@pytest.mark.parametrize("method", ["milstein", "srk"])
def test_the_error_falls_as_the_tolerance_tightens(method):
    # Each 10× tighter tolerance must cut the pathwise error at least 2.5-fold (measured: 4.3–5.7×
    # for both methods; fixed seed, one Brownian tree for all solves).
    errors = [_gbm_error(method, tol) for tol in (1e-2, 1e-3, 1e-4)]
    assert errors[1] < errors[0] / 2.5 and errors[2] < errors[1] / 2.5, errors


def test_outputs_are_solution_values_at_every_ts_not_interpolations():
    sde = Neural("diagonal", "stratonovich")
    y0 = torch.full((4, 3), 0.3, dtype=F64)
    tree = BrownianTree(0.0, 1.0, (4, 3), seed=9, depth=18, dtype=F64)
    whole = sdekit.sdeint(sde, y0, [0.0, 0.3, 0.65, 1.0], tree, method="midpoint", dt=0.2, adaptive=True)
    # Steps before ts[k] do not depend on the later output times, so a solve that stops there agrees.
    for k, t in ((1, 0.3), (2, 0.65)):
        part = sdekit.sdeint(sde, y0, [0.0, 0.3, 0.65][: k + 1], tree, method="midpoint", dt=0.2, adaptive=True)
        assert torch.equal(part[-1], whole[k]), t
    # The same seed gives the same numbers, through the keyed default tree too.
    a = sdekit.sdeint(sde, y0, [0.0, 1.0], method="midpoint", adaptive=True, seed=4)
    b = sdekit.sdeint(sde, y0, [0.0, 1.0], method="midpoint", adaptive=True, seed=4)
    assert torch.equal(a, b)


def test_steps_grow_and_shrink_with_the_difficulty():
    calls = []

    class Counted(Neural):
        def f(self, t, y):
            calls.append(float(t))
            return super().f(t, y)

    sde = Counted("diagonal", "stratonovich")
    y0 = torch.full((4, 3), 0.3, dtype=F64)
    counts = []
    for tol in (1e-2, 1e-3, 1e-4):
        calls.clear()
        sdekit.sdeint(sde, y0, [0.0, 1.0], method="midpoint", dt=0.5, adaptive=True, rtol=tol, atol=tol, seed=1)
        counts.append(len(calls))
    assert counts[0] < counts[1] < counts[2], counts


def test_dt_min_is_honoured_with_torchsdes_warning():
    sde = Neural("diagonal", "stratonovich")
    y0 = torch.full((4, 3), 0.3, dtype=F64)
    times = []

    class Timed(Neural):
        def f(self, t, y):
            times.append(float(t))
            return super().f(t, y)

    with pytest.warns(UserWarning, match="Hitting minimum allowed step size"):
        ys = sdekit.sdeint(Timed("diagonal", "stratonovich"), y0, [0.0, 1.0], method="heun", dt=0.5,
                           adaptive=True, rtol=1e-12, atol=1e-12, dt_min=0.05, seed=2)
    assert torch.isfinite(ys).all()
    # Heun evaluates f at both ends of each step: no half step is shorter than dt_min / 2, except the
    # last one, shortened to land on ts[-1].
    distinct = sorted({round(t, 12) for t in times})
    gaps = [b - a for a, b in zip(distinct[:-1], distinct[1:])]
    assert min(gaps[:-1]) >= 0.025 - 1e-12 and len(gaps) >= 40
    del sde


def test_logqp_and_extra_state_with_adaptive_steps():
    class Prior(Neural):
        def h(self, t, y):
            return -y

    sde = Prior("diagonal", "stratonovich")
    y0 = torch.full((4, 3), 0.3, dtype=F64)
    ys, log_ratio, state = sdekit.sdeint(sde, y0, [0.0, 0.5, 1.0], method="reversible_heun", adaptive=True,
                                         logqp=True, extra=True, seed=5)
    assert ys.shape == (3, 4, 3) and log_ratio.shape == (2, 4)
    assert bool((log_ratio >= 0).all())
    assert len(state) == 3 and state[2].shape == (4, 4)  # (f, G, z) of the augmented state
    plain = sdekit.sdeint(sde, y0, [0.0, 0.5, 1.0], method="reversible_heun", adaptive=True, seed=5)
    # The penalty coordinate takes part in the error estimate (as torchsde), so the steps may differ:
    # both are solutions to the tolerance, not the same numbers.
    assert float((plain - ys).detach().abs().max()) < 0.05


def test_non_finite_states_raise_at_dt_min():
    class Blows:
        noise_type, sde_type = "diagonal", "ito"

        def f(self, t, y):
            return torch.where(t > 0.5, torch.full_like(y, math.nan), -y)

        def g(self, t, y):
            return 0.1 * torch.ones_like(y)

    with pytest.raises(FloatingPointError, match="non-finite"), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        sdekit.sdeint(Blows(), torch.ones(2, 1, dtype=F64), [0.0, 1.0], method="milstein", adaptive=True,
                      dt_min=1e-3, seed=0)


def test_controller_matches_torchsdes_rule():
    # First attempt rejected: its ratio is remembered; the step shrinks by ratio^(1/1.5) within [0.2, 1.4].
    h, ctrl = next_step(4.0, 0.1, Controller())
    assert ctrl.prev_ratio == pytest.approx(0.9 / 4.0)
    assert h == pytest.approx(0.1 * (0.9 / 4.0) ** (1 / 1.5))
    # Accepted: PI factor, never below 1, at most 1.4.
    h2, ctrl2 = next_step(0.5, h, ctrl)
    factor = (0.9 / 0.5) ** (1 / 4.5) * ((0.9 / 0.5) / (0.9 / 4.0)) ** 0.13
    assert h2 == pytest.approx(h * min(1.4, factor))
    assert next_step(1e-9, 1.0, ctrl2)[0] == pytest.approx(1.4)
    assert next_step(math.inf, 1.0, ctrl2)[0] == pytest.approx(0.2)
    y = torch.tensor([[1.0, 2.0]], dtype=F64)
    assert float(error_estimate(y, y + 1e-3, 0.0, 1e-3)) == pytest.approx(1.0)


class RowGBM:
    """sdekit-style GBM with a volatility per row: dx = μ x dt + σ_b x dW (Itô)."""

    noise_type = "diagonal"

    def __init__(self, sigma, sde_type="ito", mu=0.5):
        self.sigma, self.sde_type, self.mu = sigma, sde_type, mu

    def drift(self, x, t):
        assert t.shape == (x.shape[0],)
        return self.mu * x

    def diffusion(self, x, t):
        return self.sigma[:, None] * x


SIGMAS = torch.tensor([0.1, 0.1, 0.2, 2.0], dtype=F64)


@pytest.mark.parametrize("method, sde_type", [("euler", "ito"), ("milstein", "ito"), ("srk", "ito"),
                                              ("heun", "stratonovich"), ("reversible_heun", "stratonovich")])
def test_per_sample_steps_make_each_row_independent_of_the_batch(method, sde_type):
    y0 = torch.ones(4, 3, dtype=F64)
    kw = {"method": method, "dt": 0.1, "adaptive": True, "per_sample": True, "seed": 1, "rtol": 1e-2, "atol": 1e-2,
          "dt_min": 1e-3}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        whole = sdekit.sdeint(RowGBM(SIGMAS, sde_type), y0, [0.0, 0.5, 1.0], **kw)
        for b in range(4):
            alone = sdekit.sdeint(RowGBM(SIGMAS[b:b + 1], sde_type), y0[b:b + 1], [0.0, 0.5, 1.0],
                                  sample_index=torch.tensor([b]), **kw)
            assert torch.equal(alone[:, 0], whole[:, b]), b
        # Batch mode shares one step sequence, so the hard row (σ = 2) changes the easy rows' steps.
        shared = sdekit.sdeint(RowGBM(SIGMAS, sde_type), y0, [0.0, 0.5, 1.0],
                               **{k: v for k, v in kw.items() if k != "per_sample"})
    assert not torch.equal(shared[:, 0], whole[:, 0])


@pytest.mark.parametrize("method", ["milstein", "srk"])
def test_per_sample_error_falls_with_the_tolerance_on_every_row(method):
    sigma = torch.tensor([0.2, 0.8] * 64, dtype=F64)
    bm = BrownianTree(0.0, 1.0, (128, 1), seed=3, depth=20, dtype=F64)
    exact = torch.exp((0.5 - 0.5 * sigma[:, None] ** 2) + sigma[:, None] * bm(0.0, 1.0))
    errors = []
    for tol in (1e-2, 1e-3, 1e-4):
        ys = sdekit.sdeint(RowGBM(sigma), torch.ones(128, 1, dtype=F64), [0.0, 1.0], bm, method=method, dt=0.25,
                           adaptive=True, per_sample=True, rtol=tol, atol=tol, dt_min=1e-6)
        err = (ys[-1] - exact).abs()
        errors.append([float(err[0::2].mean()), float(err[1::2].mean())])  # calm rows, volatile rows
    # Measured: calm rows 1.7e-3 → 1.1e-3 → 3.5e-4 (srk) and 4-5× per decade for milstein; volatile rows
    # 2.7-10× per decade.  Each group's error must fall at every tightening and by 3× over the two decades.
    for calm_or_volatile in (0, 1):
        e = [row[calm_or_volatile] for row in errors]
        assert e[0] > e[1] > e[2] and e[2] < e[0] / 3, errors


def test_per_sample_needs_adaptive_an_sdekit_sde_and_the_tree():
    y0 = torch.ones(4, 3, dtype=F64)
    with pytest.raises(ValueError, match="needs adaptive=True"):
        sdekit.sdeint(RowGBM(SIGMAS), y0, [0.0, 1.0], per_sample=True, seed=0)
    with pytest.raises(ValueError, match="sdekit-style SDE"):
        sdekit.sdeint(Neural("diagonal"), torch.ones(4, 3, dtype=F64), [0.0, 1.0], method="euler", adaptive=True,
                      per_sample=True, seed=0)
    if torchsde is not None:
        with pytest.raises(ValueError, match="BrownianTree"):
            sdekit.sdeint(RowGBM(SIGMAS), y0, [0.0, 1.0], _interval((4, 3)), adaptive=True, per_sample=True)
