"""Every Runge–Kutta tableau converges at its declared order (log–log fit within ±0.15).

Orders are measured with fixed steps on closed-form problems (DETEST class A
and y' = Ay against expm): the propagated solution (weights b), the embedded
solution of the adaptive pairs (weights b − b_error) and the local order of
their dense output.  The state is accumulated with compensated (Kahan)
summation so that round-off does not bend the finest points.

Step ranges sit in each method's asymptotic regime above the float64 floor.
Fifth-order pairs are not fitted on A1/A2: their leading error terms are so
small there (by design, for tsit5) that the h⁶ terms still dominate when the
error reaches round-off (measured slopes 5.2–5.7), so those problems cannot
show the asymptotic order in double precision; y cos t and the logistic
equation on [0, 10] can.  For the same reason tsit5 is not fitted on y' = Ay
(its stability polynomial matches exp(z) so closely that the measured slope
is 5.4 down to round-off): linear problems flatter it.
"""

import math

import pytest
import torch

from sdekit.solvers.rk import rk_interpolate, rk_stages, weighted_sum
from sdekit.solvers.tableaus import TABLEAUS
from sdekit.testing import fit_order
from sdekit.testing.ode_problems import A1, A2, LOGISTIC, YCOS, integrate_fixed, linear_system, ode_order

f64 = dict(dtype=torch.float64)
BAND = 0.15
#: Step counts per declared order (times each problem's ``refine``).
STEPS = {1: [64, 128, 256, 512], 2: [32, 64, 128, 256], 3: [32, 64, 128, 256], 4: [32, 64, 128, 256],
         5: [16, 32, 64, 128]}


def measured_order(tableau, weights, problem, ns):
    return ode_order(tableau, problem, ns, weights)[0].order


def cases(order):
    return [A1, A2, YCOS, LOGISTIC] if order < 5 else [YCOS, LOGISTIC]


@pytest.mark.parametrize("name,problem", [(n, p) for n, t in TABLEAUS.items() for p in cases(t.order)],
                         ids=lambda v: v if isinstance(v, str) else v.name)
def test_propagated_order(name, problem):
    tab = TABLEAUS[name]
    p = measured_order(tab, tab.b, problem, STEPS[tab.order])
    assert abs(p - tab.order) <= BAND, f"{name} on {problem.name}: measured order {p:.3f}, declared {tab.order}"


@pytest.mark.parametrize("name", [n for n, t in TABLEAUS.items() if t.adaptive])
@pytest.mark.parametrize("problem", [A2, LOGISTIC], ids=lambda p: p.name)
def test_embedded_order(name, problem):
    tab = TABLEAUS[name]
    b_hat = tuple(b - e for b, e in zip(tab.b, tab.b_error))
    p = measured_order(tab, b_hat, problem, STEPS[tab.error_order + 1])
    assert abs(p - tab.error_order) <= BAND, f"{name} embedded on {problem.name}: {p:.3f} vs {tab.error_order}"


@pytest.mark.parametrize("name", [n for n, t in TABLEAUS.items() if t.dense is not None])
@pytest.mark.parametrize("theta", [0.3, 0.5, 0.8])
def test_dense_output_local_order(name, theta):
    """One step from the exact solution: the interpolant's error is O(h^(q+1)), q = dense_order."""
    tab = TABLEAUS[name]
    problem, t0 = (YCOS, 2.0) if tab.dense_order >= 4 else (LOGISTIC, 2.0)
    func = lambda t, y: problem.func(t[:, None], y)  # noqa: E731
    hs = [0.1, 0.05, 0.025, 0.0125]
    errs = []
    for h in hs:
        y = torch.full((1, 1), problem.exact(t0), **f64)
        tv, hv = torch.full((1,), t0, **f64), torch.full((1,), h, **f64)
        ks = rk_stages(func, tab, tv, y, hv)
        if tab.fsal:  # the FSAL stage is the derivative at the new solution
            y1 = y + h * weighted_sum(ks, tab.b)
            assert torch.allclose(ks[-1], func(tv + hv, y1), rtol=1e-13, atol=0)
        y_theta = rk_interpolate(tab, y, ks, hv, torch.full((1,), theta, **f64))
        errs.append(abs(y_theta.item() - problem.exact(t0 + theta * h)))
    p = fit_order(hs, errs).order
    assert abs(p - (tab.dense_order + 1)) <= BAND, f"{name} dense output at θ={theta}: {p:.3f}"


@pytest.mark.parametrize("name", [n for n in TABLEAUS if n != "tsit5"])
def test_linear_system_against_expm(name):
    """y' = Ay with a rotating, decaying A: errors against matrix_exp converge at the declared order."""
    tab = TABLEAUS[name]
    A, func = linear_system()
    y0 = torch.ones(1, A.shape[0], **f64)
    t1 = 4.0
    exact = y0 @ torch.linalg.matrix_exp(t1 * A).T
    ns = STEPS[tab.order]
    errs = []
    for n in ns:
        errs.append((integrate_fixed(func, tab, tab.b, y0, t1, 2 * n) - exact).abs().max().item())
    p = fit_order([t1 / (2 * n) for n in ns], errs).order
    assert abs(p - tab.order) <= BAND, f"{name} on y'=Ay: {p:.3f} vs {tab.order}"


def test_tableaus_are_consistent():
    """Row sums of A equal c; b sums to 1; error weights sum to 0; dense output equals b at θ = 1."""
    for tab in TABLEAUS.values():
        for i, row in enumerate(tab.a):
            assert math.isclose(sum(row), tab.c[i], abs_tol=1e-14), (tab.name, i)
        assert math.isclose(sum(tab.b), 1.0, abs_tol=1e-14)
        if tab.adaptive:
            assert math.isclose(sum(tab.b_error), 0.0, abs_tol=1e-14)
        if tab.dense is not None:
            for row, b in zip(tab.dense, tab.b):
                assert math.isclose(sum(row), b, abs_tol=1e-13)
