"""DPM-Solver++(2M) (``sample(method="dpmpp_2m")``): second order, agrees with k-diffusion, rejects bad input."""

import pytest
import torch

import sdekit
from k_diffusion_reference import load_sampling
from sdekit.sampling.dpm_solver import log_snr, logsnr_grid
from sdekit.testing import example_mixture, fit_order
from test_sample_inputs import NonLinearSDE

MIX = example_mixture()
KD = load_sampling()
STEPS = (80, 160, 320, 640)  # asymptotic range: below ~80 steps the error ratios per halving are < 3.4


def _flow_problem(sde, eps):
    """64 exact prior-marginal samples and the probability flow's end point by RK45 at rtol = atol = 1e-10."""
    score = MIX.score_model(sde)
    x_T = MIX.sample(64, sde, sde.T, generator=torch.Generator().manual_seed(0))[0]
    ref = sdekit.sample(score, sde, x_T.shape, method="ode", eps=eps, rtol=1e-10, atol=1e-10, x_init=x_T,
                        denoise=False, max_steps=100_000)
    return score, x_T, ref.x


@pytest.mark.parametrize("sde, eps", [
    (sdekit.VPSDE(), 1e-3),
    (sdekit.SubVPSDE(), 1e-3),
    (sdekit.VESDE(sigma_min=0.01, sigma_max=20.0), 1e-5),
    (sdekit.OrnsteinUhlenbeck(theta=2.0, sigma=1.5, mu=0.5, T=2.0), 0.05),  # non-zero mean offset c(t)
])
def test_second_order_against_the_exact_mixture_flow(sde, eps):
    """Global error ∝ h² in the log-SNR step h (Lu et al. 2022b, Algorithm 2 / Theorem: order 2)."""
    score, x_T, ref = _flow_problem(sde, eps)
    span = float(log_snr(sde, torch.tensor(eps)) - log_snr(sde, torch.tensor(sde.T)))
    errors = []
    for n in STEPS:
        out = sdekit.sample(score, sde, x_T.shape, method="dpmpp_2m", steps=n, eps=eps, x_init=x_T, denoise=False)
        errors.append(float((out.x - ref).norm(dim=1).max()))
    fit = fit_order([span / n for n in STEPS], errors)
    # The RK45 reference is ~1e-9 off; the errors here are >= 1e-4.  First order would give a slope near 1.
    assert min(errors) > 1e3 * 1e-9
    assert abs(fit.order - 2.0) < 0.25, (fit, errors)


@pytest.mark.skipif(isinstance(KD, str), reason=KD if isinstance(KD, str) else "")
@pytest.mark.parametrize("n", [2, 7, 25])
def test_agrees_with_k_diffusion_dpmpp_2m(n):
    """Same EDM denoiser and Karras schedule: sdekit on EDMSDE with timesteps = sigmas[:-1] and Tweedie's
    final denoising step equals k-diffusion's sample_dpmpp_2m (whose last step to σ = 0 returns D)."""
    sde = sdekit.EDMSDE()
    sigmas = KD.get_sigmas_karras(n, 0.002, 80.0).double()
    x = torch.randn(128, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * sigmas[0]

    def denoiser(x, sigma):
        return x + sigma[:, None] ** 2 * MIX.score(x, sde, sigma)

    theirs = KD.sample_dpmpp_2m(denoiser, x, sigmas, disable=True)
    ours = sdekit.sample(MIX.score_model(sde), sde, x.shape, method="dpmpp_2m", timesteps=sigmas[:-1], x_init=x)
    assert torch.allclose(ours.x, theirs, rtol=0, atol=1e-11 * float(theirs.abs().max()))
    assert ours.nfe.tolist() == [n] * 128 and ours.steps.tolist() == [n - 1] * 128


def test_logsnr_grid_is_uniform_in_log_snr():
    sde = sdekit.VPSDE()
    grid = logsnr_grid(sde, 10, 1e-3)
    assert grid[0] == sde.T and grid[-1] == 1e-3 and grid.shape == (11,)
    steps = log_snr(sde, grid).diff()
    assert torch.allclose(steps, steps.mean().expand(10), rtol=1e-9, atol=0)


def test_nfe_counts_steps_and_denoising():
    out = sdekit.sample(MIX.score_model(sdekit.VPSDE()), sdekit.VPSDE(), (8, 2), method="dpmpp_2m", steps=9, seed=0)
    assert out.nfe.tolist() == [10] * 8 and out.steps.tolist() == [9] * 8
    assert bool(torch.isfinite(out.x).all())


@pytest.mark.parametrize("sde, kwargs, err, match", [
    (sdekit.VPSDE(), dict(corrector="langevin"), ValueError, "corrector must be None with method='dpmpp_2m'"),
    (sdekit.VPSDE(), dict(capturable=True, seed=0), ValueError, "capturable=True needs a predictor method"),
    (sdekit.VPSDE(), dict(steps=0), ValueError, "steps"),
    (sdekit.EDMSDE(), dict(eps=0.0), ValueError, "σ\\(eps\\) must be > 0"),
    (sdekit.EDMSDE(), dict(timesteps=[80.0, 1.0, 0.0]), ValueError, "σ\\(t\\) must be > 0 at every grid time"),
    (sdekit.VPSDE(), dict(timesteps=[1.0, 0.5, 0.7]), ValueError, "timesteps must be strictly decreasing"),
    (NonLinearSDE(), dict(denoise=False), TypeError, "method='dpmpp_2m' needs a linear SDE"),
])
def test_bad_input(sde, kwargs, err, match):
    with pytest.raises(err, match=match):
        sdekit.sample(lambda x, t: -x, sde, (4, 2), method="dpmpp_2m", **kwargs)
