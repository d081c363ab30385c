"""sdekit.odeint: outputs at requested times, per-sample work, torchdiffeq parity, bad input."""

import math

import pytest
import torch

import sdekit
from sdekit.solvers import I_CONTROLLER, ToleranceNotMetError
from sdekit.testing.ode_problems import LOGISTIC, linear_system

f64 = dict(dtype=torch.float64)
ADAPTIVE = ["bosh3", "dopri5", "tsit5"]
FIXED = ["euler", "midpoint", "heun", "rk4"]
RATES = torch.logspace(-1, 2, 16, **f64)  # decay rates 0.1 … 100


@pytest.mark.parametrize("method", ADAPTIVE)
def test_dense_output_at_many_times_meets_tolerance(method):
    """y' = y cos t, y = exp(sin t), 101 outputs on [0, 10], forwards and backwards."""
    tol = 1e-8
    t = torch.linspace(0, 10, 101, **f64)
    y0 = torch.ones(3, 2, **f64)
    ys = sdekit.odeint(lambda t, y: y * torch.cos(t), y0, t, method=method, rtol=tol, atol=tol)
    exact = torch.exp(torch.sin(t))[:, None, None]
    assert ys.shape == (101, 3, 2)
    assert (ys - exact).abs().max() <= 100 * tol  # global error: a modest multiple of the local tolerance
    back = sdekit.odeint(lambda t, y: y * torch.cos(t), ys[-1], t.flip(0), method=method, rtol=tol, atol=tol)
    assert (back - exact.flip(0)).abs().max() <= 200 * tol


@pytest.mark.parametrize("method", ADAPTIVE)
@pytest.mark.parametrize("tol", [1e-5, 1e-8])
def test_error_shrinks_with_tolerance_on_linear_system(method, tol):
    A, func = linear_system()
    y0 = torch.eye(A.shape[0], **f64)  # each row a sample
    t = torch.tensor([0.0, 1.0, 2.5, 4.0], **f64)
    ys = sdekit.odeint(func, y0, t, method=method, rtol=tol, atol=tol)
    for k, tk in enumerate(t.tolist()):
        exact = y0 @ torch.linalg.matrix_exp(tk * A).T
        assert (ys[k] - exact).abs().max() <= 100 * tol


@pytest.mark.parametrize("method", FIXED)
def test_fixed_step_outputs_land_on_requested_times(method):
    t = torch.tensor([0.0, 0.3, 1.0], **f64)
    sol = sdekit.odeint(lambda t, y: -y, torch.ones(2, 1, **f64), t, method=method, step_size=0.1,
                        per_sample=True, return_solution=True)
    order = sdekit.solvers.TABLEAUS[method].order
    assert (sol.ys[:, :, 0] - torch.exp(-t)[:, None]).abs().max() <= 0.1**order
    assert sol.steps.tolist() == [10, 10]  # 3 + 7 steps: each interval split into equal steps ≤ 0.1
    assert sol.nfe.tolist() == [10 * sdekit.solvers.TABLEAUS[method].stages] * 2


def test_mixed_decay_batch_work_is_per_sample():
    """Decay rates 0.1…100: each sample pays only its own evaluations (torchode: every sample pays the worst)."""
    rows = []

    def f(t, y, k):
        rows.append(y.shape[0])
        return -k[:, None] * y

    y0 = torch.ones(len(RATES), 1, **f64)
    t = torch.tensor([0.0, 1.0], **f64)
    sol = sdekit.odeint(f, y0, t, rtol=1e-6, atol=1e-6, args=(RATES,), per_sample=True, return_solution=True)
    torch.testing.assert_close(sol.ys[-1, :, 0], torch.exp(-RATES), rtol=1e-4, atol=1e-6)
    assert sum(rows) == int(sol.nfe.sum())             # evaluations counted exactly
    assert sum(rows) < 0.6 * len(RATES) * int(sol.nfe.max())  # far below "everyone pays the slowest"
    assert bool((sol.nfe[1:] >= sol.nfe[:-1]).all())


def test_fewer_total_evaluations_than_torchdiffeq_on_mixed_batch():
    torchdiffeq = pytest.importorskip("torchdiffeq")
    y0 = torch.ones(len(RATES), 1, **f64)
    t = torch.tensor([0.0, 1.0], **f64)
    calls = []

    def f(t, y):
        calls.append(y.shape[0])
        return -RATES[:, None] * y

    torchdiffeq.odeint(f, y0, t, rtol=1e-6, atol=1e-6, method="dopri5")
    theirs = sum(calls)
    ours = sdekit.odeint(lambda t, y, k: -k[:, None] * y, y0, t, rtol=1e-6, atol=1e-6, args=(RATES,),
                         per_sample=True, return_solution=True)
    assert int(ours.nfe.sum()) < theirs


@pytest.mark.parametrize("method", ["dopri5"])
def test_agrees_with_torchdiffeq(method):
    """Same ODE, same tolerances: both within tolerance of the closed form, hence of each other.

    (bosh3 is not compared: torchdiffeq 0.2.5's bosh3 misses this closed form by
    5e-5 at rtol = atol = 1e-8, where ours stays within 2.1e-7.)
    """
    torchdiffeq = pytest.importorskip("torchdiffeq")
    tol = 1e-8
    t = torch.linspace(0, LOGISTIC.t1, 11, **f64)
    y0 = torch.tensor([[1.0], [5.0], [30.0]], **f64)

    def f(t, y):
        return y / 4 * (1 - y / 20)

    exact = 20 / (1 + (20 / y0.T - 1) * torch.exp(-t[:, None] / 4))  # (11, 3)
    theirs = torchdiffeq.odeint(f, y0, t, rtol=tol, atol=tol, method=method)[..., 0]
    ours = sdekit.odeint(f, y0, t, rtol=tol, atol=tol, method=method, per_sample=True)[..., 0]
    shared = sdekit.odeint(f, y0, t, rtol=tol, atol=tol, method=method, controller=I_CONTROLLER)[..., 0]
    bound = 100 * tol * exact.abs().clamp_min(1)
    for name, ys in (("torchdiffeq", theirs), ("sdekit", ours), ("sdekit shared", shared)):
        assert bool(((ys - exact).abs() <= bound).all()), name
    assert bool(((ours - theirs).abs() <= 2 * bound).all())


def test_fixed_step_matches_torchdiffeq_bitwise_close():
    """Fixed-grid methods with the same grid: the same arithmetic up to summation order."""
    torchdiffeq = pytest.importorskip("torchdiffeq")
    t = torch.linspace(0, 2, 5, **f64)
    y0 = torch.ones(2, 3, **f64)
    f = lambda t, y: y * torch.cos(t)  # noqa: E731
    for method in ("euler", "midpoint"):
        theirs = torchdiffeq.odeint(f, y0, t, method=method, options={"step_size": 0.05})
        ours = sdekit.odeint(f, y0, t, method=method, options={"step_size": 0.05})
        torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-12)


def test_shared_step_mode_matches_torchdiffeq_semantics():
    """The default (torchdiffeq's contract): t is a 0-d tensor, y has y0's shape, the whole tensor is one system."""
    seen = []

    def f(t, y):
        seen.append((t.dim(), tuple(y.shape)))
        return -y

    for shape in [(4,), (3, 4)]:
        seen.clear()
        y0 = torch.ones(shape, **f64)
        ys = sdekit.odeint(f, y0, torch.tensor([0.0, 0.5, 1.0], **f64))
        assert ys.shape == (3,) + shape
        assert set(seen) == {(0, shape)}
        torch.testing.assert_close(ys[-1], torch.full(shape, math.exp(-1), **f64), rtol=1e-7, atol=0)


def test_per_sample_time_broadcasts_against_state():
    shapes = []

    def f(t, y):
        shapes.append(tuple(t.shape))
        return torch.cos(t) * y  # works because t is (b, 1, 1)

    ys = sdekit.odeint(f, torch.ones(2, 3, 4, **f64), torch.tensor([0.0, 1.0], **f64), per_sample=True)
    assert ys.shape == (2, 2, 3, 4)
    assert all(len(s) == 3 and s[1:] == (1, 1) for s in shapes)


def test_single_time_returns_initial_state():
    y0 = torch.randn(3, 2, **f64)
    assert torch.equal(sdekit.odeint(lambda t, y: -y, y0, torch.tensor([0.5]))[0], y0)


def test_float32_state():
    ys = sdekit.odeint(lambda t, y: -y, torch.ones(4, 5), torch.tensor([0.0, 1.0]), rtol=1e-5, atol=1e-5)
    assert ys.dtype == torch.float32
    assert (ys[-1] - math.exp(-1)).abs().max() <= 10 * 1e-5


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        (dict(method="rk45"), ValueError, "method"),
        (dict(method="rk4", step_size=0.0), ValueError, "step_size"),
        (dict(method="rk4", step_size=0.0, per_sample=True), ValueError, "step_size"),
        (dict(options={"first_step": -0.1}), ValueError, "first_step"),
        (dict(options={"min_step": 2.0, "max_step": 1.0}), ValueError, "min_step"),
        (dict(args=(torch.ones(2),)), ValueError, "per_sample=True"),
        (dict(rtol=-1.0), ValueError, "rtol"),
        (dict(max_steps=0), ValueError, "max_steps"),
        (dict(options={"max_num_steps": 0}), ValueError, "max_num_steps"),
        (dict(max_steps=0, per_sample=True), ValueError, "max_steps"),
        (dict(t=torch.tensor([0.0, 1.0, 0.5])), ValueError, "strictly increasing or strictly decreasing"),
        (dict(t=torch.tensor([0.0, float("nan")])), ValueError, "t must be finite"),
        (dict(t=torch.zeros(2, 2)), ValueError, "1-D"),
        (dict(y0=torch.tensor([[float("inf")]])), ValueError, "y0 must be finite"),
        (dict(func=lambda t, y: y.sum(1)), ValueError, "func returned shape"),
    ],
)
def test_bad_input(kwargs, exc, match):
    args = dict(func=lambda t, y: -y, y0=torch.ones(2, 1), t=torch.tensor([0.0, 1.0]))
    args.update(kwargs)
    func, y0, t = args.pop("func"), args.pop("y0"), args.pop("t")
    with pytest.raises(exc, match=match):
        sdekit.odeint(func, y0, t, **args)


def test_tolerance_not_met_names_max_steps():
    with pytest.raises(ToleranceNotMetError, match="max_steps=5"):
        sdekit.odeint(lambda t, y: -1000 * y, torch.ones(2, 1, **f64), torch.tensor([0.0, 10.0]), max_steps=5)
    with pytest.raises(ToleranceNotMetError, match="max_steps=5"):
        sdekit.odeint(lambda t, y: -1000 * y, torch.ones(2, 1, **f64), torch.tensor([0.0, 10.0]), max_steps=5,
                      per_sample=True)


def test_fused_stage_combination_matches_pytorch_path():
    """The Triton rk_combine (interpreted on the CPU) drives the adaptive loop to the same steps and answer."""
    import sdekit.kernels as K

    if not (K.HAS_TRITON and (K.INTERPRETED or torch.cuda.is_available())):
        pytest.skip("needs Triton with a CUDA GPU, or TRITON_INTERPRET=1 set before sdekit is imported")
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    rates = torch.logspace(-1, 1, 5, device=dev)
    y0 = torch.ones(5, 3, device=dev)
    t_eval = torch.tensor([0.0, 0.5, 1.0], device=dev).expand(5, -1)
    runs = {b: sdekit.solve_adaptive(lambda t, y, k: -k[:, None] * y, y0, None, None, rtol=1e-5, atol=1e-5,
                                     args=(rates,), t_eval=t_eval, backend=b) for b in ("torch", "triton")}
    assert torch.equal(runs["torch"].nfe, runs["triton"].nfe)
    torch.testing.assert_close(runs["triton"].ys, runs["torch"].ys, rtol=1e-6, atol=1e-6)
    exact = torch.exp(-rates[None, :, None] * t_eval[0][:, None, None])
    assert (runs["triton"].ys - exact).abs().max() <= 1e-4
