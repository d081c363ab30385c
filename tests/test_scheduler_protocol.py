"""SDEScheduler against diffusers' scheduler contract: config round trips, compatibles, step outputs,
add_noise dtypes, timestep lookup (slices, begin_index), public pipeline configs, sigma grids,
DPM-Solver++(2M), keyed noise, and score_from_diffusers with tiny UNets."""

import inspect

import numpy as np
import pytest
import torch

diffusers = pytest.importorskip("diffusers", reason="diffusers is not installed (pip install sdekit[diffusers])")
from diffusers import (
    DDPMScheduler,
    DPMSolverMultistepScheduler,
    EulerDiscreteScheduler,
    UNet2DConditionModel,
    UNet2DModel,
)

import sdekit
from sdekit.integrations.diffusers_model import score_from_diffusers
from sdekit.integrations.diffusers_scheduler import SCHEDULER_METHODS, SDEScheduler

MU, LAM = 0.5, 0.3  # Gaussian data N(MU, LAM) per coordinate: the exact ε-network is known

# Public scheduler configs of well-known checkpoints (field values as published on the Hub).
PUBLIC_CONFIGS = {
    "ddpm-cifar10": {"_class_name": "DDPMScheduler", "beta_end": 0.02, "beta_schedule": "linear",
                     "beta_start": 0.0001, "clip_sample": True, "num_train_timesteps": 1000,
                     "trained_betas": None, "variance_type": "fixed_small"},
    "ddim": {"_class_name": "DDIMScheduler", "beta_end": 0.02, "beta_schedule": "linear", "beta_start": 0.0001,
             "clip_sample": True, "num_train_timesteps": 1000, "set_alpha_to_one": True, "steps_offset": 0,
             "prediction_type": "epsilon", "timestep_spacing": "leading", "trained_betas": None},
    "sd-1.5": {"_class_name": "PNDMScheduler", "beta_end": 0.012, "beta_schedule": "scaled_linear",
               "beta_start": 0.00085, "num_train_timesteps": 1000, "set_alpha_to_one": False,
               "skip_prk_steps": True, "steps_offset": 1, "trained_betas": None, "clip_sample": False},
    "sd-2.1-base": {"_class_name": "PNDMScheduler", "beta_end": 0.012, "beta_schedule": "scaled_linear",
                    "beta_start": 0.00085, "num_train_timesteps": 1000, "prediction_type": "epsilon",
                    "set_alpha_to_one": False, "skip_prk_steps": True, "steps_offset": 1, "trained_betas": None,
                    "clip_sample": False},
    "sd-2.1": {"_class_name": "DDIMScheduler", "beta_end": 0.012, "beta_schedule": "scaled_linear",
               "beta_start": 0.00085, "clip_sample": False, "num_train_timesteps": 1000,
               "prediction_type": "v_prediction", "set_alpha_to_one": False, "skip_prk_steps": True,
               "steps_offset": 1, "trained_betas": None},
    "sdxl-base-1.0": {"_class_name": "EulerDiscreteScheduler", "beta_end": 0.012, "beta_schedule": "scaled_linear",
                      "beta_start": 0.00085, "clip_sample": False, "interpolation_type": "linear",
                      "num_train_timesteps": 1000, "prediction_type": "epsilon", "sample_max_value": 1.0,
                      "set_alpha_to_one": False, "skip_prk_steps": True, "steps_offset": 1,
                      "timestep_spacing": "leading", "trained_betas": None, "use_karras_sigmas": False},
}
METHOD_VARIANTS = [{"method": m} for m in SCHEDULER_METHODS] + [
    {"method": "euler_maruyama", "corrector": "langevin", "corrector_steps": 2},
    {"method": "ancestral", "use_karras_sigmas": True},
]


def _ids(config):
    return "+".join(str(v) for v in config.values())


def _public(config) -> dict:
    return {k: v for k, v in dict(config).items() if not k.startswith("_")}


def _eps_model(scheduler):
    """Exact ε-network for Gaussian data at (fractional) training timestep k, from the scheduler's SDE."""
    sde = scheduler.sde

    def model(x, k):
        t = sde.timestep_to_time(torch.as_tensor(k, dtype=torch.float64).reshape(-1))
        m, s = sde.mean_coeff(t), sde.std(t)
        c = m * m * LAM + s * s
        return (s * (x.double() - m * MU) / c).to(x.dtype).expand_as(x)

    return model


def _loop(scheduler, x, timesteps, seed=0, model=None, **step_kwargs):
    model = model or _eps_model(scheduler)
    gen = torch.Generator().manual_seed(seed)
    for t in timesteps:
        x = scheduler.step(model(x, t), t, x, generator=gen, **step_kwargs).prev_sample
    return x


def _x(batch=4, seed=1, dtype=torch.float32):
    return torch.randn(batch, 3, 4, 4, generator=torch.Generator().manual_seed(seed), dtype=dtype)


# ----------------------------------------------------------------------------- configuration

@pytest.mark.parametrize("config", [
    {},
    {"method": "ode_heun", "timestep_spacing": "trailing", "clip_sample": False},
    {"method": "dpmpp_2m", "use_karras_sigmas": True, "prediction_type": "v_prediction"},
    {"thresholding": True, "sample_max_value": 2.0, "rescale_betas_zero_snr": True},
    {"trained_betas": np.linspace(1e-4, 0.02, 1000).tolist(), "num_train_timesteps": 1000},
], ids=lambda c: "+".join(c) or "default")
def test_save_pretrained_round_trip(tmp_path, config):
    scheduler = SDEScheduler(**config)
    scheduler.save_pretrained(tmp_path)
    loaded = SDEScheduler.from_pretrained(tmp_path)
    assert _public(loaded.config) == _public(scheduler.config)
    assert loaded.betas.tolist() == scheduler.betas.tolist()
    scheduler.set_timesteps(6)
    loaded.set_timesteps(6)
    assert torch.equal(loaded.timesteps, scheduler.timesteps)
    x = _x()
    torch.testing.assert_close(_loop(loaded, x, loaded.timesteps), _loop(scheduler, x, scheduler.timesteps),
                               rtol=0, atol=0)


def test_compatibles_cover_karras_schedulers_and_round_trip():
    # Explicit betas: diffusers' from_config gives keys a config left at their default the target's default.
    scheduler = SDEScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                             prediction_type="v_prediction", timestep_spacing="trailing", steps_offset=1)
    names = {c.__name__ for c in scheduler.compatibles}
    assert {"SDEScheduler", "DDPMScheduler", "DDIMScheduler", "EulerDiscreteScheduler",
            "DPMSolverMultistepScheduler", "UniPCMultistepScheduler", "EDMEulerScheduler"} <= names
    for cls in scheduler.compatibles:
        other = cls.from_config(scheduler.config)
        back = SDEScheduler.from_config(other.config)
        shared = set(inspect.signature(cls.__init__).parameters) & set(_public(scheduler.config))
        for key in shared:  # what the other scheduler understands survives the trip both ways
            assert back.config[key] == scheduler.config[key], (cls.__name__, key)
        if hasattr(other, "alphas_cumprod") and "beta_start" in shared:
            torch.testing.assert_close(back.alphas_cumprod, other.alphas_cumprod.float(), rtol=0, atol=1e-7)


def test_from_config_of_diffusers_defaults_keeps_their_schedule():
    """A config from DDPM/Euler/DPM-Solver carries their options; ours keep the same meaning."""
    euler = EulerDiscreteScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                                   use_karras_sigmas=True, timestep_spacing="linspace")
    ours = SDEScheduler.from_config(euler.config)
    assert ours.config.use_karras_sigmas and ours.config.timestep_spacing == "linspace"
    euler.set_timesteps(12)
    ours.set_timesteps(12)
    torch.testing.assert_close(ours.timesteps, euler.timesteps, rtol=0, atol=1e-4)
    dpm = DPMSolverMultistepScheduler(variance_type=None)  # DPM-Solver configs may store variance_type=None
    none = SDEScheduler.from_config(dpm.config)
    assert none.config.variance_type is None
    small = SDEScheduler(variance_type="fixed_small")
    none.set_timesteps(5)
    small.set_timesteps(5)
    x = _x()
    torch.testing.assert_close(_loop(none, x, none.timesteps), _loop(small, x, small.timesteps), rtol=0, atol=0)


# ----------------------------------------------------------------------------- step outputs

@pytest.mark.parametrize("config", METHOD_VARIANTS, ids=_ids)
def test_step_shapes_and_return_dict_equivalence(config):
    scheduler = SDEScheduler(**config)
    scheduler.set_timesteps(5)
    x = _x()
    out = torch.randn_like(x)
    t0, t1 = scheduler.timesteps[0], scheduler.timesteps[1]
    as_dict = scheduler.step(out, t0, x, generator=torch.manual_seed(3))
    step_index = scheduler.step_index
    scheduler.set_timesteps(5)
    as_tuple = scheduler.step(out, t0, x, generator=torch.manual_seed(3), return_dict=False)
    assert isinstance(as_tuple, tuple) and len(as_tuple) == 2
    assert as_dict.prev_sample.shape == x.shape == as_dict.pred_original_sample.shape
    torch.testing.assert_close(as_tuple[0], as_dict.prev_sample, rtol=0, atol=0)
    torch.testing.assert_close(as_tuple[1], as_dict.pred_original_sample, rtol=0, atol=0)
    assert step_index == scheduler.step_index == 1
    assert scheduler.step(out, t1, as_tuple[0]).prev_sample.shape == x.shape
    assert len(scheduler) == 1000 and scheduler.init_noise_sigma == 1.0
    assert torch.equal(scheduler.scale_model_input(x, t0), x)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_add_noise_every_dtype_matches_ddpm(dtype):
    ddpm, ours = DDPMScheduler(), SDEScheduler()
    x0, noise = _x(seed=2).to(dtype), _x(seed=3).to(dtype)
    k = torch.tensor([0, 10, 500, 999])
    expected = ddpm.add_noise(x0.double(), noise.double(), k)
    for timesteps in (k, k.to(torch.int32), k.reshape(4, 1), k.tolist()):
        got = ours.add_noise(x0, noise, torch.as_tensor(timesteps))
        assert got.dtype == dtype and got.shape == x0.shape
        torch.testing.assert_close(got.double(), expected, rtol=0, atol=4 * torch.finfo(dtype).eps)
    for scalar in (500, torch.tensor(500), torch.tensor([500])):  # one timestep for the whole batch
        torch.testing.assert_close(ours.add_noise(x0, noise, scalar).double(),
                                   ddpm.add_noise(x0.double(), noise.double(), torch.tensor([500])),
                                   rtol=0, atol=4 * torch.finfo(dtype).eps)
    with pytest.raises(ValueError, match="timesteps"):
        ours.add_noise(x0, noise, torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="timesteps"):
        ours.add_noise(x0, noise, 1000)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_add_noise_and_step_on_cuda_half():
    ours = SDEScheduler(method="dpmpp_2m", clip_sample=False)
    ours.set_timesteps(4, device="cuda")
    x = _x().cuda().half()
    noised = ours.add_noise(x, torch.randn_like(x), ours.timesteps[:1])
    assert noised.dtype == torch.float16 and noised.device.type == "cuda"
    for t in ours.timesteps:
        noised = ours.step(0.1 * noised, t, noised).prev_sample
    assert noised.dtype == torch.float16 and bool(torch.isfinite(noised).all())


# ----------------------------------------------------------------------------- honouring the timestep

@pytest.mark.parametrize("spacing", ["leading", "trailing", "linspace"])
@pytest.mark.parametrize("begin_index", [True, False])
def test_loop_from_a_slice_matches_ddpm(spacing, begin_index):
    """img2img: noise to timesteps[j], loop over timesteps[j:] — the same run as DDPMScheduler's."""
    ddpm, ours = DDPMScheduler(timestep_spacing=spacing), SDEScheduler(timestep_spacing=spacing)
    x0, noise = _x(seed=2), _x(seed=3)
    model = _eps_model(ours)
    runs = []
    for scheduler in (ddpm, ours):
        scheduler.set_timesteps(10)
        timesteps = scheduler.timesteps[4:]
        if begin_index and scheduler is ours:
            scheduler.set_begin_index(4)
        x = scheduler.add_noise(x0, noise, timesteps[:1])
        gen = torch.Generator().manual_seed(0)
        states = []
        for t in timesteps:
            x = scheduler.step(model(x, t), t, x, generator=gen).prev_sample
            states.append(x)
        runs.append(states)
    assert ours.step_index == 10
    # Every step but the last agrees; so does the last, except where DDPM adds noise on a final
    # timestep that is not 0 (trailing spacing; see the module docstring).
    compared = runs[1] if spacing != "trailing" else runs[1][:-1]
    for got, expected in zip(compared, runs[0]):
        torch.testing.assert_close(got, expected, rtol=0, atol=2e-5)
    assert (runs[1][0] - runs[1][-1]).abs().max() > 0.1  # the loop moved the sample


@pytest.mark.parametrize("config", METHOD_VARIANTS, ids=_ids)
def test_slice_loop_equals_custom_timesteps_run(config):
    """A loop over a slice of timesteps (by element, by number, or after set_begin_index) = the run on
    exactly those intervals (set_timesteps(timesteps=...)), noise included."""
    full = SDEScheduler(clip_sample=False, **config)
    full.set_timesteps(8)
    j = 3 * full.order
    intervals = full._plan.interval_timesteps[3:].tolist()  # fractional for the Karras grid
    custom = SDEScheduler(clip_sample=False, **{k: v for k, v in config.items() if k != "use_karras_sigmas"})
    custom.set_timesteps(timesteps=intervals)
    x = _x()
    expected = _loop(custom, x, custom.timesteps)
    ways = [full.timesteps[j:], full.timesteps[j:].tolist(), list(full.timesteps[j:].clone())]
    for timesteps in ways:
        full.set_timesteps(8)
        torch.testing.assert_close(_loop(full, x, timesteps), expected, rtol=0, atol=0)
    full.set_timesteps(8)
    full.set_begin_index(j)
    assert full.begin_index == j and full.step_index is None
    torch.testing.assert_close(_loop(full, x, full.timesteps[j:]), expected, rtol=0, atol=0)
    assert full.step_index == len(full.timesteps)


def test_timestep_lookup_rules():
    heun = SDEScheduler(method="ode_heun")
    heun.set_timesteps(4)  # 2n − 1 entries: (k_i, k_{i+1}) per interval, then k_3 for the last (Euler) one
    ks = heun._plan.interval_timesteps.tolist()
    assert heun.timesteps.tolist() == [ks[0], ks[1], ks[1], ks[2], ks[2], ks[3], ks[3]]
    assert heun.index_for_timestep(ks[1]) == 2  # duplicated: the entry that starts interval 1
    assert heun.index_for_timestep(heun.timesteps[1]) == 1  # an element: its own position
    x = _x()
    with pytest.raises(ValueError, match="predictor"):
        heun.step(torch.zeros_like(x), heun.timesteps[1], x)  # Heun corrector without its predictor
    pc = SDEScheduler(method="reverse_diffusion", corrector="langevin", corrector_steps=2)
    pc.set_timesteps(3)
    assert pc.index_for_timestep(pc._plan.interval_timesteps[1]) == 3  # first of the repeated entries
    pc.set_begin_index(3)
    with pytest.raises(ValueError, match="begin_index"):
        pc.step(torch.zeros_like(x), int(pc._plan.interval_timesteps[0]), x)
    assert [int(heun.previous_timestep(t)) for t in ks] == ks[1:] + [-1]


def test_steps_offset_and_leading_spacing_like_ddpm():
    for config in PUBLIC_CONFIGS.values():
        ddpm, ours = DDPMScheduler.from_config(config), SDEScheduler.from_config(config)
        for n in (1, 4, 50):
            ddpm.set_timesteps(n)
            ours.set_timesteps(n)
            assert torch.equal(ours.timesteps, ddpm.timesteps), (config["_class_name"], n)


@pytest.mark.parametrize("name", list(PUBLIC_CONFIGS))
@pytest.mark.parametrize("method", ["ancestral", "dpmpp_2m", "ode_heun"])
def test_public_configs_load_and_sample(name, method):
    config = PUBLIC_CONFIGS[name]
    ours = SDEScheduler.from_config(config, method=method)
    assert ours.config.prediction_type == config.get("prediction_type", "epsilon")
    assert ours.config.steps_offset == config.get("steps_offset", 0)
    ours.set_timesteps(4)
    x = _x()
    model = _eps_model(ours)
    if ours.config.prediction_type == "v_prediction":
        eps_model = model

        def model(x, k):  # v = m ε − σ x0 with x0 = (x − σ ε)/m  ⇒  v = (ε − σ x)/m
            t = ours.sde.timestep_to_time(torch.as_tensor(k, dtype=torch.float64))
            m, s = ours.sde.mean_coeff(t), ours.sde.std(t)
            return ((eps_model(x, k).double() - s * x.double()) / m).to(x.dtype)

    y = _loop(ours, x, ours.timesteps, model=model)
    assert y.shape == x.shape and bool(torch.isfinite(y).all())
    if method == "ancestral":  # DDPMScheduler on the same config: the same run
        ddpm = DDPMScheduler.from_config(config)
        ddpm.set_timesteps(4)
        torch.testing.assert_close(y, _loop(ddpm, x, ddpm.timesteps, model=model), rtol=0, atol=5e-5)


# ----------------------------------------------------------------------------- sigma grids, DPM-Solver++

@pytest.mark.parametrize("grid", ["use_karras_sigmas", "use_exponential_sigmas", "use_beta_sigmas"])
def test_sigma_grids_are_eulers_timesteps(grid):
    config = {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012, grid: True}
    if grid == "use_beta_sigmas":
        pytest.importorskip("scipy")
    euler = EulerDiscreteScheduler(timestep_spacing="linspace", **config)
    ours = SDEScheduler(**config)
    euler.set_timesteps(15)
    ours.set_timesteps(15)
    assert ours.timesteps.dtype == torch.float32 and bool((ours.timesteps.diff() < 0).all())
    assert float(ours.timesteps[0]) == 999.0 and float(ours.timesteps[-1]) == 0.0
    torch.testing.assert_close(ours.timesteps, euler.timesteps, rtol=0, atol=1e-4)
    if grid == "use_karras_sigmas":  # the noise levels of our grid follow Karras et al. eq. 5
        t = ours._plan.grid[:-1]
        sigma = ours.sde.std(t) / ours.sde.mean_coeff(t)
        lo, hi = float(sigma[-1]), float(sigma[0])
        ramp = torch.linspace(0, 1, 15, dtype=torch.float64)
        karras = (hi ** (1 / 7) + ramp * (lo ** (1 / 7) - hi ** (1 / 7))) ** 7
        torch.testing.assert_close(sigma, karras, rtol=2e-3, atol=0)  # interpolation between timesteps
    x = _x()
    assert bool(torch.isfinite(_loop(ours, x, ours.timesteps)).all())


@pytest.mark.parametrize("timesteps", [[999, 800, 600, 400, 200, 50, 10], None])
def test_dpmpp_2m_matches_diffusers_dpm_solver(timesteps):
    dpm = DPMSolverMultistepScheduler()  # DPM-Solver++, order 2, first-order final step to σ = 0
    ours = SDEScheduler(method="dpmpp_2m", clip_sample=False)
    if timesteps is None:
        dpm.set_timesteps(10)
        timesteps = dpm.timesteps.tolist()
    else:
        dpm.set_timesteps(timesteps=timesteps)
    ours.set_timesteps(timesteps=timesteps)
    x = _x(dtype=torch.float64)
    expected = _loop(dpm, x, dpm.timesteps, model=_eps_model(ours))
    torch.testing.assert_close(_loop(ours, x, ours.timesteps), expected, rtol=0, atol=1e-6)


def test_dpmpp_2m_equals_sdekit_sample_on_the_same_grid():
    ours = SDEScheduler(method="dpmpp_2m", clip_sample=False)
    ours.set_timesteps(7)
    model = _eps_model(ours)
    score = sdekit.score_from_epsilon(model, ours.sde, time_input=ours.sde.time_to_timestep)
    x = _x(dtype=torch.float64)
    ref = sdekit.sample(score, ours.sde, x.shape, method="dpmpp_2m", timesteps=ours._plan.grid[:-1],
                        x_init=x, dtype=torch.float64).x
    torch.testing.assert_close(_loop(ours, x, ours.timesteps), ref, rtol=1e-12, atol=1e-12)


# ----------------------------------------------------------------------------- keyed noise

@pytest.mark.parametrize("method", ["ancestral", "euler_maruyama"])
def test_keyed_noise_is_batch_invariant(method):
    ours = SDEScheduler(method=method, corrector="langevin")
    ours.set_timesteps(5)
    idx = torch.arange(4)
    x = ours.initial_noise((4, 3, 4, 4), seed=11)
    model = _eps_model(ours)

    def run(x, index, **kw):
        ours.set_timesteps(5)
        for t in ours.timesteps:
            x = ours.step(model(x, t), t, x, seed=11, sample_index=index, **kw).prev_sample
        return x

    full = run(x, idx)
    part = run(ours.initial_noise((2, 3, 4, 4), seed=11, sample_index=idx[[1, 3]]), idx[[1, 3]])
    torch.testing.assert_close(part, full[[1, 3]], rtol=0, atol=0)
    # The scheduler-level key gives the same bits inside a loop that passes only a generator.
    ours.set_noise_seed(11, sample_index=idx[[1, 3]])
    ours.set_timesteps(5)
    piped = _loop(ours, ours.initial_noise((2, 3, 4, 4), seed=11, sample_index=idx[[1, 3]]), ours.timesteps)
    torch.testing.assert_close(piped, part, rtol=0, atol=0)
    ours.set_noise_seed(None)
    ours.set_timesteps(5)
    assert not torch.equal(_loop(ours, x, ours.timesteps)[[1, 3]], part)  # generator noise again
    t = ours.timesteps[0]
    with pytest.raises(ValueError, match="sample_index"):
        ours.step(model(x, t), t, x, seed=11, sample_index=idx[:2])
    with pytest.raises(ValueError, match="sample_index"):
        ours.step(model(x, t), t, x, sample_index=idx)  # an index without a seed
    with pytest.raises(ValueError, match="seed"):
        ours.set_noise_seed(-1)


# ----------------------------------------------------------------------------- score_from_diffusers

def _tiny_unet():
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return UNet2DModel(sample_size=8, in_channels=2, out_channels=2, layers_per_block=1,
                           block_out_channels=(8,), down_block_types=("DownBlock2D",),
                           up_block_types=("UpBlock2D",), norm_num_groups=2).eval()


def _tiny_cond_unet():
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return UNet2DConditionModel(sample_size=8, in_channels=2, out_channels=2, layers_per_block=1,
                                    block_out_channels=(8,), down_block_types=("CrossAttnDownBlock2D",),
                                    up_block_types=("CrossAttnUpBlock2D",), cross_attention_dim=6,
                                    attention_head_dim=2, norm_num_groups=2).eval()


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "sample"])
def test_score_from_diffusers_maps_time_and_parameterisation(prediction_type):
    unet = _tiny_unet()
    seen = []
    forward = unet.forward

    def recording(x, timestep, **kw):
        seen.append(timestep.clone())
        return forward(x, timestep, **kw)

    unet.forward = recording
    sde = sdekit.DiscreteVPSDE(DDPMScheduler().alphas_cumprod)
    score = score_from_diffusers(unet, sde, prediction_type)
    k = torch.tensor([999, 500, 0])
    t = sde.timestep_to_time(k).float()
    x = torch.randn(3, 2, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        got = score(x, t)
        out = forward(x, k).sample
    torch.testing.assert_close(seen[0], k.float(), rtol=0, atol=1e-4)  # SDE time → training timestep
    m = sde.mean_coeff(t.double()).float().reshape(-1, 1, 1, 1)
    s = sde.std(t.double()).float().reshape(-1, 1, 1, 1)
    expected = {"epsilon": -out / s, "sample": (m * out - x) / s**2, "v_prediction": -(s * x + m * out) / s}
    torch.testing.assert_close(got, expected[prediction_type], rtol=1e-4, atol=1e-4)


def test_score_from_diffusers_conditioning_rides_with_its_samples():
    """Per-sample encoder_hidden_states through sdekit.sample(model_kwargs=...): each sample's result is
    the one it gets alone (keyed noise, batch-invariant), so no row saw another row's conditioning.

    In float64: in float32 the UNet's own convolutions round differently at batch 3 and batch 1 (by
    ~1e-5 after four steps, a batch-size effect of the backend, not a leak between rows)."""
    unet = _tiny_cond_unet().double()
    sde = sdekit.DiscreteVPSDE(DDPMScheduler().alphas_cumprod)
    score = score_from_diffusers(unet, sde)
    text = torch.randn(3, 4, 6, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    kw = {"method": "dpmpp_2m", "steps": 4, "seed": 5, "dtype": torch.float64}
    with torch.no_grad():
        batch = sdekit.sample(score, sde, (3, 2, 8, 8), model_kwargs={"encoder_hidden_states": text}, **kw).x
        alone = sdekit.sample(score, sde, (1, 2, 8, 8), sample_index=torch.tensor([2]),
                              model_kwargs={"encoder_hidden_states": text[2:]}, **kw).x
        swapped = sdekit.sample(score, sde, (1, 2, 8, 8), sample_index=torch.tensor([2]),
                                model_kwargs={"encoder_hidden_states": text[:1]}, **kw).x
    torch.testing.assert_close(alone[0], batch[2], rtol=1e-10, atol=1e-10)
    assert (swapped[0] - batch[2]).abs().max() > 1e-3  # the conditioning matters


def test_scheduler_loop_and_sdekit_sample_agree_on_a_conditional_unet():
    """The same UNet2DConditionModel through SDEScheduler (a pipeline's loop) and through
    score_from_diffusers + sdekit.sample: the same DPM-Solver++(2M) result."""
    unet = _tiny_cond_unet()
    scheduler = SDEScheduler.from_config(PUBLIC_CONFIGS["sd-1.5"], method="dpmpp_2m")
    scheduler.set_timesteps(4)
    text = torch.randn(2, 4, 6, generator=torch.Generator().manual_seed(2))
    x = torch.randn(2, 2, 8, 8, generator=torch.Generator().manual_seed(3))
    y = x
    with torch.no_grad():
        for t in scheduler.timesteps:
            y = scheduler.step(unet(y, t, encoder_hidden_states=text).sample, t, y).prev_sample
        score = score_from_diffusers(unet, scheduler.sde)
        ref = sdekit.sample(score, scheduler.sde, x.shape, method="dpmpp_2m", x_init=x,
                            timesteps=scheduler._plan.grid[:-1], model_kwargs={"encoder_hidden_states": text}).x
    torch.testing.assert_close(y, ref, rtol=1e-4, atol=1e-4)


def test_score_from_diffusers_errors_name_the_argument():
    unet = _tiny_unet()
    sde = sdekit.DiscreteVPSDE(DDPMScheduler().alphas_cumprod)
    with pytest.raises(TypeError, match="DiscreteVPSDE"):
        score_from_diffusers(unet, sdekit.VPSDE())
    with pytest.raises(ValueError, match="prediction_type"):
        score_from_diffusers(unet, sde, "score")
    with pytest.raises(ValueError, match="num_train_timesteps"):
        score_from_diffusers(unet, sde, num_train_timesteps=500)
    with pytest.raises(TypeError, match="model"):
        score_from_diffusers(None, sde)
    x, t = torch.randn(1, 2, 8, 8), torch.ones(1)
    with pytest.raises(ValueError, match="learned_variance"), torch.no_grad():
        score_from_diffusers(unet, sde, learned_variance=True)(x, t)
