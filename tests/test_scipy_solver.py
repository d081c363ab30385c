"""``solve_scipy``: the ``scipy_solver`` wrapper over ``scipy.integrate.solve_ivp``.

Accuracy is checked against closed forms (``exp(-t)``, ``matrix_exp``) at
tight tolerances for every solver; the wrapper's contract (shapes, dtypes,
per-component ``atol``, step options, failures, no autograd, the lazy scipy
import) is checked directly.
"""

import subprocess
import sys
import warnings

import pytest
import torch

from sdekit.solvers.adaptive import ToleranceNotMetError
from sdekit.solvers.scipy_solver import COMPLEX_SOLVERS, SCIPY_SOLVERS, ScipySolution, solve_scipy

f64 = {"dtype": torch.float64}
TIGHT = {"rtol": 1e-10, "atol": 1e-12}


def _stable_matrix(d=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    M = torch.randn(d, d, generator=g, **f64)
    return (M - M.T) - 0.3 * torch.eye(d, **f64)


@pytest.mark.parametrize("solver", SCIPY_SOLVERS)
def test_scalar_decay_0d(solver):
    """y' = -y with a 0-d state: (len(t),) output, y0 kept exactly, error near the tolerance, nfe counted."""
    calls = []

    def func(t, y):
        calls.append((t.shape, t.dtype, y.shape, y.dtype))
        return -y

    y0 = torch.tensor(1.5, **f64)
    t = torch.tensor([0.0, 0.3, 1.0, 2.5], **f64)
    res = solve_scipy(func, y0, t, solver=solver, **TIGHT)
    assert isinstance(res, ScipySolution)
    ys, nfe = res
    assert ys.shape == (4,) and ys.dtype == torch.float64 and not ys.requires_grad
    assert ys[0].item() == 1.5
    err = (ys - 1.5 * torch.exp(-t)).abs().max().item()
    assert err < 1e-7, f"{solver}: error {err:.2e}"
    assert nfe == len(calls) > 0
    assert set(calls) == {(torch.Size([]), torch.float64, torch.Size([]), torch.float64)}


@pytest.mark.parametrize("solver", SCIPY_SOLVERS)
def test_linear_2d_state_against_expm(solver):
    """y' = A y with a (3, 2) state: each column follows matrix_exp(tA) y0; looser tolerances give larger errors."""
    A = _stable_matrix()
    y0 = torch.arange(1.0, 7.0, **f64).reshape(3, 2) / 3
    t = torch.linspace(0.0, 1.5, 7, **f64)
    exact = torch.stack([torch.linalg.matrix_exp(s * A) @ y0 for s in t])

    def func(t, y):
        assert y.shape == (3, 2)
        return A @ y

    rtol = 1e-8 if solver == "RK23" else 1e-10  # third order: 1e-10 would take ~10⁴ evaluations
    ys, _ = solve_scipy(func, y0, t, solver=solver, rtol=rtol, atol=rtol / 100)
    assert ys.shape == (7, 3, 2)
    err_tight = (ys - exact).abs().max().item()
    assert err_tight < 1000 * rtol, f"{solver}: error {err_tight:.2e}"
    ys_loose, _ = solve_scipy(func, y0, t, solver=solver, rtol=1e-4, atol=1e-6)
    err_loose = (ys_loose - exact).abs().max().item()
    assert err_loose > 10 * err_tight and err_loose < 1e-2, (solver, err_loose, err_tight)


@pytest.mark.parametrize("solver", SCIPY_SOLVERS)
def test_float32_state(solver):
    """float32 y0: func sees float32 tensors, the output is float32 (scipy itself integrates in float64)."""
    seen = set()

    def func(t, y):
        seen.add((t.dtype, y.dtype))
        return -2.0 * y

    y0 = torch.tensor([1.0, -0.5])
    t = torch.tensor([0.0, 0.5, 1.0])
    ys, _ = solve_scipy(func, y0, t, solver=solver, rtol=1e-6, atol=1e-8)
    assert ys.dtype == torch.float32 and ys.shape == (3, 2)
    assert seen == {(torch.float32, torch.float32)}
    assert torch.allclose(ys, y0 * torch.exp(-2.0 * t)[:, None], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("solver", SCIPY_SOLVERS)
def test_atol_tensor_is_per_component(solver):
    """A tiny, fast component is accurate only when its own atol is tiny: the (numel,) atol tensor reaches scipy.

    With a scalar atol of 1e-9 the 1e-9-sized component does not enter the error
    norm, so the slow component's large steps leave it inaccurate.
    """
    rates = torch.tensor([0.2, 3.0], **f64)
    y0 = torch.tensor([1.0, 1e-9], **f64)
    t = torch.tensor([0.0, 2.0], **f64)
    exact = y0 * torch.exp(-2.0 * rates)

    def rel_err_small(atol):
        ys, _ = solve_scipy(lambda t, y: -rates * y, y0, t, solver=solver, rtol=1e-8, atol=atol)
        return abs(ys[-1, 1].item() - exact[1].item()) / exact[1].item()

    per_component = rel_err_small(torch.tensor([1e-9, 1e-20], **f64))
    scalar = rel_err_small(1e-9)
    assert per_component < 1e-5, (solver, per_component)
    assert scalar > 10 * per_component, (solver, scalar, per_component)


@pytest.mark.parametrize("solver", SCIPY_SOLVERS)
def test_blow_up_raises(solver):
    """y' = y² blows up at t = 1: every solver fails with ToleranceNotMetError (LSODA through the stall guard)."""
    y0 = torch.tensor([1.0], **f64)
    with pytest.raises(ToleranceNotMetError, match=rf"scipy_solver \({solver}\)"):
        solve_scipy(lambda t, y: y * y, y0, torch.tensor([0.0, 0.5, 2.0], **f64), solver=solver, rtol=1e-3, atol=1e-3)


def test_nan_derivative_raises():
    """LSODA reports success on a NaN derivative; the wrapper does not return NaN."""
    def func(t, y):
        return -y if t < 0.3 else y * float("nan")

    with pytest.raises(ToleranceNotMetError, match="non-finite|failed"):
        solve_scipy(func, torch.ones(2, **f64), torch.tensor([0.0, 1.0], **f64), solver="LSODA")


def test_func_errors_propagate():
    def func(t, y):
        raise KeyError("boom")

    for solver in ("RK45", "LSODA"):
        with pytest.raises(KeyError, match="boom"):
            solve_scipy(func, torch.ones(2, **f64), torch.tensor([0.0, 1.0], **f64), solver=solver)


def test_complex_states():
    """y' = i y → exp(i t) with the complex-capable solvers; Radau and LSODA refuse with a TypeError."""
    y0 = torch.tensor([1.0 + 0.0j, 0.5j], dtype=torch.complex128)
    t = torch.tensor([0.0, 1.0, 2.0], **f64)
    for solver in COMPLEX_SOLVERS:
        seen = set()

        def func(t, y, seen=seen):
            seen.add((t.dtype, y.dtype))
            return 1j * y

        ys, _ = solve_scipy(func, y0, t, solver=solver, **TIGHT)
        assert ys.dtype == torch.complex128
        assert seen == {(torch.float64, torch.complex128)}
        exact = y0 * torch.exp(1j * t.to(torch.complex128))[:, None]
        assert (ys - exact).abs().max().item() < 1e-7, solver
    for solver in ("Radau", "LSODA"):
        with pytest.raises(TypeError, match="complex"):
            solve_scipy(lambda t, y: 1j * y, y0, t, solver=solver)


def test_no_autograd_warns_and_detaches():
    y0 = torch.tensor([1.0, 2.0], **f64, requires_grad=True)
    t = torch.tensor([0.0, 1.0], **f64)
    with pytest.warns(UserWarning, match="odeint_adjoint"):
        ys, _ = solve_scipy(lambda t, y: -y, y0, t, solver="RK45")
    assert not ys.requires_grad
    assert torch.allclose(ys[-1], y0.detach() * torch.exp(torch.tensor(-1.0, **f64)), rtol=1e-6)

    w = torch.tensor(0.5, **f64, requires_grad=True)  # a parameter of func
    with pytest.warns(UserWarning, match="without gradient"):
        ys, _ = solve_scipy(lambda t, y: -w * y, y0.detach(), t, solver="RK45")
    assert not ys.requires_grad

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with torch.no_grad():  # as inside odeint_adjoint's forward: no warning
            solve_scipy(lambda t, y: -w * y, y0, t, solver="RK45")
        solve_scipy(lambda t, y: -y, y0.detach(), t, solver="RK45")


def test_func_may_compute_vjps_inside():
    """func is not called under no_grad: an adjoint's augmented dynamics can differentiate inside it."""
    w = torch.tensor(0.7, **f64, requires_grad=True)

    def func(t, y):
        with torch.enable_grad():
            x = y.detach().requires_grad_(True)
            f = -w * x**3 / 3
            (g,) = torch.autograd.grad(f.sum(), x)  # = -w x²
        return g

    with torch.no_grad():
        ys, _ = solve_scipy(func, torch.tensor(1.0, **f64), torch.tensor([0.0, 1.0], **f64), solver="DOP853", **TIGHT)
    assert abs(ys[-1].item() - 1.0 / (1.0 + 0.7)) < 1e-8  # y' = -w y², y(1) = 1 / (1 + w)


def test_step_options():
    y0, t = torch.tensor([1.0], **f64), torch.tensor([0.0, 2.0], **f64)
    _, nfe_free = solve_scipy(lambda t, y: -y, y0, t, solver="RK45")
    _, nfe_capped = solve_scipy(lambda t, y: -y, y0, t, solver="RK45", max_step=0.01)
    assert nfe_capped >= 6 * 200 > 10 * nfe_free  # ≥ 200 steps of 6 new evaluations
    with pytest.warns(UserWarning, match="min_step is ignored"):
        solve_scipy(lambda t, y: -y, y0, t, solver="RK45", min_step=1e-3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ys, _ = solve_scipy(lambda t, y: -y, y0, t, solver="LSODA", min_step=1e-6, max_step=0.5)
    assert abs(ys[-1].item() - torch.exp(torch.tensor(-2.0)).item()) < 1e-6


def test_bad_input():
    y0, t = torch.ones(2, **f64), torch.tensor([0.0, 1.0], **f64)
    with pytest.raises(ValueError, match="solver must be one of"):
        solve_scipy(lambda t, y: -y, y0, t, solver="rk4")
    with pytest.raises(ValueError, match="strictly increasing"):
        solve_scipy(lambda t, y: -y, y0, torch.tensor([1.0, 0.0], **f64))
    with pytest.raises(ValueError, match=r"shape \(2,\)"):
        solve_scipy(lambda t, y: -y, y0, t, atol=torch.full((3,), 1e-9, **f64))
    with pytest.raises(ValueError, match="rtol"):
        solve_scipy(lambda t, y: -y, y0, t, rtol=-1.0)
    with pytest.raises(ValueError, match="max_step"):
        solve_scipy(lambda t, y: -y, y0, t, max_step=0.0)
    with pytest.raises(ValueError, match="expected y0's shape"):
        solve_scipy(lambda t, y: torch.ones(3, **f64), y0, t)
    with pytest.raises(TypeError, match="floating or complex"):
        solve_scipy(lambda t, y: -y, torch.ones(2, dtype=torch.int64), t)


def test_single_time_returns_y0():
    y0 = torch.randn(2, 3, **f64)
    ys, nfe = solve_scipy(lambda t, y: -y, y0, torch.tensor([0.5], **f64))
    assert ys.shape == (1, 2, 3) and torch.equal(ys[0], y0) and nfe == 0


def test_import_sdekit_does_not_import_scipy():
    code = "import sys, sdekit, sdekit.solvers.scipy_solver; print('scipy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False", out.stdout + out.stderr
