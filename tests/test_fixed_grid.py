"""The whole-state fixed-grid backend (sdekit.solvers.fixed_grid) and the Adams steppers (sdekit.solvers.adams).

Grid layout, interpolation, perturbation, callbacks, shapes, gradients (gradcheck),
convergence orders of every tableau and of Adams orders 1–5, and events.
"""

import math
import warnings

import pytest
import torch

from sdekit.solvers.adams import quadrature_weights
from sdekit.solvers.adaptive import ToleranceNotMetError
from sdekit.solvers.fixed_grid import solve_fixed_grid, uniform_grid
from sdekit.solvers.rk import rk_advance, rk_stages
from sdekit.solvers.tableaus import EULER, FIXED_STEP_METHODS, RK4, TABLEAUS
from sdekit.testing import fit_order
from sdekit.testing.ode_problems import LOGISTIC, YCOS

f64 = {"dtype": torch.float64}
ADAMS = ("explicit_adams", "implicit_adams")
ALL_METHODS = list(TABLEAUS) + list(ADAMS)
BAND = 0.15


def method_of(name):
    return TABLEAUS.get(name, name)


def recording(func, log):
    def f(t, y):
        log.append(float(t))
        return func(t, y)
    return f


# ---- grids -------------------------------------------------------------------------


def test_default_grid_is_t():
    t = torch.tensor([0.0, 0.1, 0.35, 0.4, 1.0], **f64)
    calls = []
    r = solve_fixed_grid(recording(lambda t, y: -y + t, calls), torch.tensor(1.0, **f64), t, EULER)
    assert calls == t[:-1].tolist() and r.nfe == 4 and r.steps == 4
    y, expected = 1.0, [1.0]
    for a, b in zip(t[:-1].tolist(), t[1:].tolist()):
        y = y + (b - a) * (-y + a)
        expected.append(y)
    torch.testing.assert_close(r.ys, torch.tensor(expected, **f64), rtol=1e-15, atol=1e-15)
    calls.clear()
    assert solve_fixed_grid(recording(lambda t, y: -y, calls), torch.tensor(1.0, **f64), t, RK4).nfe == 16
    assert len(calls) == 16 and set(t.tolist()) <= set(calls)  # c = 1 stages land exactly on the next time


@pytest.mark.parametrize("t1,h,expected", [(1.0, 0.3, [0.0, 0.3, 0.6, 0.9, 1.0]), (1.0, 0.25, [0.0, 0.25, 0.5, 0.75, 1.0]),
                                          (0.5, 1.0, [0.0, 0.5])])
def test_step_size_grid(t1, h, expected):
    t = torch.tensor([0.0, t1], **f64)
    grid = uniform_grid(t, h)
    torch.testing.assert_close(grid, torch.tensor(expected, **f64), rtol=0, atol=1e-15)
    calls = []
    r = solve_fixed_grid(recording(lambda t, y: y, calls), torch.ones(2, **f64), t, EULER, step_size=h)
    assert r.steps == len(expected) - 1 and calls == pytest.approx(expected[:-1], abs=1e-15)
    assert r.ys.shape == (2, 2)


def test_interpolation_vs_closed_form():
    # y' = 3t², y = t³: RK4 is exact at the grid points, cubic Hermite reproduces cubics exactly,
    # linear interpolation gives the chord.
    func, y0, h = (lambda t, y: 3 * t**2 + 0 * y), torch.tensor(0.0, **f64), 0.25
    t = torch.tensor([0.0, 0.1, 0.5, 0.6, 0.77, 1.0], **f64)
    cubic = solve_fixed_grid(func, y0, t, RK4, step_size=h, interp="cubic")
    torch.testing.assert_close(cubic.ys, t**3, rtol=1e-13, atol=1e-15)
    linear = solve_fixed_grid(func, y0, t, RK4, step_size=h)
    a = torch.floor(t / h) * h  # start of the step containing each (off-grid) output
    chord = a**3 + (t - a) / h * ((a + h) ** 3 - a**3)
    torch.testing.assert_close(linear.ys, torch.where(t % h == 0, t**3, chord), rtol=1e-13, atol=1e-15)
    assert (linear.ys - t**3).abs().max() > 1e-3  # the chord really differs from the solution
    assert linear.ys[2].item() == pytest.approx(0.125, abs=1e-15)  # t = 0.5 is a grid point: its value


def test_cubic_reuses_end_derivative():
    t = torch.tensor([0.0] + [0.05 + 0.1 * k for k in range(10)] + [1.0], **f64)  # one output inside each step
    r = solve_fixed_grid(lambda t, y: -y, torch.tensor(1.0, **f64), t, RK4, step_size=0.1, interp="cubic")
    assert r.steps == 10 and r.nfe == 4 * 10 + 1  # f(t1, y1) feeds the next step; one extra at the end
    torch.testing.assert_close(r.ys, torch.exp(-t), rtol=1e-5, atol=0)


def test_grid_constructor_used():
    seen = []

    def constructor(func, y0, t):
        seen.append((func, y0, t))
        return torch.tensor([0.0, 0.1, 0.5, 0.6, 1.0], **f64)

    def func(t, y):
        return y

    calls = []
    y0, t = torch.tensor(1.0, **f64), torch.tensor([0.0, 1.0], **f64)
    r = solve_fixed_grid(recording(func, calls), y0, t, EULER, grid_constructor=constructor)
    assert len(seen) == 1 and seen[0][1] is y0 and torch.equal(seen[0][2], t)
    assert calls == [0.0, 0.1, 0.5, 0.6] and r.steps == 4
    assert r.ys[-1].item() == pytest.approx(1.1 * 1.4 * 1.1 * 1.4, rel=1e-14)


@pytest.mark.parametrize("grid,match", [([0.1, 0.5, 1.0], "start at"), ([0.0, 0.5, 0.9], "end at"),
                                        ([0.0, 0.6, 0.5, 1.0], "increasing"), ([0.0], "at least 2")])
def test_bad_grid_constructor(grid, match):
    with pytest.raises(ValueError, match=f"grid_constructor.*{match}"):
        solve_fixed_grid(lambda t, y: y, torch.tensor(1.0, **f64), torch.tensor([0.0, 1.0], **f64), EULER,
                         grid_constructor=lambda f, y0, t: torch.tensor(grid, **f64))


# ---- perturb, callbacks, shapes ------------------------------------------------------


@pytest.mark.parametrize("interp", ["linear", "cubic"])
@pytest.mark.parametrize("method", ALL_METHODS)
def test_perturb_avoids_grid_times(method, interp):
    t = torch.tensor([0.0, 0.7, 1.0], **f64)
    grid_times = {0.0, 0.25, 0.5, 0.75, 1.0}

    def run(perturb):
        calls = []
        r = solve_fixed_grid(recording(lambda t, y: -y, calls), torch.tensor([1.0, 2.0], **f64), t,
                             method_of(method), perturb=perturb, step_size=0.25, interp=interp)
        return r.ys, grid_times & set(calls)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        (ref, hits), (ys, hits_perturbed) = run(False), run(True)
    assert {0.0, 0.25, 0.5} <= hits
    assert not hits_perturbed, f"perturb=True evaluated at grid times {sorted(hits_perturbed)}"
    torch.testing.assert_close(ys, ref, rtol=1e-6, atol=1e-9)


def test_perturb_keeps_time_gradient():
    t = torch.tensor([0.0, 1.0], **f64, requires_grad=True)
    (g,) = torch.autograd.grad(solve_fixed_grid(lambda s, y: s + 0 * y, torch.tensor(0.0, **f64), t, RK4,
                                                step_size=0.5, perturb=True).ys[-1], t)
    torch.testing.assert_close(g, torch.tensor([-0.0, 1.0], **f64), atol=1e-12, rtol=0)  # d/dt (t1² − t0²)/2


@pytest.mark.parametrize("method", ["rk4", "implicit_adams"])
def test_callback_step(method):
    log = []
    t = torch.tensor([0.0, 0.3, 1.0], **f64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        r = solve_fixed_grid(lambda t, y: -y, torch.ones(3, **f64), t, method_of(method), step_size=0.125,
                             callback_step=lambda t0, y0, dt: log.append((float(t0), y0.clone(), float(dt))))
    assert len(log) == r.steps == 8
    assert [e[0] for e in log] == pytest.approx([k * 0.125 for k in range(8)])
    assert [e[2] for e in log] == pytest.approx([0.125] * 8)
    torch.testing.assert_close(log[0][1], torch.ones(3, **f64))
    torch.testing.assert_close(log[-1][1], torch.full((3,), math.exp(-0.875), **f64), rtol=1e-5, atol=0)


@pytest.mark.parametrize("method", ["rk4", "explicit_adams", "implicit_adams"])
def test_state_shapes(method):
    t = torch.linspace(0, 1, 41, **f64)
    r0 = solve_fixed_grid(lambda t, y: -2 * y, torch.tensor(3.0, **f64), t, method_of(method), max_iters=10)
    assert r0.ys.shape == (41,)
    torch.testing.assert_close(r0.ys, 3 * torch.exp(-2 * t), rtol=1e-5, atol=0)
    A = torch.tensor([[0.0, 1.0], [-1.0, -0.1]], **f64)
    Y0 = torch.arange(6, **f64).reshape(2, 3)
    r2 = solve_fixed_grid(lambda t, y: A @ y, Y0, t, method_of(method), max_iters=10)
    assert r2.ys.shape == (41, 2, 3)
    torch.testing.assert_close(r2.ys[-1], torch.linalg.matrix_exp(A) @ Y0, rtol=1e-5, atol=1e-6)
    r32 = solve_fixed_grid(lambda t, y: -2 * y, torch.tensor(3.0), t.float(), method_of(method), max_iters=10)
    assert r32.ys.dtype == torch.float32


def test_single_time_and_nfe_of_adams():
    y0 = torch.tensor([1.0, -1.0], **f64)
    r = solve_fixed_grid(lambda t, y: y, y0, torch.tensor([0.0], **f64), "explicit_adams")
    assert r.ys.shape == (1, 2) and r.nfe == 0 and torch.equal(r.ys[0], y0)
    r = solve_fixed_grid(lambda t, y: y, y0, torch.linspace(0, 1, 11, **f64), "explicit_adams")
    assert r.nfe == 3 * 4 + 7  # three RK4 start-up steps, then one evaluation per step
    t = torch.linspace(0, 1, 11, **f64)
    assert torch.equal(solve_fixed_grid(lambda t, y: -y, y0, t, "fixed_adams").ys,  # torchdiffeq's alias
                       solve_fixed_grid(lambda t, y: -y, y0, t, "implicit_adams").ys)


# ---- gradients ---------------------------------------------------------------------


@pytest.mark.parametrize("method,grid", [(m, g) for m in ("euler", "rk4", "explicit_adams", "implicit_adams")
                                         for g in ("t", "step_size_cubic", "step_size_linear")
                                         if m in ("euler", "rk4") or g != "step_size_linear"])
def test_gradcheck(method, grid):
    w = torch.tensor([0.7, -0.4], **f64, requires_grad=True)

    def func(t, y):
        return torch.stack([y[1], -w[0] * y[0] + w[1] * torch.sin(t) * y[1]])

    kw = {} if grid == "t" else {"step_size": 0.15, "interp": grid.split("_")[-1]}
    times = [0.0, 0.22, 0.5, 0.53, 0.95] if grid == "t" else [0.0, 0.2, 0.52, 0.8]  # off the 0.15 grid

    def run(y0, t, w_):  # w_ is w: gradcheck perturbs it in place
        return solve_fixed_grid(func, y0, t, method_of(method), rtol=0.0, atol=0.0, max_iters=2, max_order=3,
                                **kw).ys

    y0 = torch.tensor([1.0, 0.5], **f64, requires_grad=True)
    t = torch.tensor(times, **f64, requires_grad=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # rtol = atol = 0: the corrector always runs max_iters
        assert torch.autograd.gradcheck(run, (y0, t, w))


@pytest.mark.parametrize("method", ADAMS)
def test_adams_weights_same_with_and_without_time_gradients(method):
    # Weights come from Python floats without time gradients, from 0-d tensors with them: same values.
    t = torch.tensor([0.0, 0.1, 0.25, 0.3, 0.5, 0.55, 0.8, 1.0], **f64)
    ys = [solve_fixed_grid(lambda s, y: torch.sin(s) - y**2, torch.tensor(0.5, **f64), tt, method, max_iters=10).ys
          for tt in (t, t.clone().requires_grad_(True))]
    torch.testing.assert_close(ys[1].detach(), ys[0], rtol=1e-14, atol=1e-15)
    assert not torch.equal(ys[0], solve_fixed_grid(lambda s, y: torch.sin(s) - y**2, torch.tensor(0.5, **f64), t,
                                                   RK4).ys)  # Adams really ran (not the RK4 start-up only)


# ---- convergence orders ------------------------------------------------------------


def final_error(method, problem, n, warp=0.0, **kw):
    s = torch.linspace(0, 1, n + 1, **f64)
    t = problem.t1 * (s + warp * torch.sin(math.pi * s) / math.pi)  # warp > 0: a non-uniform grid
    r = solve_fixed_grid(problem.func, torch.tensor(problem.y0, **f64), t, method, **kw)
    return abs(r.ys[-1].item() - problem.exact(problem.t1))


def measured(method, problem, ns, warp=0.0, **kw):
    return fit_order([1 / n for n in ns], [final_error(method, problem, n, warp, **kw) for n in ns]).order


@pytest.mark.parametrize("name", FIXED_STEP_METHODS)
def test_tableau_order(name):
    tab = TABLEAUS[name]
    p = measured(tab, LOGISTIC, [64, 128, 256] if tab.order == 1 else [32, 64, 128])
    assert abs(p - tab.order) <= BAND, f"{name}: measured order {p:.3f}, declared {tab.order}"


@pytest.mark.parametrize("name", list(TABLEAUS))
def test_step_matches_generic_stepper(name):
    # Every tableau (embedded pairs too, stepped with b) takes the same step as sdekit.solvers.rk;
    # their orders are measured in tests/test_ode_orders.py.
    tab, A = TABLEAUS[name], torch.tensor([[-0.5, 2.0], [-1.0, -0.3]], **f64)

    def func(t, y):
        return torch.tanh(y @ A.T) * torch.cos(t)[..., None]

    y0, t0, h = torch.tensor([0.8, -0.2], **f64), 0.3, 0.7
    r = solve_fixed_grid(lambda t, y: func(t, y), y0, torch.tensor([t0, t0 + h], **f64), tab)
    hb = torch.tensor([h], **f64)
    ks = rk_stages(func, tab, torch.tensor([t0], **f64), y0[None], hb)
    torch.testing.assert_close(r.ys[1], rk_advance(y0[None], ks, hb, tab.b)[0], rtol=1e-15, atol=1e-15)
    assert r.nfe == tab.stages


CONVERGED = {"max_iters": 6, "rtol": 1e-11, "atol": 1e-13}  # corrector converged well below the errors


@pytest.mark.parametrize("warp", [0.0, 0.3], ids=["uniform", "nonuniform"])
@pytest.mark.parametrize("order", [1, 2, 3, 4])
@pytest.mark.parametrize("method", ADAMS)
def test_adams_order(method, order, warp):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        ns = [64, 128, 256] if method == "explicit_adams" else [32, 64, 128]  # explicit: cheap, less converged
        p = measured(method, LOGISTIC, ns, warp, max_order=order, **CONVERGED)
    assert abs(p - order) <= BAND, f"{method} max_order={order}: measured order {p:.3f}"


@pytest.mark.parametrize("method", ADAMS)
def test_adams_order_5(method):
    p = measured(method, YCOS, [384, 768], max_order=5, **CONVERGED)  # finer grids: the h⁶ term is large
    assert abs(p - 5) <= BAND, f"{method} max_order=5: measured order {p:.3f}"


@pytest.mark.parametrize("k", [1, 2, 3, 4, 5])
def test_adams_coefficients_match_hnw_tables(k):
    # HNW I §III.1, Tables 1.1 (explicit) and 1.2 (implicit), as integers over a common divisor.
    ab = {1: ([1], 1), 2: ([3, -1], 2), 3: ([23, -16, 5], 12), 4: ([55, -59, 37, -9], 24),
          5: ([1901, -2774, 2616, -1274, 251], 720)}
    am = {1: ([1, 1], 2), 2: ([5, 8, -1], 12), 3: ([9, 19, -5, 1], 24), 4: ([251, 646, -264, 106, -19], 720),
          5: ([475, 1427, -798, 482, -173, 27], 1440)}
    num, den = ab[k]
    assert quadrature_weights([-j for j in range(k)]) == pytest.approx([c / den for c in num], abs=1e-13)
    num, den = am[k]
    assert quadrature_weights([1 - j for j in range(k + 1)]) == pytest.approx([c / den for c in num], abs=1e-13)


def test_corrector_warns_when_not_converged():
    t = torch.linspace(0, 1, 6, **f64)
    with pytest.warns(RuntimeWarning, match="did not converge within max_iters=1"):
        solve_fixed_grid(lambda t, y: -5 * y, torch.tensor(1.0, **f64), t, "implicit_adams", max_iters=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        r = solve_fixed_grid(lambda t, y: -y, torch.tensor(1.0, **f64), torch.linspace(0, 1, 101, **f64),
                             "implicit_adams", max_iters=50, rtol=1e-6, atol=1e-9)
    assert r.nfe < 100 * 4 + 4  # converges in a few iterations, not 50


# ---- events ------------------------------------------------------------------------

G = 9.81


def ball(t, y):  # y = (height, velocity)
    return torch.stack([y[1], torch.full_like(y[1], -G)])


def impact_time(h0, v0):
    return (v0 + math.sqrt(v0 * v0 + 2 * G * h0)) / G


@pytest.mark.parametrize("method", ["rk4", "explicit_adams", "implicit_adams"])
def test_falling_ball_event(method):
    h0, v0, start = 5.0, 2.0, 0.3
    y0 = torch.tensor([h0, v0], **f64, requires_grad=True)
    t = torch.tensor([start, start + 0.1], **f64, requires_grad=True)  # the search runs past t[-1]
    r = solve_fixed_grid(ball, y0, t, method_of(method), step_size=0.05, interp="cubic",
                         event_fn=lambda t, y: y[0], atol=1e-10)
    t_star = impact_time(h0, v0)
    assert r.event_t is not None and abs(r.event_t.item() - start - t_star) <= 1e-10
    assert r.ys.shape == (2, 2) and torch.equal(r.ys[0], y0.detach())
    assert abs(r.ys[1, 0].item()) < 1e-8 and r.ys[1, 1].item() == pytest.approx(v0 - G * t_star, abs=1e-8)
    assert r.steps == math.ceil(t_star / 0.05)
    # dt*/dh0 = 1/sqrt(v0² + 2 g h0), dt*/dv0 = (1 + v0/sqrt(...))/g, dt*/dt0 = 1: the implicit-function term.
    grad_y0, grad_t = torch.autograd.grad(r.event_t, (y0, t), retain_graph=True)
    root = math.sqrt(v0 * v0 + 2 * G * h0)
    torch.testing.assert_close(grad_y0, torch.tensor([1 / root, (1 + v0 / root) / G], **f64), rtol=1e-7, atol=0)
    torch.testing.assert_close(grad_t, torch.tensor([1.0, 0.0], **f64), rtol=0, atol=1e-7)
    # The state at the event moves with the event time: its height stays 0 whatever y0 is.
    (grad_height,) = torch.autograd.grad(r.ys[1, 0], y0)
    assert grad_height.abs().max() < 1e-6


def test_event_linear_interp_and_grid_constructor():
    y0, t = torch.tensor([5.0, 0.0], **f64), torch.tensor([0.0, 2.0], **f64)
    t_star = impact_time(5.0, 0.0)
    lin = solve_fixed_grid(ball, y0, t, RK4, step_size=0.01, event_fn=lambda t, y: y[0], atol=1e-12)
    assert r_close(lin.event_t, t_star, 1e-4) and not r_close(lin.event_t, t_star, 1e-9)  # chord error O(h²)
    grid = torch.linspace(0, 2, 41, **f64)
    gc = solve_fixed_grid(ball, y0, t, RK4, grid_constructor=lambda f, y, s: grid, interp="cubic",
                          event_fn=lambda t, y: y[0], atol=1e-12)
    assert r_close(gc.event_t, t_star, 1e-11) and gc.steps == math.ceil(t_star / 0.05)


def r_close(x, v, tol):
    return abs(float(x) - v) <= tol


def test_event_errors():
    y0, t = torch.tensor([5.0, 0.0], **f64), torch.tensor([0.0, 1.0], **f64)
    with pytest.raises(ValueError, match="step_size"):
        solve_fixed_grid(ball, y0, t, RK4, event_fn=lambda t, y: y[0])
    with pytest.raises(ToleranceNotMetError, match="event not found"):
        solve_fixed_grid(ball, y0, t, RK4, step_size=0.1, event_fn=lambda t, y: y[0], max_num_steps=5)
    with pytest.raises(ToleranceNotMetError, match="event not found"):
        solve_fixed_grid(ball, y0, t, RK4, grid_constructor=lambda f, y, s: torch.linspace(0, 1, 5, **f64),
                         event_fn=lambda t, y: y[0])


# ---- argument errors ---------------------------------------------------------------


@pytest.mark.parametrize("kw,match", [
    ({"interp": "quadratic"}, "interp"),
    ({"step_size": 0.0}, "step_size"), ({"step_size": -0.1}, "step_size"),
    ({"step_size": float("nan")}, "step_size"), ({"step_size": float("inf")}, "step_size"),
    ({"step_size": 0.1, "grid_constructor": lambda f, y, t: t}, "mutually exclusive"),
    ({"method": "rk45"}, "method"), ({"method": "explicit_adams", "max_order": 6}, "max_order"),
    ({"method": "implicit_adams", "max_iters": 0}, "max_iters"),
    ({"t": torch.tensor([0.0, 1.0, 0.5], **f64)}, "increasing"),
])
def test_argument_errors(kw, match):
    args = {"method": RK4, "t": torch.tensor([0.0, 1.0], **f64)}
    args.update(kw)
    with pytest.raises(ValueError, match=match):
        solve_fixed_grid(lambda t, y: y, torch.tensor(1.0, **f64), args.pop("t"), args.pop("method"), **args)
