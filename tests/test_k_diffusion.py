"""sdekit's k-diffusion samplers agree with k-diffusion's own on the same denoiser and σ schedule."""

import math

import pytest
import torch
from k_diffusion_reference import load_sampling

import sdekit
from sdekit.integrations import k_diffusion as ours
from sdekit.testing import GaussianMixture, example_mixture

KD = load_sampling()
needs_kd = pytest.mark.skipif(isinstance(KD, str), reason=KD if isinstance(KD, str) else "")
SDE = sdekit.EDMSDE()
MIX = example_mixture()
N_STEPS = 30


def mixture_denoiser(mixture=MIX):
    """Exact denoiser of a Gaussian mixture under x = x_0 + σ ε: D = x + σ² ∇ log p_σ (in float64)."""

    def D(x, sigma):
        x64, s64 = x.double(), sigma.double()
        return (x64 + s64[:, None] ** 2 * mixture.score(x64, SDE, s64)).to(x.dtype)

    return D


class TinyDenoiser(torch.nn.Module):
    """A small random network with EDM's preconditioning (Karras et al. 2022, Table 1), images (B, 1, 4, 4)."""

    def __init__(self):
        super().__init__()
        with torch.random.fork_rng():
            torch.manual_seed(0)
            self.net = torch.nn.Sequential(torch.nn.Linear(17, 32), torch.nn.SiLU(), torch.nn.Linear(32, 16))

    def forward(self, x, sigma):
        c_skip, c_out = 1 / (sigma**2 + 1), sigma / (sigma**2 + 1).sqrt()
        c_in = 1 / (sigma**2 + 1).sqrt()
        h = torch.cat([(c_in[:, None] * x.flatten(1)), sigma.log()[:, None] / 4], dim=1)
        return c_skip[:, None, None, None] * x + c_out[:, None, None, None] * self.net(h).reshape(x.shape)


def _problem(kind, dtype, grid="karras"):
    """(model, x = σ_max ε, sigmas) on k-diffusion's Karras or exponential (log-uniform in σ) grid."""
    get_sigmas = KD.get_sigmas_karras if grid == "karras" else KD.get_sigmas_exponential
    sigmas = get_sigmas(N_STEPS, 0.002, 80.0).to(dtype)
    gen = torch.Generator().manual_seed(0)
    if kind == "mixture":
        model, shape = mixture_denoiser(), (256, 2)
    else:
        model, shape = TinyDenoiser().to(dtype), (64, 1, 4, 4)
    return model, torch.randn(shape, generator=gen, dtype=dtype) * sigmas[0], sigmas


def _tolerance(dtype, scale):
    """Rounding bound: a few units of roundoff per step, over the run, relative to the output's scale."""
    return 10 * N_STEPS * torch.finfo(dtype).eps * max(1.0, scale)


@needs_kd
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("kind", ["mixture", "network"])
@pytest.mark.parametrize("name", ["euler", "heun"])
def test_deterministic_samplers_agree_with_k_diffusion(name, kind, dtype):
    model, x, sigmas = _problem(kind, dtype)
    expected = getattr(KD, f"sample_{name}")(model, x, sigmas, disable=True)
    got = getattr(ours, f"sample_{name}")(model, x, sigmas, disable=True)
    diff = float((got - expected).abs().max())
    assert diff <= _tolerance(dtype, float(expected.abs().max())), diff


@needs_kd
@pytest.mark.parametrize("eta", [1.0, 0.5])
def test_euler_ancestral_agrees_with_k_diffusion_on_the_same_noise(eta):
    model, x, sigmas = _problem("mixture", torch.float64)
    gen = torch.Generator().manual_seed(1)
    noise = [torch.randn(x.shape, generator=gen, dtype=x.dtype) for _ in range(N_STEPS)]

    def sampler():
        draws = iter(noise)
        return lambda sigma, sigma_next: next(draws)

    expected = KD.sample_euler_ancestral(model, x, sigmas, disable=True, eta=eta, noise_sampler=sampler())
    got = ours.sample_euler_ancestral(model, x, sigmas, disable=True, eta=eta, noise_sampler=sampler())
    assert float((got - expected).abs().max()) <= _tolerance(torch.float64, float(expected.abs().max()))


def test_dopri5_follows_the_exact_probability_flow():
    """Single Gaussian N(μ, Σ): the flow from σ_0 to σ_min is x ↦ μ + (C_min/C_0)^{1/2}(x − μ), C_σ = Σ + σ²I,
    and the last step to σ = 0 is the denoiser D(x, σ_min) = μ + Σ C_min⁻¹ (x − μ)."""
    gauss = GaussianMixture(torch.ones(1, dtype=torch.float64), MIX.means[:1], MIX.covs[:1])
    sigmas = torch.tensor([80.0, 10.0, 0.01, 0.0], dtype=torch.float64)
    x = 80.0 * torch.randn(200, 2, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    got, info = ours.sample_dopri5(mixture_denoiser(gauss), x, sigmas, rtol=1e-7, atol=1e-7, return_info=True)
    lam, U = torch.linalg.eigh(MIX.covs[0])
    mu = MIX.means[0]
    C = lambda s: lam + s**2
    flow = U @ torch.diag((C(0.01) / C(80.0)).sqrt()) @ U.T
    denoise = U @ torch.diag(lam / C(0.01)) @ U.T
    exact = mu + (x - mu) @ flow.T @ denoise.T
    assert float((got - exact).abs().max()) < 1e-5
    assert info["nfe"].shape == (200,) and bool((info["nfe"] > 2).all())


def test_denoiser_score_is_the_mixture_score():
    g = torch.Generator().manual_seed(3)
    x = 3 * torch.randn(16, 2, generator=g, dtype=torch.float64)
    sigma = torch.exp(torch.randn(16, generator=g, dtype=torch.float64))
    score = ours.denoiser_score(mixture_denoiser())
    torch.testing.assert_close(score(x, sigma), MIX.score(x, SDE, sigma), rtol=1e-10, atol=1e-10)


def test_callback_extra_args_and_churn():
    seen = []
    calls = []

    def model(x, sigma, scale):
        calls.append(scale)
        return mixture_denoiser()(x, sigma) * scale

    sigmas = torch.tensor([10.0, 1.0, 0.1, 0.0], dtype=torch.float64)
    x = 10 * torch.randn(8, 2, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    ours.sample_heun(model, x, sigmas, extra_args={"scale": 1.0}, callback=seen.append, disable=True)
    assert [d["i"] for d in seen] == [0, 1, 2] and set(calls) == {1.0}
    assert set(seen[0]) == {"x", "i", "sigma", "sigma_hat", "denoised"} and seen[0]["denoised"].shape == x.shape
    # Churn draws from the generator: reproducible, and different from no churn.
    run = lambda seed: ours.sample_euler(mixture_denoiser(), x, sigmas, s_churn=2.0, disable=True,
                                         generator=torch.Generator().manual_seed(seed))
    torch.testing.assert_close(run(0), run(0))
    assert not torch.allclose(run(0), ours.sample_euler(mixture_denoiser(), x, sigmas, disable=True))


@pytest.mark.parametrize("sigmas, match", [
    (torch.tensor([1.0, 2.0, 0.0]), "decreasing"),
    (torch.tensor([2.0, 1.0, -1.0]), ">= 0"),
    (torch.tensor([[2.0, 0.0]]), "1-D"),
    (torch.tensor([2.0, math.nan]), "finite"),
])
def test_bad_sigmas_are_rejected(sigmas, match):
    with pytest.raises(ValueError, match=match):
        ours.sample_euler(mixture_denoiser(), torch.zeros(2, 2), sigmas, disable=True)


@needs_kd
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("kind", ["mixture", "network"])
def test_dpmpp_2m_agrees_with_k_diffusion(kind, dtype):
    model, x, sigmas = _problem(kind, dtype)
    seen_kd, seen = [], []
    expected = KD.sample_dpmpp_2m(model, x, sigmas, disable=True, callback=seen_kd.append)
    got = ours.sample_dpmpp_2m(model, x, sigmas, disable=True, callback=seen.append)
    scale = float(expected.abs().max())
    assert float((got - expected).abs().max()) <= _tolerance(dtype, scale)
    assert [d["i"] for d in seen] == [d["i"] for d in seen_kd] == list(range(N_STEPS))
    for ref, ours_ in zip(seen_kd, seen):
        assert float(ours_["sigma"]) == float(ref["sigma"])
        assert float((ours_["denoised"] - ref["denoised"]).abs().max()) <= _tolerance(dtype, scale)


@needs_kd
def test_dpmpp_2m_agrees_with_k_diffusion_without_the_step_to_zero():
    model, x, sigmas = _problem("mixture", torch.float64)
    expected = KD.sample_dpmpp_2m(model, x, sigmas[:-1], disable=True)
    got = ours.sample_dpmpp_2m(model, x, sigmas[:-1], disable=True)
    assert float((got - expected).abs().max()) <= _tolerance(torch.float64, float(expected.abs().max()))
    one = torch.tensor([80.0, 0.0], dtype=torch.float64)  # a single step to 0 returns D(x, σ_0)
    torch.testing.assert_close(ours.sample_dpmpp_2m(model, x, one, disable=True), model(x, 80.0 * x.new_ones(256)))


@needs_kd
@pytest.mark.parametrize("name, kwargs", [
    ("euler_ancestral", {}),
    ("euler_ancestral", {"eta": 0.5}),
    ("euler", {"s_churn": 5.0}),
    ("heun", {"s_churn": 5.0}),
])
def test_default_noise_is_k_diffusions_global_rng(name, kwargs):
    """Without seed= or generator the noise comes from torch's global RNG in k-diffusion's order."""
    model, x, sigmas = _problem("mixture", torch.float64)

    def run(module):
        with torch.random.fork_rng():
            torch.manual_seed(7)
            return getattr(module, f"sample_{name}")(model, x, sigmas, disable=True, **kwargs)

    expected, got = run(KD), run(ours)
    assert float((got - expected).abs().max()) <= _tolerance(torch.float64, float(expected.abs().max()))
