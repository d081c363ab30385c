"""sdekit.odeint keeps torchdiffeq's contract by default; per-sample steps are an opt-in.

Covers what torchdiffeq users rely on: any state shape (0-d, 1-D, batched,
tuples), a 0-d ``t`` and the whole state in ``func``, decreasing times, the
adaptive options (first/min/max step, step_t, jump_t, norm, max_num_steps),
per-component tolerances, callbacks, terminal events (one system and per
sample), gradients by backprop through the solver, and per-sample fault
isolation and half precision in the adaptive engine.
"""

import math

import pytest
import torch

import sdekit
from sdekit.solvers import TABLEAUS, ToleranceNotMetError

f64 = dict(dtype=torch.float64)
ADAPTIVE = [n for n, t in TABLEAUS.items() if t.adaptive]
T = torch.tensor([0.0, 0.5, 1.0], **f64)


@pytest.mark.parametrize("method", ADAPTIVE)
@pytest.mark.parametrize("shape", [(), (3,), (2, 3)], ids=["0d", "1d", "2d"])
def test_every_state_shape_is_one_system(method, shape):
    seen = set()

    def f(t, y):
        seen.add((t.dim(), tuple(y.shape)))
        return -y * float(t.cos())  # float(t) works: t is 0-d

    y0 = torch.ones(shape, **f64)
    tol = 1e-9 if TABLEAUS[method].order >= 4 else 1e-6
    ys = sdekit.odeint(f, y0, T, method=method, rtol=tol, atol=tol)
    assert ys.shape == (3,) + shape
    assert seen == {(0, shape)}
    exact = torch.exp(-torch.sin(T)).reshape((3,) + (1,) * len(shape))
    assert (ys - exact).abs().max() <= 100 * tol


def test_rows_coupled_by_a_matrix_and_closures_over_batch_tensors_work_by_default():
    A = torch.tensor([[0.0, 1.0], [-1.0, 0.0]], **f64)
    scale = torch.tensor([[1.0], [2.0]], **f64)  # batch-shaped, closed over
    y0 = torch.tensor([[1.0, 0.0], [0.0, 1.0]], **f64)  # (2, 2): rows coupled through A @ y
    ys = sdekit.odeint(lambda t, y: A @ y * scale[0], y0, T, rtol=1e-10, atol=1e-10)
    exact = torch.stack([torch.linalg.matrix_exp(A * tk) @ y0 for tk in T])
    torch.testing.assert_close(ys, exact, rtol=1e-7, atol=1e-8)


def test_per_sample_closure_failure_explains_args():
    rates = torch.logspace(-1, 2, 8, **f64)

    def closing_over(t, y):
        return -rates[:, None] * y  # wrong under per_sample=True once rows finish

    with pytest.raises(RuntimeError, match="args="):
        sdekit.odeint(closing_over, torch.ones(8, 1, **f64), torch.tensor([0.0, 1.0], **f64), per_sample=True)
    ys = sdekit.odeint(lambda t, y, k: -k[:, None] * y, torch.ones(8, 1, **f64), torch.tensor([0.0, 1.0], **f64),
                       per_sample=True, args=(rates,), rtol=1e-8, atol=1e-10)
    torch.testing.assert_close(ys[-1, :, 0], torch.exp(-rates), rtol=1e-6, atol=1e-9)


def test_tuple_state_round_trip_and_mixed_norm():
    calls = []

    def f(t, y):
        a, b = y
        calls.append((a.shape, b.shape))
        return (-a, 2 * b)

    y0 = (torch.ones(2, **f64), torch.ones(3, 1, **f64))
    ya, yb = sdekit.odeint(f, y0, T, rtol=1e-9, atol=1e-9)
    assert ya.shape == (3, 2) and yb.shape == (3, 3, 1)
    torch.testing.assert_close(ya[-1], torch.full((2,), math.exp(-1), **f64), rtol=1e-7, atol=0)
    torch.testing.assert_close(yb[-1], torch.full((3, 1), math.exp(2), **f64), rtol=1e-7, atol=0)
    assert set(calls) == {(torch.Size([2]), torch.Size([3, 1]))}
    seen = []
    sdekit.odeint(f, y0, T, options={"norm": lambda s: seen.append(type(s)) or s[0].abs().max()})
    assert seen and set(seen) == {tuple}
    with pytest.raises(ValueError, match="returned 1 tensors"):
        sdekit.odeint(lambda t, y: (y[0],), y0, T)


def test_decreasing_times_match_the_forward_solution():
    f = lambda t, y: y * torch.cos(t)  # noqa: E731
    y0 = torch.tensor([1.0], **f64)
    fwd = sdekit.odeint(f, y0, T, rtol=1e-10, atol=1e-10)
    back = sdekit.odeint(f, fwd[-1], T.flip(0), rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(back.flip(0), fwd, rtol=1e-8, atol=1e-9)


def test_fixed_step_methods_step_on_the_t_grid_by_default():
    times = []

    def f(t, y):
        times.append(float(t))
        return -y

    t = torch.tensor([0.0, 0.25, 1.0], **f64)
    sdekit.odeint(f, torch.ones(1, **f64), t, method="euler")
    assert times == [0.0, 0.25]


def _ts_of_steps(**options):
    starts = []

    class F:
        def __call__(self, t, y):
            return -y

        def callback_accept_step(self, t0, y0, dt):
            starts.append((float(t0), float(dt)))

    sol = sdekit.odeint(F(), torch.ones(1, **f64), torch.tensor([0.0, 4.0], **f64), rtol=1e-6, atol=1e-8,
                        options=options, return_solution=True)
    return starts, sol


def test_step_options():
    auto, sol_auto = _ts_of_steps()
    first, sol_first = _ts_of_steps(first_step=0.01)
    assert first[0] == (0.0, 0.01)
    assert int(sol_first.nfe) == int(sol_first.steps) * 6 + 1  # no evaluation spent on choosing the first step
    capped, _ = _ts_of_steps(max_step=0.05)
    assert max(dt for _, dt in capped) <= 0.05 + 1e-15 and len(capped) >= 80
    coarse, _ = _ts_of_steps(min_step=1.0)
    assert min(dt for _, dt in coarse[:-1]) >= 1.0 and len(coarse) <= 5
    on, _ = _ts_of_steps(step_t=[1.2345])
    ends = [t0 + dt for t0, dt in on]
    assert any(abs(e - 1.2345) < 1e-15 for e in ends)
    assert len(auto) >= 5


def test_jump_t_saves_work_on_a_discontinuity():
    def make():
        count = [0]

        def f(t, y):
            count[0] += 1
            return -0.5 * y if t < 0.5 else y ** 2

        return f, count

    y0 = torch.tensor([1.0, 2.0], **f64)
    t = torch.tensor([0.0, 1.0], **f64)
    f1, plain = make()
    y_plain = sdekit.odeint(f1, y0, t, rtol=1e-6, atol=1e-6)
    f2, jump = make()
    y_jump = sdekit.odeint(f2, y0, t, rtol=1e-6, atol=1e-6, options={"jump_t": torch.tensor([0.5])})
    assert jump[0] < plain[0]
    y_half = y0 * math.exp(-0.25)
    exact = y_half / (1 - 0.5 * y_half)
    assert (y_jump[-1] - exact).abs().max() <= 1e-4 * exact.abs().max()


def test_per_component_tolerances():
    """Component 0 decays under a loose rtol, component 1 is constant under a tight one."""
    def f(t, y):
        return torch.stack([-y[0], torch.zeros_like(y[1])])

    y0 = torch.tensor([1.0, 1.0], **f64)
    loose = sdekit.odeint(f, y0, T, rtol=torch.tensor([1e-3, 1e-11]), atol=1e-12, return_solution=True)
    tight = sdekit.odeint(f, y0, T, rtol=1e-11, atol=1e-12, return_solution=True)
    err_loose = abs(float(loose.ys[-1, 0]) - math.exp(-1))
    err_tight = abs(float(tight.ys[-1, 0]) - math.exp(-1))
    assert err_tight <= 1e-9 < err_loose <= 1e-3
    assert int(loose.nfe) < int(tight.nfe) / 3


def test_callbacks_follow_torchdiffeq():
    counts = {"step": 0, "accept": 0, "reject": 0}

    class F(torch.nn.Module):
        def forward(self, t, y):
            return -50 * y

        def callback_step(self, t0, y0, dt):
            counts["step"] += 1

        def callback_accept_step(self, t0, y0, dt):
            counts["accept"] += 1

        def callback_reject_step(self, t0, y0, dt):
            counts["reject"] += 1

    sol = sdekit.odeint(F(), torch.ones(2, **f64), torch.tensor([0.0, 1.0], **f64), return_solution=True)
    assert counts["step"] == counts["accept"] + counts["reject"] == int(sol.steps + sol.rejected)
    with pytest.warns(UserWarning, match="callback_accept_step"):
        sdekit.odeint(F(), torch.ones(2, **f64), torch.tensor([0.0, 1.0], **f64), method="rk4")


def test_unused_options_warn():
    with pytest.warns(UserWarning, match="step_size"):
        sdekit.odeint(lambda t, y: -y, torch.ones(1), torch.tensor([0.0, 1.0]), options={"step_size": 0.1})


def _ball(g=9.81):
    return lambda t, y: torch.stack([y[1], torch.full_like(y[1], -g)])


@pytest.mark.parametrize("method", ["dopri5", "bosh3", "tsit5"])
def test_event_falling_ball(method):
    h0 = 10.0
    y0 = torch.tensor([h0, 0.0], **f64)
    t_ev, sol = sdekit.odeint(_ball(), y0, torch.tensor([0.0, 1.0], **f64), method=method,
                              event_fn=lambda t, y: y[0], rtol=1e-9, atol=1e-10)
    assert sol.shape == (2, 2)
    assert abs(float(t_ev) - math.sqrt(2 * h0 / 9.81)) <= 1e-7  # past t[1] = 1: t[1] only gives the direction
    assert abs(float(sol[-1, 0])) <= 1e-6


def test_event_per_sample_each_row_stops_at_its_own_time():
    heights = torch.tensor([1.0, 5.0, 20.0, 80.0], **f64)
    y0 = torch.stack([heights, torch.zeros_like(heights)], 1)
    calls = []

    def f(t, y):
        calls.append(y.shape[0])
        return torch.stack([y[:, 1], torch.full_like(y[:, 1], -9.81)], 1)

    t_ev, sol = sdekit.odeint(f, y0, torch.tensor([0.0, 1.0], **f64), event_fn=lambda t, y: y[:, 0],
                              per_sample=True, rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(t_ev, torch.sqrt(2 * heights / 9.81), rtol=0, atol=1e-7)
    assert sol[-1, :, 0].abs().max() <= 1e-6
    assert min(calls) < 4  # rows that landed stopped costing evaluations


@pytest.mark.parametrize("method", ADAPTIVE)
def test_gradients_through_the_solver_match_the_closed_form(method):
    """y' = -k y + sin s: dy(t)/dy0 = e^{-kt}; dy/dk by the sensitivity equation's closed form; dy/dt = f(t, y)."""
    tol = 1e-10 if TABLEAUS[method].order >= 4 else 1e-7
    y0 = torch.tensor([0.7, -0.3], **f64, requires_grad=True)
    t = torch.tensor([0.0, 0.4, 1.0], **f64, requires_grad=True)
    k = torch.tensor(0.8, **f64, requires_grad=True)
    ys = sdekit.odeint(lambda s, y: -k * y + torch.sin(s), y0, t, method=method, rtol=tol, atol=tol)
    g_y0, g_t, g_k = torch.autograd.grad(ys[-1].sum(), (y0, t, k))
    kk, tt = 0.8, 1.0
    particular = (kk * math.sin(tt) - math.cos(tt)) / (1 + kk**2)  # y_p(t) of y' = -k y + sin t
    yp0 = -1 / (1 + kk**2)
    exact = [math.exp(-kk * tt) * (v - yp0) + particular for v in (0.7, -0.3)]
    torch.testing.assert_close(ys[-1].detach(), torch.tensor(exact, **f64), rtol=0, atol=1e3 * tol)
    torch.testing.assert_close(g_y0, torch.full((2,), math.exp(-kk * tt), **f64), rtol=0, atol=1e3 * tol)
    f_end = sum(-kk * e + math.sin(tt) for e in exact)
    torch.testing.assert_close(g_t[-1], torch.tensor(f_end, **f64), rtol=0, atol=1e3 * tol)
    h = 1e-6  # dy/dk by central differences of the closed form
    def y_of(kv):
        p = (kv * math.sin(tt) - math.cos(tt)) / (1 + kv**2)
        return sum(math.exp(-kv * tt) * (v + 1 / (1 + kv**2)) + p for v in (0.7, -0.3))
    assert abs(float(g_k) - (y_of(kk + h) - y_of(kk - h)) / (2 * h)) <= 1e3 * tol + 1e-8


@pytest.mark.parametrize("method", ADAPTIVE)
def test_gradcheck_through_the_solver(method):
    """gradcheck on a fixed step sequence (first_step = max_step = 0.06, no rejections).

    With free step control, a 1e-6 perturbation may change the number of
    steps, a jump of the size of the local error; the step sizes themselves
    are not differentiated (as in torchdiffeq), so gradcheck needs a step
    sequence that does not jump.
    """
    y0 = torch.tensor([0.7, -0.3], **f64, requires_grad=True)
    t = torch.tensor([0.0, 0.4, 1.0], **f64, requires_grad=True)
    k = torch.tensor(0.8, **f64, requires_grad=True)
    opts = {"first_step": 0.06, "max_step": 0.06}

    def run(y0, t, k):
        return sdekit.odeint(lambda s, y: -k * y + torch.sin(s), y0, t, method=method, rtol=1e-2, atol=1e-2,
                             options=opts)

    assert torch.autograd.gradcheck(run, (y0, t, k), atol=1e-6, rtol=1e-4)


def test_one_bad_row_does_not_take_the_batch_down():
    """A NaN derivative in row 3 and a finite blow-up (y' = y², y0 = 2: blows up at t = 0.5) in row 5."""
    y0 = torch.ones(16, 1, **f64)
    y0[5] = 2.0

    def f(t, y, idx):
        out = torch.where(idx[:, None] == 5, y ** 2, -y)
        return torch.where(idx[:, None] == 3, torch.full_like(y, math.nan), out)

    idx = torch.arange(16)
    with pytest.raises(ToleranceNotMetError, match="non-finite derivative: 1 of 16") as info:
        sdekit.odeint(f, y0, T, per_sample=True, args=(idx,), rtol=1e-8, atol=1e-10)
    err = info.value
    assert {f["sample"]: f["reason"] for f in err.failures} == {3: "non-finite derivative", 5: "step size collapsed"}
    assert abs(err.failures[1]["t"] - 0.5) < 1e-3
    good = [i for i in range(16) if i not in (3, 5)]
    clean = sdekit.odeint(lambda t, y: -y, torch.ones(14, 1, **f64), T, per_sample=True, rtol=1e-8, atol=1e-10)
    assert torch.equal(err.solution.ys[:, good], clean)  # bitwise what they get alone
    assert int(err.solution.nfe[3]) <= 8  # the NaN row stops at its first step attempt
    assert int(err.solution.steps[5]) < 2000  # the blow-up stops at round-off, not after max_steps attempts
    assert torch.isnan(err.solution.ys[1:, 3]).all() and torch.isnan(err.solution.ys[2, 5]).all()


def test_whole_system_blow_up_names_the_collapse():
    with pytest.raises(ToleranceNotMetError, match="step size collapsed"):
        sdekit.odeint(lambda t, y: y ** 2, torch.tensor([2.0], **f64), torch.tensor([0.0, 1.0], **f64))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_adaptive_solves_finish(dtype):
    y0 = torch.ones(4, 3, dtype=dtype)
    for per_sample in (False, True):
        sol = sdekit.odeint(lambda t, y: -y * torch.cos(t), y0, T, per_sample=per_sample, rtol=1e-3, atol=1e-4,
                            return_solution=True)
        assert sol.ys.dtype == dtype
        exact = torch.exp(-torch.sin(T.float()))[:, None, None]
        assert (sol.ys.float() - exact).abs().max() <= 4 * torch.finfo(dtype).eps
        assert int(sol.nfe.max()) < 200


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_probability_flow_and_likelihood_finish(dtype):
    """sample(method="ode") and log_likelihood on a half-precision model: float32 inside, results in dtype."""
    from sdekit.testing import GaussianMixture

    sde = sdekit.VPSDE()
    eye = torch.eye(2, dtype=torch.float64)
    mix = GaussianMixture(torch.tensor([0.5, 0.5], dtype=torch.float64),
                          torch.tensor([[-1.0, 0.0], [1.0, 0.0]], dtype=torch.float64), torch.stack([0.3 * eye] * 2))

    def score(x, t):
        return mix.score(x.double(), sde, t.double()).to(x.dtype)

    g = torch.Generator().manual_seed(0)
    out = sdekit.sample(score, sde, (8, 2), method="ode", rtol=1e-3, atol=1e-3, generator=g, dtype=dtype)
    assert out.x.dtype == dtype and bool(torch.isfinite(out.x).all())
    assert int(out.nfe.max()) < 500
    x, _ = mix.sample(8, generator=g)
    ll = sdekit.log_likelihood(score, sde, x.to(dtype), trace="exact", rtol=1e-3, atol=1e-3)
    ref = sdekit.log_likelihood(score, sde, x.to(dtype).double(), trace="exact", rtol=1e-6, atol=1e-6)
    assert bool(torch.isfinite(ll.log_prob).all())
    assert (ll.log_prob.double() - ref.log_prob).abs().max() <= 0.05 * ref.log_prob.abs().max() + 0.05
