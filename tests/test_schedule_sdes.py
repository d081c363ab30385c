"""DiscreteVPSDE (a DDPM schedule as a VP SDE) and EDMSDE (σ(t) = t): closed forms and use with the samplers."""

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import sdekit
from mixture_checks import assert_matches_mixture
from sdekit.integrations import k_diffusion
from sdekit.testing import example_mixture

F64 = torch.float64


def linear_schedule(beta_start, beta_end, n):
    """DDPM's ᾱ_k = ∏ (1 − β_j) for linearly spaced β (Ho et al. 2020)."""
    return torch.cumprod(1 - torch.linspace(beta_start, beta_end, n, dtype=F64), 0)


def cosine_schedule(n, s=0.008):
    """Nichol & Dhariwal 2021's ᾱ(t) = cos²((t + s)/(1 + s) π/2) / cos²(s/(1 + s) π/2), β capped at 0.999."""
    f = lambda t: math.cos((t + s) / (1 + s) * math.pi / 2) ** 2  # noqa: E731
    betas = torch.tensor([min(1 - f((k + 1) / n) / f(k / n), 0.999) for k in range(n)], dtype=F64)
    return torch.cumprod(1 - betas, 0)


schedules = st.one_of(
    st.tuples(st.floats(1e-5, 1e-3), st.floats(5e-3, 5e-2), st.sampled_from([10, 100, 1000])).map(
        lambda p: linear_schedule(*p)),
    st.sampled_from([50, 1000]).map(cosine_schedule),
)


@given(ac=schedules)
def test_discrete_vp_marginals_are_the_schedule_and_beta_is_b_prime(ac):
    sde = sdekit.DiscreteVPSDE(ac)
    n = ac.numel()
    t = sde.timestep_to_time(torch.arange(n))
    torch.testing.assert_close(sde.mean_coeff(t) ** 2, ac, rtol=1e-12, atol=0)
    torch.testing.assert_close(sde.std(t) ** 2, 1 - ac, rtol=1e-12, atol=1e-15)
    assert float(sde.integrated_beta(torch.zeros(1, dtype=F64))) == 0.0
    # VP moment equations d log m/dt = −½ β and dσ²/dt = β (1 − σ²), by central differences inside knot
    # intervals (B is cubic there: truncation error h² B‴/6), first to last interval.
    u = (torch.tensor([0, n // 4, n // 2, (3 * n) // 4, n - 1], dtype=F64) + 0.37) / n
    h = 1e-6 / n  # round-off of the differences ~1e-16/h; truncation h² B‴/6 negligible
    # β is continuous across knots: equal limits from both sides.
    knots = sde.timestep_to_time(torch.arange(n - 1))
    torch.testing.assert_close(sde.beta(knots - 1e-9 / n), sde.beta(knots + 1e-9 / n), rtol=1e-6, atol=1e-9)
    beta = sde.beta(u)
    assert bool((beta >= 0).all())
    dlogm = (torch.log(sde.mean_coeff(u + h)) - torch.log(sde.mean_coeff(u - h))) / (2 * h)
    torch.testing.assert_close(dlogm, -0.5 * beta, rtol=1e-5, atol=1e-7)
    dvar = (sde.std(u + h) ** 2 - sde.std(u - h) ** 2) / (2 * h)
    torch.testing.assert_close(dvar, beta * (1 - sde.std(u) ** 2), rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(sde.drift(torch.ones(5, 1, dtype=F64), u)[:, 0], -0.5 * beta)


def test_discrete_vp_reproduces_the_ddpm_chain_transition():
    """One exact transition between timesteps k−1 and k is x ↦ √α_k x + √(1 − α_k) z."""
    ac = linear_schedule(1e-4, 0.02, 1000)
    sde = sdekit.DiscreteVPSDE(ac)
    k = torch.arange(1, 1000)
    r, c, G = sde.transition(sde.timestep_to_time(k - 1), sde.timestep_to_time(k))
    alpha = ac[1:] / ac[:-1]
    torch.testing.assert_close(r, alpha.sqrt(), rtol=1e-12, atol=0)
    torch.testing.assert_close(G**2, 1 - alpha, rtol=1e-9, atol=0)
    assert bool((c == 0).all())


def test_discrete_vp_is_not_the_continuous_vp_sde():
    """The continuous VPSDE(N β_0, N β_{N−1}) misses ᾱ_k; the discrete one hits it (why the scheduler needs it)."""
    ac = linear_schedule(1e-4, 0.02, 1000)
    t = sdekit.DiscreteVPSDE(ac).timestep_to_time(torch.arange(1000))
    gap = (sdekit.VPSDE(0.1, 20.0).mean_coeff(t) ** 2 - ac).abs().max()
    assert float(gap) > 1e-4


@pytest.mark.parametrize("ac, match", [
    (torch.tensor([0.9, 0.95]), "non-increasing"),
    (torch.tensor([0.9, 0.0]), r"\(0, 1\]"),
    (torch.tensor([1.0, 1.0]), "drop below 1"),
    (torch.tensor([[0.9]]), "1-D"),
    (torch.tensor([0.9, math.nan]), "finite"),
])
def test_discrete_vp_rejects_bad_schedules(ac, match):
    with pytest.raises(ValueError, match=match):
        sdekit.DiscreteVPSDE(ac)


def test_edm_sde_closed_forms():
    sde = sdekit.EDMSDE(0.002, 80.0)
    t = torch.tensor([0.0, 0.5, 3.0, 80.0], dtype=F64)
    torch.testing.assert_close(sde.std(t), t)
    torch.testing.assert_close(sde.diffusion(None, t) ** 2, 2 * t)  # g² = dσ²/dt
    s = torch.tensor([0.0, 0.1, 1.0, 40.0], dtype=F64)
    torch.testing.assert_close(sde.transition_var(s, t), t**2 - s**2)
    assert sde.T == 80.0 and sde.sampling_eps == 0.002
    with pytest.raises(ValueError, match="sigma_max"):
        sdekit.EDMSDE(1.0, 0.5)


def test_denoiser_on_edm_sde_samples_the_mixture():
    """sdekit.sample on a k-diffusion denoiser (exact mixture denoiser) via denoiser_score and EDMSDE."""
    mix, sde = example_mixture(), sdekit.EDMSDE(0.002, 80.0)
    gen = torch.Generator().manual_seed(0)
    x_T, _ = mix.sample(4000, sde, sde.T, generator=gen)

    def denoiser(x, sigma):
        return x + sigma[:, None] ** 2 * mix.score(x, sde, sigma)

    out = sdekit.sample(k_diffusion.denoiser_score(denoiser, sde=sde), sde, x_T.shape, method="ode",
                        x_init=x_T, denoise=False, dtype=F64)
    assert_matches_mixture(out.x, mix, sde, sde.sampling_eps, "EDM probability flow")
