"""ELBOs (sdekit.likelihood.elbo) against closed forms: Gaussian data, the mixture's exact density, DDPM terms.

Tolerances are 5 standard errors of the Monte-Carlo estimates (tests/stats.py); reference values are
closed forms or independent Monte-Carlo estimates, never the code's own output.
"""

import math

import pytest
import torch
from stats import Z, assert_mean_close

import sdekit
from sdekit.likelihood import ddpm_elbo, discretized_gaussian_log_prob, sde_elbo
from sdekit.testing.mixture import GaussianMixture, example_mixture

MU = torch.tensor([0.7, -0.4], dtype=torch.float64)
COV = torch.tensor([[0.5, 0.2], [0.2, 0.3]], dtype=torch.float64)
GAUSS = GaussianMixture(torch.ones(1, dtype=torch.float64), MU[None], COV[None])
D = 2


def gauss_log_prob(x, mean, cov):
    return torch.distributions.MultivariateNormal(mean, cov).log_prob(x)


def gaussian_gap(sde, x, eps):
    """E[log p_T(x_T) − log π(x_T) | x_eps = x] for Gaussian data and a N(0, s_π² I) prior, closed form."""
    e, T = torch.tensor([eps], dtype=torch.float64), torch.tensor([float(sde.T)], dtype=torch.float64)
    r, c, G = (float(v[0]) for v in sde.transition(e, T))
    m, s = float(sde.mean_coeff(T)[0]), float(sde.std(T)[0])
    cov_T = m**2 * COV + s**2 * torch.eye(D, dtype=torch.float64)
    s_pi = float(sde.prior_from_normal(torch.ones(1, dtype=torch.float64))[0])
    mean = r * x + c
    e_log_pT = gauss_log_prob(mean, m * MU, cov_T) - 0.5 * G**2 * torch.linalg.inv(cov_T).trace()
    e_log_pi = gauss_log_prob(mean, torch.zeros(D, dtype=torch.float64), s_pi**2 * torch.eye(D, dtype=torch.float64))
    return e_log_pT - (e_log_pi - D * G**2 / (2 * s_pi**2))


SDES = {
    "vp": sdekit.VPSDE(),
    "vp-short": sdekit.VPSDE(beta_min=0.1, beta_max=2.0),
    "subvp": sdekit.SubVPSDE(),
    "ve": sdekit.VESDE(sigma_min=0.01, sigma_max=10.0),
    "edm": sdekit.EDMSDE(sigma_min=0.002, sigma_max=10.0),
}


@pytest.mark.parametrize("name", list(SDES))
def test_elbo_with_exact_score_matches_its_closed_form_per_point(name):
    """Exact score: log p_eps(x) − L(x) = E[log p_T(x_T) − log π(x_T) | x] (closed form for Gaussian data)."""
    sde, eps = SDES[name], 1e-3
    x = torch.tensor([[0.7, -0.4], [1.5, 0.3], [-0.5, -1.2], [0.0, 0.0]], dtype=torch.float64)
    score = GAUSS.score_model(sde)
    res = sde_elbo(score, sde, x, eps=eps, n_samples=3000, generator=torch.Generator().manual_seed(0))
    exact = GAUSS.log_prob(x, sde, eps)
    expected = exact - gaussian_gap(sde, x, eps)
    assert res.elbo.shape == (4,) and torch.isfinite(res.stderr).all()
    err = (res.elbo - expected).abs()
    assert bool((err <= Z * res.stderr).all()), (res.elbo, expected, res.stderr)
    # bits/dim is the same bound: −L/(D ln 2) without levels
    torch.testing.assert_close(res.bits_per_dim, -res.elbo / (D * math.log(2)))
    torch.testing.assert_close(sum(res.terms.values()), res.elbo)


@pytest.mark.parametrize("name", ["vp", "vp-short"])
def test_elbo_on_mixture_is_below_exact_log_likelihood(name):
    """Mixture data x ~ p_eps, exact score: mean(log p_eps(x) − L(x)) = KL(p_T ‖ π) ≥ 0, estimated independently by
    E[log p_T(x_T) − log π(x_T)] over x_T ~ p_T (exact samples); for the short VP SDE the gap is far beyond its SE."""
    sde, eps, n = SDES[name], 1e-3, 3000
    mix = example_mixture()
    x, _ = mix.sample(n, sde, eps, generator=torch.Generator().manual_seed(0))
    res = sde_elbo(mix.score_model(sde), sde, x, eps=eps, n_samples=4, generator=torch.Generator().manual_seed(1))
    gap = mix.log_prob(x, sde, eps) - res.elbo  # (n,)
    xT, _ = mix.sample(20000, sde, sde.T, generator=torch.Generator().manual_seed(2))
    kl = mix.log_prob(xT, sde, sde.T) - sde.prior_log_prob(xT)
    diff_se = math.sqrt(gap.var() / n + kl.var() / len(kl))
    assert abs(gap.mean() - kl.mean()) <= Z * diff_se, (gap.mean(), kl.mean(), diff_se)
    # the bound holds: mean ELBO <= mean exact log-likelihood (within SE when the gap KL(p_T‖π) is tiny)
    assert gap.mean() >= -Z * gap.std() / math.sqrt(n)
    if name == "vp-short":
        assert gap.mean() > Z * gap.std() / math.sqrt(n)
        assert kl.mean() > 0.1


def test_elbo_gap_of_a_shifted_score():
    """s = ∇log p_t + δ: mean over data of L_exact − L_δ = ½ ‖δ‖² ∫_eps^T g² dt = ½ ‖δ‖² (B(T) − B(eps)) (VP)."""
    sde, eps, n = sdekit.VPSDE(), 1e-3, 2000
    mix = example_mixture()
    x, _ = mix.sample(n, sde, eps, generator=torch.Generator().manual_seed(3))
    delta = torch.tensor([0.2, -0.1], dtype=torch.float64)
    exact = mix.score_model(sde)
    a = sde_elbo(exact, sde, x, eps=eps, n_samples=8, generator=torch.Generator().manual_seed(4))
    b = sde_elbo(lambda y, t: exact(y, t) + delta, sde, x, eps=eps, n_samples=8,
                 generator=torch.Generator().manual_seed(4))
    B = sde.integrated_beta(torch.tensor([eps, 1.0], dtype=torch.float64))
    expected = 0.5 * float(delta.pow(2).sum()) * float(B[1] - B[0])
    assert_mean_close(a.elbo - b.elbo, expected, what="ELBO gap of a shifted score")


def test_elbo_bits_and_conditioning():
    """levels/data_range give sdekit.bits_per_dim; model_kwargs reach the score per row; same generator, same bound."""
    sde = sdekit.VPSDE()
    x = torch.rand(5, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 2 - 1
    y = torch.arange(5.0, dtype=torch.float64)
    score = lambda z, t, y: -z + 0.01 * y[:, None]
    r1 = sde_elbo(score, sde, x, n_samples=4, generator=torch.Generator().manual_seed(1), model_kwargs={"y": y},
                  levels=17, data_range=(-1, 1))
    r2 = sde_elbo(score, sde, x, n_samples=4, generator=torch.Generator().manual_seed(1), model_kwargs={"y": y},
                  levels=17, data_range=(-1, 1))
    assert torch.equal(r1.elbo, r2.elbo)
    torch.testing.assert_close(r1.bits_per_dim, sdekit.bits_per_dim(r1.elbo, 3, 17, (-1, 1)))
    torch.testing.assert_close(r1.bits_stderr, r1.stderr / (3 * math.log(2)))
    with pytest.raises(ValueError, match="model_kwargs"):
        sde_elbo(score, sde, x, model_kwargs={"y": y[:2]})
    with pytest.raises(ValueError, match="n_samples"):
        sde_elbo(score, sde, x, n_samples=0)
    with pytest.raises(ValueError, match="eps"):
        sde_elbo(score, sde, x, eps=0.0)
    with pytest.raises(TypeError, match="sde"):
        sde_elbo(score, "vp", x)


# ----------------------------------------------------------------------------- DDPM


def ddpm_sde(N=40):
    betas = torch.linspace(1e-3, 0.2, N, dtype=torch.float64)
    return sdekit.DiscreteVPSDE(torch.cumprod(1 - betas, 0))


def schedule(sde):
    ac = sde.alphas_cumprod
    prev = torch.cat([torch.ones(1, dtype=torch.float64), ac[:-1]])
    alpha = ac / prev
    beta = 1 - alpha
    return ac, prev, alpha, beta, (1 - prev) * beta / (1 - ac)


LEVELS, RANGE = 8, (-1.0, 1.0)


def centres(k):
    width = (RANGE[1] - RANGE[0]) / LEVELS
    return RANGE[0] + width * (k.double() + 0.5)


def test_ddpm_prior_term_is_the_gaussian_kl():
    sde = ddpm_sde()
    k = torch.tensor([[0, 7], [3, 4]])
    res = ddpm_elbo(lambda x, t: torch.zeros_like(x), sde, k, LEVELS, RANGE, generator=torch.Generator().manual_seed(0),
                    dtype=torch.float64)
    aN = sde.alphas_cumprod[-1]
    q = torch.distributions.Normal(aN.sqrt() * centres(k), (1 - aN).sqrt())
    kl = torch.distributions.kl_divergence(q, torch.distributions.Normal(0.0, 1.0)).sum(1)
    torch.testing.assert_close(-res.terms["prior"], kl)


@pytest.mark.parametrize("variance", ["beta", "beta_tilde"])
def test_ddpm_kl_terms_with_the_oracle_noise(variance):
    """A model that returns the true noise (it is given x_0 through model_kwargs): μ_θ = μ̃, so each KL is the
    variance mismatch ½ D (β̃/σ² − 1 − log(β̃/σ²)) only; zero for σ² = β̃."""
    sde = ddpm_sde()
    k = torch.tensor([[1, 6], [2, 2], [0, 5]])
    x0 = centres(k)

    def oracle(x, t, x0):
        a = sde.alphas_cumprod[torch.round(sde.time_to_timestep(t)).long()][:, None]
        return (x - a.sqrt() * x0) / (1 - a).sqrt()

    res = ddpm_elbo(oracle, sde, k, LEVELS, RANGE, variance=variance, model_kwargs={"x0": x0},
                    generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    _, _, _, beta, bt = schedule(sde)
    var = beta if variance == "beta" else bt
    ratio = bt[1:] / var[1:]
    expected = 0.5 * D * (ratio - 1 - torch.log(ratio)).sum()
    torch.testing.assert_close(-res.terms["diffusion"], expected.expand(3), rtol=1e-9, atol=1e-9)
    if variance == "beta_tilde":
        assert float(res.terms["diffusion"].abs().max()) < 1e-9


def test_ddpm_terms_of_the_zero_model_match_closed_forms():
    """ε_θ = 0: E L_{t−1} = ½ D [β̃/σ² − 1 − log(β̃/σ²) + β²/(σ² α (1 − ᾱ_t))] (E‖ε‖² = D), checked through the
    subsampled estimator; E L_0 by Gauss–Hermite quadrature of the discretised decoder at μ = x_0 + √(β_1/α_1) ε."""
    sde, n = ddpm_sde(), 4000
    k = torch.tensor([[1, 6]]).repeat(n, 1)
    zero = lambda x, t: torch.zeros_like(x)
    res = ddpm_elbo(zero, sde, k, LEVELS, RANGE, n_timesteps=4, generator=torch.Generator().manual_seed(0),
                    dtype=torch.float64)
    ac, _, alpha, beta, bt = schedule(sde)
    ratio = bt[1:] / beta[1:]
    per_term = 0.5 * D * (ratio - 1 - torch.log(ratio) + beta[1:] ** 2 / (beta[1:] * alpha[1:] * (1 - ac[1:])))
    assert_mean_close(-res.terms["diffusion"], per_term.sum(), what="Σ L_{t-1}")
    assert torch.isfinite(res.stderr).all()
    # L_0: per dimension, E_ε[−log(Φ((b⁺ − μ)/σ) − Φ((b⁻ − μ)/σ))], σ² = β_1, μ = x_0 + √(β_1/α_1) ε
    from scipy import integrate, special

    def log_bin(a, b):  # log(Φ(b) − Φ(a)), a < b, both in the lower tail after reflection
        if a + b > 0:
            a, b = -b, -a
        lb, la = special.log_ndtr(b), special.log_ndtr(a)
        return lb + math.log1p(-math.exp(la - lb))

    sigma, spread = math.sqrt(float(beta[0])), math.sqrt(float(beta[0] / alpha[0]))
    width = (RANGE[1] - RANGE[0]) / LEVELS
    expected = 0.0
    for kd in (1, 6):
        x0 = RANGE[0] + width * (kd + 0.5)
        lo, hi = RANGE[0] + width * kd, RANGE[0] + width * (kd + 1)
        f = lambda e, lo=lo, hi=hi, x0=x0: -log_bin((lo - x0 - spread * e) / sigma,
                                                     (hi - x0 - spread * e) / sigma) * math.exp(-e * e / 2)
        expected += integrate.quad(f, -12, 12, limit=400, points=[-7.9, 0.0, 7.9])[0] / math.sqrt(2 * math.pi)
    assert_mean_close(-res.terms["decoder"], expected, what="L_0")


def test_discretized_decoder_sums_to_one_and_elbo_in_bits():
    """The decoder is a distribution over the levels (outer bins to ±∞); bits/dim = −ELBO/(D ln 2)."""
    k = torch.arange(LEVELS)[:, None]
    mean = torch.full((LEVELS, 1), 0.3, dtype=torch.float64)
    logp = discretized_gaussian_log_prob(k, mean, torch.full((LEVELS,), 0.4, dtype=torch.float64), LEVELS, RANGE)
    torch.testing.assert_close(logp.exp().sum(), torch.tensor(1.0, dtype=torch.float64))
    # far tails stay finite (stable log of CDF differences)
    far = discretized_gaussian_log_prob(torch.tensor([[0], [LEVELS - 1], [3]]), torch.tensor([[30.0], [-30.0], [40.0]],
                                        dtype=torch.float64), torch.full((3,), 0.01, dtype=torch.float64), LEVELS, RANGE)
    assert torch.isfinite(far).all() and (far < -1000).all()
    sde = ddpm_sde()
    res = ddpm_elbo(lambda x, t: torch.zeros_like(x), sde, torch.tensor([[1, 6]]), LEVELS, RANGE,
                    generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(res.bits_per_dim, -res.elbo / (D * math.log(2)))
    assert res.nfe == sde.num_timesteps
    with pytest.raises(ValueError, match="k must"):
        ddpm_elbo(lambda x, t: x, sde, torch.tensor([[8, 0]]), LEVELS, RANGE)
    with pytest.raises(TypeError, match="DiscreteVPSDE"):
        ddpm_elbo(lambda x, t: x, sdekit.VPSDE(), torch.tensor([[1, 0]]), LEVELS, RANGE)
    with pytest.raises(ValueError, match="variance"):
        ddpm_elbo(lambda x, t: x, sde, torch.tensor([[1, 0]]), LEVELS, RANGE, variance="learned")
