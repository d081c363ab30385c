"""odeint's whole-state loop (sdekit/solvers/adaptive_whole.py): the per-sample engine's method, lean.

The loop keeps time and step control on the host in float64 and combines stages with one ``addmv``
(no autograd graph) or one fused multiply-add per weight (with one).  Its results must be the per-sample
engine's for the same system up to rounding, with the same step counts, on both stage paths.
"""

import math

import pytest
import torch

import sdekit
from sdekit.solvers.adaptive import StepOptions, ToleranceNotMetError, solve_adaptive
from sdekit.solvers.adaptive_whole import solve_whole
from sdekit.solvers.controller import PI_CONTROLLER
from sdekit.solvers.tableaus import TABLEAUS

F64 = {"dtype": torch.float64}
RATES = torch.linspace(0.5, 3.0, 6, **F64)


def rhs(t, y):
    return -RATES * y + torch.sin(3 * t) * y.roll(1)


def per_sample_engine(y0, t, method, **kw):
    """The same system through solve_adaptive with a batch of one (the engine odeint used before)."""
    return solve_adaptive(lambda s, y: rhs(s[0], y[0])[None], y0[None], None, None, t_eval=t[None],
                          tableau=TABLEAUS[method], backend="torch", **kw)


@pytest.mark.parametrize("method", ["dopri5", "bosh3", "tsit5", "fehlberg2", "adaptive_heun", "dopri8"])
@pytest.mark.parametrize("grad", [False, True])
def test_the_whole_state_loop_is_the_per_sample_engine(method, grad):
    y0 = torch.linspace(-1.0, 2.0, 6, **F64).requires_grad_(grad)
    t = torch.linspace(0.0, 4.0, 9, **F64)
    tol = 1e-7 if TABLEAUS[method].order >= 4 else 1e-5
    sol = sdekit.odeint(rhs, y0, t, rtol=tol, atol=tol / 100, method=method, return_solution=True)
    ref = per_sample_engine(y0.detach(), t, method, rtol=tol, atol=tol / 100)
    # rounding only: 100 times below the absolute tolerance (a wrong weight or step errs by ~tol)
    torch.testing.assert_close(sol.ys.detach(), ref.ys[:, 0], rtol=0, atol=tol / 1e4)
    for name in ("nfe", "steps", "rejected"):
        assert torch.equal(getattr(sol, name), getattr(ref, name)), name
    assert sol.ys.requires_grad == grad


def test_both_stage_paths_give_the_same_solution_and_gradients_match_the_closed_form():
    """y' = −k y: the addmv path (no graph) and the multiply-add path (graph) agree, and d y(T)/dk = −T y(T)."""
    k = torch.tensor(0.8, **F64)
    y0 = torch.linspace(0.5, 1.5, 4, **F64)
    t = torch.tensor([0.0, 0.7, 2.0], **F64)
    plain = sdekit.odeint(lambda s, y: -k * y, y0, t, rtol=1e-10, atol=1e-12)
    kg = k.clone().requires_grad_(True)
    tracked = sdekit.odeint(lambda s, y: -kg * y, y0, t, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(tracked.detach(), plain, rtol=1e-14, atol=0)
    (g,) = torch.autograd.grad(tracked[-1].sum(), kg)
    assert abs(float(g) - (-2.0 * math.exp(-1.6) * float(y0.sum()))) < 1e-8


def test_func_gets_a_0d_time_in_the_state_dtype_and_time_is_stepped_in_float64():
    """float32 state, float64 output times that float32 cannot hold: the solve still ends on them."""
    seen = []

    def f(t, y):
        seen.append((t.dim(), t.dtype))
        return -y

    t = torch.tensor([0.0, 1.0 + 1e-12, 2.0 + 1e-12], **F64)  # 1 + 1e-12 rounds to 1 in float32
    sol = sdekit.odeint(f, torch.ones(3), t, rtol=1e-6, atol=1e-8, return_solution=True)
    assert set(seen) == {(0, torch.float32)}
    assert sol.ys.dtype == torch.float32
    torch.testing.assert_close(sol.ys[:, 0], torch.exp(-t).float(), rtol=2e-5, atol=0)


def test_decreasing_float32_times_meet_the_float64_accuracy():
    """Backwards in time with a low-order pair in float32: the error is the float64 solve's, not time rounding."""
    t = torch.linspace(8.0, 1.0, 10, **F64)
    y0 = torch.sin(t[:1]).repeat(2)

    def f(s, y):
        return torch.cos(s).expand_as(y)

    out = {dt: sdekit.odeint(f, y0.to(dt), t.to(dt) if dt == torch.float64 else t, method="fehlberg2",
                             rtol=1e-5, atol=1e-6) for dt in (torch.float32, torch.float64)}
    exact = torch.sin(t)[:, None]
    err32 = float(((out[torch.float32].double() - exact).abs()).max())
    err64 = float(((out[torch.float64] - exact).abs()).max())
    assert err32 < err64 + 1e-5  # float32 adds at most its own rounding (1e-5 ≈ 100 ulps at |y| ≤ 1)


def test_failures_carry_the_per_sample_engines_message_and_partial_solution():
    def blowup(t, y):
        return y / (1.5 - t)

    y0 = torch.ones(3, **F64)
    t = torch.tensor([0.0, 1.0, 2.0], **F64)
    with pytest.raises(ToleranceNotMetError, match="step size collapsed: 1 of 1 samples") as info:
        sdekit.odeint(blowup, y0, t)
    ys = info.value.solution.ys[:, 0]
    torch.testing.assert_close(ys[1], y0 * 1.5 / 0.5, rtol=1e-6, atol=0)  # y = 1.5/(1.5 − t) before the pole
    assert bool(torch.isnan(ys[2]).all())
    with pytest.raises(ToleranceNotMetError, match="max_steps=3 step attempts were not enough"):
        sdekit.odeint(lambda s, y: -y, y0, t, options={"max_num_steps": 3})
    with pytest.raises(ToleranceNotMetError, match="non-finite derivative"):
        sdekit.odeint(lambda s, y: y * math.inf, y0, t)


def test_bad_options_and_tolerances_raise_as_the_engine_does():
    y0, t = torch.ones(2, **F64), torch.tensor([0.0, 1.0], **F64)
    with pytest.raises(ValueError, match="min_step <= max_step"):
        solve_whole(lambda s, y: -y, y0, t.tolist(), TABLEAUS["dopri5"], 1e-6, 1e-6, 100, PI_CONTROLLER,
                    StepOptions(min_step=1.0, max_step=0.1))
    with pytest.raises(ValueError, match="rtol"):
        solve_whole(lambda s, y: -y, y0, t.tolist(), TABLEAUS["dopri5"], 0.0, 1e-6, 100, PI_CONTROLLER,
                    StepOptions())
