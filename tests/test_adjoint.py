"""sdekit.solvers.adjoint.odeint_adjoint: gradients by the continuous adjoint against closed forms,
finite differences (gradcheck) and direct backpropagation through odeint."""

import math

import pytest
import torch
from torch import nn

from sdekit.solvers.adjoint import odeint_adjoint
from sdekit.solvers.odeint import ODEINT_METHODS, odeint
from sdekit.solvers.tableaus import TABLEAUS

f64 = {"dtype": torch.float64}
pytestmark = pytest.mark.filterwarnings("ignore:options .* are not used by method")


def _grads(out, inputs, weight):
    """Gradients of ``sum(weight * out)`` with respect to ``inputs`` (zeros where unused)."""
    return torch.autograd.grad((out * weight).sum(), inputs, allow_unused=True, materialize_grads=True)


# ---------------------------------------------------------------------------------------------------
# gradcheck for every method
# ---------------------------------------------------------------------------------------------------


def _shear(theta):
    """p' = θ ⊙ sin q, q' = 0 on y = (p, q): p moves on straight lines, and so does the adjoint system
    (a_p' = 0, a_q' = −θ cos q ⊙ a_p, g' = −sin q ⊙ a_p), so every Runge–Kutta and Adams method is exact."""

    def f(t, y):
        _p, q = y[:2], y[2:]
        return torch.cat([theta * torch.sin(q), torch.zeros_like(q)])

    return f


@pytest.mark.parametrize("method", sorted(set(ODEINT_METHODS)))
def test_gradcheck_every_method_on_a_problem_it_solves_exactly(method):
    """gradcheck wrt (y0, t, θ) at default solver tolerances and tight check tolerances.

    Fast mode (a random projection ``vᵀ J u`` of the Jacobian, analytic vs central differences):
    the full Jacobians are compared in the closed-form and direct-backprop tests below.
    """
    y0 = torch.tensor([0.3, -0.2, 0.7, -1.1], **f64, requires_grad=True)
    t = torch.tensor([0.0, 0.45, 1.2], **f64, requires_grad=True)
    theta = torch.tensor([1.5, -0.8], **f64, requires_grad=True)

    def fn(y0, t, theta):
        return odeint_adjoint(_shear(theta), y0, t, method=method, adjoint_params=(theta,))

    torch.manual_seed(0)
    assert torch.autograd.gradcheck(fn, (y0, t, theta), atol=1e-8, rtol=1e-7, fast_mode=True,
                                    check_undefined_grad=method == "dopri5")


def _forced_duffing(theta):
    def f(t, y):
        return torch.stack([y[1], -theta[0] * y[0] - theta[1] * y[1] - 0.2 * y[0] ** 3 + 0.3 * torch.sin(2 * t)])

    return f


def _accuracy_settings(name):
    """Solver settings and gradcheck tolerance for a nontrivial problem.

    The continuous adjoint differentiates the exact flow; gradcheck differentiates the discrete
    solve, so they agree to the discretisation error: tight tolerances for the high-order adaptive
    pairs, a step-size-dependent allowance ``2 h^p`` for the fixed-grid methods (cubic output
    interpolation so output-time derivatives are accurate too).
    """
    tab = TABLEAUS[name]
    if tab.adaptive:
        # Central differences of an adaptive solve carry noise ~ (solve error) / eps (step choices move
        # with the inputs), so a pair taking very long steps (dopri8) needs a tighter tolerance.
        tol, gc = {1: (1e-4, 1e-3), 2: (1e-6, 1e-4)}.get(tab.error_order, (1e-10 if tab.order < 7 else 1e-12, 1e-5))
        return {"rtol": tol, "atol": tol * 1e-2}, {"atol": gc, "rtol": min(1e-3, 10 * gc)}
    h = {1: 0.01, 2: 0.02, 3: 0.04}.get(tab.order, 0.05)
    return {"options": {"step_size": h, "interp": "cubic"}}, {"atol": 2 * h ** tab.order, "rtol": 1e-3}


@pytest.mark.parametrize("method", list(TABLEAUS))
def test_gradcheck_every_tableau_on_forced_duffing(method):
    """Fast-mode gradcheck wrt (y0, t, θ) on a forced nonlinear oscillator, t off the step grid."""
    kwargs, gc_tols = _accuracy_settings(method)
    y0 = torch.tensor([1.0, -0.5], **f64, requires_grad=True)
    t = torch.tensor([0.0, 0.37, 0.81], **f64, requires_grad=True)
    theta = torch.tensor([1.3, 0.4], **f64, requires_grad=True)

    def fn(y0, t, theta):
        return odeint_adjoint(_forced_duffing(theta), y0, t, method=method, adjoint_params=(theta,), **kwargs)

    torch.manual_seed(0)
    assert torch.autograd.gradcheck(fn, (y0, t, theta), fast_mode=True, check_undefined_grad=False, **gc_tols)


# ---------------------------------------------------------------------------------------------------
# closed forms
# ---------------------------------------------------------------------------------------------------


class Linear(nn.Module):
    def __init__(self):
        super().__init__()
        self.A = nn.Parameter(torch.tensor([[-0.3, 1.1, 0.0], [-0.9, -0.2, 0.4], [0.1, -0.5, -0.6]], **f64))

    def forward(self, t, y):
        return self.A @ y


def test_linear_system_matches_matrix_exponential_gradients():
    """y = exp(A (t − t0)) y0: gradients wrt y0, every t_i and A against autograd through matrix_exp."""
    func = Linear()
    y0 = torch.tensor([1.0, -0.5, 0.25], **f64, requires_grad=True)
    t = torch.tensor([0.2, 0.9, 1.7, 3.0], **f64, requires_grad=True)
    w = torch.randn(4, 3, **f64, generator=torch.Generator().manual_seed(1))
    ys = odeint_adjoint(func, y0, t, rtol=1e-10, atol=1e-12)
    got = _grads(ys, (y0, t, func.A), w)
    exact = torch.stack([torch.linalg.matrix_exp(func.A * (ti - t[0])) @ y0 for ti in t])
    want = _grads(exact, (y0, t, func.A), w)
    assert (ys - exact).abs().max() < 1e-8
    for g, e in zip(got, want):
        assert torch.allclose(g, e, rtol=1e-7, atol=1e-8), (g, e)
    assert got[1].abs().min() > 1e-3  # every time gradient is nontrivial


class Logistic(nn.Module):
    def __init__(self, r=1.3, K=2.0):
        super().__init__()
        self.r = nn.Parameter(torch.tensor(r, **f64))
        self.K = nn.Parameter(torch.tensor(K, **f64))

    def forward(self, t, y):
        return self.r * y * (1 - y / self.K)

    def exact(self, y0, t):
        return self.K / (1 + (self.K / y0 - 1) * torch.exp(-self.r * (t - t[0])))


@pytest.mark.parametrize("decreasing", [False, True])
def test_logistic_0d_state_matches_closed_form(decreasing):
    """0-d y0, increasing and decreasing t: gradients wrt y0, t, r and K."""
    func = Logistic()
    y0 = torch.tensor(0.3, **f64, requires_grad=True)
    t = torch.tensor([0.0, 0.8, 2.0, 3.5], **f64)
    if decreasing:
        t = t.flip(0) - 1.0
        y0 = torch.tensor(1.6, **f64, requires_grad=True)
    t.requires_grad_(True)
    w = torch.tensor([0.5, -1.0, 2.0, 0.7], **f64)
    ys = odeint_adjoint(func, y0, t, rtol=1e-10, atol=1e-12)
    assert ys.shape == (4,)
    got = _grads(ys, (y0, t, func.r, func.K), w)
    want = _grads(func.exact(y0, t), (y0, t, func.r, func.K), w)
    for g, e in zip(got, want):
        assert torch.allclose(g, e, rtol=1e-7, atol=1e-9), (g, e)


def test_float32_gradients_follow_float64():
    func64 = Logistic()
    func32 = Logistic().float()
    t64 = torch.tensor([0.0, 1.0, 2.0], **f64, requires_grad=True)
    t32 = t64.detach().float().requires_grad_(True)
    y64 = torch.tensor(0.3, **f64, requires_grad=True)
    y32 = y64.detach().float().requires_grad_(True)
    g64 = _grads(odeint_adjoint(func64, y64, t64, rtol=1e-10, atol=1e-12), (y64, t64, func64.r), 1.0)
    ys32 = odeint_adjoint(func32, y32, t32, rtol=1e-6, atol=1e-7)
    g32 = _grads(ys32, (y32, t32, func32.r), 1.0)
    assert ys32.dtype == torch.float32
    for a, b in zip(g32, g64):
        assert a.dtype == torch.float32
        assert torch.allclose(a.double(), b, rtol=1e-4, atol=1e-5), (a, b)


# ---------------------------------------------------------------------------------------------------
# against direct backpropagation through odeint
# ---------------------------------------------------------------------------------------------------


class MLPField(nn.Module):
    """A time-dependent tanh MLP vector field with a submodule it never calls."""

    def __init__(self, dim=2, hidden=16, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.net = nn.Sequential(nn.Linear(dim + 1, hidden), nn.Tanh(), nn.Linear(hidden, dim)).double()
        self.unused = nn.Linear(dim, 7).double()
        self.nfe = 0

    def forward(self, t, y):
        self.nfe += 1
        tt = t.expand(*y.shape[:-1], 1)
        return self.net(torch.cat([y, tt], -1))


def test_neural_ode_matches_direct_backprop_and_unused_module_gets_exact_zero():
    func = MLPField()
    y0 = torch.randn(5, 2, **f64, generator=torch.Generator().manual_seed(2)).requires_grad_(True)
    t = torch.tensor([0.0, 0.5, 1.3], **f64, requires_grad=True)
    w = torch.randn(3, 5, 2, **f64, generator=torch.Generator().manual_seed(3))
    params = list(func.net.parameters())
    ys_adj = odeint_adjoint(func, y0, t, rtol=1e-10, atol=1e-12)
    ys_adj_grads = _grads(ys_adj, (y0, t, *params), w)
    ys_dir = odeint(func, y0, t, rtol=1e-10, atol=1e-12)
    ys_dir_grads = _grads(ys_dir, (y0, t, *params), w)
    assert torch.allclose(ys_adj, ys_dir, atol=1e-12)
    for a, d in zip(ys_adj_grads, ys_dir_grads):
        assert torch.allclose(a, d, rtol=1e-6, atol=1e-8)

    out = odeint_adjoint(func, y0, t, rtol=1e-7, atol=1e-9)
    out.sum().backward()
    for p in func.unused.parameters():
        assert p.grad is not None and torch.equal(p.grad, torch.zeros_like(p))
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in params)


class TupleField(nn.Module):
    """(x (3,), v (2, 2)) coupled nonlinearly, parameters on both parts."""

    def __init__(self):
        super().__init__()
        self.a = nn.Parameter(torch.tensor([0.5, -0.3, 0.8], **f64))
        self.B = nn.Parameter(torch.tensor([[0.2, -0.7], [0.4, 0.1]], **f64))

    def forward(self, t, state):
        x, v = state
        dx = -self.a * x + torch.sin(v.sum()) * torch.cos(t)
        dv = self.B @ v - 0.1 * v * x[:2, None]
        return dx, dv


@pytest.mark.parametrize("decreasing", [False, True])
def test_tuple_state_matches_direct_backprop(decreasing):
    func = TupleField()
    x0 = torch.tensor([1.0, 0.5, -0.4], **f64, requires_grad=True)
    v0 = torch.tensor([[0.3, -0.2], [0.6, 0.1]], **f64, requires_grad=True)
    t = torch.tensor([0.0, 0.6, 1.5], **f64)
    if decreasing:
        t = -t
    t.requires_grad_(True)
    g = torch.Generator().manual_seed(4)
    wx, wv = torch.randn(3, 3, **f64, generator=g), torch.randn(3, 2, 2, **f64, generator=g)
    inputs = (x0, v0, t, func.a, func.B)

    def loss(sol):
        xs, vs = sol
        assert xs.shape == (3, 3) and vs.shape == (3, 2, 2)
        return (xs * wx).sum() + (vs * wv).sum()

    adj = torch.autograd.grad(loss(odeint_adjoint(func, (x0, v0), t, rtol=1e-10, atol=1e-12)), inputs)
    direct = torch.autograd.grad(loss(odeint(func, (x0, v0), t, rtol=1e-10, atol=1e-12)), inputs)
    for a, d in zip(adj, direct):
        assert torch.allclose(a, d, rtol=1e-6, atol=1e-8), (a, d)


def test_single_output_time_is_the_identity():
    func = Logistic()
    y0 = torch.tensor([0.4, 0.9], **f64, requires_grad=True)
    t = torch.tensor([1.0], **f64, requires_grad=True)
    ys = odeint_adjoint(func, y0, t)
    assert torch.equal(ys, y0.detach()[None])
    gy, gt, gr = _grads(ys, (y0, t, func.r), torch.tensor([[2.0, 3.0]], **f64))
    assert torch.equal(gy, torch.tensor([2.0, 3.0], **f64))
    assert torch.equal(gt, torch.zeros(1, **f64)) and torch.equal(gr, torch.zeros((), **f64))


# ---------------------------------------------------------------------------------------------------
# seminorm
# ---------------------------------------------------------------------------------------------------


def test_seminorm_needs_fewer_backward_evaluations_for_the_same_gradients():
    """Kidger, Chen & Lyons (2021): the parameter-gradient channels need not control the step."""
    func = MLPField(hidden=32, seed=5)
    y0 = torch.randn(16, 2, **f64, generator=torch.Generator().manual_seed(6))
    t = torch.tensor([0.0, 2.0], **f64)
    params = list(func.net.parameters())
    results = {}
    for name, adj_opts in (("default", None), ("seminorm", {"norm": "seminorm"})):
        ys = odeint_adjoint(func, y0, t, rtol=1e-6, atol=1e-8, adjoint_options=adj_opts)
        func.nfe = 0
        grads = torch.autograd.grad(ys[-1].pow(2).sum(), params)
        results[name] = (func.nfe, grads)
    (nfe_d, g_d), (nfe_s, g_s) = results["default"], results["seminorm"]
    assert nfe_s < 0.9 * nfe_d, (nfe_s, nfe_d)
    for a, b in zip(g_d, g_s):
        assert torch.allclose(a, b, rtol=1e-3, atol=1e-5 * b.abs().max())


def test_custom_adjoint_norm_sees_torchdiffeq_layout():
    func = TupleField()
    seen = []

    def norm(aug):
        seen.append(tuple(a.shape for a in aug))
        return max(a.abs().max() for a in aug)

    x0 = torch.tensor([1.0, 0.5, -0.4], **f64, requires_grad=True)
    v0 = torch.zeros(2, 2, **f64)
    xs, _vs = odeint_adjoint(func, (x0, v0), torch.tensor([0.0, 1.0], **f64), adjoint_options={"norm": norm})
    xs.sum().backward()
    assert seen and seen[0] == ((), (3,), (2, 2), (3,), (2, 2), (3,), (2, 2))
    assert x0.grad is not None and x0.grad.abs().sum() > 0


# ---------------------------------------------------------------------------------------------------
# callbacks, options, events
# ---------------------------------------------------------------------------------------------------


class WithCallbacks(Logistic):
    def __init__(self):
        super().__init__()
        self.log = []

    def callback_step(self, t0, y0, dt):
        self.log.append(("forward", float(t0), float(dt)))

    def callback_step_adjoint(self, t0, y0, dt):
        self.log.append(("adjoint", float(t0), float(dt)))
        assert isinstance(y0, tuple) and len(y0) == 5  # (0, y, adj_y, dL/dr, dL/dK)


@pytest.mark.parametrize("method", ["dopri5", "rk4"])
def test_adjoint_callbacks_run_only_in_the_backward_solve(method):
    func = WithCallbacks()
    y0 = torch.tensor([0.3], **f64, requires_grad=True)
    t = torch.tensor([0.0, 1.0, 2.0], **f64)
    opts = {"step_size": 0.25} if method == "rk4" else None
    ys = odeint_adjoint(func, y0, t, method=method, options=opts)
    fwd = [e for e in func.log if e[0] == "forward"]
    assert fwd and len(fwd) == len(func.log)
    ys.sum().backward()
    adj = func.log[len(fwd):]
    assert adj and all(e[0] == "adjoint" for e in adj)
    starts = [e[1] for e in adj]
    assert max(starts) <= 2.0 + 1e-12 and min(starts) >= 0.0 - 1e-12
    assert starts[0] == pytest.approx(2.0)  # backward solve starts at t[-1]
    if method == "rk4":
        assert len(adj) == 8  # 2 segments of 4 steps of 0.25, in reverse


def test_jump_t_is_used_by_the_backward_solve():
    """A drift with a kink at t = 0.7: jump_t lets both solves step onto it (fewer backward NFE)."""

    class Kink(nn.Module):
        def __init__(self):
            super().__init__()
            self.c = nn.Parameter(torch.tensor(1.5, **f64))
            self.nfe = 0

        def forward(self, t, y):
            self.nfe += 1
            return torch.where(t < 0.7, -self.c * y, self.c * torch.sin(y))

    def run(options):
        func = Kink()
        y0 = torch.tensor([1.0, 0.5], **f64, requires_grad=True)
        ys = odeint_adjoint(func, y0, torch.tensor([0.0, 1.5], **f64), rtol=1e-8, atol=1e-10, options=options)
        func.nfe = 0
        g = torch.autograd.grad(ys[-1].sum(), (y0, func.c))
        return func.nfe, g

    nfe_plain, g_plain = run(None)
    nfe_jump, g_jump = run({"jump_t": torch.tensor([0.7], **f64)})
    assert nfe_jump < nfe_plain
    for a, b in zip(g_plain, g_jump):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-7)


def test_event_time_is_differentiable_and_matches_closed_form():
    """Logistic growth until y = c: t* = t0 + ln(c (K − y0) / (y0 (K − c))) / r; y(t*) = c does not move."""
    func = Logistic()
    y0 = torch.tensor(0.3, **f64, requires_grad=True)
    t = torch.tensor([0.2, 10.0], **f64, requires_grad=True)
    c = 1.2

    event_t, sol = odeint_adjoint(func, y0, t, event_fn=lambda tt, y: y - c, rtol=1e-10, atol=1e-12)
    assert sol.shape == (2,) and event_t.shape == ()
    exact_t = t[0] + torch.log(c * (func.K - y0) / (y0 * (func.K - c))) / func.r
    assert abs(float((event_t - exact_t).detach())) < 1e-7
    assert abs(float(sol[-1].detach()) - c) < 1e-7
    inputs = (y0, t, func.r, func.K)
    got = _grads(event_t, inputs, 1.0)
    want = _grads(exact_t, inputs, 1.0)
    for g, e in zip(got, want):
        assert torch.allclose(g, e, rtol=1e-6, atol=1e-8), (g, e)
    # y(t*) = c whatever the inputs: its gradient vanishes; sol[0] is y0 itself.
    event_t, sol = odeint_adjoint(func, y0, t, event_fn=lambda tt, y: y - c, rtol=1e-10, atol=1e-12)
    gy = _grads(sol, inputs, torch.tensor([0.0, 1.0], **f64))
    assert max(float(g.abs().max()) for g in gy) < 1e-6
    event_t, sol = odeint_adjoint(func, y0, t, event_fn=lambda tt, y: y - c)
    event_t.backward()  # torchdiffeq's usage
    assert y0.grad is not None and float(y0.grad) < 0


# ---------------------------------------------------------------------------------------------------
# argument errors
# ---------------------------------------------------------------------------------------------------


def test_plain_function_needs_adjoint_params():
    y0 = torch.tensor([1.0], **f64, requires_grad=True)
    t = torch.tensor([0.0, 1.0], **f64)
    with pytest.raises(ValueError, match="adjoint_params"):
        odeint_adjoint(lambda t, y: -y, y0, t)
    ys = odeint_adjoint(lambda t, y: -y, y0, t, adjoint_params=())
    ys[-1].sum().backward()
    assert y0.grad is not None and abs(float(y0.grad) - math.exp(-1.0)) < 1e-6


def test_bad_arguments_are_named():
    func = Logistic()
    y0 = torch.tensor([0.3], **f64)
    t = torch.tensor([0.0, 1.0], **f64)
    with pytest.raises(TypeError, match=r"adjoint_params\[1\]"):
        odeint_adjoint(func, y0, t, adjoint_params=(func.r, "K"))
    with pytest.raises(ValueError, match="adjoint_options"):
        odeint_adjoint(func, y0, t, method="rk4", options={"step_size": 0.1}, adjoint_method="dopri5")
    with pytest.raises(ValueError, match="seminorm"):
        odeint_adjoint(func, y0, t, adjoint_options={"norm": "semi"})
    with pytest.raises(TypeError, match="options"):
        odeint_adjoint(func, y0, t, options=[("step_size", 0.1)])
    with pytest.raises(TypeError, match="func"):
        odeint_adjoint(None, y0, t, adjoint_params=())
    with pytest.raises(ValueError, match="t must be"):
        odeint_adjoint(func, y0, t[None])


def test_per_tensor_tolerances_reach_the_backward_solve():
    """One tolerance per tuple member (torchdiffeq's form) gives the same gradients as the equal scalars."""
    func = TupleField()
    x0 = torch.tensor([1.0, 0.5, -0.4], **f64, requires_grad=True)
    v0 = torch.tensor([[0.3, -0.2], [0.6, 0.1]], **f64, requires_grad=True)
    t = torch.tensor([0.0, 0.9], **f64)

    def grads(**tols):
        xs, vs = odeint_adjoint(func, (x0, v0), t, **tols)
        return torch.autograd.grad(xs[-1].sum() + vs[-1].sum(), (x0, v0, func.a, func.B))

    scalar = grads(rtol=1e-8, atol=1e-10)
    per_tensor = grads(rtol=[1e-8, 1e-8], atol=(1e-10, 1e-10), adjoint_rtol=[1e-8, 1e-8])
    for a, b in zip(scalar, per_tensor):
        assert torch.allclose(a, b, rtol=1e-9, atol=1e-12)
    # Loosening one member changes the steps unless the other member's error ratio always decides
    # them (the norm is the larger per-member RMS): loosening each in turn must move the answer.
    moved = [max(float((a - b).abs().max()) for a, b in zip(scalar, grads(rtol=r, atol=r)))
             for r in ([1e-8, 1e-3], [1e-3, 1e-8])]
    assert max(moved) > 1e-9, moved


def test_adjoint_norm_is_reachable_and_used_from_the_output_like_torchdiffeq():
    """torchdiffeq's contract: a tensor state's output is the adjoint node's own output, whose
    ``grad_fn.adjoint_options['norm']`` takes ``(t, y, adj_y, *adj_params)`` and is what the backward solves
    call (replacing it takes effect); for a tuple state the node is two steps up and ``y`` is flat."""
    p = torch.tensor([0.7, -0.3], requires_grad=True)
    f = lambda t, y: p[0] * y + p[1]  # noqa: E731
    t = torch.tensor([0.0, 1.0])
    for seminorm in (False, True):
        kw = {"adjoint_options": {"norm": "seminorm"}} if seminorm else {}
        ys = odeint_adjoint(f, torch.full((2, 2), 1.0), t, adjoint_params=(p,), **kw)
        options = ys.grad_fn.adjoint_options
        default = options["norm"]
        seen = []

        def spy(arg, default=default, seen=seen):
            t_, y, adj_y, adj_p = arg
            assert t_.shape == () and y.shape == (2, 2) and adj_y.shape == (2, 2) and adj_p.shape == (2,)
            expected = max(y.pow(2).mean().sqrt(), adj_y.pow(2).mean().sqrt())
            if not seminorm:
                expected = max(expected, adj_p.pow(2).mean().sqrt())
            value = default(arg)
            assert torch.allclose(value, expected, rtol=1e-6, atol=0)
            seen.append(1)
            return value

        options["norm"] = spy
        ys.sum().backward()
        assert seen
    y0 = (torch.tensor(1.0), torch.tensor([[0.5, 0.5], [0.1, 0.1]]))
    ys = odeint_adjoint(lambda t, y: (p[0] * y[0], p[1] * y[1]), y0, t, adjoint_params=(p,))
    node = ys[0].grad_fn.next_functions[0][0].next_functions[0][0]
    shapes = []
    norm = node.adjoint_options["norm"]
    node.adjoint_options["norm"] = lambda arg: shapes.append(tuple(a.shape for a in arg)) or norm(arg)
    ys[0].sum().backward()
    assert shapes and shapes[0] == ((), (5,), (5,), (2,))
