"""Training losses (sdekit.losses) against closed forms on Gaussian / Gaussian-mixture data with the exact score.

Every statistical check compares a Monte-Carlo mean with an independently computed value (quadrature of
the closed-form minimum, or an independent Monte-Carlo estimate), within 5 standard errors (tests/stats.py).
"""

import math

import numpy as np
import pytest
import torch
from scipy import stats
from stats import Z, assert_mean_close

import sdekit
from sdekit.losses import (
    PARAMETERIZATIONS,
    ddpm_simple_loss,
    dsm_loss,
    sample_time,
    sliced_score_matching_loss,
)
from sdekit.testing.mixture import GaussianMixture, example_mixture

MU = torch.tensor([0.7, -0.4], dtype=torch.float64)
COV = torch.tensor([[0.5, 0.2], [0.2, 0.3]], dtype=torch.float64)
GAUSS = GaussianMixture(torch.ones(1, dtype=torch.float64), MU[None], COV[None])
D = 2
SIGMA_DATA = 0.5


def ddpm_sde(N=100):
    betas = torch.linspace(1e-4, 0.05, N, dtype=torch.float64)
    return sdekit.DiscreteVPSDE(torch.cumprod(1 - betas, 0))


SDES = {
    "vp": (sdekit.VPSDE(), 1e-3),
    "subvp": (sdekit.SubVPSDE(), 1e-3),
    "ve": (sdekit.VESDE(sigma_min=0.01, sigma_max=20.0), 1e-5),
    "edm": (sdekit.EDMSDE(sigma_min=0.002, sigma_max=80.0), 0.002),
    "ddpm": (ddpm_sde(), None),
}


def exact_model(mixture, sde, parameterization):
    """The exact score of ``mixture`` under ``sde`` as a network in each parameterisation."""

    def model(x, t, **_):
        s = mixture.score(x, sde, t)
        m, sd = sde.mean_coeff(t)[:, None], sde.std(t)[:, None]
        eps = -sd * s
        x0 = (x + sd**2 * s) / m
        return {"score": s, "epsilon": eps, "x0": x0, "v": m * eps - sd * x0}[parameterization]

    return model


def lam(sde, t, weighting):
    """λ(t) in score units, written out independently of sdekit.losses."""
    m, s = sde.mean_coeff(t), sde.std(t)
    if weighting == "sigma2":
        return s**2
    if weighting == "likelihood":
        return sde.diffusion(torch.zeros(t.shape + (1,), dtype=t.dtype), t) ** 2
    st = s / m
    return (st**2 + SIGMA_DATA**2) / (st * SIGMA_DATA) ** 2 * st**4 * m**2


def gaussian_marginal(sde, t):
    t = torch.as_tensor([t], dtype=torch.float64)
    m, s = sde.mean_coeff(t)[0], sde.std(t)[0]
    return m * MU, m**2 * COV + s**2 * torch.eye(D, dtype=torch.float64)


def dsm_minimum(sde, t, weighting):
    """λ(t) E‖∇log p_t − ∇log p_{0t}‖² = λ (D/σ² − tr Σ_t⁻¹) for Gaussian data, at times ``t`` (float64 tensor)."""
    m, s = sde.mean_coeff(t), sde.std(t)
    cov = m[:, None, None] ** 2 * COV + s[:, None, None] ** 2 * torch.eye(D, dtype=torch.float64)
    return lam(sde, t, weighting) * (D / s**2 - torch.linalg.inv(cov).diagonal(dim1=-2, dim2=-1).sum(-1))


def time_average(f, sde, eps, time_sampling, n_grid=200001):
    """E_π f(t) for π = U[eps, T], or EDM's truncated log-normal: trapezoid rule on a fine log-time grid.

    ``f`` maps a float64 tensor of times to values; the grid's relative error is far below the 5-SE tolerances."""
    T = float(sde.T)
    u = torch.linspace(math.log(eps), math.log(T), n_grid, dtype=torch.float64)
    t = torch.exp(u)
    if time_sampling == "edm":
        norm = stats.norm(-1.2, 1.2)
        dens = torch.as_tensor(norm.pdf(u.numpy())) / (norm.cdf(math.log(T)) - norm.cdf(math.log(eps)))
    else:
        dens = t / (T - eps)  # dt = t du
    y = f(t) * dens
    return float(((y[1:] + y[:-1]) / 2 * u.diff()).sum())


CASES = [
    ("vp", "sigma2", "uniform"), ("vp", "likelihood", "uniform"), ("vp", "likelihood", "importance"),
    ("vp", "edm", "uniform"), ("subvp", "sigma2", "uniform"), ("subvp", "likelihood", "importance"),
    ("ve", "sigma2", "uniform"), ("ve", "likelihood", "importance"), ("edm", "likelihood", "importance"),
    ("edm", "edm", "edm"), ("edm", "sigma2", "uniform"), ("ddpm", "likelihood", "importance"),
]


@pytest.mark.parametrize("i, case", list(enumerate(CASES)), ids=["-".join(c) for c in CASES])
def test_dsm_at_exact_score_equals_closed_form_minimum(i, case):
    name, weighting, time_sampling = case
    sde, eps = SDES[name]
    eps = sde.sampling_eps if eps is None else eps
    param = PARAMETERIZATIONS[i % 4]
    n = 20000
    gen = torch.Generator().manual_seed(100 + i)
    x0, _ = GAUSS.sample(n, generator=gen)
    loss = dsm_loss(exact_model(GAUSS, sde, param), sde, x0, parameterization=param, weighting=weighting,
                    time_sampling=time_sampling, eps=eps, generator=gen, sigma_data=SIGMA_DATA)
    assert loss.shape == (n,)
    expected = time_average(lambda t: dsm_minimum(sde, t, weighting), sde, eps, time_sampling)
    assert_mean_close(loss, expected, what=f"DSM minimum {case} ({param})")


@pytest.mark.parametrize("t", [0.01, 0.2, 0.8])
@pytest.mark.parametrize("weighting", ["sigma2", "likelihood", "edm"])
def test_dsm_at_exact_score_on_mixture_matches_independent_monte_carlo(t, weighting):
    """Mixture data, fixed t: the minimum λ (D/σ² − E_{p_t}‖∇log p_t‖²), the expectation by independent draws of p_t."""
    mix, sde, n = example_mixture(), sdekit.VPSDE(), 20000
    gen = torch.Generator().manual_seed(7)
    x0, _ = mix.sample(n, generator=gen)
    tt = torch.full((n,), t, dtype=torch.float64)
    loss = dsm_loss(exact_model(mix, sde, "score"), sde, x0, t=tt, weighting=weighting, generator=gen,
                    sigma_data=SIGMA_DATA)
    xt, _ = mix.sample(n, sde, t, generator=torch.Generator().manual_seed(8))
    sq = mix.score(xt, sde, t).pow(2).sum(1)
    lam_t = float(lam(sde, tt[:1], weighting)[0])
    s2 = float(sde.std(tt[:1])[0]) ** 2
    expected = lam_t * (D / s2 - sq.mean())
    se = math.sqrt(loss.var() / n + lam_t**2 * sq.var() / n)
    assert abs(loss.mean() - expected) <= Z * se, (loss.mean(), expected, se)


@pytest.mark.parametrize("weighting", ["sigma2", "likelihood", "edm"])
@pytest.mark.parametrize("name", ["vp", "ve", "edm"])
def test_parameterisations_agree_at_the_exact_model(name, weighting):
    sde, eps = SDES[name]
    x0, _ = example_mixture().sample(64, generator=torch.Generator().manual_seed(0))
    out = {p: dsm_loss(exact_model(example_mixture(), sde, p), sde, x0, parameterization=p, weighting=weighting,
                       eps=eps, generator=torch.Generator().manual_seed(1)) for p in PARAMETERIZATIONS}
    for p in PARAMETERIZATIONS[1:]:
        torch.testing.assert_close(out[p], out["score"], rtol=1e-7, atol=1e-9)


GRAD_CASES = [("vp", "sigma2", "uniform", "epsilon"), ("vp", "likelihood", "importance", "score"),
              ("vp", "likelihood", "uniform", "v"), ("subvp", "likelihood", "importance", "x0"),
              ("ve", "edm", "uniform", "x0"), ("edm", "edm", "edm", "v")]


@pytest.mark.parametrize("case", GRAD_CASES, ids=["-".join(c) for c in GRAD_CASES])
def test_dsm_gradient_is_unbiased(case):
    """Model s_θ = −(x − m θ)/(m² c + σ²): E ∂J/∂θ = E_π[λ · 2 m² (θ − μ)/(m² c + σ²)²], whatever the data covariance.

    Each sample has its own copy of θ, so one backward pass gives per-sample gradients (and their SE)."""
    name, weighting, time_sampling, param = case
    sde, eps = SDES[name]
    c, n = 0.4, 20000
    theta0 = torch.tensor([0.2, 0.1], dtype=torch.float64)
    theta = theta0.repeat(n, 1).requires_grad_(True)

    def model(x, t):
        m, sd = sde.mean_coeff(t)[:, None], sde.std(t)[:, None]
        s = -(x - m * theta) / (m**2 * c + sd**2)
        eps_hat = -sd * s
        x0_hat = (x + sd**2 * s) / m
        return {"score": s, "epsilon": eps_hat, "x0": x0_hat, "v": m * eps_hat - sd * x0_hat}[param]

    gen = torch.Generator().manual_seed(3)
    x0, _ = GAUSS.sample(n, generator=gen)
    loss = dsm_loss(model, sde, x0, parameterization=param, weighting=weighting, time_sampling=time_sampling,
                    eps=eps, generator=gen, sigma_data=SIGMA_DATA)
    loss.sum().backward()

    def expected_coeff(t):
        m, sd = sde.mean_coeff(t), sde.std(t)
        return lam(sde, t, weighting) * 2 * m**2 / (m**2 * c + sd**2) ** 2

    coeff = time_average(expected_coeff, sde, eps, time_sampling)
    assert_mean_close(theta.grad, coeff * (theta0 - MU), what=f"gradient {case}")


@pytest.mark.parametrize("weighting, time_sampling", [("sigma2", "uniform"), ("likelihood", "importance")])
def test_perturbed_score_has_larger_loss(weighting, time_sampling):
    """s + δ: the loss rises by E_π[λ] ‖δ‖² (cross term has mean zero); paired on the same draws, beyond 5 SE."""
    mix, sde, n = example_mixture(), sdekit.VPSDE(), 20000
    delta = torch.tensor([0.3, -0.2], dtype=torch.float64)
    x0, _ = mix.sample(n, generator=torch.Generator().manual_seed(0))
    exact = exact_model(mix, sde, "score")
    kw = {"weighting": weighting, "time_sampling": time_sampling, "eps": 1e-3}
    base = dsm_loss(exact, sde, x0, generator=torch.Generator().manual_seed(5), **kw)
    pert = dsm_loss(lambda x, t: exact(x, t) + delta, sde, x0, generator=torch.Generator().manual_seed(5), **kw)
    diff = pert - base
    se = diff.std() / math.sqrt(n)
    assert diff.mean() > Z * se
    mean_lam = time_average(lambda t: lam(sde, t, weighting), sde, 1e-3, "uniform")
    assert_mean_close(diff, mean_lam * float(delta.pow(2).sum()), what="loss increase")


def test_same_generator_same_loss_and_conditioning_reaches_the_model():
    sde = sdekit.VPSDE()
    x0 = torch.randn(8, 3, generator=torch.Generator().manual_seed(0))
    seen = {}

    def model(x, t, y=None, scale=1.0):
        seen["y"], seen["scale"] = y, scale
        return x * 0.1 * scale + y[:, None]

    y = torch.arange(8.0)
    a = dsm_loss(model, sde, x0, generator=torch.Generator().manual_seed(1), model_kwargs={"y": y, "scale": 2.0},
                 time_sampling="importance", weighting="likelihood")
    b = dsm_loss(model, sde, x0, generator=torch.Generator().manual_seed(1), model_kwargs={"y": y, "scale": 2.0},
                 time_sampling="importance", weighting="likelihood")
    c = dsm_loss(model, sde, x0, generator=torch.Generator().manual_seed(2), model_kwargs={"y": y, "scale": 2.0},
                 time_sampling="importance", weighting="likelihood")
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert seen["y"] is y and seen["scale"] == 2.0
    with pytest.raises(ValueError, match=r"model_kwargs\['y'\]"):
        dsm_loss(model, sde, x0, model_kwargs={"y": torch.zeros(3)})


@pytest.mark.parametrize("name, dist", [("vp", "likelihood"), ("subvp", "likelihood"), ("ddpm", "likelihood"),
                                        ("edm", "likelihood"), ("edm", "edm"), ("ve", "uniform")])
def test_sample_time_follows_its_density(name, dist):
    """Times lie in [eps, T]; their CDF is the proposal's (KS test against the density integrated on a fine
    log-time grid), and the importance weights have mean 1 (E_q[π/q] = 1)."""
    sde, eps = SDES[name]
    eps = sde.sampling_eps if eps is None else eps
    t, w = sample_time(4000, sde, eps, dist, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    T = float(sde.T)
    assert float(t.min()) >= eps and float(t.max()) <= T
    grid = torch.exp(torch.linspace(math.log(eps), math.log(T), 200001, dtype=torch.float64))
    if dist == "likelihood":
        dens = lam(sde, grid, "likelihood") / sde.std(grid) ** 2
        assert_mean_close(w, 1.0, what="importance weights")
    elif dist == "edm":
        dens = torch.as_tensor(stats.norm(-1.2, 1.2).pdf(np.log(grid.numpy())) / grid.numpy())
    else:
        dens = torch.ones_like(grid)
        assert torch.equal(w, torch.ones_like(w))
    steps = (dens[1:] + dens[:-1]) / 2 * grid.diff()
    cdf = torch.cat([torch.zeros(1, dtype=torch.float64), steps.cumsum(0)])
    cdf = (cdf / cdf[-1]).numpy()
    assert stats.kstest(t.numpy(), lambda v: np.interp(v, grid.numpy(), cdf)).pvalue > 1e-3


def test_ddpm_simple_loss_at_exact_model_equals_closed_form():
    """E L_simple = (1/N) Σ_k (D − σ_k² tr Σ_k⁻¹)/D for Gaussian data and the exact ε-model (mean over dims)."""
    sde, n = ddpm_sde(50), 20000
    gen = torch.Generator().manual_seed(0)
    x0, _ = GAUSS.sample(n, generator=gen)
    loss = ddpm_simple_loss(exact_model(GAUSS, sde, "epsilon"), sde, x0, generator=gen)
    ac = sde.alphas_cumprod
    vals = []
    for a in ac:
        cov = a * COV + (1 - a) * torch.eye(D, dtype=torch.float64)
        vals.append((D - (1 - a) * torch.linalg.inv(cov).trace()) / D)
    assert_mean_close(loss, torch.stack(vals).mean(), what="L_simple")
    # the timestep reaches the model as SDE time t_k = (k+1)/N, or through time_input as the index k
    ks = []
    ddpm_simple_loss(lambda x, t: (ks.append(t), x)[1], sde, x0[:500], generator=gen, time_input=sde.time_to_timestep)
    k = ks[0]
    assert torch.allclose(k, k.round(), atol=1e-9) and k.min() >= 0 and k.max() <= 49 and len(k.unique()) > 40


@pytest.mark.parametrize("variance_reduction, projection", [(False, "gaussian"), (False, "rademacher"),
                                                           (True, "gaussian")])
def test_sliced_score_matching_at_exact_score(variance_reduction, projection):
    """E[SSM] = λ (½ E‖s − ∇log p_t‖² − ½ E‖∇log p_t‖²) = −½ λ tr Σ_t⁻¹ at the exact score (Gaussian data, fixed t);
    a shifted score s + δ raises it by ½ λ ‖δ‖²."""
    sde, n, t = sdekit.VPSDE(), 20000, 0.3
    gen = torch.Generator().manual_seed(0)
    x0, _ = GAUSS.sample(n, generator=gen)
    tt = torch.full((n,), t, dtype=torch.float64)
    score = exact_model(GAUSS, sde, "score")
    kw = {"t": tt, "n_projections": 2, "projection": projection, "variance_reduction": variance_reduction,
              "create_graph": False}
    loss = sliced_score_matching_loss(score, sde, x0, generator=torch.Generator().manual_seed(1), **kw)
    _, cov = gaussian_marginal(sde, t)
    lam_t = float(sde.std(tt[:1])[0]) ** 2
    assert_mean_close(loss.detach(), -0.5 * lam_t * torch.linalg.inv(cov).trace(), what="SSM at exact score")
    delta = torch.tensor([0.5, 0.5], dtype=torch.float64)
    pert = sliced_score_matching_loss(lambda x, t: score(x, t) + delta, sde, x0,
                                      generator=torch.Generator().manual_seed(1), **kw)
    diff = (pert - loss).detach()
    assert diff.mean() > Z * diff.std() / math.sqrt(n)
    assert_mean_close(diff, 0.5 * lam_t * float(delta.pow(2).sum()), what="SSM increase")


def test_bad_input_names_the_argument():
    sde = sdekit.VPSDE()
    x0 = torch.randn(4, 2)
    model = lambda x, t: x
    with pytest.raises(ValueError, match="weighting"):
        dsm_loss(model, sde, x0, weighting="snr")
    with pytest.raises(ValueError, match="parameterization"):
        dsm_loss(model, sde, x0, parameterization="eps")
    with pytest.raises(ValueError, match="time_sampling"):
        dsm_loss(model, sde, x0, time_sampling="lognormal")
    with pytest.raises(ValueError, match="eps"):
        dsm_loss(model, sde, x0, eps=0.0)
    with pytest.raises(ValueError, match="t must"):
        dsm_loss(model, sde, x0, t=torch.full((4,), 2.0))
    with pytest.raises(ValueError, match="t must"):
        dsm_loss(model, sde, x0, t=torch.full((3,), 0.5))
    with pytest.raises(TypeError, match="sde"):
        dsm_loss(model, "vp", x0)
    with pytest.raises(TypeError, match="model"):
        dsm_loss(None, sde, x0)
    with pytest.raises(ValueError, match="x0"):
        dsm_loss(model, sde, torch.randn(0, 2))
    with pytest.raises(ValueError, match="x0"):
        dsm_loss(model, sde, torch.tensor([[float("nan"), 0.0]]))
    with pytest.raises(ValueError, match="shape"):
        dsm_loss(lambda x, t: x[:, :1], sde, x0)
    with pytest.raises(ValueError, match="importance"):
        dsm_loss(model, sde, x0, weighting="edm", time_sampling="importance")
    with pytest.raises(ValueError, match="EDMSDE"):
        dsm_loss(model, sde, x0, time_sampling="edm")
    with pytest.raises(ValueError, match="offset-free"):
        dsm_loss(model, sdekit.OrnsteinUhlenbeck(1.0, 1.0, mu=1.0), x0, parameterization="x0")
    with pytest.raises(TypeError, match="DiscreteVPSDE"):
        ddpm_simple_loss(model, sde, x0)
    with pytest.raises(ValueError, match="n_projections"):
        sliced_score_matching_loss(model, sde, x0, n_projections=0)
    with pytest.raises(ValueError, match="distribution"):
        sample_time(4, sde, 1e-3, "beta")
