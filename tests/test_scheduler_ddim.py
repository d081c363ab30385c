"""SDEScheduler(method="ddim") against diffusers' own DDIMScheduler: the same steps, to float64 round-off."""

import pytest
import torch

diffusers = pytest.importorskip("diffusers", reason="diffusers is not installed (pip install sdekit[diffusers])")
from diffusers import DDIMScheduler

from sdekit.integrations.diffusers_scheduler import SDEScheduler


def network(x, t):
    """A fixed smooth stand-in for a UNet: any deterministic function of ``(x, t)`` will do."""
    return torch.tanh(0.7 * x + 1e-3 * float(t)) - 0.1 * x


def _loop(scheduler, steps, eta, seed=0, **step_kwargs):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn((3, 2, 4), generator=gen, dtype=torch.float64)
    scheduler.set_timesteps(steps)
    for t in scheduler.timesteps:
        x = scheduler.step(network(x, t), t, x, eta=eta, generator=gen, **step_kwargs).prev_sample
    return x


@pytest.mark.parametrize("eta", [0.0, 0.5, 1.0])
@pytest.mark.parametrize("config, steps", [
    ({"timestep_spacing": "leading", "steps_offset": 1, "clip_sample": False}, 7),
    ({"timestep_spacing": "trailing", "clip_sample": False, "prediction_type": "v_prediction"}, 10),
    ({"timestep_spacing": "leading", "beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012,
      "clip_sample": False, "prediction_type": "sample"}, 12),
])
def test_ddim_reproduces_ddim_scheduler(config, steps, eta):
    theirs = DDIMScheduler(**config)
    theirs.alphas_cumprod = theirs.alphas_cumprod.double()  # the same float32 ᾱ, in float64 arithmetic
    ours = SDEScheduler.from_config(theirs.config, method="ddim")
    ours.set_timesteps(steps)
    theirs.set_timesteps(steps)
    assert ours.timesteps.tolist() == theirs.timesteps.tolist()
    diff = (_loop(ours, steps, eta) - _loop(theirs, steps, eta)).abs().max()
    assert float(diff) < 1e-10


def test_clipped_ddim_is_ddims_clipped_model_output():
    """With ``clip_sample`` the step uses ε recomputed from the clipped x̂₀ (DDIM's ``use_clipped_model_output``)."""
    theirs = DDIMScheduler(clip_sample=True, clip_sample_range=0.5)
    theirs.alphas_cumprod = theirs.alphas_cumprod.double()
    ours = SDEScheduler.from_config(theirs.config, method="ddim")
    diff = (_loop(ours, 8, 0.3) - _loop(theirs, 8, 0.3, use_clipped_model_output=True)).abs().max()
    assert float(diff) < 1e-10


def test_eta_belongs_to_ddim():
    scheduler = SDEScheduler(method="ancestral")
    scheduler.set_timesteps(4)
    x = torch.zeros(1, 2)
    t = scheduler.timesteps[0]
    scheduler.step(x, t, x, eta=0.0)  # what pipelines pass by default: accepted
    with pytest.raises(ValueError, match="eta=0.5 applies to method='ddim'"):
        scheduler.step(x, t, x, eta=0.5)
    ddim = SDEScheduler(method="ddim")
    ddim.set_timesteps(4)
    with pytest.raises(ValueError, match="eta must lie in"):
        ddim.step(x, ddim.timesteps[0], x, eta=1.5)
