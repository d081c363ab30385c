"""VP / sub-VP / VE / OU SDEs: closed forms, forward simulation, priors, reverse-time drifts, input checks.

Statistical tests use float64, fixed seeds, and the tolerance ``5 SE`` (tests/stats.py)
plus the Euler–Maruyama bias computed deterministically from the discrete moment
recursion of the linear SDE ``dx = a(t) x dt + g(t) dW``:

    m ← (1 + a(t_j) h) m,      v ← (1 + a(t_j) h)² v + g(t_j)² h,

with ``a`` and ``g²`` written out below from Song et al. 2021 (eqs. 9, 11, 12),
independently of the library's ``drift``/``diffusion``.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from stats import assert_mean_close

import sdekit
from sdekit import VESDE, VPSDE, OrnsteinUhlenbeck, ProbabilityFlowODE, ReverseSDE, SubVPSDE

F64 = torch.float64



def _floats(lo, hi):
    return st.floats(min_value=lo, max_value=hi, allow_nan=False, allow_infinity=False)


def _t(values):
    return torch.as_tensor(values, dtype=F64)


# Hypothesis strategy over every linear SDE the library ships, with parameters in ranges
# that keep the closed forms well inside float64.
vp_params = st.tuples(_floats(0.05, 2.0), _floats(0.0, 25.0))
linear_sdes = st.one_of(
    vp_params.map(lambda p: VPSDE(beta_min=p[0], beta_max=p[0] + p[1])),
    vp_params.map(lambda p: SubVPSDE(beta_min=p[0], beta_max=p[0] + p[1])),
    st.tuples(_floats(0.005, 1.0), _floats(2.0, 1e4), _floats(0.5, 2.0)).map(
        lambda p: VESDE(sigma_min=p[0], sigma_max=p[0] * p[1], T=p[2])
    ),
    st.tuples(_floats(0.5, 3.0), _floats(0.2, 2.0), _floats(-2.0, 2.0)).map(
        lambda p: OrnsteinUhlenbeck(theta=p[0], sigma=p[1], mu=p[2])
    ),
)


def _coefficients(sde, t):
    """a(t), b(t) and g(t)² read off the library's drift/diffusion (x-affine drift)."""
    ones = torch.ones(t.shape[0], 1, dtype=F64)
    b = sde.drift(0 * ones, t)[:, 0]
    a = sde.drift(ones, t)[:, 0] - b
    g = sde.diffusion(ones, t)
    return a, b, g.reshape(-1) ** 2


# ---------------------------------------------------------------------------
# Closed forms are consistent with drift and diffusion.


@given(sde=linear_sdes)
def test_closed_forms_solve_moment_odes(sde):
    """d log m/dt = a, dc/dt = a c + b, dσ²/dt = 2 a σ² + g² (central differences, float64)."""
    T = sde.T
    t = _t([0.05, 0.2, 0.45, 0.7, 0.95]) * T
    h = 1e-5 * T
    a, b, g2 = _coefficients(sde, t)

    def fd(f):
        return (f(t + h) - f(t - h)) / (2 * h)

    # Central differences: truncation h²|f'''|/6 ≲ 1e-8 relative for these parameter ranges,
    # round-off ~1e-16/h ≈ 1e-11 relative; 1e-6 leaves a wide margin.
    torch.testing.assert_close(fd(lambda s: torch.log(sde.mean_coeff(s))), a, rtol=1e-6, atol=1e-9)
    c = sde.mean_offset(t)
    torch.testing.assert_close(fd(sde.mean_offset), a * c + b, rtol=1e-6, atol=1e-9)
    var = sde.std(t) ** 2
    rhs = 2 * a * var + g2
    scale = (2 * a * var).abs() + g2
    assert bool(((fd(lambda s: sde.std(s) ** 2) - rhs).abs() <= 1e-6 * scale).all())

    zero = torch.zeros(1, dtype=F64)
    assert float(sde.mean_coeff(zero)) == 1.0
    assert float(sde.mean_offset(zero)) == 0.0
    # score_sde's VE kernel starts from the data perturbed by σ_min.
    expected_std0 = sde.sigma_min if isinstance(sde, VESDE) else 0.0
    assert float(sde.std(zero)) == pytest.approx(expected_std0, rel=1e-14, abs=0)


def _theory_coefficients(sde, t: float):
    """a(t) and g(t)² from Song et al. 2021, written out independently of the library."""
    if isinstance(sde, VPSDE):  # includes SubVPSDE
        beta = sde.beta_min + t * (sde.beta_max - sde.beta_min)
        if isinstance(sde, SubVPSDE):
            B = sde.beta_min * t + 0.5 * t * t * (sde.beta_max - sde.beta_min)
            return -0.5 * beta, beta * -math.expm1(-2 * B)
        return -0.5 * beta, beta
    if isinstance(sde, VESDE):
        log_ratio = math.log(sde.sigma_max / sde.sigma_min)
        sigma_t = sde.sigma_min * math.exp(t / sde.T * log_ratio)
        return 0.0, sigma_t**2 * 2 * log_ratio / sde.T
    raise TypeError(sde)


def test_theory_coefficients_match_library():
    for sde in (VPSDE(), SubVPSDE(), VESDE(), VESDE(0.1, 3.0, T=2.0)):
        for t in (0.0, 0.3, 0.9):
            a, g2 = _theory_coefficients(sde, t)
            la, lb, lg2 = _coefficients(sde, _t([t]))
            assert float(la) == pytest.approx(a, rel=1e-12, abs=1e-15)
            assert float(lb) == 0.0
            assert float(lg2) == pytest.approx(g2, rel=1e-12, abs=1e-300)


def em_moments(sde, ts, dt, v0):
    """Exact mean coefficient and variance of sdeint's Euler–Maruyama at ``ts`` (deterministic x0)."""
    m, v = 1.0, v0
    out = [(m, v)]
    for lo, hi in zip(ts[:-1], ts[1:]):
        n = max(1, math.ceil((hi - lo) / dt - 1e-9))  # sdeint's grid
        h = (hi - lo) / n
        for j in range(n):
            a, g2 = _theory_coefficients(sde, lo + j * h)
            m = (1 + a * h) * m
            v = (1 + a * h) ** 2 * v + g2 * h
        out.append((m, v))
    return out


X0 = _t([-2.0, -0.5, 0.7, 1.5])


@pytest.mark.parametrize(
    "sde, dt",
    [(VPSDE(), 1e-3), (SubVPSDE(), 1e-3), (VESDE(), 1e-3), (VPSDE(beta_min=1.0, beta_max=4.0), 5e-3)],
    ids=["vp", "subvp", "ve", "vp-1-4"],
)
def test_marginals_match_forward_simulation(sde, dt):
    n = 20_000
    gen = torch.Generator().manual_seed(1)
    y0 = X0.expand(n, -1).clone()
    v0 = 0.0
    if isinstance(sde, VESDE):
        # score_sde convention: x(0) is the data perturbed by σ_min, so that x_t | x_0 ~ N(x_0, σ(t)²).
        y0 = y0 + sde.sigma_min * torch.randn(y0.shape, generator=gen, dtype=F64)
        v0 = sde.sigma_min**2
    ts = [0.0, 0.05, 0.2, 0.5, 1.0]
    paths = sdekit.sdeint(sde, y0, ts, dt=dt, generator=gen)
    em = em_moments(sde, ts, dt, v0)
    for k in range(1, len(ts)):
        mean, std = sde.marginal_prob(X0[None], ts[k])
        mean, var = mean[0], float(std) ** 2
        em_mean, em_var = em[k][0] * X0, em[k][1]
        bias_mean = (em_mean - mean).abs()
        # E[(x − mean)²] = Var_EM + (E_EM x − mean)² exactly.
        bias_var = (em_var + (em_mean - mean) ** 2 - var).abs()
        assert bool((bias_var <= 0.05 * var).all()), f"dt too coarse: bias {bias_var} vs variance {var}"
        x = paths[k]
        assert_mean_close(x, mean, bias=bias_mean, what=f"{sde!r} mean at t={ts[k]}")
        # All coordinates share σ(t)²: pool their (independent) squared deviations.
        sq = ((x - mean) ** 2).reshape(-1)
        assert_mean_close(sq, var, bias=float(bias_var.max()), what=f"{sde!r} variance at t={ts[k]}")


@pytest.mark.parametrize("sde", [VPSDE(), SubVPSDE(), VESDE(), OrnsteinUhlenbeck(1.5, 0.7, mu=0.4)])
def test_marginal_sample_matches_marginal_prob(sde):
    n = 8_000
    gen = torch.Generator().manual_seed(2)
    x0 = X0.expand(n, -1)
    t = 0.3 * sde.T
    x = sde.marginal_sample(x0, t, generator=gen)
    mean, std = sde.marginal_prob(x0, t)
    assert x.shape == x0.shape and std.shape == (n,)
    assert_mean_close(x, mean[0], what="marginal_sample mean")
    assert_mean_close((x - mean) ** 2, std[0] ** 2 * torch.ones(4, dtype=F64), what="marginal_sample variance")


def test_marginal_prob_accepts_per_sample_times_and_checks_their_shape():
    sde = VPSDE()
    x0 = torch.ones(3, 2, 2, dtype=F64)
    t = _t([0.1, 0.5, 0.9])
    mean, std = sde.marginal_prob(x0, t)
    torch.testing.assert_close(mean, sde.mean_coeff(t)[:, None, None] * x0)
    torch.testing.assert_close(std, sde.std(t))
    with pytest.raises(ValueError, match="t must"):
        sde.marginal_prob(x0, _t([0.1, 0.5]))


# ---------------------------------------------------------------------------
# Transitions.


@given(sde=linear_sdes, st_u=st.tuples(_floats(0.0, 1.0), _floats(0.0, 1.0), _floats(0.0, 1.0)))
def test_transition_var_and_composition(sde, st_u):
    s, t, u = (x * sde.T for x in sorted(st_u))
    s, t, u = _t([s]), _t([t]), _t([u])
    m, c, sd = sde.mean_coeff, sde.mean_offset, sde.std

    def generic_var(a, b):
        return sd(b) ** 2 - (m(b) / m(a)) ** 2 * sd(a) ** 2

    # Round-off of the generic formula is a few ulps of σ(t)².
    def close(x, y, scale):
        return bool(((x - y).abs() <= 1e-10 * y.abs() + 1e-12 * scale).all())

    for a, b in ((s, t), (t, u), (s, u)):
        var = sde.transition_var(a, b)
        assert close(var, generic_var(a, b), sd(b) ** 2), (a, b, var, generic_var(a, b))
        assert bool((var >= 0).all()), (a, b, var)
        r, off, G = sde.transition(a, b)
        torch.testing.assert_close(r, m(b) / m(a), rtol=1e-13, atol=0)
        torch.testing.assert_close(off, c(b) - r * c(a), rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(G, var.clamp_min(0).sqrt(), rtol=1e-14, atol=0)
    # Chapman–Kolmogorov for Gaussian transitions: s→u = (t→u) ∘ (s→t).
    r_tu = sde.transition(t, u)[0]
    composed = r_tu**2 * sde.transition_var(s, t) + sde.transition_var(t, u)
    assert close(sde.transition_var(s, u), composed, sd(u) ** 2)
    r_st, c_st, _ = sde.transition(s, t)
    r_tu, c_tu, _ = sde.transition(t, u)
    r_su, c_su, _ = sde.transition(s, u)
    torch.testing.assert_close(r_su, r_st * r_tu, rtol=1e-12, atol=0)
    torch.testing.assert_close(c_su, r_tu * c_st + c_tu, rtol=1e-10, atol=1e-12)
    assert float(sde.transition_var(t, t)) == 0.0


# ---------------------------------------------------------------------------
# Priors and defaults.

PRIORS = [
    pytest.param(VPSDE(), 0.0, 1.0, id="vp"),
    pytest.param(SubVPSDE(), 0.0, 1.0, id="subvp"),
    pytest.param(VESDE(), 0.0, 50.0, id="ve"),
    pytest.param(VESDE(sigma_min=0.1, sigma_max=3.0), 0.0, 3.0, id="ve-0.1-3"),
    pytest.param(OrnsteinUhlenbeck(2.0, 0.6, mu=-0.5), -0.5, 0.6 / 2.0, id="ou"),  # σ/√(2θ) = 0.3
]


@pytest.mark.parametrize("sde, loc, scale", PRIORS)
def test_prior_log_prob_is_normal_density(sde, loc, scale):
    gen = torch.Generator().manual_seed(3)
    z = loc + 2 * scale * torch.randn(5, 3, 2, generator=gen, dtype=F64)
    expected = torch.distributions.Normal(_t(loc), _t(scale)).log_prob(z).sum((1, 2))
    lp = sde.prior_log_prob(z)
    assert lp.shape == (5,)
    torch.testing.assert_close(lp, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("sde, loc, scale", PRIORS)
def test_prior_sample_moments(sde, loc, scale):
    gen = torch.Generator().manual_seed(4)
    z = sde.prior_sample((10_000, 3), generator=gen, dtype=F64)
    assert z.shape == (10_000, 3) and z.dtype == F64
    assert_mean_close(z, torch.full((3,), loc, dtype=F64), what="prior mean")
    assert_mean_close((z - loc) ** 2, torch.full((3,), scale**2, dtype=F64), what="prior variance")


def test_prior_sample_is_reproducible_with_generator():
    sde = VESDE()
    a = sde.prior_sample((4, 2), generator=torch.Generator().manual_seed(5), dtype=F64)
    b = sde.prior_sample((4, 2), generator=torch.Generator().manual_seed(5), dtype=F64)
    assert torch.equal(a, b)


def test_prior_log_prob_of_scalar_state():
    """sdeint accepts scalar states y0 of shape (B,); the prior density should too."""
    sde = OrnsteinUhlenbeck(1.0, 1.0)
    z = _t([0.0, 0.5, -1.0])
    torch.testing.assert_close(sde.prior_log_prob(z), torch.distributions.Normal(_t(0.0), _t(0.5**0.5)).log_prob(z))


def test_defaults_are_score_sde():
    vp, svp, ve = VPSDE(), SubVPSDE(), VESDE()
    assert (vp.beta_min, vp.beta_max, vp.T) == (0.1, 20.0, 1.0)
    assert (svp.beta_min, svp.beta_max, svp.T) == (0.1, 20.0, 1.0)
    assert (ve.sigma_min, ve.sigma_max, ve.T) == (0.01, 50.0, 1.0)
    assert vp.sampling_eps == 1e-3 and svp.sampling_eps == 1e-3 and ve.sampling_eps == 1e-5
    assert OrnsteinUhlenbeck(1.0, 1.0).T == 1.0
    # β(t) interpolates linearly between β_min and β_max over [0, 1].
    torch.testing.assert_close(vp.beta(_t([0.0, 0.5, 1.0])), _t([0.1, 10.05, 20.0]))
    torch.testing.assert_close(ve.std(_t([0.0, 1.0])), _t([0.01, 50.0]))


# ---------------------------------------------------------------------------
# Reverse-time SDE and probability-flow ODE.


def _some_score(x, t):
    return -x * t.reshape(-1, *([1] * (x.dim() - 1))) + torch.sin(x)


class DiagonalNoiseSDE(sdekit.AbstractSDE):
    """dx = −x dt + g dW with diagonal noise g(t) = (1 + t) w, w fixed per coordinate (test-local)."""

    def __init__(self, w):
        self.w = w

    def drift(self, x, t):
        return -x

    def diffusion(self, x, t):
        return (1 + t).reshape(-1, *([1] * (x.dim() - 1))) * self.w.expand_as(x)

    def prior_sample(self, shape, *, generator=None, device=None, dtype=None):
        return torch.randn(shape, generator=generator, device=device, dtype=dtype)

    def prior_log_prob(self, z):
        return torch.zeros(z.shape[0], dtype=z.dtype)


@pytest.mark.parametrize("sde", [VPSDE(), SubVPSDE(), VESDE(), OrnsteinUhlenbeck(1.3, 0.8, mu=0.2)])
def test_reverse_and_probability_flow_drifts(sde):
    gen = torch.Generator().manual_seed(6)
    x = torch.randn(4, 3, 2, generator=gen, dtype=F64)
    t = _t([0.01, 0.3, 0.6, 0.99]) * sde.T
    f = sde.drift(x, t)
    g2 = (sde.diffusion(x, t) ** 2).reshape(4, 1, 1)
    s = _some_score(x, t)
    for rev in (ReverseSDE(sde, _some_score), sde.reverse(_some_score)):
        torch.testing.assert_close(rev.drift(x, t), f - g2 * s, rtol=1e-14, atol=1e-14)
        torch.testing.assert_close(rev.diffusion(x, t), sde.diffusion(x, t), rtol=0, atol=0)
        assert rev.T == sde.T
    for pf in (ProbabilityFlowODE(sde, _some_score), sde.probability_flow(_some_score)):
        torch.testing.assert_close(pf.drift(x, t), f - 0.5 * g2 * s, rtol=1e-14, atol=1e-14)
        torch.testing.assert_close(pf(x, t), f - 0.5 * g2 * s, rtol=1e-14, atol=1e-14)


def test_reverse_drift_with_diagonal_diffusion():
    w = _t([[0.5, 2.0, 1.0]])
    sde = DiagonalNoiseSDE(w)
    x = torch.randn(2, 3, dtype=F64, generator=torch.Generator().manual_seed(8))
    t = _t([0.2, 0.7])
    g = (1 + t)[:, None] * w
    s = _some_score(x, t)
    torch.testing.assert_close(ReverseSDE(sde, _some_score).drift(x, t), -x - g**2 * s, rtol=1e-14, atol=1e-14)
    torch.testing.assert_close(
        ProbabilityFlowODE(sde, _some_score).drift(x, t), -x - 0.5 * g**2 * s, rtol=1e-14, atol=1e-14
    )


@pytest.mark.parametrize("cls", [ReverseSDE, ProbabilityFlowODE])
def test_wrong_shape_score_raises(cls):
    x = torch.zeros(4, 3, dtype=F64)
    t = torch.full((4,), 0.5, dtype=F64)
    flow = cls(VPSDE(), lambda x, t: x[:, :2])
    with pytest.raises(ValueError, match=r"shape \(4, 2\)"):
        flow.drift(x, t)
    with pytest.raises(TypeError, match="score"):
        cls(VPSDE(), "not callable")


# ---------------------------------------------------------------------------
# Bad input.

BAD = [0.0, -1.0, float("nan"), float("inf")]


@pytest.mark.parametrize("bad", BAD)
@pytest.mark.parametrize(
    "factory, name",
    [
        (lambda v: VPSDE(beta_min=v), "beta_min"),
        (lambda v: VPSDE(beta_max=v), "beta_max"),
        (lambda v: VPSDE(T=v), "T"),
        (lambda v: SubVPSDE(beta_min=v), "beta_min"),
        (lambda v: VESDE(sigma_min=v), "sigma_min"),
        (lambda v: VESDE(sigma_max=v), "sigma_max"),
        (lambda v: VESDE(T=v), "T"),
        (lambda v: OrnsteinUhlenbeck(theta=v, sigma=1.0), "theta"),
        (lambda v: OrnsteinUhlenbeck(theta=1.0, sigma=v), "sigma"),
        (lambda v: OrnsteinUhlenbeck(theta=1.0, sigma=1.0, T=v), "T"),
    ],
)
def test_constructors_reject_non_positive_or_non_finite(factory, name, bad):
    with pytest.raises(ValueError, match=rf"\b{name}\b"):
        factory(bad)


def test_constructors_reject_inconsistent_parameters():
    with pytest.raises(ValueError, match="beta_max"):
        VPSDE(beta_min=5.0, beta_max=1.0)
    with pytest.raises(ValueError, match="beta_max"):
        SubVPSDE(beta_min=5.0, beta_max=1.0)
    VPSDE(beta_min=3.0, beta_max=3.0)  # constant β is allowed
    with pytest.raises(ValueError, match="sigma_max"):
        VESDE(sigma_min=2.0, sigma_max=1.0)
    with pytest.raises(ValueError, match="sigma_max"):
        VESDE(sigma_min=2.0, sigma_max=2.0)
    for mu in (float("nan"), float("inf"), -float("inf")):
        with pytest.raises(ValueError, match="mu"):
            OrnsteinUhlenbeck(1.0, 1.0, mu=mu)


@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(ts=[0.0, 0.5, 0.5]), "ts"),
        (dict(ts=[0.0, 1.0, 0.5]), "ts"),
        (dict(ts=[1.0, 0.0]), "ts"),
        (dict(ts=[0.0]), "ts"),
        (dict(ts=[[0.0, 1.0]]), "ts"),
        (dict(ts=[0.0, float("nan")]), "ts"),
        (dict(dt=0.0), "dt"),
        (dict(dt=-1e-3), "dt"),
        (dict(dt=float("nan")), "dt"),
        (dict(method="rk4"), "method"),
        (dict(y0=_t([[0.0], [float("nan")]])), "y0"),
        (dict(y0=_t([[float("inf")], [0.0]])), "y0"),
    ],
)
def test_sdeint_rejects_bad_input(kwargs, name):
    args = dict(y0=torch.zeros(2, 1, dtype=F64), ts=[0.0, 1.0])
    args.update(kwargs)
    with pytest.raises(ValueError, match=rf"\b{name}\b"):
        sdekit.sdeint(VPSDE(), args.pop("y0"), args.pop("ts"), **args)


def test_sdeint_output_layout():
    sde = OrnsteinUhlenbeck(1.0, 0.5)
    y0 = torch.ones(3, 2, 2, dtype=F64)
    ts = [0.0, 0.1, 0.25]
    out = sdekit.sdeint(sde, y0, ts, dt=0.03, generator=torch.Generator().manual_seed(9))
    assert out.shape == (3, 3, 2, 2) and out.dtype == F64
    assert torch.equal(out[0], y0)
    again = sdekit.sdeint(sde, y0, ts, dt=0.03, generator=torch.Generator().manual_seed(9))
    assert torch.equal(out, again)
