"""RK45 (Dormand–Prince) with per-sample error control: accuracy, per-sample work, errors."""

import math

import pytest
import torch

from sdekit.solvers import DOPRI5, ToleranceNotMetError, solve_adaptive

f64 = dict(dtype=torch.float64)
RATES = torch.logspace(-1, 2, 8, **f64)  # decay rates 0.1 … 100: easy and stiff-ish samples


def decay(t, y, k):
    return -k[:, None] * y


def test_tableau_is_consistent():
    """Row sums of A equal c; b and b̂ each sum to 1 (order conditions of order 1)."""
    for i, row in enumerate(DOPRI5.a):
        assert math.isclose(sum(row), DOPRI5.c[i], abs_tol=1e-15)
    assert math.isclose(sum(DOPRI5.b), 1.0, abs_tol=1e-15)
    assert math.isclose(sum(DOPRI5.b_error), 0.0, abs_tol=1e-15)


@pytest.mark.parametrize("tol", [1e-4, 1e-6, 1e-9])
def test_meets_tolerance_on_exponential_decay(tol):
    y0 = torch.ones(len(RATES), 3, **f64)
    sol = solve_adaptive(decay, y0, 0.0, 1.0, rtol=tol, atol=tol, args=(RATES,))
    exact = torch.exp(-RATES)[:, None] * y0
    # The controller bounds the local error per step; the global error stays
    # within a small multiple of the tolerance for this contractive problem.
    assert (sol.y - exact).abs().max() <= 10 * tol


def test_meets_tolerance_backwards_and_nonautonomous():
    """y' = y cos t from t=2 back to t=0.5: y = exp(sin t − sin 2)."""
    y0 = torch.ones(4, 1, **f64)
    sol = solve_adaptive(lambda t, y: y * torch.cos(t)[:, None], y0, 2.0, 0.5, rtol=1e-8, atol=1e-8)
    assert (sol.y - math.exp(math.sin(0.5) - math.sin(2.0))).abs().max() <= 10 * 1e-8 * 3


def test_logistic_matches_closed_form():
    """DETEST logistic y' = y/4 (1 − y/20), y(0)=1 on [0, 20]."""
    y0 = torch.ones(2, 1, **f64)
    sol = solve_adaptive(lambda t, y: y / 4 * (1 - y / 20), y0, 0.0, 20.0, rtol=1e-8, atol=1e-8)
    exact = 20 / (1 + 19 * math.exp(-20 / 4))
    assert (sol.y - exact).abs().max() <= 10 * 1e-8 * exact


def test_each_sample_takes_the_steps_it_needs():
    y0 = torch.ones(len(RATES), 2, **f64)
    sol = solve_adaptive(decay, y0, 0.0, 1.0, rtol=1e-6, atol=1e-6, args=(RATES,))
    # Faster decay needs more steps; the slowest sample far fewer than the fastest.
    assert bool((sol.nfe[1:] >= sol.nfe[:-1]).all())
    assert sol.nfe[0] * 5 < sol.nfe[-1]
    # A sample solved alone takes exactly the same steps and reaches the same value.
    for i in (0, len(RATES) - 1):
        alone = solve_adaptive(decay, y0[i : i + 1], 0.0, 1.0, rtol=1e-6, atol=1e-6, args=(RATES[i : i + 1],))
        assert alone.nfe.item() == sol.nfe[i].item()
        torch.testing.assert_close(alone.y[0], sol.y[i], rtol=1e-12, atol=1e-15)


def test_finished_samples_stop_costing_evaluations():
    rows = []

    def counted(t, y, k):
        rows.append(y.shape[0])
        return decay(t, y, k)

    y0 = torch.ones(len(RATES), 2, **f64)
    sol = solve_adaptive(counted, y0, 0.0, 1.0, rtol=1e-6, atol=1e-6, args=(RATES,))
    assert sum(rows) == int(sol.nfe.sum())
    assert sum(rows) < len(RATES) * int(sol.nfe.max())  # less than everyone paying for the slowest


def test_per_sample_end_times():
    y0 = torch.ones(3, 1, **f64)
    t1 = torch.tensor([0.5, 1.0, 2.0], **f64)
    sol = solve_adaptive(lambda t, y: -y, y0, 0.0, t1, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(sol.y[:, 0], torch.exp(-t1), rtol=1e-7, atol=0)


def test_float32_state():
    y0 = torch.ones(4, 5)
    sol = solve_adaptive(lambda t, y: -y, y0, 0.0, 1.0, rtol=1e-5, atol=1e-5)
    assert sol.y.dtype == torch.float32
    assert (sol.y - math.exp(-1)).abs().max() <= 10 * 1e-5


def test_max_steps_raises_with_a_clear_message():
    y0 = torch.ones(2, 1, **f64)
    with pytest.raises(ToleranceNotMetError, match="max_steps=5"):
        solve_adaptive(lambda t, y: -1000 * y, y0, 0.0, 10.0, rtol=1e-10, atol=1e-10, max_steps=5)


def test_non_finite_derivative_cannot_silently_pass():
    y0 = torch.ones(2, 1, **f64)
    with pytest.raises(ToleranceNotMetError):
        solve_adaptive(lambda t, y: y * float("nan"), y0, 0.0, 1.0, max_steps=50)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(rtol=0.0), "rtol"),
        (dict(atol=-1.0), "atol"),
        (dict(max_steps=0), "max_steps"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        solve_adaptive(lambda t, y: -y, torch.ones(2, 1), 0.0, 1.0, **kwargs)


def test_non_finite_initial_state():
    with pytest.raises(ValueError, match="y0 must be finite"):
        solve_adaptive(lambda t, y: -y, torch.tensor([[float("inf")]]), 0.0, 1.0)
