"""Score adapters (ε, x0, v, denoiser) and the exact Gaussian-mixture reference problem.

The adapters are checked against the exact score of :func:`sdekit.testing.example_mixture`
under VP, sub-VP and VE: the exact ε-, x0- and v-predictions are built from that
score in the test (``ε = −σ s``, Tweedie ``x0 = (x + σ² s)/m``, ``v = m ε − σ x0``)
and the adapters must invert them back to the score.  All in float64.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from scipy.special import logsumexp
from scipy.stats import multivariate_normal
from stats import assert_mean_close

import sdekit
from sdekit import VESDE, VPSDE, OrnsteinUhlenbeck, SubVPSDE
from sdekit.score_models import checked_score
from sdekit.testing import GaussianMixture, example_mixture

F64 = torch.float64
MIX = example_mixture(F64)
DIFFUSION_SDES = [VPSDE(), SubVPSDE(), VESDE()]



def _col(v):
    return v[:, None]


class NoiseLevelSDE(sdekit.AbstractLinearSDE):
    """Pure noise with ``std(t) = t``: ``x̃ ~ p_0 * N(0, t²)`` (test-local, for the denoiser)."""

    def drift(self, x, t):
        return torch.zeros_like(x)

    def diffusion(self, x, t):
        return torch.sqrt(2 * t)

    def mean_coeff(self, t):
        return torch.ones_like(t)

    def std(self, t):
        return t

    def prior_sample(self, shape, *, generator=None, device=None, dtype=None):
        raise NotImplementedError

    def prior_log_prob(self, z):
        raise NotImplementedError


class NonLinearSDE(sdekit.AbstractSDE):
    """dx = sin(x) dt + dW: no closed-form marginal (test-local)."""

    def drift(self, x, t):
        return torch.sin(x)

    def diffusion(self, x, t):
        return torch.ones_like(t)

    def prior_sample(self, shape, *, generator=None, device=None, dtype=None):
        return torch.randn(shape, generator=generator, device=device, dtype=dtype)

    def prior_log_prob(self, z):
        return torch.zeros(z.shape[0], dtype=z.dtype)


def exact_predictions(sde):
    """Exact ε-, x0- and v-prediction networks of the mixture under ``sde`` (SDE-time input)."""

    def parts(x, t):
        s = MIX.score(x, sde, t)
        return s, _col(sde.mean_coeff(t)), _col(sde.std(t))

    def eps(x, t):
        s, m, sig = parts(x, t)
        return -sig * s

    def x0(x, t):
        s, m, sig = parts(x, t)
        return (x + sig**2 * s) / m

    def v(x, t):
        s, m, sig = parts(x, t)
        return m * (-sig * s) - sig * (x + sig**2 * s) / m

    return {"epsilon": eps, "x0": x0, "v": v}


ADAPTERS = {"epsilon": sdekit.score_from_epsilon, "x0": sdekit.score_from_x0, "v": sdekit.score_from_v}


def exact_denoiser(x_tilde, sigma):
    """``D(x̃, σ̃) = E[x_0 | x̃] = x̃ + σ̃² ∇ log (p_0 * N(0, σ̃²))(x̃)`` (Tweedie, VE coordinates)."""
    return x_tilde + _col(sigma) ** 2 * MIX.score(x_tilde, NoiseLevelSDE(), sigma)


def _points(sde, t, n=64, seed=0):
    """Points drawn from p_t (plus a few far-out ones), shape (n, 2)."""
    gen = torch.Generator().manual_seed(seed)
    x, _ = MIX.sample(n, sde, t, generator=gen)
    x[:4] *= 3.0
    return x


def _assert_score_close(actual, expected):
    # Each conversion is a handful of float64 operations on O(1)-conditioned quantities.
    torch.testing.assert_close(actual, expected, rtol=1e-9, atol=1e-9 * float(expected.abs().max()))


# ---------------------------------------------------------------------------
# Adapters return the exact score.


@given(sde=st.sampled_from(DIFFUSION_SDES), u=st.floats(0.0, 1.0), kind=st.sampled_from(sorted(ADAPTERS)))
def test_adapter_recovers_exact_score_at_scalar_time(sde, u, kind):
    t_val = sde.sampling_eps + u * (sde.T - sde.sampling_eps)
    x = _points(sde, t_val)
    t = torch.full((x.shape[0],), t_val, dtype=F64)
    score = ADAPTERS[kind](exact_predictions(sde)[kind], sde)
    _assert_score_close(score(x, t), MIX.score(x, sde, t))


@pytest.mark.parametrize("sde", DIFFUSION_SDES, ids=["vp", "subvp", "ve"])
@pytest.mark.parametrize("kind", sorted(ADAPTERS))
def test_adapter_recovers_exact_score_at_per_sample_times(sde, kind):
    t = torch.linspace(sde.sampling_eps, sde.T, 50, dtype=F64)
    x = _points(sde, t, n=50, seed=1)
    score = ADAPTERS[kind](exact_predictions(sde)[kind], sde)
    _assert_score_close(score(x, t), MIX.score(x, sde, t))
    # Image-shaped input: the adapters broadcast per-sample coefficients over all trailing dims.
    net = exact_predictions(sde)[kind]
    img_score = ADAPTERS[kind](lambda xi, ti: net(xi.reshape(-1, 2), ti).reshape(xi.shape), sde)
    _assert_score_close(img_score(x.reshape(-1, 1, 2, 1), t), MIX.score(x, sde, t).reshape(-1, 1, 2, 1))


@pytest.mark.parametrize("sde", DIFFUSION_SDES, ids=["vp", "subvp", "ve"])
def test_denoiser_adapter_recovers_exact_score(sde):
    t = torch.linspace(sde.sampling_eps, sde.T, 50, dtype=F64)
    x = _points(sde, t, n=50, seed=2)
    seen = {}

    def denoiser(x_tilde, sigma):
        seen["x"], seen["sigma"] = x_tilde, sigma
        return exact_denoiser(x_tilde, sigma)

    score = sdekit.score_from_denoiser(denoiser, sde)
    _assert_score_close(score(x, t), MIX.score(x, sde, t))
    m, s = sde.mean_coeff(t), sde.std(t)
    torch.testing.assert_close(seen["sigma"], s / m, rtol=1e-14, atol=0)
    torch.testing.assert_close(seen["x"], x / _col(m), rtol=1e-14, atol=0)


def test_noise_level_sde_matches_ve_marginal():
    """Sanity for the test-local denoiser: under VE, x_t has law p_0 * N(0, σ(t)²)."""
    ve = VESDE()
    t = torch.linspace(0.1, 1.0, 20, dtype=F64)
    x = _points(ve, t, n=20)
    torch.testing.assert_close(MIX.score(x, NoiseLevelSDE(), ve.std(t)), MIX.score(x, ve, t), rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("kind", sorted(ADAPTERS))
def test_time_input_is_applied(kind):
    sde = VPSDE()
    t = torch.linspace(0.01, 1.0, 8, dtype=F64)
    x = _points(sde, t, n=8, seed=3)
    exact = exact_predictions(sde)[kind]
    seen = []

    def net(x, t_in):  # a DDPM-style network that takes 999·t
        seen.append(t_in)
        return exact(x, t_in / 999.0)

    score = ADAPTERS[kind](net, sde, time_input=lambda s: 999.0 * s)
    _assert_score_close(score(x, t), MIX.score(x, sde, t))
    torch.testing.assert_close(seen[-1], 999.0 * t, rtol=0, atol=0)

    seen.clear()
    ADAPTERS[kind](lambda x, t_in: seen.append(t_in) or torch.zeros_like(x), sde)(x, t)
    assert torch.equal(seen[-1], t)  # no time_input: SDE time is passed through


@pytest.mark.parametrize("kind", sorted(ADAPTERS) + ["denoiser"])
def test_wrong_output_shape_raises(kind):
    sde = VPSDE()
    x = torch.zeros(3, 2, dtype=F64)
    t = torch.full((3,), 0.5, dtype=F64)
    factory = {**ADAPTERS, "denoiser": sdekit.score_from_denoiser}[kind]
    with pytest.raises(ValueError, match=r"shape \(3, 1\)"):
        factory(lambda x, t: x[:, :1], sde)(x, t)
    with pytest.raises(TypeError, match="torch.Tensor"):
        factory(lambda x, t: x.numpy(), sde)(x, t)


@pytest.mark.parametrize("factory", [*ADAPTERS.values(), sdekit.score_from_denoiser])
def test_non_linear_sde_raises_type_error(factory):
    with pytest.raises(TypeError, match="linear SDE"):
        factory(lambda x, t: x, NonLinearSDE())


def test_checked_score():
    def score(x, t):
        return -x

    wrapped = checked_score(score)
    x = torch.ones(2, 3, dtype=F64)
    t = torch.zeros(2, dtype=F64)
    assert torch.equal(wrapped(x, t), -x)
    assert checked_score(wrapped) is wrapped
    with pytest.raises(ValueError, match=r"shape \(2, 2\)"):
        checked_score(lambda x, t: x[:, :2])(x, t)
    with pytest.raises(TypeError):
        checked_score(42)


# ---------------------------------------------------------------------------
# GaussianMixture.


def _component_params(mix, sde, t):
    """Component means and covariances of p_t as numpy arrays (scalar t)."""
    mu, cov = mix.means.numpy(), mix.covs.numpy()
    if sde is None:
        return mu, cov
    tt = torch.tensor([t], dtype=F64)
    m, c, s = (float(f(tt)) for f in (sde.mean_coeff, sde.mean_offset, sde.std))
    return m * mu + c, m**2 * cov + s**2 * np.eye(mix.D)


def _scipy_log_prob(mix, x, sde, t):
    mu, cov = _component_params(mix, sde, t)
    terms = [
        math.log(w) + multivariate_normal(mu[k], cov[k]).logpdf(x.numpy()) for k, w in enumerate(mix.weights.tolist())
    ]
    return logsumexp(np.stack(terms), axis=0)


MIX_CASES = [
    pytest.param(None, None, id="data"),
    pytest.param(VPSDE(), 0.3, id="vp"),
    pytest.param(SubVPSDE(), 0.5, id="subvp"),
    pytest.param(VESDE(sigma_max=5.0), 0.6, id="ve"),
    pytest.param(OrnsteinUhlenbeck(1.2, 0.9, mu=0.7), 0.8, id="ou"),
]


@pytest.mark.parametrize("sde, t", MIX_CASES)
def test_log_prob_matches_scipy(sde, t):
    x = torch.randn(40, 2, dtype=F64, generator=torch.Generator().manual_seed(4)) * 2.0
    np.testing.assert_allclose(MIX.log_prob(x, sde, t).numpy(), _scipy_log_prob(MIX, x, sde, t), rtol=1e-11, atol=1e-11)
    resp = MIX.responsibilities(x, sde, t)
    torch.testing.assert_close(resp.sum(1), torch.ones(40, dtype=F64))


@pytest.mark.parametrize("sde, t", MIX_CASES[:2])
def test_log_prob_integrates_to_one(sde, t):
    # Trapezoid rule on [-8, 8]²: for Gaussians with std ≥ 0.3 and spacing 0.04 the quadrature
    # error is ~exp(-2π² 0.3²/0.04²) (negligible) and the mass outside the box is < 1e-12.
    grid = torch.linspace(-8.0, 8.0, 401, dtype=F64)
    X, Y = torch.meshgrid(grid, grid, indexing="ij")
    p = MIX.log_prob(torch.stack([X.reshape(-1), Y.reshape(-1)], 1), sde, t).exp().reshape(401, 401)
    total = torch.trapezoid(torch.trapezoid(p, grid, dim=1), grid)
    assert float(total) == pytest.approx(1.0, abs=1e-9)


@pytest.mark.parametrize("sde, t", MIX_CASES)
def test_score_is_gradient_of_log_prob(sde, t):
    x = (torch.randn(30, 2, dtype=F64, generator=torch.Generator().manual_seed(5)) * 2.0).requires_grad_(True)
    (grad,) = torch.autograd.grad(MIX.log_prob(x, sde, t).sum(), x)
    torch.testing.assert_close(MIX.score(x.detach(), sde, t), grad, rtol=1e-10, atol=1e-12)
    # Flattened image-shaped input gives the same, reshaped.
    x_img = x.detach().reshape(30, 1, 2)
    torch.testing.assert_close(MIX.score(x_img, sde, t), grad.reshape(30, 1, 2), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(MIX.score_model(sde)(x.detach(), t), grad, rtol=1e-10, atol=1e-12)


def test_score_with_per_sample_times_matches_scalar_times():
    sde = VPSDE()
    x = torch.randn(6, 2, dtype=F64, generator=torch.Generator().manual_seed(6))
    t = torch.linspace(0.05, 1.0, 6, dtype=F64)
    batched = MIX.score(x, sde, t)
    for i in range(6):
        torch.testing.assert_close(batched[i : i + 1], MIX.score(x[i : i + 1], sde, float(t[i])), rtol=1e-14, atol=0)


def test_a_rows_score_does_not_depend_on_its_batch():
    """Bit for bit: the jobs' batch invariance (a sample's result whatever batch it is drawn in) needs it."""
    sde = VPSDE()
    x = torch.randn(37, 2, dtype=F64, generator=torch.Generator().manual_seed(8))
    t = torch.linspace(0.05, 1.0, 37, dtype=F64)
    batched, log_p = MIX.score(x, sde, t), MIX.log_prob(x, sde, t)
    for i in (0, 5, 36):
        assert torch.equal(MIX.score(x[i : i + 1], sde, t[i : i + 1]), batched[i : i + 1])
        assert torch.equal(MIX.log_prob(x[i : i + 1], sde, t[i : i + 1]), log_p[i : i + 1])
    assert torch.equal(MIX.score(x[3:20], sde, t[3:20]), batched[3:20])


@pytest.mark.parametrize("sde, t", MIX_CASES)
def test_sample_moments(sde, t):
    n = 40_000
    x, k = MIX.sample(n, sde, t, generator=torch.Generator().manual_seed(7))
    assert x.shape == (n, 2) and x.dtype == F64 and k.shape == (n,)
    mu, cov = _component_params(MIX, sde, t)
    w = MIX.weights.numpy()
    mean = np.einsum("k,kd->d", w, mu)
    second = np.einsum("k,kde->de", w, cov + np.einsum("kd,ke->kde", mu, mu))
    features = torch.stack(
        [x[:, 0], x[:, 1], x[:, 0] ** 2, x[:, 1] ** 2, x[:, 0] * x[:, 1], *((k == j).double() for j in range(3))], 1
    )
    expected = [*mean, second[0, 0], second[1, 1], second[0, 1], *w]
    assert_mean_close(features, expected, what="mixture sample moments [x, y, x², y², xy, 1{k=j}]")
    # Given its component, each sample has that component's mean.
    for j in range(3):
        assert_mean_close(x[k == j], mu[j], what=f"component {j} mean")


def test_example_mixture_parameters():
    mix = example_mixture()
    assert (mix.K, mix.D) == (3, 2)
    assert mix.weights.dtype == F64
    assert float(mix.weights.sum()) == pytest.approx(1.0, abs=1e-15)
    assert bool((torch.linalg.eigvalsh(mix.covs) > 0).all())
    assert example_mixture(torch.float32).means.dtype == torch.float32


def _valid():
    return MIX.weights.clone(), MIX.means.clone(), MIX.covs.clone()


def test_mixture_bad_input():
    w, mu, cov = _valid()
    with pytest.raises(ValueError, match="shapes"):
        GaussianMixture(torch.tensor([0.5, 0.5], dtype=F64), mu, cov)
    with pytest.raises(ValueError, match="shapes"):
        GaussianMixture(w, mu, cov[:, :1, :1])
    with pytest.raises(ValueError, match="means"):
        GaussianMixture(w, mu[0], cov)
    with pytest.raises(ValueError, match="sum to 1"):
        GaussianMixture(w * 0.9, mu, cov)
    with pytest.raises(ValueError, match="positive"):
        GaussianMixture(torch.tensor([1.2, -0.4, 0.2], dtype=F64), mu, cov)
    with pytest.raises(ValueError, match="positive"):
        GaussianMixture(torch.tensor([1.0, 0.0, 0.0], dtype=F64), mu, cov)
    bad_cov = cov.clone()
    bad_cov[1] = torch.tensor([[1.0, 2.0], [2.0, 1.0]], dtype=F64)  # eigenvalues 3, -1
    with pytest.raises(ValueError, match="positive definite"):
        GaussianMixture(w, mu, bad_cov)
    with pytest.raises(TypeError, match="weights"):
        GaussianMixture([0.5, 0.3, 0.2], mu, cov)
    with pytest.raises(TypeError, match="means"):
        GaussianMixture(w, mu.long(), cov)
    mix = GaussianMixture(w, mu, cov)
    with pytest.raises(ValueError, match="D=2"):
        mix.log_prob(torch.zeros(4, 3, dtype=F64))
    with pytest.raises(TypeError, match="linear SDE"):
        mix.score(torch.zeros(4, 2, dtype=F64), NonLinearSDE(), 0.5)
    with pytest.raises(TypeError, match="linear SDE"):
        mix.sample(4, NonLinearSDE(), 0.5)


def test_mixture_rejects_non_symmetric_covariance():
    w, mu, cov = _valid()
    cov[0, 0, 1] = 5.0  # upper triangle no longer matches the lower one
    with pytest.raises(ValueError, match="symmetric"):
        GaussianMixture(w, mu, cov)
