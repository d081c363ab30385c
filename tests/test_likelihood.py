"""Probability-flow log-likelihood against the exact Gaussian-mixture log-density."""

import math

import pytest
import torch

import sdekit
from sdekit.testing import GaussianMixture, example_mixture

MIX = example_mixture()
SDES = {"vp": sdekit.VPSDE(), "subvp": sdekit.SubVPSDE(), "ve": sdekit.VESDE()}
EPS = 1e-5
#: Global-error factor: RK45 controls the local error per step at rtol/atol;
#: the accumulated error of the augmented state stays within this multiple.
GLOBAL = 50.0


def _with_exact_prior(res, sde):
    """Replace the SDE's prior by the exact marginal p_T of the mixture: isolates the ODE error."""
    return res.log_prob - res.prior_log_prob + MIX.log_prob(res.x_T, sde, sde.T)


@pytest.mark.parametrize("sde_name", list(SDES))
@pytest.mark.parametrize("tol", [1e-5, 1e-7])
def test_exact_trace_equals_exact_log_density(sde_name, tol):
    sde = SDES[sde_name]
    x, _ = MIX.sample(32, generator=torch.Generator().manual_seed(0))
    res = sdekit.log_likelihood(MIX.score_model(sde), sde, x, trace="exact", rtol=tol, atol=tol, eps=EPS)
    exact = MIX.log_prob(x, sde, EPS)
    err = (_with_exact_prior(res, sde) - exact).abs()
    assert bool((err <= GLOBAL * (tol + tol * exact.abs())).all()), err.max()
    assert bool((res.stderr == 0).all())


def test_likelihood_converges_with_tolerance():
    sde = SDES["vp"]
    x, _ = MIX.sample(16, generator=torch.Generator().manual_seed(1))
    exact = MIX.log_prob(x, sde, EPS)
    errs = [
        (_with_exact_prior(sdekit.log_likelihood(MIX.score_model(sde), sde, x, trace="exact", rtol=tol, atol=tol), sde) - exact).abs().max()
        for tol in (1e-4, 1e-6, 1e-8)
    ]
    assert errs[0] > errs[1] > errs[2]


def _mixture_in(dim, seed=0):
    g = torch.Generator().manual_seed(seed)
    mu = 1.5 * torch.randn(3, dim, generator=g, dtype=torch.float64)
    a = 0.4 * torch.randn(3, dim, dim, generator=g, dtype=torch.float64)
    covs = a @ a.transpose(1, 2) + 0.2 * torch.eye(dim, dtype=torch.float64)
    return GaussianMixture(torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64), mu, covs)


@pytest.mark.parametrize("noise", ["rademacher", "gaussian"])
def test_hutchinson_estimate_is_unbiased_within_four_standard_errors(noise):
    """Mean over samples of (estimate − exact) within 4 pooled SE (+ the ODE's own error bound)."""
    mix, sde, tol = _mixture_in(6), SDES["vp"], 1e-6
    x, _ = mix.sample(48, generator=torch.Generator().manual_seed(2))
    res = sdekit.log_likelihood(
        mix.score_model(sde), sde, x, probes=8, noise=noise, rtol=tol, atol=tol, eps=EPS,
        generator=torch.Generator().manual_seed(3),
    )
    est = res.log_prob - res.prior_log_prob + mix.log_prob(res.x_T, sde, sde.T)
    exact = mix.log_prob(x, sde, EPS)
    pooled_se = res.stderr.pow(2).sum().sqrt() / len(x)
    ode_bound = GLOBAL * (tol + tol * exact.abs()).mean()
    assert bool((res.stderr > 0).all())
    assert (est - exact).mean().abs() <= 4 * pooled_se + ode_bound


def test_single_probe_stderr_is_nan_and_seeded():
    sde = SDES["ve"]
    x, _ = MIX.sample(4, generator=torch.Generator().manual_seed(4))
    run = lambda s: sdekit.log_likelihood(MIX.score_model(sde), sde, x, generator=torch.Generator().manual_seed(s))  # noqa: E731
    a, b = run(0), run(0)
    assert torch.equal(a.log_prob, b.log_prob) and bool(a.stderr.isnan().all())
    assert a.nfe.dtype == torch.int64 and bool((a.nfe > 0).all())


def test_works_under_no_grad_and_with_image_shaped_data():
    sde = SDES["vp"]
    mix = _mixture_in(4)
    x, _ = mix.sample(3, generator=torch.Generator().manual_seed(5))
    score = lambda xi, t: mix.score(xi.flatten(1), sde, t).reshape(xi.shape)  # noqa: E731
    with torch.no_grad():
        res = sdekit.log_likelihood(score, sde, x.reshape(3, 1, 2, 2), trace="exact")
    flat = sdekit.log_likelihood(mix.score_model(sde), sde, x, trace="exact")
    torch.testing.assert_close(res.log_prob, flat.log_prob)


def test_gaussian_data_under_vp_has_the_closed_form_likelihood():
    """Single Gaussian N(0, s² I): p_eps = N(0, (m² s² + σ²) I) and p_T is exact too."""
    s2, dim = 0.25, 5
    mix = GaussianMixture(torch.ones(1, dtype=torch.float64), torch.zeros(1, dim, dtype=torch.float64), s2 * torch.eye(dim, dtype=torch.float64)[None])
    sde = SDES["vp"]
    x, _ = mix.sample(8, generator=torch.Generator().manual_seed(6))
    res = sdekit.log_likelihood(mix.score_model(sde), sde, x, trace="exact", rtol=1e-8, atol=1e-8, eps=EPS)
    t = torch.tensor(EPS, dtype=torch.float64)
    var = sde.mean_coeff(t) ** 2 * s2 + sde.std(t) ** 2
    exact = -0.5 * dim * torch.log(2 * math.pi * var) - (x**2).sum(1) / (2 * var)
    est = res.log_prob - res.prior_log_prob + mix.log_prob(res.x_T, sde, sde.T)
    assert (est - exact).abs().max() <= GLOBAL * 1e-8 * (1 + exact.abs().max())


@pytest.mark.parametrize(
    "kwargs, err, match",
    [
        (dict(trace="diag"), ValueError, "trace"),
        (dict(noise="uniform"), ValueError, "noise"),
        (dict(probes=0), ValueError, "probes"),
        (dict(eps=1.5), ValueError, "eps"),
        (dict(rtol=-1.0), ValueError, "rtol"),
    ],
)
def test_bad_arguments(kwargs, err, match):
    sde = SDES["vp"]
    with pytest.raises(err, match=match):
        sdekit.log_likelihood(MIX.score_model(sde), sde, torch.zeros(2, 2, dtype=torch.float64), **kwargs)


def test_bad_data_and_bad_model():
    sde = SDES["vp"]
    with pytest.raises(ValueError, match="x must be finite"):
        sdekit.log_likelihood(MIX.score_model(sde), sde, torch.full((2, 2), float("nan")))
    with pytest.raises(ValueError, match="x must have at least 2"):
        sdekit.log_likelihood(MIX.score_model(sde), sde, torch.zeros(2))
    with pytest.raises(ValueError, match="score model returned shape"):
        sdekit.log_likelihood(lambda x, t: x[:, :1], sde, torch.zeros(2, 2))


def test_max_steps_is_reported():
    sde = SDES["vp"]
    with pytest.raises(sdekit.ToleranceNotMetError, match="max_steps=3"):
        sdekit.log_likelihood(MIX.score_model(sde), sde, torch.zeros(2, 2, dtype=torch.float64), max_steps=3)
