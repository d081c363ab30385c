"""Laws every SDE method must reproduce: Fokker–Planck moments, the OU stationary law, Itô ↔ Stratonovich.

For linear SDEs each method's step is an exactly computable random linear map, so its
discrete moments follow from a recursion derived by hand below (one formula per method,
independent of the code).  The statistical checks compare simulated paths with the
*continuous* moments (the Fokker–Planck moment ODEs' solution) and allow 5 SE plus the
deterministic gap between discrete and continuous moments — the pattern and helpers of
tests/test_ou_fokker_planck.py, reused here.

* Additive noise ``dx = (a x + b) dt + c dW``: ``s₁ = A s + β + Γ ξ`` with
  ``ξ = (ΔW, ΔZ)``, ``Cov ξ = h [[1, h/2], [h/2, h²/3]]`` (``s`` is ``x``, or ``(x, z)`` for
  reversible Heun).
* Multiplicative noise (GBM) ``dx = μ x dt + σ x dW`` (Itô) — in Stratonovich form the drift
  is ``(μ − σ²/2) x``: ``s₁ = M(ΔW) s`` with ``M`` a matrix polynomial in ``ΔW``, so
  ``E s_N = (E M)^N s₀`` and ``E s s^T`` follows ``vec P ← E[M ⊗ M] vec P``.  Both forms must
  give the Itô moments ``E x_t = x₀ e^{μt}``, ``E x_t² = x₀² e^{(2μ+σ²)t}``: the drift
  correction ``½ g ∂g/∂x`` gives the same law.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from stats import assert_mean_close
from test_ou_fokker_planck import ScalarLinearSDE, _check_moments, _sdeint_grid, exact_moments

import sdekit
from sdekit.testing import fit_order

F64 = torch.float64
PATHS = 20_000
ADDITIVE_METHODS = ["euler", "milstein", "derivative_free_milstein", "heun", "midpoint", "euler_heun",
                    "reversible_heun", "sra1", "sra3"]


def _floats(lo, hi):
    return st.floats(min_value=lo, max_value=hi, allow_nan=False, allow_infinity=False)


class AdditiveLinearSDE(ScalarLinearSDE):
    """``dx = (a x + b) dt + c dW`` declared as additive noise (so SRA applies)."""

    noise_type = "additive"


# ---------------------------------------------------------------------------- additive noise


def additive_step_map(method, a, b, c, h):
    """``(A, β, Γ)`` of one step of ``method`` on ``dx = (a x + b) dt + c dW`` (derived by hand)."""
    ah = a * h
    if method in ("euler", "milstein", "derivative_free_milstein", "euler_heun"):
        # The Milstein corrections vanish for constant g; Euler–Heun's G(ỹ) = G.
        return np.array([[1 + ah]]), np.array([b * h]), np.array([[c, 0.0]])
    if method in ("heun", "midpoint"):
        return (np.array([[1 + ah + ah * ah / 2]]), np.array([b * h * (1 + ah / 2)]),
                np.array([[c * (1 + ah / 2), 0.0]]))
    if method == "sra1":  # y₁ = y + h f(y)(1 + ah/2) + c ΔW + a c ΔZ
        return np.array([[1 + ah + ah * ah / 2]]), np.array([b * h * (1 + ah / 2)]), np.array([[c, a * c]])
    if method == "sra3":  # y₁ = y + h f(y)(1 + ah/2 + a²h²/6) + c ΔW + a c ΔZ
        k = 1 + ah / 2 + ah * ah / 6
        return np.array([[1 + ah * k]]), np.array([b * h * k]), np.array([[c, a * c]])
    if method == "reversible_heun":  # state (y, z): z₁ = 2y − z + f(z) h + cΔW, y₁ = y + ½(f(z) + f(z₁)) h + cΔW
        A = np.array([[1 + ah, ah * ah / 2], [2.0, ah - 1]])
        return A, np.array([b * h * (1 + ah / 2), b * h]), np.array([[c * (1 + ah / 2), 0.0], [c, 0.0]])
    raise KeyError(method)


def additive_discrete_moments(method, a, b, c, x0, ts, dt):
    """Mean and variance of ``x`` at ``ts`` under ``method`` with sdeint's step grid."""
    dim = 2 if method == "reversible_heun" else 1
    m, P = np.full(dim, float(x0)), np.zeros((dim, dim))
    means, variances = [m[0]], [0.0]
    for interval in _sdeint_grid(ts, dt):
        for h in interval:
            A, beta, G = additive_step_map(method, a, b, c, h)
            cov_xi = h * np.array([[1.0, h / 2], [h / 2, h * h / 3]])
            m = A @ m + beta
            P = A @ P @ A.T + G @ cov_xi @ G.T
        means.append(m[0])
        variances.append(P[0, 0])
    return means, variances


@pytest.mark.parametrize("method", ADDITIVE_METHODS)
@given(a=_floats(-2.0, 1.0), b=_floats(-1.0, 1.0), c=_floats(0.2, 1.5), x0=_floats(-2.0, 2.0), t=_floats(0.1, 1.0))
def test_linear_sde_moments_solve_fokker_planck_moment_odes(method, a, b, c, x0, t):
    dt = 0.02
    ts = [0.0, t]
    gen = torch.Generator().manual_seed(4242)
    y0 = torch.full((PATHS,), x0, dtype=F64)
    x = sdekit.sdeint(AdditiveLinearSDE(a, b, c), y0, ts, method=method, dt=dt, generator=gen)[-1]
    mean, var = exact_moments(a, b, c, x0, t)
    d_mean, d_var = additive_discrete_moments(method, a, b, c, x0, ts, dt)
    _check_moments(x, mean, var, d_mean[-1], d_var[-1], f"{method}: dx=({a:.3g}x+{b:.3g})dt+{c:.3g}dW at t={t:.3g}")


def test_discrete_moment_recursions_against_closed_forms():
    """Euler's recursion is the one of test_ou_fokker_planck; every scheme's map tends to the exact flow."""
    from test_ou_fokker_planck import em_moments_constant

    ts, dt = [0.0, 0.4, 1.0], 0.05
    for method in ADDITIVE_METHODS:
        means, variances = additive_discrete_moments(method, -1.3, 0.4, 0.7, 1.1, ts, dt)
        if method in ("euler", "milstein", "derivative_free_milstein", "euler_heun"):
            em_mean, em_var = em_moments_constant(-1.3, 0.4, 0.7, 1.1, ts, dt)
            np.testing.assert_allclose(means, em_mean, rtol=1e-13)
            np.testing.assert_allclose(variances, em_var, rtol=1e-13)
        fine_m, fine_v = additive_discrete_moments(method, -1.3, 0.4, 0.7, 1.1, ts, 1e-4)
        exact = [exact_moments(-1.3, 0.4, 0.7, 1.1, t) for t in ts]
        np.testing.assert_allclose(fine_m, [e[0] for e in exact], rtol=2e-4, atol=1e-6)
        np.testing.assert_allclose(fine_v, [e[1] for e in exact], rtol=2e-4, atol=1e-6)


@pytest.mark.parametrize("method", ADDITIVE_METHODS)
@given(theta=_floats(0.5, 3.0), sigma=_floats(0.2, 2.0), mu=_floats(-2.0, 2.0), x0=_floats(-3.0, 3.0))
def test_ou_paths_reach_the_stationary_law(method, theta, sigma, mu, x0):
    T_end = 6.0 / theta
    dt = T_end / 100  # θ dt = 0.06: Euler's stationary variance is 3 % above σ²/(2θ)
    ou = sdekit.OrnsteinUhlenbeck(theta, sigma, mu, T=T_end)
    gen = torch.Generator().manual_seed(99)
    x = sdekit.sdeint(ou, torch.full((PATHS, 1), x0, dtype=F64), [0.0, T_end], method=method, dt=dt,
                      generator=gen)[-1, :, 0]
    d_mean, d_var = additive_discrete_moments(method, -theta, theta * mu, sigma, x0, [0.0, T_end], dt)
    _check_moments(x, mu, ou.stationary_std**2, d_mean[-1], d_var[-1], f"{method}: OU at T = 6/θ")


# ---------------------------------------------------------------------------- multiplicative noise (GBM)


class GeometricBM(sdekit.AbstractSDE):
    """``dx = μ x dt + σ x dW`` (Itô), or in Stratonovich form ``dx = (μ − σ²/2) x dt + σ x ∘ dW``."""

    def __init__(self, mu, sigma, sde_type):
        self.mu, self.sigma, self.sde_type = mu, sigma, sde_type

    def drift(self, x, t):
        return (self.mu if self.sde_type == "ito" else self.mu - 0.5 * self.sigma**2) * x

    def diffusion(self, x, t):
        return self.sigma * x

    def prior_sample(self, shape, *, generator=None, device=None, dtype=None):
        raise NotImplementedError

    def prior_log_prob(self, z):
        raise NotImplementedError


def gbm_step_polynomial(method, sde_type, mu, sigma, h):
    """Coefficients ``M_k`` of the step ``s₁ = Σ_k M_k ΔW^k s`` (derived by hand; ``a`` = drift rate)."""
    a = mu if sde_type == "ito" else mu - 0.5 * sigma**2
    ah, s = a * h, sigma
    one = lambda *cs: [np.array([[c]]) for c in cs]  # noqa: E731
    if method == "euler":
        return one(1 + ah, s)
    if method == "milstein" and sde_type == "ito":  # + ½σ²(ΔW² − h)
        return one(1 + ah - 0.5 * s * s * h, s, 0.5 * s * s)
    if method == "derivative_free_milstein" and sde_type == "ito":  # ȳ = y(1 + ah + σ√h)
        k = 0.5 * s * (a * math.sqrt(h) + s)
        return one(1 + ah - k * h, s, k)
    if method in ("milstein", "derivative_free_milstein", "euler_heun"):  # Stratonovich: + ½σ²ΔW²
        return one(1 + ah, s, 0.5 * s * s)
    if method in ("heun", "midpoint"):
        return one(1 + ah + 0.5 * ah * ah, s * (1 + ah), 0.5 * s * s)
    if method == "reversible_heun":  # state (y, z)
        return [np.array([[1 + ah, 0.5 * ah * ah], [2.0, ah - 1]]), np.array([[s, ah * s], [0.0, s]]),
                np.array([[0.0, 0.5 * s * s], [0.0, 0.0]])]
    raise KeyError(method)


def _normal_moment(k, h):
    return 0.0 if k % 2 else float(np.prod(np.arange(k - 1, 0, -2))) * h ** (k // 2)


def gbm_discrete_moments(method, sde_type, mu, sigma, x0, t, dt):
    """``E x_N`` and ``E x_N²`` of ``method`` on GBM from ``x0`` over ``[0, t]`` (sdeint's grid)."""
    (steps,) = _sdeint_grid([0.0, t], dt)
    Ms = gbm_step_polynomial(method, sde_type, mu, sigma, steps[0])
    dim = Ms[0].shape[0]
    EM = sum(M * _normal_moment(k, steps[0]) for k, M in enumerate(Ms))
    EMM = sum(np.kron(Mj, Mk) * _normal_moment(j + k, steps[0]) for j, Mj in enumerate(Ms) for k, Mk in enumerate(Ms))
    m, P = np.full(dim, float(x0)), np.full(dim * dim, float(x0) ** 2)
    for _ in steps:
        m, P = EM @ m, EMM @ P
    return m[0], P[0]


GBM_METHODS = [("euler", "ito"), ("milstein", "ito"), ("derivative_free_milstein", "ito"),
               ("milstein", "stratonovich"), ("derivative_free_milstein", "stratonovich"), ("heun", "stratonovich"),
               ("midpoint", "stratonovich"), ("euler_heun", "stratonovich"), ("reversible_heun", "stratonovich")]


@pytest.mark.parametrize("method, sde_type", GBM_METHODS)
@given(mu=_floats(-1.0, 1.0), sigma=_floats(0.1, 0.7), x0=_floats(0.2, 2.0))
def test_gbm_moments_in_ito_and_stratonovich_form(method, sde_type, mu, sigma, x0):
    """Itô form and Stratonovich form (drift − ½σ²x) both give the Itô moments of GBM."""
    t, dt = 1.0, 0.0125
    gen = torch.Generator().manual_seed(777)
    sde = GeometricBM(mu, sigma, sde_type)
    x = sdekit.sdeint(sde, torch.full((PATHS, 1), x0, dtype=F64), [0.0, t], method=method, dt=dt,
                      generator=gen)[-1, :, 0]
    mean, second = x0 * math.exp(mu * t), x0**2 * math.exp((2 * mu + sigma**2) * t)
    d_mean, d_second = gbm_discrete_moments(method, sde_type, mu, sigma, x0, t, dt)
    assert abs(d_second - second) <= 0.05 * second, "dt too coarse for the comparison"
    what = f"{method} ({sde_type}) GBM μ={mu:.3g} σ={sigma:.3g}"
    assert_mean_close(x[:, None], [mean], bias=abs(d_mean - mean), what=f"{what} mean")
    assert_mean_close((x * x)[:, None], [second], bias=abs(d_second - second), what=f"{what} second moment")


def test_gbm_step_polynomials_against_one_step_of_the_solvers():
    """The hand-derived multipliers are what each solver computes for one step (fixed ΔW)."""
    from sdekit.solvers.sde import as_problem, resolve

    mu, sigma, h = 0.7, 0.45, 0.1
    y = torch.tensor([[1.3], [0.4]], dtype=F64)
    dW = torch.tensor([[0.21], [-0.37]], dtype=F64)
    for method, sde_type in GBM_METHODS:
        sde = GeometricBM(mu, sigma, sde_type)
        problem = as_problem(sde, y, torch.tensor(0.0, dtype=F64))
        solver = resolve(method, problem.noise_type, problem.sde_type)(problem)
        state = solver.init(torch.tensor(0.0, dtype=F64), y)
        y1, _ = solver.step(torch.tensor(0.0, dtype=F64), h, y, state, dW, None)
        Ms = gbm_step_polynomial(method, sde_type, mu, sigma, h)
        for i in range(2):
            M = sum(Mk * float(dW[i, 0]) ** k for k, Mk in enumerate(Ms))
            s0 = np.full(M.shape[0], float(y[i, 0]))
            assert float(y1[i, 0]) == pytest.approx((M @ s0)[0], rel=1e-13), f"{method} ({sde_type})"


# ---------------------------------------------------------------------------- Itô ↔ Stratonovich, pathwise


class NonlinearNoise(sdekit.AbstractSDE):
    """``dx = −x dt + σ(1 + ½ sin x) dW`` (Itô); Stratonovich drift ``−x − ½ g g'`` with ``g' = ½σ cos x``."""

    def __init__(self, sigma, sde_type, corrected=True):
        self.sigma, self.sde_type, self.corrected = sigma, sde_type, corrected

    def drift(self, x, t):
        if self.sde_type == "ito" or not self.corrected:
            return -x
        g = self.sigma * (1 + 0.5 * torch.sin(x))
        return -x - 0.5 * g * (0.5 * self.sigma * torch.cos(x))

    def diffusion(self, x, t):
        return self.sigma * (1 + 0.5 * torch.sin(x))

    def prior_sample(self, shape, *, generator=None, device=None, dtype=None):
        raise NotImplementedError

    def prior_log_prob(self, z):
        raise NotImplementedError


@given(sigma=_floats(0.3, 1.0), x0=_floats(-1.0, 1.0), seed=st.integers(0, 2**32))
def test_ito_and_stratonovich_forms_give_the_same_path(sigma, x0, seed):
    """On one Brownian path, Itô (derivative-free) Milstein and Stratonovich Heun with the corrected drift
    converge to each other at order 1.

    Without the ½ g g' correction the gap does not close (a check that the test can fail).
    """
    paths, ks = 256, range(3, 9)
    y0 = torch.full((paths, 1), x0, dtype=F64)

    def gap(corrected):
        out = []
        for k in ks:
            kw = dict(ts=[0.0, 1.0], dt=2.0**-k, seed=seed)
            ito = sdekit.sdeint(NonlinearNoise(sigma, "ito"), y0, method="derivative_free_milstein", **kw)[-1]
            strat = sdekit.sdeint(NonlinearNoise(sigma, "stratonovich", corrected), y0, method="heun", **kw)[-1]
            out.append(float((ito - strat).abs().mean()))
        return out

    good, bad = gap(True), gap(False)
    fit = fit_order([2.0**-k for k in ks], good)
    assert fit.order >= 1.0 - 0.15, f"Itô/Stratonovich gap shrinks at order {fit.order:.3f}: {good}"
    assert bad[-1] > 10 * good[-1] and fit_order([2.0**-k for k in ks], bad).order < 0.3
