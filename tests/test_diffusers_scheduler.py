"""sdekit's diffusers scheduler: drop-in for DDPMPipeline, DDPM-exact ancestral steps, convergent ODE steps."""

import math

import pytest
import torch

diffusers = pytest.importorskip("diffusers", reason="diffusers is not installed (pip install sdekit[diffusers])")
from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel

import sdekit
from sdekit.integrations._scheduler_schedule import SDE_METHODS
from sdekit.integrations.diffusers_scheduler import SCHEDULER_METHODS, SDEScheduler
from sdekit.testing import fit_order

STEPS = 20  # inference steps in the pipeline tests


def _ddpm_config():
    return DDPMScheduler().config


DDPM_CONFIG = _ddpm_config()  # the pipeline's own scheduler config, as from_config receives it
VARIANTS = [  # SDEScheduler options: every method, and PC with each corrector
    {"method": m} for m in SCHEDULER_METHODS
] + [
    {"method": "euler_maruyama", "corrector": "langevin"},
    {"method": "reverse_diffusion", "corrector": "annealed_langevin", "corrector_steps": 2},
]


def _unet():
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return UNet2DModel(sample_size=8, in_channels=3, out_channels=3, layers_per_block=1, block_out_channels=(8,),
                           down_block_types=("DownBlock2D",), up_block_types=("UpBlock2D",), norm_num_groups=1).eval()


@pytest.fixture(scope="module")
def pipe():
    p = DDPMPipeline(unet=_unet(), scheduler=DDPMScheduler())
    p.set_progress_bar_config(disable=True)
    return p


def _generate(pipe, scheduler, steps=STEPS, seed=0):
    pipe.scheduler = scheduler
    gen = torch.Generator().manual_seed(seed)
    return pipe(batch_size=2, generator=gen, num_inference_steps=steps, output_type="pt").images


def _raw_loop(unet, scheduler, steps=STEPS, seed=0):
    """DDPMPipeline's loop without its final clamp to [0, 1], to compare raw samples."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn((2, 3, 8, 8), generator=gen)
    scheduler.set_timesteps(steps)
    with torch.no_grad():
        for t in scheduler.timesteps:
            x = scheduler.step(unet(x, t).sample, t, x, generator=gen).prev_sample
    return x


@pytest.mark.parametrize("config", [
    {},
    {"prediction_type": "v_prediction"},
    {"prediction_type": "sample", "clip_sample": False},
    {"timestep_spacing": "trailing"},
    {"variance_type": "fixed_large"},
    {"timestep_spacing": "linspace", "beta_schedule": "squaredcos_cap_v2"},
])
def test_ancestral_reproduces_ddpm_scheduler(pipe, config):
    """Same pipeline, same generator: sdekit's ancestral predictor on the DDPM-exact VP SDE = DDPMScheduler."""
    ddpm = DDPMScheduler(**config)
    ours = SDEScheduler.from_config(ddpm.config, method="ancestral")
    # Both compute in float32, in a different order.  The first step divides by √ᾱ at t_0 (x̂₀ from ε, or
    # equivalently the score form's cancellation), which amplifies the unit roundoff u by 1/√ᾱ(t_0):
    # 156 for the linear schedule, 2e4 for the cosine one.  Measured differences are ~0.1 u/√ᾱ(t_0);
    # allow u/√ᾱ(t_0).
    tol = torch.finfo(torch.float32).eps / float(ddpm.alphas_cumprod[ours.timesteps[0]].sqrt())
    images_ddpm, images_ours = _generate(pipe, ddpm), _generate(pipe, ours)
    torch.testing.assert_close(images_ours, images_ddpm, rtol=0, atol=tol)
    raw_ddpm, raw_ours = _raw_loop(pipe.unet, ddpm), _raw_loop(pipe.unet, ours)
    torch.testing.assert_close(raw_ours, raw_ddpm, rtol=0, atol=tol)
    assert raw_ours.abs().max() > 0.1  # not a trivially small output


@pytest.mark.parametrize("config", VARIANTS, ids=lambda c: "+".join(str(v) for v in c.values()))
def test_every_method_runs_inside_the_pipeline(pipe, config):
    calls = []
    unet_forward = pipe.unet.forward

    def counting_forward(*args, **kwargs):
        calls.append(1)
        return unet_forward(*args, **kwargs)

    scheduler = SDEScheduler.from_config(DDPM_CONFIG, **config)
    pipe.unet.forward = counting_forward
    try:
        images = _generate(pipe, scheduler)
    finally:
        del pipe.unet.forward
    assert images.shape == (2, 3, 8, 8) and bool(torch.isfinite(images).all())
    n_calls = len(scheduler.timesteps)
    assert len(calls) == n_calls
    if config["method"] in ("ode_heun", "heun", "dpm_2", "dpmpp_2s"):
        assert scheduler.order == 2 and n_calls == 2 * STEPS - 1
    else:
        per_interval = 1 + config.get("corrector_steps", 1) * ("corrector" in config)
        assert n_calls == scheduler.order * STEPS == per_interval * STEPS


def _public(config) -> dict:
    """A scheduler config without diffusers' bookkeeping keys (``_class_name``, ``_use_default_values``…)."""
    return {k: v for k, v in dict(config).items() if not k.startswith("_")}


def test_save_and_load_round_trip(tmp_path, pipe):
    scheduler = SDEScheduler.from_config(DDPM_CONFIG, method="ode_heun", clip_sample=False,
                                         timestep_spacing="trailing")
    scheduler.save_pretrained(tmp_path / "scheduler_only")
    loaded = SDEScheduler.from_pretrained(tmp_path / "scheduler_only")
    assert _public(loaded.config) == _public(scheduler.config)
    assert loaded.config.method == "ode_heun" and loaded.order == 2
    # The whole pipeline: model_index.json records our class, from_pretrained imports it back.
    pipe.scheduler = scheduler
    pipe.save_pretrained(tmp_path / "pipeline")
    again = DDPMPipeline.from_pretrained(tmp_path / "pipeline")
    assert type(again.scheduler) is SDEScheduler and _public(again.scheduler.config) == _public(scheduler.config)
    again.set_progress_bar_config(disable=True)
    torch.testing.assert_close(_generate(again, again.scheduler), _generate(pipe, scheduler))


# ----------------------------------------------------------------------------- exact Gaussian reference

MU, LAM = 0.5, 0.3  # data N(MU, LAM) per coordinate


def _gaussian_model(scheduler, prediction_type):
    """Exact network for Gaussian data at training timestep k: E[ε | x], E[x0 | x] or v."""
    ac = scheduler.alphas_cumprod.double()

    def model(x, k):
        a = ac[k]
        m, s = a.sqrt(), (1 - a).sqrt()
        c = m * m * LAM + s * s
        eps = s * (x - m * MU) / c
        x0 = MU + m * LAM * (x - m * MU) / c
        return {"epsilon": eps, "sample": x0, "v_prediction": m * eps - s * x0}[prediction_type]

    return model


def _ode_error(method, steps, prediction_type="epsilon"):
    """Max error of the scheduler's ODE run against the exact probability-flow map to t = 0.

    For Gaussian data the flow from t_0 to 0 is x ↦ MU + √(LAM / C)(x − m MU), C = m² LAM + σ² at t_0.
    """
    scheduler = SDEScheduler(method=method, prediction_type=prediction_type, clip_sample=False,
                             timestep_spacing="trailing")
    model = _gaussian_model(scheduler, prediction_type)
    scheduler.set_timesteps(steps)
    x_T = torch.randn(64, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    x = x_T
    for t in scheduler.timesteps:
        x = scheduler.step(model(x, t), t, x).prev_sample
    a = float(scheduler.alphas_cumprod.double()[scheduler.timesteps[0]])
    exact = MU + math.sqrt(LAM / (a * LAM + 1 - a)) * (x_T - math.sqrt(a) * MU)
    return float((x - exact).abs().max())


@pytest.mark.parametrize("method, order", [("ode_euler", 1.0), ("ode_heun", 2.0)])
def test_ode_methods_converge_at_their_order(method, order):
    """The smooth β(t) of DiscreteVPSDE keeps Heun second order across the schedule's knots."""
    steps = [25, 50, 100, 200]  # divisors of N = 1000: a uniform grid of integer timesteps
    errors = [_ode_error(method, n) for n in steps]
    fit = fit_order([1 / n for n in steps], errors)
    assert abs(fit.order - order) <= 0.15, (fit, errors)


def test_prediction_types_give_the_same_sampler():
    errors = [_ode_error("ode_heun", 25, p) for p in ("epsilon", "sample", "v_prediction")]
    assert max(errors) - min(errors) < 1e-12


def test_add_noise_and_velocity_match_ddpm():
    ddpm, ours = DDPMScheduler(), SDEScheduler()
    gen = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(4, 3, 8, 8, generator=gen), torch.randn(4, 3, 8, 8, generator=gen)
    k = torch.tensor([0, 10, 500, 999])
    torch.testing.assert_close(ours.add_noise(x0, noise, k), ddpm.add_noise(x0, noise, k), rtol=0, atol=2e-6)
    torch.testing.assert_close(ours.get_velocity(x0, noise, k), ddpm.get_velocity(x0, noise, k), rtol=0, atol=2e-6)


def test_discrete_vp_sde_marginals_are_the_ddpm_schedule():
    ac = DDPMScheduler(beta_schedule="squaredcos_cap_v2").alphas_cumprod
    sde = sdekit.DiscreteVPSDE(ac)
    t = sde.timestep_to_time(torch.arange(1000))
    torch.testing.assert_close(sde.mean_coeff(t) ** 2, ac.double(), rtol=1e-12, atol=0)
    torch.testing.assert_close(sde.std(t) ** 2, 1 - ac.double(), rtol=1e-12, atol=1e-15)
    # β = B′: its integral (trapezoid rule, 200 points per knot interval, relative error ~(1/200)²/12 times
    # β″/β, which reaches ~10² at the cosine schedule's steep end) gives back B.
    u = torch.linspace(0, 1, 200_001, dtype=torch.float64)
    beta = sde.beta(u)
    assert bool((beta >= 0).all())
    B = torch.cat([torch.zeros(1, dtype=torch.float64), torch.cumulative_trapezoid(beta, u)])
    torch.testing.assert_close(B, sde.integrated_beta(u), rtol=1e-5, atol=1e-9)


def test_bad_configuration_names_the_option():
    with pytest.raises(ValueError, match="method"):
        SDEScheduler(method="dpm")
    with pytest.raises(ValueError, match="prediction_type"):
        SDEScheduler(prediction_type="score")
    with pytest.raises(ValueError, match="corrector"):
        SDEScheduler(method="ode_heun", corrector="langevin")
    with pytest.raises(ValueError, match="corrector"):
        SDEScheduler(method="dpmpp_2m", corrector="langevin")
    with pytest.raises(ValueError, match="variance_type"):
        SDEScheduler(variance_type="learned_range")
    with pytest.raises(ValueError, match="betas"):
        SDEScheduler(beta_start=0.1, beta_end=2.0)  # betas > 1: no VP chain
    with pytest.raises(ValueError, match="steps_offset"):
        SDEScheduler(steps_offset=-1)
    with pytest.raises(ValueError, match="use_karras_sigmas"):
        SDEScheduler(use_karras_sigmas=True, use_exponential_sigmas=True)
    with pytest.raises(ValueError, match="dynamic_thresholding_ratio"):
        SDEScheduler(thresholding=True, dynamic_thresholding_ratio=1.5)
    with pytest.raises(ValueError, match="num_inference_steps"):
        SDEScheduler().set_timesteps(1001)
    with pytest.raises(ValueError, match="descending"):
        SDEScheduler().set_timesteps(timesteps=[10, 20])
    with pytest.raises(ValueError, match="use_karras_sigmas"):
        SDEScheduler(use_karras_sigmas=True).set_timesteps(timesteps=[10, 5])
    with pytest.raises(ValueError, match="steps_offset"):
        SDEScheduler(steps_offset=1).set_timesteps(1000)  # leading + offset reaches timestep N
    scheduler = SDEScheduler()
    scheduler.set_timesteps(2)
    x = torch.zeros(1, 3, 8, 8)
    with pytest.raises(ValueError, match="model_output"):
        scheduler.step(torch.zeros(1, 3, 4, 4), scheduler.timesteps[0], x)
    with pytest.raises(ValueError, match="timestep 7 is not on"):
        scheduler.step(torch.zeros_like(x), 7, x)
    with pytest.raises(ValueError, match="begin_index"):
        scheduler.set_begin_index(2)
    with pytest.raises(ValueError, match="seed"):
        scheduler.step(torch.zeros_like(x), scheduler.timesteps[0], x, generator=torch.Generator(), seed=1)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA to detect host syncs")
@pytest.mark.parametrize("method", SCHEDULER_METHODS)
def test_steps_do_not_sync_with_the_host(method):
    """Every method's step stays on the device (the SDE methods with the Langevin corrector too)."""
    extra = {"corrector": "langevin"} if method in SDE_METHODS else {}
    scheduler = SDEScheduler(method=method, **extra)
    scheduler.set_timesteps(10, device="cuda")
    gen = torch.Generator(device="cuda").manual_seed(0)
    x = torch.randn(2, 3, 8, 8, device="cuda", generator=gen)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for t in scheduler.timesteps:
            x = scheduler.step(0.1 * x, t, x, generator=gen).prev_sample
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert x.device.type == "cuda"


def test_begin_index_starts_midway_like_custom_timesteps():
    """Image-to-image pipelines call set_begin_index(j) and loop over timesteps[j:]: the same run as
    set_timesteps(timesteps=timesteps[j:]) (same grid, same noise)."""
    model = _gaussian_model(SDEScheduler(clip_sample=False), "epsilon")
    x = torch.randn(4, 3, generator=torch.Generator().manual_seed(5), dtype=torch.float64)

    def run(scheduler, timesteps):
        gen = torch.Generator().manual_seed(6)
        y = x
        for t in timesteps:
            y = scheduler.step(model(y, t), t, y, generator=gen).prev_sample
        return y

    midway = SDEScheduler(clip_sample=False)
    midway.set_timesteps(10)
    ks = midway.timesteps.clone()
    midway.set_begin_index(4)
    custom = SDEScheduler(clip_sample=False)
    custom.set_timesteps(timesteps=ks[4:].tolist())
    torch.testing.assert_close(run(midway, ks[4:]), run(custom, custom.timesteps), rtol=0, atol=0)
