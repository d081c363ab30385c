"""Samplers recover a Gaussian mixture from its exact score, starting from the exact marginal at T."""

import pytest
import torch

import sdekit
from mixture_checks import assert_matches_mixture
from sdekit.testing import example_mixture

MIX = example_mixture()
N = 4000
SDES = {"vp": sdekit.VPSDE(), "subvp": sdekit.SubVPSDE(), "ve": sdekit.VESDE()}
# (method, corrector, corrector options): every predictor, with and without Langevin correction.
SAMPLERS = [
    ("euler_maruyama", None, {}),
    ("reverse_diffusion", None, {}),
    ("ancestral", None, {}),
    ("euler_maruyama", "langevin", {"corrector_norm": "batch_mean"}),
    ("reverse_diffusion", "annealed_langevin", {}),
]


def _start(sde, seed):
    g = torch.Generator().manual_seed(seed)
    x_T, _ = MIX.sample(N, sde, sde.T, generator=g)
    return x_T, g


@pytest.mark.parametrize("sde_name", list(SDES))
@pytest.mark.parametrize("method, corrector, opts", SAMPLERS)
def test_stochastic_samplers_recover_the_mixture(sde_name, method, corrector, opts):
    sde = SDES[sde_name]
    x_T, g = _start(sde, seed=1)
    out = sdekit.sample(
        MIX.score_model(sde), sde, x_T.shape, method=method, corrector=corrector, steps=400,
        x_init=x_T, denoise=False, generator=g, **opts,
    )
    assert_matches_mixture(out.x, MIX, sde, sde.sampling_eps, f"{sde_name}/{method}/{corrector}")


@pytest.mark.parametrize("sde_name", list(SDES))
def test_probability_flow_recovers_the_mixture(sde_name):
    sde = SDES[sde_name]
    x_T, _ = _start(sde, seed=2)
    out = sdekit.sample(MIX.score_model(sde), sde, x_T.shape, method="ode", x_init=x_T, denoise=False)
    assert_matches_mixture(out.x, MIX, sde, sde.sampling_eps, f"{sde_name}/ode")
    assert bool((out.nfe > 0).all()) and bool((out.nfe == out.nfe[0]).all()) is False


def test_denoised_samples_keep_the_data_mean():
    """E[E[x_0 | x_eps]] = E[x_0] = Σ w_k μ_k (tower property)."""
    sde = SDES["vp"]
    x_T, g = _start(sde, seed=3)
    out = sdekit.sample(MIX.score_model(sde), sde, x_T.shape, steps=200, x_init=x_T, generator=g)
    from stats import assert_mean_close

    assert_mean_close(out.x, MIX.weights @ MIX.means, what="denoised mean")


def test_nfe_accounting():
    sde = SDES["ve"]
    calls = []

    def score(x, t):
        calls.append(x.shape[0])
        return MIX.score(x, sde, t)

    out = sdekit.sample(score, sde, (5, 2), steps=7, corrector="langevin", corrector_steps=2, dtype=torch.float64)
    assert out.nfe.tolist() == [7 * 3 + 1] * 5 and len(calls) == 7 * 3 + 1
    calls.clear()
    out = sdekit.sample(score, sde, (5, 2), method="ode", dtype=torch.float64)
    assert int(out.nfe.sum()) == sum(calls)


def test_same_seed_same_samples_and_other_seed_differs():
    sde = SDES["vp"]
    run = lambda seed: sdekit.sample(  # noqa: E731
        MIX.score_model(sde), sde, (16, 2), steps=20, corrector="langevin",
        generator=torch.Generator().manual_seed(seed), dtype=torch.float64,
    ).x
    assert torch.equal(run(0), run(0))
    assert not torch.equal(run(0), run(1))


@pytest.mark.parametrize("rule, independent", [("per_sample", True), ("batch_mean", False)])
def test_per_sample_langevin_does_not_couple_the_batch(rule, independent):
    """Changing samples 4..7 of the batch leaves samples 0..3 bitwise unchanged only for per-sample norms."""
    sde = SDES["ve"]
    x_T, _ = MIX.sample(8, sde, sde.T, generator=torch.Generator().manual_seed(5))
    other = x_T.clone()
    other[4:] = other[4:] * 0.5
    run = lambda x: sdekit.sample(  # noqa: E731
        MIX.score_model(sde), sde, x.shape, steps=10, corrector="langevin", corrector_norm=rule,
        x_init=x, generator=torch.Generator().manual_seed(0),
    ).x[:4]
    assert torch.equal(run(x_T), run(other)) is independent


def test_ode_sample_does_not_depend_on_the_batch():
    sde = SDES["vp"]
    x_T, _ = MIX.sample(6, sde, sde.T, generator=torch.Generator().manual_seed(6))
    score = MIX.score_model(sde)
    batch = sdekit.sample(score, sde, x_T.shape, method="ode", x_init=x_T)
    alone = sdekit.sample(score, sde, (1, 2), method="ode", x_init=x_T[2:3])
    assert alone.nfe.item() == batch.nfe[2].item()
    torch.testing.assert_close(alone.x[0], batch.x[2], rtol=1e-10, atol=1e-12)


def test_custom_time_grid_is_used():
    sde = SDES["ve"]
    seen = []

    def score(x, t):
        seen.append(float(t[0]))
        return MIX.score(x, sde, t)

    sdekit.sample(score, sde, (3, 2), timesteps=[1.0, 0.5, 0.2, 0.01], denoise=False, dtype=torch.float64)
    assert seen == [1.0, 0.5, 0.2]


@pytest.mark.parametrize("method", ["ancestral", "reverse_diffusion", "ode"])
def test_samplers_handle_a_mean_offset(method):
    """OU has a non-zero mean offset c(t): exercises the offset terms of the exact transitions."""
    sde = sdekit.OrnsteinUhlenbeck(theta=2.0, sigma=1.0, mu=0.5)
    x_T, g = _start(sde, seed=7)
    out = sdekit.sample(MIX.score_model(sde), sde, x_T.shape, method=method, steps=400, x_init=x_T, denoise=False, generator=g)
    assert_matches_mixture(out.x, MIX, sde, sde.sampling_eps, f"ou/{method}")


def test_tweedie_denoise_with_a_mean_offset():
    """For OU, E[x_0 | x_t] computed by Tweedie has mean E[x_0] (tower property)."""
    from sdekit.sampling import tweedie_denoise
    from stats import assert_mean_close

    sde = sdekit.OrnsteinUhlenbeck(theta=2.0, sigma=1.0, mu=0.5)
    x_t, _ = MIX.sample(N, sde, 0.3, generator=torch.Generator().manual_seed(8))
    t = torch.full((N,), 0.3, dtype=torch.float64)
    assert_mean_close(tweedie_denoise(sde, MIX.score_model(sde), x_t, t), MIX.weights @ MIX.means, what="OU Tweedie mean")


@pytest.mark.parametrize("alpha, offset", [(1.0, 0.0), (0.6, 0.0), (0.6, -0.7), (0.9, 1.3)])
def test_posterior_mean_is_the_gaussian_posterior_mean(alpha, offset):
    """``x_0 ~ N(μ, v)``, ``x_t = α x_0 + c + σ ε``: Tweedie's formula with the exact score is the
    closed-form posterior mean ``μ + α v (x − c − α μ)/(α² v + σ²)``, in the state and in the scaled
    variable ``x̃ = (x − c)/α`` (``alpha = 1``, ``offset = 0``, variance ``σ²/α``)."""
    from sdekit.sampling import posterior_mean

    mu, v, var = 0.4, 2.0, 0.3
    x = torch.linspace(-3, 3, 13, dtype=torch.float64).reshape(13, 1)
    marginal_var = alpha**2 * v + var
    score = -(x - offset - alpha * mu) / marginal_var
    exact = mu + alpha * v * (x - offset - alpha * mu) / marginal_var
    torch.testing.assert_close(posterior_mean(x, score, var, alpha, offset), exact, rtol=1e-14, atol=1e-14)
    scaled = posterior_mean((x - offset) / alpha, score, var / alpha)
    torch.testing.assert_close(scaled, exact, rtol=1e-14, atol=1e-14)
    col = torch.full((13, 1), alpha, dtype=torch.float64)  # per-sample tensors broadcast
    torch.testing.assert_close(posterior_mean(x, score, var * torch.ones_like(col), col, offset * torch.ones_like(col)),
                               exact, rtol=1e-14, atol=1e-14)


@pytest.mark.slow
@pytest.mark.parametrize("sde_name", list(SDES))
@pytest.mark.parametrize("method, corrector, opts", SAMPLERS)
def test_samplers_recover_the_mixture_at_higher_power(sde_name, method, corrector, opts):
    """--thorough: 5× the samples (standard errors √5 smaller) and 1000 steps."""
    sde = SDES[sde_name]
    g = torch.Generator().manual_seed(11)
    x_T, _ = MIX.sample(5 * N, sde, sde.T, generator=g)
    out = sdekit.sample(
        MIX.score_model(sde), sde, x_T.shape, method=method, corrector=corrector, steps=1000,
        x_init=x_T, denoise=False, generator=g, **opts,
    )
    assert_matches_mixture(out.x, MIX, sde, sde.sampling_eps, f"thorough {sde_name}/{method}/{corrector}")
