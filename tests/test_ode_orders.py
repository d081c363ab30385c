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

Eighth order (dopri8) shows only in a narrow window: its errors fall from
~1e-9 to round-off within two halvings, so its steps grow by factors 1.2–1.33
(4–10 steps, ``STEPS[8]``) and it is fitted on A2 and the logistic equation
(measured 7.90 and 8.00; embedded 7.00 and 6.89).  On y cos t its slope in
that window is 8.2–8.3 (h⁹ terms still matter where the error is above
round-off) and on A1 the error reaches round-off in five steps; on y' = Ay the
z⁹ coefficient of its stability polynomial is within 0.13 % of 1/9!, so the
slope is 9 down to round-off (excluded from the expm test like tsit5).

Fehlberg's RK1(2) (fehlberg2) embeds a first-order formula whose leading
error constant is 1/512 by design, so its h² terms dominate the global error
for h above ~1e-2 (slopes 1.6–1.8 with ``STEPS[2]``; 1.0 only from ~4000
steps on [0, 10], too slow for this file).  Its embedded order is measured
instead by the local error of one step from the exact solution at
h = 1e-3 … 1.25e-4 (``EMBEDDED_LOCAL_STEPS``), which is O(h^(q+1)).

Dense output is measured by the local error of one step from the exact
solution, O(h^(q+1)) for dense order q.  dopri8's order-5 output (local
error ~1e-13 at h = 0.1 on y cos t) reaches round-off before its asymptotic
regime on y cos t at t = 2, so it is measured on the logistic equation with
h = 1.6 … 0.2 (slopes 6.0–6.1; 6.0–6.1 also on y cos t from t = 0.5 with
h = 0.2 … 0.025).
"""

import math

import pytest
import torch

from sdekit.solvers.rk import rk_interpolate, rk_stages, weighted_sum
from sdekit.solvers.tableaus import TABLEAUS
from sdekit.testing import fit_order
from sdekit.testing.ode_problems import A1, A2, LOGISTIC, YCOS, integrate_fixed, linear_system, ode_order

f64 = {"dtype": torch.float64}
BAND = 0.15
#: Step counts per declared order (times each problem's ``refine``).
STEPS = {1: [64, 128, 256, 512], 2: [32, 64, 128, 256], 3: [32, 64, 128, 256], 4: [32, 64, 128, 256],
         5: [16, 32, 64, 128], 8: [4, 5, 6, 8, 10]}
#: Embedded pairs whose embedded order is measured by local error, with their step sizes (see above).
EMBEDDED_LOCAL_STEPS = {"fehlberg2": [1e-3, 5e-4, 2.5e-4, 1.25e-4]}
#: Methods whose slope on y' = Ay exceeds their order down to round-off (see above).
EXPM_FLATTERED = {"tsit5", "dopri8"}


def measured_order(tableau, weights, problem, ns):
    return ode_order(tableau, problem, ns, weights)[0].order


def cases(order):
    if order < 5:
        return [A1, A2, YCOS, LOGISTIC]
    return [YCOS, LOGISTIC] if order < 8 else [A2, LOGISTIC]


@pytest.mark.parametrize("name,problem", [(n, p) for n, t in TABLEAUS.items() for p in cases(t.order)],
                         ids=lambda v: v if isinstance(v, str) else v.name)
def test_propagated_order(name, problem):
    tab = TABLEAUS[name]
    p = measured_order(tab, tab.b, problem, STEPS[tab.order])
    assert abs(p - tab.order) <= BAND, f"{name} on {problem.name}: measured order {p:.3f}, declared {tab.order}"


@pytest.mark.parametrize("name", [n for n, t in TABLEAUS.items() if t.adaptive and n not in EMBEDDED_LOCAL_STEPS])
@pytest.mark.parametrize("problem", [A2, LOGISTIC], ids=lambda p: p.name)
def test_embedded_order(name, problem):
    tab = TABLEAUS[name]
    b_hat = tuple(b - e for b, e in zip(tab.b, tab.b_error))
    p = measured_order(tab, b_hat, problem, STEPS[tab.error_order + 1])
    assert abs(p - tab.error_order) <= BAND, f"{name} embedded on {problem.name}: {p:.3f} vs {tab.error_order}"


@pytest.mark.parametrize("name", list(EMBEDDED_LOCAL_STEPS))
@pytest.mark.parametrize("problem", [A2, LOGISTIC], ids=lambda p: p.name)
def test_embedded_local_order(name, problem):
    """One step of the embedded formula from the exact solution: error O(h^(q+1)), q = error_order."""
    tab = TABLEAUS[name]
    b_hat = tuple(b - e for b, e in zip(tab.b, tab.b_error))
    func = lambda t, y: problem.func(t[:, None], y)
    t0, hs = 0.5, EMBEDDED_LOCAL_STEPS[name]
    errs = []
    for h in hs:
        y = torch.full((1, 1), problem.exact(t0), **f64)
        tv, hv = torch.full((1,), t0, **f64), torch.full((1,), h, **f64)
        y1 = y + h * weighted_sum(rk_stages(func, tab, tv, y, hv), b_hat)
        errs.append(abs(y1.item() - problem.exact(t0 + h)))
    p = fit_order(hs, errs).order
    assert abs(p - (tab.error_order + 1)) <= BAND, f"{name} embedded local error on {problem.name}: {p:.3f}"


@pytest.mark.parametrize("name", [n for n, t in TABLEAUS.items() if t.dense is not None])
@pytest.mark.parametrize("theta", [0.3, 0.5, 0.8])
def test_dense_output_local_order(name, theta):
    """One step from the exact solution: the interpolant's error is O(h^(q+1)), q = dense_order."""
    tab = TABLEAUS[name]
    problem, t0 = (YCOS, 2.0) if tab.dense_order == 4 else (LOGISTIC, 2.0)
    hs = [0.1, 0.05, 0.025, 0.0125] if tab.dense_order < 5 else [1.6, 0.8, 0.4, 0.2]
    func = lambda t, y: problem.func(t[:, None], y)
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


@pytest.mark.parametrize("name", [n for n in TABLEAUS if n not in EXPM_FLATTERED])
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
