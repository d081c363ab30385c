"""Ornstein–Uhlenbeck stationary law and Fokker–Planck moment equations.

For a linear SDE ``dx = (a x + b) dt + c dW`` the Fokker–Planck equation keeps
a Gaussian start (here a point mass) Gaussian, and its first two moments solve the ODEs

    m' = a m + b,        v' = 2 a v + c².

Euler–Maruyama (``x ← x + (a x + b) h + c √h z``) has an exactly computable
discrete law too: ``m ← (1 + a h) m + b h``, ``v ← (1 + a h)² v + c² h``.  The
statistical tests below compare simulated paths with the *continuous* law and
allow ``5 SE`` (tests/stats.py) plus the deterministic gap between the discrete
and the continuous moments, computed from those recursions at the step size
``sdeint`` actually uses.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from scipy.integrate import solve_ivp
from stats import assert_mean_close

import sdekit

N_PATHS = 60_000



def _floats(lo, hi):
    return st.floats(min_value=lo, max_value=hi, allow_nan=False, allow_infinity=False)


def _sdeint_grid(ts, dt):
    """The step sizes sdeint uses: each [a, b] is split into ceil((b − a)/dt) equal steps."""
    steps = []
    for a, b in zip(ts[:-1], ts[1:]):
        n = max(1, math.ceil((b - a) / dt - 1e-9))
        steps.append([(b - a) / n] * n)
    return steps


def em_moments_constant(a, b, c, x0, ts, dt):
    """Exact mean and variance of Euler–Maruyama for ``dx = (a x + b) dt + c dW`` at ``ts``.

    Deterministic start ``x0`` at ``ts[0]``; returns two lists of len(ts).
    """
    m, v = float(x0), 0.0
    means, variances = [m], [v]
    for interval in _sdeint_grid(ts, dt):
        for h in interval:
            m = (1.0 + a * h) * m + b * h
            v = (1.0 + a * h) ** 2 * v + c * c * h
        means.append(m)
        variances.append(v)
    return means, variances


def _phi(z):
    """expm1(z)/z, continuous at z = 0."""
    return 1.0 if z == 0.0 else math.expm1(z) / z


def exact_moments(a, b, c, x0, t):
    """Solution of m' = a m + b, v' = 2 a v + c², m(0) = x0, v(0) = 0 (stable for a ≈ 0)."""
    mean = x0 * math.exp(a * t) + b * t * _phi(a * t)
    var = c * c * t * _phi(2.0 * a * t)
    return mean, var


def _check_moments(paths, mean, var, em_mean, em_var, what):
    """5 SE + |discrete − continuous| check of the mean and the variance about the exact mean."""
    bias_mean = abs(em_mean - mean)
    # E[(x − mean)²] = Var_EM + (E_EM[x] − mean)² exactly.
    bias_var = abs(em_var + (em_mean - mean) ** 2 - var)
    # The step size must be small enough for the comparison to mean something.
    assert bias_var <= 0.05 * var, f"{what}: dt too coarse, EM variance bias {bias_var} vs variance {var}"
    assert_mean_close(paths, mean, bias=bias_mean, what=f"{what} mean")
    assert_mean_close((paths - mean) ** 2, var, bias=bias_var, what=f"{what} variance")


# ---------------------------------------------------------------------------
# Ornstein–Uhlenbeck: stationary law N(μ, σ²/(2θ)).


@given(theta=_floats(0.5, 3.0), sigma=_floats(0.2, 2.0), mu=_floats(-2.0, 2.0), x0=_floats(-3.0, 3.0))
def test_ou_em_paths_reach_stationary_law(theta, sigma, mu, x0):
    T_end = 6.0 / theta
    dt = T_end / 400  # θ dt = 0.015: discrete stationary variance is 0.76 % above σ²/(2θ)
    ou = sdekit.OrnsteinUhlenbeck(theta, sigma, mu, T=T_end)
    gen = torch.Generator().manual_seed(20240601)
    y0 = torch.full((N_PATHS, 1), x0, dtype=torch.float64)
    ts = [0.0, T_end]
    x = sdekit.sdeint(ou, y0, ts, dt=dt, generator=gen)[-1, :, 0]

    em_mean, em_var = em_moments_constant(-theta, theta * mu, sigma, x0, ts, dt)
    stat_var = sigma**2 / (2 * theta)
    # Cross-check the recursion with the closed forms quoted in the issue.
    n = len(_sdeint_grid(ts, dt)[0])
    h = T_end / n
    assert em_mean[-1] == pytest.approx(mu + (x0 - mu) * (1 - theta * h) ** n, rel=1e-12, abs=1e-12)
    assert em_var[-1] == pytest.approx(
        sigma**2 / (theta * (2 - theta * h)) * (1 - (1 - theta * h) ** (2 * n)), rel=1e-10
    )
    _check_moments(x, mu, stat_var, em_mean[-1], em_var[-1], "OU at T_end = 6/θ")
    # The prior is the stationary law.
    assert ou.stationary_std == pytest.approx(math.sqrt(stat_var), rel=1e-14)


@given(theta=_floats(0.5, 3.0), sigma=_floats(0.2, 2.0), mu=_floats(-2.0, 2.0), x0=_floats(-3.0, 3.0))
def test_ou_em_paths_match_marginal_at_intermediate_times(theta, sigma, mu, x0):
    T_end = 3.0 / theta
    dt = T_end / 300
    ou = sdekit.OrnsteinUhlenbeck(theta, sigma, mu, T=T_end)
    gen = torch.Generator().manual_seed(7)
    ts = [0.0, 0.1 * T_end, 0.3 * T_end, T_end]
    paths = sdekit.sdeint(ou, torch.full((N_PATHS // 2, 1), x0, dtype=torch.float64), ts, dt=dt, generator=gen)
    em_mean, em_var = em_moments_constant(-theta, theta * mu, sigma, x0, ts, dt)
    x0_t = torch.full((1, 1), x0, dtype=torch.float64)
    for k in range(1, len(ts)):
        mean, std = ou.marginal_prob(x0_t, ts[k])
        _check_moments(paths[k, :, 0], float(mean), float(std) ** 2, em_mean[k], em_var[k], f"OU at t={ts[k]:.3g}")


# ---------------------------------------------------------------------------
# A general scalar linear SDE dx = (a x + b) dt + c dW.


class ScalarLinearSDE(sdekit.AbstractSDE):
    """dx = (a x + b) dt + c dW with constant coefficients (test-local)."""

    def __init__(self, a, b, c, T=1.0):
        self.a, self.b, self.c, self.T = a, b, c, T

    def drift(self, x, t):
        return self.a * x + self.b

    def diffusion(self, x, t):
        return torch.full_like(t, self.c)

    def prior_sample(self, shape, *, generator=None, device=None, dtype=None):
        raise NotImplementedError

    def prior_log_prob(self, z):
        raise NotImplementedError


def test_exact_moments_helper_against_ode_solver():
    """The closed-form moment solution (incl. a = 0 and tiny a) solves the moment ODEs."""
    for a in (-2.0, -1e-9, 0.0, 1e-12, 0.7, 1.0):
        b, c, x0, t = 0.4, 0.8, -1.3, 0.9
        sol = solve_ivp(
            lambda _, y: [a * y[0] + b, 2 * a * y[1] + c * c], (0, t), [x0, 0.0], rtol=1e-12, atol=1e-14
        )
        mean, var = exact_moments(a, b, c, x0, t)
        assert mean == pytest.approx(sol.y[0, -1], rel=1e-9, abs=1e-12)
        assert var == pytest.approx(sol.y[1, -1], rel=1e-9, abs=1e-12)


@given(
    a=_floats(-2.0, 1.0),
    b=_floats(-1.0, 1.0),
    c=_floats(0.2, 1.5),
    x0=_floats(-2.0, 2.0),
    t=_floats(0.1, 1.0),
)
def test_linear_sde_moments_solve_fokker_planck_moment_odes(a, b, c, x0, t):
    dt = 0.005
    sde = ScalarLinearSDE(a, b, c)
    gen = torch.Generator().manual_seed(31337)
    ts = [0.0, t]
    x = sdekit.sdeint(sde, torch.full((N_PATHS,), x0, dtype=torch.float64), ts, dt=dt, generator=gen)[-1]
    mean, var = exact_moments(a, b, c, x0, t)
    em_mean, em_var = em_moments_constant(a, b, c, x0, ts, dt)
    _check_moments(x, mean, var, em_mean[-1], em_var[-1], f"dx=({a:.3g}x+{b:.3g})dt+{c:.3g}dW at t={t:.3g}")


# ---------------------------------------------------------------------------
# The OU closed forms solve the moment ODEs (deterministic, float64).


@given(theta=_floats(0.5, 3.0), sigma=_floats(0.2, 2.0), mu=_floats(-2.0, 2.0), x0=_floats(-3.0, 3.0))
def test_ou_closed_forms_solve_moment_odes(theta, sigma, mu, x0):
    ou = sdekit.OrnsteinUhlenbeck(theta, sigma, mu)
    t_grid = np.linspace(0.0, 2.0, 21)
    sol = solve_ivp(
        lambda _, y: [theta * (mu - y[0]), -2 * theta * y[1] + sigma**2],
        (0.0, 2.0),
        [x0, 0.0],
        t_eval=t_grid,
        rtol=1e-12,
        atol=1e-14,
    )
    t = torch.tensor(t_grid, dtype=torch.float64)
    mean = (ou.mean_coeff(t) * x0 + ou.mean_offset(t)).numpy()
    var = (ou.std(t) ** 2).numpy()
    # Solver tolerance 1e-12 per step; global error stays far below 1e-8 on [0, 2].
    np.testing.assert_allclose(mean, sol.y[0], rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(var, sol.y[1], rtol=1e-8, atol=1e-10)

    # Central finite differences: truncation ~h²|f'''|/6 ≈ 1e-12, round-off ~1e-16/h ≈ 1e-10.
    h = 1e-6
    ts = torch.tensor([0.05, 0.3, 0.9, 1.7], dtype=torch.float64)

    def mean_fn(s):
        return ou.mean_coeff(s) * x0 + ou.mean_offset(s)

    def var_fn(s):
        return ou.std(s) ** 2

    d_mean = (mean_fn(ts + h) - mean_fn(ts - h)) / (2 * h)
    d_var = (var_fn(ts + h) - var_fn(ts - h)) / (2 * h)
    torch.testing.assert_close(d_mean, theta * (mu - mean_fn(ts)), rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(d_var, -2 * theta * var_fn(ts) + sigma**2, rtol=1e-6, atol=1e-7)
    zero = torch.zeros(1, dtype=torch.float64)
    assert float(ou.mean_coeff(zero)) == 1.0
    assert float(ou.mean_offset(zero)) == 0.0
    assert float(ou.std(zero)) == 0.0
