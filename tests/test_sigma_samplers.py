"""The noise-level sampler family in ``sample()``: orders over the registry, peers, grids, conditioning, errors."""

from __future__ import annotations

import inspect
import math

import pytest
import torch
from sdekit.kernels import normal
from test_sample_inputs import NonLinearSDE

import sdekit
from sdekit.sampling.dpm_solver import log_snr
from sdekit.sampling.grid import GRIDS, sampling_grid
from sdekit.sampling.sigma_samplers import SIGMA_SAMPLERS
from sdekit.sampling.sigma_space import sigma_of_time, time_of_log_snr
from sdekit.sdes.discrete_vp import DiscreteVPSDE
from sdekit.testing.convergence import fit_order

MU, S = 0.7, 0.5


def gaussian_score(sde):
    """Exact score of ``N(μ, s²)`` data per element under a linear SDE."""

    def score(x, t):
        t = t.double()
        a, c, sig = sde.mean_coeff(t), sde.mean_offset(t), sde.std(t)
        col = lambda v: v.to(x.dtype)[:, None]
        return -(x - col(a) * MU - col(c)) / col(a**2 * S**2 + sig**2)

    return score


def exact_flow(sde, x_T, T: float, eps: float):
    """The probability flow's exact solution from ``T`` to ``eps`` for Gaussian data.

    In ``x̃ = (x − c)/α`` at ``σ̃ = σ/α`` the flow is ``dx̃/dσ̃ = (x̃ − D)/σ̃`` with
    ``D = μ + s²/(s² + σ̃²) (x̃ − μ)``, solved by ``x̃ − μ ∝ √(s² + σ̃²)``.
    """
    ends = torch.tensor([T, eps], dtype=torch.float64)
    (sig_T, sig_e), (a_T, a_e), (c_T, c_e) = (v.tolist() for v in (sigma_of_time(sde, ends), sde.mean_coeff(ends),
                                                                  sde.mean_offset(ends)))
    x_scaled = (x_T - c_T) / a_T
    out = MU + (x_scaled - MU) * math.sqrt((S**2 + sig_e**2) / (S**2 + sig_T**2))
    return a_e * out + c_e


#: Deterministic samplers of ``sample()`` and their declared global orders: the registry's, dpmpp_2m and DDIM (η = 0).
DECLARED = {**{m: s.order for m, s in SIGMA_SAMPLERS.items() if s.order is not None}, "dpmpp_2m": 2, "ddim": 1}
SDES = {"vp": sdekit.VPSDE(), "ve": sdekit.VESDE(), "subvp": sdekit.SubVPSDE()}


@pytest.mark.parametrize("sde_name", sorted(SDES))
@pytest.mark.parametrize("method", sorted(DECLARED))
def test_deterministic_sampler_converges_at_its_declared_order(method, sde_name):
    sde = SDES[sde_name]
    x_T = sde.prior_from_normal(torch.randn(32, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64))
    ref = exact_flow(sde, x_T, float(sde.T), sde.sampling_eps)
    steps = (16, 32, 64, 128)
    errors = []
    for n in steps:
        out = sdekit.sample(gaussian_score(sde), sde, x_T.shape, method=method, steps=n, x_init=x_T, denoise=False)
        errors.append(float((out.x - ref).abs().max()))
    fit = fit_order([1 / n for n in steps], errors)
    assert fit.order > DECLARED[method] - 0.25, f"{method} on {sde_name}: order {fit.order:.2f}, errors {errors}"


def test_every_registered_sampler_is_tested_for_order_or_power():
    from test_sampler_power import STOCHASTIC

    stochastic = {case.method for case in STOCHASTIC.values()}
    for method, spec in SIGMA_SAMPLERS.items():
        assert (spec.order is not None and method in DECLARED) or method in stochastic, method


@pytest.mark.parametrize("eta", [0.0, 0.5, 1.0])
def test_ddim_matches_diffusers_ddim_scheduler(eta):
    diffusers = pytest.importorskip("diffusers")
    scheduler = diffusers.DDIMScheduler(num_train_timesteps=1000, beta_schedule="linear",
                                        timestep_spacing="trailing", set_alpha_to_one=True, clip_sample=False)
    scheduler.alphas_cumprod = scheduler.alphas_cumprod.double()  # both sides in float64
    ac = scheduler.alphas_cumprod
    sde = DiscreteVPSDE(ac)
    scheduler.set_timesteps(10)
    B, D = 6, 3
    x = torch.randn(B, D, generator=torch.Generator().manual_seed(1), dtype=torch.float64)

    def eps_model(x, k):  # the exact ε-prediction of the Gaussian data at timestep k
        a, sig = ac[k].sqrt(), (1 - ac[k]).sqrt()
        return sig * (x - a * MU) / (a * a * S**2 + sig * sig)

    # diffusers' last step goes to ᾱ = 1, i.e. returns x̂_0: sdekit's denoise at the last grid time
    ours = sdekit.sample(gaussian_score(sde), sde, (B, D), method="ddim", timesteps=sde.timestep_to_time(
        scheduler.timesteps), x_init=x, denoise=True, seed=3, method_options={"eta": eta}, dtype=torch.float64)
    theirs, index = x.clone(), torch.arange(B)
    for i, k in enumerate(scheduler.timesteps):
        z = normal(3, index, 1 + i, (D,), dtype=torch.float64)  # the keyed noise of step i
        theirs = scheduler.step(eps_model(theirs, int(k)), k, theirs, eta=eta, variance_noise=z).prev_sample
    assert float((ours.x - theirs).abs().max()) < 1e-12
    assert ours.nfe.tolist() == [10] * B


BETAS = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)
ALL_LINEAR = {"vp": sdekit.VPSDE(), "subvp": sdekit.SubVPSDE(), "ve": sdekit.VESDE(), "edm": sdekit.EDMSDE(),
              "discrete": DiscreteVPSDE(torch.cumprod(1 - BETAS, 0)), "ou": sdekit.OrnsteinUhlenbeck(1.0, 1.0, 0.5)}


@pytest.mark.parametrize("name", sorted(ALL_LINEAR))
def test_time_of_log_snr_inverts_log_snr(name):
    sde = ALL_LINEAR[name]
    t = torch.linspace(sde.sampling_eps, float(sde.T), 41, dtype=torch.float64)
    assert torch.allclose(time_of_log_snr(sde, log_snr(sde, t)), t, rtol=1e-12, atol=1e-14)


def test_closed_form_inverses_extend_beyond_T():
    """EDM's churn evaluates above σ̃(T): the closed forms invert there too."""
    for sde in (sdekit.VPSDE(), sdekit.SubVPSDE(), sdekit.VESDE()):
        t = torch.tensor([1.2, 1.4], dtype=torch.float64) * sde.T
        assert torch.allclose(time_of_log_snr(sde, log_snr(sde, t)), t, rtol=1e-12)


@pytest.mark.parametrize("kind", [k for k in GRIDS if k != "discrete"])
def test_named_grids_run_from_T_to_eps(kind):
    sde = sdekit.VPSDE()
    grid = sampling_grid(sde, 12, 1e-3, kind)
    assert grid.shape == (13,) and grid.dtype == torch.float64
    assert float(grid[0]) == 1.0 and float(grid[-1]) == 1e-3
    assert bool((grid[1:] < grid[:-1]).all())
    sig = sigma_of_time(sde, grid)
    if kind == "karras":  # σ̃^{1/ρ} equally spaced (Karras et al. 2022, eq. 5)
        gaps = (sig ** (1 / 7))[1:] - (sig ** (1 / 7))[:-1]
        assert torch.allclose(gaps, gaps.mean().expand_as(gaps), rtol=1e-9)
    if kind in ("logsnr", "exponential"):
        gaps = torch.log(sig)[1:] - torch.log(sig)[:-1]
        assert torch.allclose(gaps, gaps.mean().expand_as(gaps), rtol=1e-9)
    if kind == "quadratic":
        root = torch.sqrt((grid - 1e-3) / (1 - 1e-3))
        assert torch.allclose(root[:-1] - root[1:], torch.full((12,), 1 / 12, dtype=torch.float64))


def test_discrete_grid_is_the_schedules_timesteps():
    sde = ALL_LINEAR["discrete"]
    grid = sampling_grid(sde, 9, sde.sampling_eps, "discrete")
    k = sde.time_to_timestep(grid)
    assert torch.equal(k, torch.round(k)) and float(k[0]) == 999 and float(k[-1]) == 0
    with pytest.raises(ValueError, match="discrete timesteps"):
        sampling_grid(sdekit.VPSDE(), 9, 1e-3, "discrete")
    with pytest.raises(ValueError, match="steps must be <= K - 1"):
        sampling_grid(sde, 1000, sde.sampling_eps, "discrete")


def labelled_score(sde):
    """A conditional score: the label shifts the data mean (per-sample conditioning)."""
    base = gaussian_score(sde)

    def score(x, t, label):
        a = sde.mean_coeff(t.double()).to(x.dtype)[:, None]
        var = (sde.mean_coeff(t.double()) ** 2 * S**2 + sde.std(t.double()) ** 2).to(x.dtype)[:, None]
        return base(x, t) + a * label.to(x.dtype)[:, None] / var

    return score


@pytest.mark.parametrize("method", sorted(SIGMA_SAMPLERS) + ["ddim"])
def test_rows_depend_on_their_index_and_label_not_the_batch(method):
    sde = sdekit.VPSDE()
    labels = torch.tensor([0.0, 1.0, -1.0, 2.0, 0.5])
    full = sdekit.sample(labelled_score(sde), sde, (5, 4), method=method, steps=6, seed=5,
                         model_kwargs={"label": labels})
    pick = torch.tensor([3, 1])
    part = sdekit.sample(labelled_score(sde), sde, (2, 4), method=method, steps=6, seed=5, sample_index=pick,
                         model_kwargs={"label": labels[pick]})
    assert torch.allclose(part.x, full.x[pick], rtol=1e-5, atol=1e-6)
    assert bool(torch.isfinite(full.x).all())
    swapped = sdekit.sample(labelled_score(sde), sde, (5, 4), method=method, steps=6, seed=5,
                            model_kwargs={"label": labels.flip(0)})
    assert not torch.allclose(swapped.x[0], full.x[0])  # the label reaches the model


def test_churned_heun_is_edm_algorithm_2_and_seeded():
    sde = sdekit.VPSDE()
    opts = {"s_churn": 20.0, "s_tmin": 0.05, "s_tmax": 50.0, "s_noise": 1.003}
    a = sdekit.sample(gaussian_score(sde), sde, (8, 3), method="heun", steps=10, seed=2, method_options=opts)
    b = sdekit.sample(gaussian_score(sde), sde, (8, 3), method="heun", steps=10, seed=2, method_options=opts)
    c = sdekit.sample(gaussian_score(sde), sde, (8, 3), method="heun", steps=10, seed=2)
    assert torch.equal(a.x, b.x) and not torch.allclose(a.x, c.x)
    assert a.nfe.tolist() == [2 * 10 + 1] * 8  # two evaluations per step, plus the denoising one


def test_nfe_and_steps_are_counted():
    sde = sdekit.VESDE()
    for method, per_step in (("ddim", 1), ("lms", 1), ("dpm_2", 2), ("dpmpp_2s", 2), ("dpmpp_3m_sde", 1)):
        out = sdekit.sample(gaussian_score(sde), sde, (3, 2), method=method, steps=7, seed=0, denoise=False)
        assert out.nfe.tolist() == [7 * per_step] * 3, method
        assert out.steps.tolist() == [7] * 3


def test_bad_arguments_are_named():
    sde, score = sdekit.VPSDE(), gaussian_score(sdekit.VPSDE())
    with pytest.raises(TypeError, match="method_options \\['bogus'\\]"):
        sdekit.sample(score, sde, (2, 2), method="ddim", steps=3, method_options={"bogus": 1})
    with pytest.raises(ValueError, match="eta must lie in"):
        sdekit.sample(score, sde, (2, 2), method="ddim", steps=3, method_options={"eta": 2.0})
    with pytest.raises(ValueError, match="method_options applies"):
        sdekit.sample(score, sde, (2, 2), method="ancestral", steps=3, method_options={"eta": 0.5})
    with pytest.raises(ValueError, match="corrector must be None"):
        sdekit.sample(score, sde, (2, 2), method="heun", steps=3, corrector="langevin")
    with pytest.raises(ValueError, match="not both"):
        sdekit.sample(score, sde, (2, 2), method="heun", grid="karras", timesteps=[1.0, 0.5, 0.1])
    with pytest.raises(ValueError, match="grid must be one of"):
        sdekit.sample(score, sde, (2, 2), method="heun", steps=3, grid="cosine")
    with pytest.raises(ValueError, match="capturable"):
        sdekit.sample(score, sde, (2, 2), method="lms", steps=3, capturable=True, seed=0)
    with pytest.raises(ValueError, match="grid applies to fixed-step"):
        sdekit.sample(score, sde, (2, 2), method="ode", grid="karras")
    with pytest.raises(TypeError, match="method='heun' needs a linear SDE"):
        sdekit.sample(score, NonLinearSDE(), (2, 2), method="heun", steps=3, denoise=False)


def test_predictors_take_a_named_grid():
    sde = sdekit.VPSDE()
    a = sdekit.sample(gaussian_score(sde), sde, (4, 2), method="ancestral", steps=8, seed=1, grid="karras")
    b = sdekit.sample(gaussian_score(sde), sde, (4, 2), method="ancestral", seed=1,
                      timesteps=sampling_grid(sde, 8, sde.sampling_eps, "karras"))
    assert torch.equal(a.x, b.x)
    c = sdekit.sample(gaussian_score(sde), sde, (4, 2), method="ancestral", steps=8, seed=1, grid="uniform")
    d = sdekit.sample(gaussian_score(sde), sde, (4, 2), method="ancestral", steps=8, seed=1)
    assert torch.equal(c.x, d.x)


@pytest.mark.parametrize("method", ["heun", "unipc", "dpmpp_3m_sde"])
def test_monitor_marks_the_faulted_row_and_keeps_the_others(method):
    from sdekit.faults import NonFiniteMonitor

    sde = sdekit.VPSDE()
    base = gaussian_score(sde)

    def score(x, t):  # row 1 becomes NaN below t = 0.3
        out = base(x, t)
        bad = (torch.arange(x.shape[0]) == 1) & (t < 0.3)
        return torch.where(bad[:, None], torch.full_like(out, math.nan), out)

    monitor = NonFiniteMonitor(torch.arange(4))
    out = sdekit.sample(score, sde, (4, 2), method=method, steps=8, seed=0, monitor=monitor)
    clean = sdekit.sample(base, sde, (4, 2), method=method, steps=8, seed=0)
    assert torch.isnan(out.x[1]).all() and torch.equal(out.x[[0, 2, 3]], clean.x[[0, 2, 3]])
    faults = monitor.faults()
    assert [f.sample_index for f in faults] == [1] and 0 <= faults[0].step < 9


#: sample()'s noise-level methods that k-diffusion has, as (its function, its keyword arguments).
K_DIFFUSION_TWINS = {
    "euler": ("sample_euler", {}), "heun": ("sample_heun", {}), "dpm_2": ("sample_dpm_2", {}),
    "lms": ("sample_lms", {}), "euler_ancestral": ("sample_euler_ancestral", {}),
    "dpm_2_ancestral": ("sample_dpm_2_ancestral", {}), "dpmpp_2s": ("sample_dpmpp_2s_ancestral", {"eta": 0.0}),
    "dpmpp_2s_ancestral": ("sample_dpmpp_2s_ancestral", {}), "dpmpp_3m": ("sample_dpmpp_3m_sde", {"eta": 0.0}),
    "dpmpp_2m_sde": ("sample_dpmpp_2m_sde", {}), "dpmpp_3m_sde": ("sample_dpmpp_3m_sde", {}),
}


@pytest.mark.parametrize("method", sorted(K_DIFFUSION_TWINS))
def test_sample_on_vp_is_k_diffusions_sampler_on_the_scaled_process(method):
    """sample(VP, method) = k-diffusion's own sampler on x̃ = x/α at σ̃ = σ/α, with the same noise."""
    from k_diffusion_reference import load_sampling

    kd = load_sampling()
    if isinstance(kd, str):
        pytest.skip(kd)
    sde, B, D, steps, seed = sdekit.VPSDE(), 6, 3, 9, 4
    x_T = torch.randn(B, D, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    ours = sdekit.sample(gaussian_score(sde), sde, (B, D), method=method, steps=steps, x_init=x_T, seed=seed,
                         denoise=False)
    grid = sampling_grid(sde, steps, sde.sampling_eps, SIGMA_SAMPLERS[method].grid)
    sigmas = sigma_of_time(sde, grid)
    step_of = {float(s): i for i, s in enumerate(sigmas)}
    index = torch.arange(B)

    def keyed(sigma, sigma_next):  # sdekit's noise of step i: stream 1 + i
        return normal(seed, index, 1 + step_of[float(sigma)], (D,), dtype=torch.float64)

    def denoiser(x, sigma):  # E[x_0 | x̃] of N(μ, s²) data at noise level σ̃, written in σ̃ alone
        k = (S**2 / (S**2 + sigma**2))[:, None]
        return MU + k * (x - MU)

    name, kwargs = K_DIFFUSION_TWINS[method]
    if "noise_sampler" in inspect.signature(getattr(kd, name)).parameters:
        kwargs = {**kwargs, "noise_sampler": keyed}
    alpha_T, alpha_eps = (float(v) for v in sde.mean_coeff(grid[[0, -1]]))
    theirs = getattr(kd, name)(denoiser, x_T / alpha_T, sigmas, disable=True, **kwargs) * alpha_eps
    assert float((ours.x - theirs).abs().max()) < 1e-11 * float(theirs.abs().max())


def test_a_grid_ending_at_sigma_zero_needs_no_denoising_call():
    """timesteps down to t = 0 (σ = 0, where a score model may divide by σ): the sampler's last step is D."""
    sde = sdekit.VPSDE()
    base = gaussian_score(sde)

    def score(x, t):
        assert bool((t > 0).all()), "the score was called at t = 0"
        return base(x, t)

    grid = torch.cat([sampling_grid(sde, 6, 1e-3, "logsnr")[:-1], torch.zeros(1, dtype=torch.float64)])
    for method in ("dpmpp_3m", "unipc", "euler_ancestral"):
        out = sdekit.sample(score, sde, (4, 2), method=method, timesteps=grid, seed=0, denoise=True)
        assert bool(torch.isfinite(out.x).all()) and out.nfe.tolist() == [6] * 4


CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (run by benchmarks/gpu_check.py)")


@CUDA
@pytest.mark.parametrize("method", ["ddim", "heun", "euler_ancestral", "dpmpp_2m_sde", "unipc", "deis"])
@pytest.mark.parametrize("sde_name", ["vp", "discrete"])
def test_cuda_samples_are_the_cpu_samples(method, sde_name):
    """The GPU path: the same seed gives the CPU's samples (keyed noise; float64, torch backend)."""
    sde = {"vp": sdekit.VPSDE(), "discrete": ALL_LINEAR["discrete"]}[sde_name]
    labels = torch.tensor([0.0, 1.0, -1.0, 2.0])
    runs = [sdekit.sample(labelled_score(sde), sde, (4, 3), method=method, steps=7, seed=3, dtype=torch.float64,
                          device=dev, model_kwargs={"label": labels.to(dev)}).x.cpu() for dev in ("cpu", "cuda")]
    assert torch.allclose(runs[0], runs[1], rtol=1e-9, atol=1e-10)
