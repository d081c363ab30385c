"""Implicit Runge–Kutta methods on the fixed-grid backend (sdekit.solvers.implicit, sdekit.solvers.fixed_grid).

Tableau order conditions, convergence orders on a closed-form problem, stiff
stability, gradients (gradcheck), events, state shapes and dtypes, the grid
options (perturb, callbacks, grid_constructor) and argument errors.
"""

import math
import warnings

import pytest
import torch

from sdekit.solvers.fixed_grid import solve_fixed_grid
from sdekit.solvers.implicit import IMPLICIT_METHODS, ImplicitTableau
from sdekit.solvers.tableaus import EULER, RK4, TABLEAUS
from sdekit.testing import fit_order
from sdekit.testing.ode_problems import LOGISTIC

f64 = {"dtype": torch.float64}
BAND = 0.15
TIGHT = {"rtol": 1e-13, "atol": 1e-15}  # Newton converged far below the discretisation errors
TORCHDIFFEQ_NAMES = ("implicit_euler", "implicit_midpoint", "trapezoid", "radauIIA3", "gl4", "radauIIA5", "gl6",
                     "sdirk2", "trbdf2")


# ---- registry and coefficients ----------------------------------------------------


def test_registry():
    assert set(IMPLICIT_METHODS) >= set(TORCHDIFFEQ_NAMES)
    assert not set(IMPLICIT_METHODS) & set(TABLEAUS)  # explicit registry stays explicit
    assert all(name == tab.name and tab.source for name, tab in IMPLICIT_METHODS.items())
    assert IMPLICIT_METHODS["sdirk2"].diagonally_implicit and IMPLICIT_METHODS["trbdf2"].diagonally_implicit
    assert not IMPLICIT_METHODS["gl4"].diagonally_implicit
    assert IMPLICIT_METHODS["trbdf2"].plan() == (((0,), False), ((1,), True), ((2,), True))
    assert IMPLICIT_METHODS["radauIIA5"].plan() == (((0, 1, 2), True),)


def _order_conditions(tab):
    """Residuals of the Runge–Kutta order conditions up to order min(p, 4) (HNW I, §II.2, Table 2.2)."""
    b, c, s = tab.b, tab.c, tab.stages
    a = tab.a
    ac = [sum(a[i][j] * c[j] for j in range(s)) for i in range(s)]
    conds = [sum(b) - 1]
    if tab.order >= 2:
        conds.append(sum(bi * ci for bi, ci in zip(b, c)) - 1 / 2)
    if tab.order >= 3:
        conds += [sum(bi * ci**2 for bi, ci in zip(b, c)) - 1 / 3, sum(bi * x for bi, x in zip(b, ac)) - 1 / 6]
    if tab.order >= 4:
        aac = [sum(a[i][j] * ac[j] for j in range(s)) for i in range(s)]
        conds += [sum(bi * ci**3 for bi, ci in zip(b, c)) - 1 / 4,
                  sum(bi * ci * x for bi, ci, x in zip(b, c, ac)) - 1 / 8,
                  sum(b[i] * a[i][j] * c[j] ** 2 for i in range(s) for j in range(s)) - 1 / 12,
                  sum(bi * x for bi, x in zip(b, aac)) - 1 / 24]
    # Quadrature conditions B(p): Σ bᵢcᵢ^{k−1} = 1/k for all k ≤ p.
    conds += [sum(bi * ci ** (k - 1) for bi, ci in zip(b, c)) - 1 / k for k in range(1, tab.order + 1)]
    return conds


@pytest.mark.parametrize("name", list(IMPLICIT_METHODS))
def test_order_conditions(name):
    tab = IMPLICIT_METHODS[name]
    assert max(abs(r) for r in _order_conditions(tab)) < 1e-14


# ---- convergence orders -----------------------------------------------------------


def _final_error(method, n):
    t = torch.linspace(0, LOGISTIC.t1, n + 1, **f64)
    with torch.no_grad():
        r = solve_fixed_grid(LOGISTIC.func, torch.tensor(LOGISTIC.y0, **f64), t, method, **TIGHT)
    return abs(r.ys[-1].item() - LOGISTIC.exact(LOGISTIC.t1))


@pytest.mark.parametrize("name", list(IMPLICIT_METHODS))
def test_convergence_order(name):
    order = IMPLICIT_METHODS[name].order
    ns = [10, 20, 40]  # errors from ~1 (implicit_euler) down to ~2e-13 (gl6), above roundoff
    p = fit_order([1 / n for n in ns], [_final_error(name, n) for n in ns]).order
    assert abs(p - order) <= BAND, f"{name}: measured order {p:.3f}, declared {order}"


# ---- stiffness --------------------------------------------------------------------

LAM = 1000.0


def _stiff(t, y):
    return -LAM * (y - torch.cos(t))


def _stiff_exact(t, y0):
    d = LAM**2 + 1
    a, b = LAM**2 / d, LAM / d  # the slow solution a cos t + b sin t, plus a transient decaying like e^{−λt}
    return a * math.cos(t) + b * math.sin(t) + (y0 - a) * math.exp(-LAM * t)


@pytest.mark.parametrize("name", ["implicit_euler", "radauIIA3", "radauIIA5", "sdirk2", "trbdf2"])  # L-stable
def test_stiff_linear_problem(name):
    t = torch.tensor([0.0, 3.0], **f64)
    y0 = torch.tensor(2.0, **f64)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # linear: Newton converges, no warning
        r = solve_fixed_grid(_stiff, y0, t, name, step_size=0.1)  # hλ = −100
    assert abs(r.ys[-1].item() - _stiff_exact(3.0, 2.0)) < 2e-3
    if name == "implicit_euler":
        with torch.no_grad():
            blown = solve_fixed_grid(_stiff, y0, t, EULER, step_size=0.1)  # |1 + hλ| = 99 per step
        assert not bool(torch.isfinite(blown.ys[-1])) or blown.ys[-1].abs().item() > 1e30


# ---- gradients --------------------------------------------------------------------


@pytest.mark.parametrize("method,kw", [("gl4", {}), ("trbdf2", {"step_size": 0.2, "interp": "cubic"})])
def test_gradcheck(method, kw):
    w = torch.tensor([0.7, -0.4], **f64, requires_grad=True)

    def func(t, y):  # nonlinear in y, so the Newton matrix at t0 is not the exact one
        return torch.stack([y[1], -w[0] * torch.sin(y[0]) + w[1] * torch.sin(t) * y[1]])

    def run(y0, t, w_):  # w_ is w: gradcheck perturbs it in place
        return solve_fixed_grid(func, y0, t, method, **TIGHT, **kw).ys

    y0 = torch.tensor([1.0, 0.5], **f64, requires_grad=True)
    t = torch.tensor([0.0, 0.3, 0.55, 0.7] if not kw else [0.0, 0.25, 0.7], **f64, requires_grad=True)
    assert torch.autograd.gradcheck(run, (y0, t, w))


def test_values_do_not_depend_on_grad_mode():
    t = torch.linspace(0, 1, 6, **f64)
    func = lambda s, y: torch.sin(y) * s - y**3
    y0 = torch.tensor([0.5, -1.0], **f64, requires_grad=True)
    with torch.no_grad():
        plain = solve_fixed_grid(func, y0, t, "gl6")
    graph = solve_fixed_grid(func, y0, t, "gl6")
    assert graph.ys.requires_grad and not plain.ys.requires_grad
    assert torch.equal(graph.ys.detach(), plain.ys)
    # Nothing requires grad: no graph on the output either.
    assert not solve_fixed_grid(func, y0.detach(), t, "gl6").ys.requires_grad


# ---- events -----------------------------------------------------------------------

G = 9.81


def _ball(t, y):  # y = (height, velocity)
    return torch.stack([y[1], torch.full_like(y[1], -G)])


@pytest.mark.parametrize("method", ["implicit_midpoint", "gl4", "trbdf2"])
def test_falling_ball_event(method):
    # Order ≥ 2 methods are exact on this problem (nilpotent linear part), cubic Hermite too.
    h0, v0, start = 5.0, 2.0, 0.3
    y0 = torch.tensor([h0, v0], **f64, requires_grad=True)
    t = torch.tensor([start, start + 0.1], **f64)
    r = solve_fixed_grid(_ball, y0, t, method, step_size=0.1, interp="cubic", event_fn=lambda t, y: y[0],
                         atol=1e-10)
    root = math.sqrt(v0 * v0 + 2 * G * h0)
    t_star = (v0 + root) / G
    assert r.event_t is not None and abs(r.event_t.item() - start - t_star) <= 1e-9
    assert r.steps == math.ceil(t_star / 0.1) and abs(r.ys[1, 0].item()) < 1e-8
    (grad_y0,) = torch.autograd.grad(r.event_t, y0)
    torch.testing.assert_close(grad_y0, torch.tensor([1 / root, (1 + v0 / root) / G], **f64), rtol=1e-6, atol=0)


# ---- shapes, dtypes, grid options --------------------------------------------------


@pytest.mark.parametrize("name", list(IMPLICIT_METHODS))
def test_state_shapes(name):
    t = torch.linspace(0, 1, 21, **f64)
    tol = 0.15 if IMPLICIT_METHODS[name].order == 1 else 2e-3  # implicit Euler: ≈ λ²ht/2 = 0.1 at t = 1
    with torch.no_grad():
        r0 = solve_fixed_grid(lambda t, y: -2 * y, torch.tensor(3.0, **f64), t, name)
        assert r0.ys.shape == (21,)
        torch.testing.assert_close(r0.ys, 3 * torch.exp(-2 * t), rtol=tol, atol=0)
        A = torch.tensor([[0.0, 1.0], [-1.0, -0.1]], **f64)
        Y0 = torch.arange(6, **f64).reshape(2, 3)
        r2 = solve_fixed_grid(lambda t, y: A @ y, Y0, t, name)
        assert r2.ys.shape == (21, 2, 3)
        torch.testing.assert_close(r2.ys[-1], torch.linalg.matrix_exp(A) @ Y0, rtol=tol, atol=tol)
        with warnings.catch_warnings():
            warnings.simplefilter("error", RuntimeWarning)  # float32 at default tolerances converges
            r32 = solve_fixed_grid(lambda t, y: torch.sin(y) - y, torch.tensor([1.0, -2.0]), t.float(), name)
    assert r32.ys.dtype == torch.float32 and bool(torch.isfinite(r32.ys).all())


def _recording(func, log):
    def f(t, y):
        log.append(float(t))
        return func(t, y)
    return f


@pytest.mark.parametrize("name", list(IMPLICIT_METHODS))
def test_perturb_callback_and_grid_constructor(name):
    t = torch.tensor([0.0, 0.7, 1.0], **f64)
    grid_times = {0.0, 0.25, 0.5, 0.75, 1.0}
    y0 = torch.tensor([1.0, 2.0], **f64)

    def run(perturb, **kw):
        calls, steps = [], []
        with torch.no_grad():
            r = solve_fixed_grid(_recording(lambda t, y: -y, calls), y0, t, name, perturb=perturb, interp="cubic",
                                 callback_step=lambda t0, y, dt: steps.append((float(t0), float(dt))), **kw)
        return r, grid_times & set(calls), steps

    (ref, hits, steps), (ys, hits_p, _) = run(False, step_size=0.25), run(True, step_size=0.25)
    assert {0.0, 0.25, 0.5} <= hits and not hits_p
    torch.testing.assert_close(ys.ys, ref.ys, rtol=1e-9, atol=1e-12)
    assert steps == [(k * 0.25, 0.25) for k in range(4)]
    gc, _, _ = run(False, grid_constructor=lambda f, y, s: torch.tensor([0.0, 0.25, 0.5, 0.75, 1.0], **f64))
    torch.testing.assert_close(gc.ys, ref.ys, rtol=0, atol=0)


def test_tableau_object_and_custom_method():
    t = torch.linspace(0, 1, 11, **f64)
    func = lambda s, y: -y + s
    y0 = torch.tensor(1.0, **f64)
    assert torch.equal(solve_fixed_grid(func, y0, t, IMPLICIT_METHODS["gl4"]).ys,
                       solve_fixed_grid(func, y0, t, "gl4").ys)
    # Lobatto IIIC, s = 2 (HNW II, §IV.5): a fully implicit method with c = (0, 1), order 2.
    lobatto = ImplicitTableau("lobattoIIIC2", (0.0, 1.0), ((0.5, -0.5), (0.5, 0.5)), (0.5, 0.5), 2)
    exact = 2 * math.exp(-1.0)  # y = t − 1 + 2e^{−t}
    ns = [10, 20, 40]
    errs = [abs(solve_fixed_grid(func, y0, torch.linspace(0, 1, n + 1, **f64), lobatto).ys[-1].item() - exact)
            for n in ns]
    assert abs(fit_order([1 / n for n in ns], errs).order - 2) <= BAND


# ---- Newton iteration and errors ---------------------------------------------------


def test_newton_warns_when_not_converged_and_nfe():
    t = torch.linspace(0, 1, 6, **f64)
    func = lambda s, y: -5 * y**3
    with pytest.warns(RuntimeWarning, match="did not converge within max_iters=1"):
        solve_fixed_grid(func, torch.tensor(2.0, **f64), t, "implicit_euler", max_iters=1, **TIGHT)
    with torch.no_grad():
        lin = solve_fixed_grid(lambda s, y: -5 * y, torch.tensor(2.0, **f64), t, "implicit_euler")
    # Linear: exact Jacobian, so each step takes f0 + J₀ + two Newton iterations (the second sees a zero increment).
    assert lin.nfe <= 5 * 4 and lin.ys[-1].item() == pytest.approx(2 / 2**5, rel=1e-12)  # y₁ = y₀/(1 + 5h)


@pytest.mark.parametrize("kw,match", [({"method": "implicit_euler", "max_iters": 0}, "max_iters"),
                                      ({"method": "radauIIA7"}, "method")])
def test_argument_errors(kw, match):
    with pytest.raises(ValueError, match=match):
        solve_fixed_grid(lambda t, y: y, torch.tensor(1.0, **f64), torch.tensor([0.0, 1.0], **f64), **kw)


def test_bad_tableaus():
    with pytest.raises(ValueError, match="sums to"):
        ImplicitTableau("bad", (0.5,), ((0.25,),), (1.0,), 1)
    with pytest.raises(ValueError, match="s x s"):
        ImplicitTableau("bad", (0.5, 1.0), ((0.5,), (0.5, 0.5)), (0.5, 0.5), 1)


def test_explicit_and_adams_defaults_unchanged():
    t = torch.linspace(0, 1, 5, **f64)
    assert solve_fixed_grid(lambda s, y: -y, torch.tensor(1.0, **f64), t, RK4).nfe == 16
    with pytest.warns(RuntimeWarning, match="max_iters=4"):  # Adams keeps its own default of 4 corrector iterations
        solve_fixed_grid(lambda s, y: -y, torch.tensor(1.0, **f64), t, "implicit_adams")
