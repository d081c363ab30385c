"""The diffusers scheduler's ``euler`` and ``heun``: the probability flow's Euler / Heun steps in ``σ̃ = σ/α``.

Both run :class:`sdekit.integrations.k_diffusion.FlowStepper`, the steps of ``K.sample_euler``/``K.sample_heun``
(Karras et al. 2022, Alg. 2 without churn), on the scaled state; they reproduce diffusers'
``EulerDiscreteScheduler`` and ``HeunDiscreteScheduler`` (same ``2n − 1`` timestep layout for Heun) in float64.
"""

import pytest
import torch

import sdekit

diffusers = pytest.importorskip("diffusers", reason="diffusers is not installed (pip install sdekit[diffusers])")
from test_scheduler_multistep import KeepFloat64, _loop, _rel, _start, network

from sdekit.integrations.diffusers_scheduler import SDEScheduler


@pytest.mark.parametrize("spacing", ["leading", "trailing"])
@pytest.mark.parametrize("name, cls", [("euler", "EulerDiscreteScheduler"), ("heun", "HeunDiscreteScheduler")])
def test_reproduces_diffusers_discrete_scheduler(name, cls, spacing):
    """diffusers steps ``x̃ = x √(1 + σ²)`` (``scale_model_input`` divides it back) with float32 σ and a float32
    cast of the sample: here its σ come from the same float32 ᾱ in float64, and the sample stays float64."""
    theirs = getattr(diffusers, cls)(timestep_spacing=spacing, beta_start=0.00085, beta_end=0.012)
    ac = theirs.alphas_cumprod.double()
    theirs.set_timesteps(10)
    ks = [int(k) for k in theirs.timesteps.tolist()]
    grid = list(dict.fromkeys(ks))  # Heun repeats the interior timesteps
    sigma = ((1 - ac[grid]) / ac[grid]) ** 0.5
    if name == "heun":  # diffusers' layout: σ_0, σ_1, σ_1, …, σ_{n−1}, σ_{n−1}, 0
        sigma = torch.cat([sigma[:1], sigma[1:].repeat_interleave(2)])
    theirs.sigmas = torch.cat([sigma, torch.zeros(1, dtype=torch.float64)])
    ours = SDEScheduler.from_config(theirs.config, method=name, clip_sample=False)
    ours.set_timesteps(timesteps=grid)
    assert ours.timesteps.tolist() == ks and ours.order == theirs.order
    x = _start()
    scaled = (x * float((theirs.sigmas[0] ** 2 + 1) ** 0.5)).as_subclass(KeepFloat64)
    for k in theirs.timesteps:
        scaled = theirs.step(network(theirs.scale_model_input(scaled, k), k), k, scaled).prev_sample
    expected = scaled.as_subclass(torch.Tensor)
    assert expected.dtype == torch.float64
    assert _rel(_loop(ours, x, ours.timesteps), expected) < 1e-12


@pytest.mark.parametrize("method", ["euler", "heun"])
def test_scheduler_equals_sample_on_its_grid(method):
    ours = SDEScheduler(method=method, clip_sample=False)
    ours.set_timesteps(7)
    score = sdekit.score_from_epsilon(network, ours.sde, time_input=ours.sde.time_to_timestep)
    x = _start()
    ref = sdekit.sample(score, ours.sde, x.shape, method=method, timesteps=ours._plan.grid, x_init=x,
                        dtype=torch.float64).x
    assert _rel(_loop(ours, x, ours.timesteps), ref) < 1e-12


def test_heun_corrector_needs_its_predictor():
    ours = SDEScheduler(method="heun", clip_sample=False)
    ours.set_timesteps(5)
    x = _start()
    ours.step(network(x, ours.timesteps[0]), ours.timesteps[0], x)
    ours.set_timesteps(5)
    ours.set_begin_index(3)  # entry 3 is interval 1's corrector: its predictor (entry 2) never ran
    with pytest.raises(ValueError, match="corrector"):
        ours.step(network(x, ours.timesteps[3]), ours.timesteps[3], x)


@pytest.mark.parametrize("spacing", ["leading", "trailing"])
def test_euler_ancestral_reproduces_euler_ancestral_discrete_scheduler(spacing):
    """The ancestral Euler step in σ̃ (η = 1: the VE posterior, Song et al. 2021, eq. 47) is DDIM at η = 1 on
    the VP state; with the same generator both draw the same normals, so the runs agree to round-off."""
    theirs = diffusers.EulerAncestralDiscreteScheduler(timestep_spacing=spacing, beta_start=0.00085, beta_end=0.012)
    ac = theirs.alphas_cumprod.double()
    theirs.set_timesteps(10)
    ks = [int(k) for k in theirs.timesteps.tolist()]
    theirs.sigmas = torch.cat([((1 - ac[ks]) / ac[ks]) ** 0.5, torch.zeros(1, dtype=torch.float64)])
    ours = SDEScheduler.from_config(theirs.config, method="euler_ancestral", clip_sample=False)
    ours.set_timesteps(timesteps=ks)
    x = _start()
    scaled = (x * float((theirs.sigmas[0] ** 2 + 1) ** 0.5)).as_subclass(KeepFloat64)
    g = torch.Generator().manual_seed(3)
    for k in theirs.timesteps:
        scaled = theirs.step(network(theirs.scale_model_input(scaled, k), k), k, scaled, generator=g).prev_sample
    g = torch.Generator().manual_seed(3)
    for k in ours.timesteps:
        x = ours.step(network(x, k), k, x, generator=g).prev_sample
    assert _rel(x, scaled.as_subclass(torch.Tensor)) < 1e-12


def _time_free_network(x, k):
    """An ε-network that ignores its timestep: the midpoint calls' float32 timesteps (diffusers stores
    fractional timesteps in float32) then cannot matter, and the comparison is of the steps alone."""
    return torch.tanh(0.7 * x) - 0.1 * x


@pytest.mark.parametrize("method", ["dpm_2", "dpmpp_2s"])
def test_midpoint_methods_equal_sample_on_their_grid(method):
    """Two calls per interval, the second at the log-σ̃ midpoint (a fractional timestep), the last interval one
    call: the steppers of K.sample_dpm_2 / K.sample_dpmpp_2s_ancestral (η = 0) on the scaled state, so the
    scheduler's loop is sdekit.sample's run on the same grid."""
    ours = SDEScheduler(method=method, clip_sample=False)
    ours.set_timesteps(6)
    assert ours.order == 2 and len(ours.timesteps) == 2 * 6 - 1
    mids = ours.timesteps[1::2]
    assert bool((mids != mids.round()).all())  # fractional midpoints between their neighbours
    assert bool((ours.timesteps[:-1:2][:5] > mids).all()) and bool((mids > ours.timesteps[2::2]).all())
    for net, tol in ((_time_free_network, 1e-12), (network, 1e-7)):  # float32 midpoint timesteps: 1e-7
        score = sdekit.score_from_epsilon(net, ours.sde, time_input=ours.sde.time_to_timestep)
        x = _start()
        ref = sdekit.sample(score, ours.sde, x.shape, method=method, timesteps=ours._plan.grid, x_init=x,
                            dtype=torch.float64).x
        ours.set_timesteps(6)
        y = x
        for k in ours.timesteps:
            y = ours.step(net(y, k), k, y).prev_sample
        assert _rel(y, ref) < tol


def test_midpoint_call_needs_its_first_call():
    ours = SDEScheduler(method="dpm_2", clip_sample=False)
    ours.set_timesteps(4)
    ours.set_begin_index(1)
    x = _start()
    with pytest.raises(ValueError, match="midpoint"):
        ours.step(network(x, ours.timesteps[1]), ours.timesteps[1], x)


def test_dpm_2_follows_kdpm2_discrete_scheduler():
    """The same 2n − 1 calls as ``KDPM2DiscreteScheduler`` (its midpoints interpolate the timestep in log σ,
    ours invert the SDE's σ: the same to 0.01 timestep), the same trajectory up to diffusers' float32 σ."""
    theirs = diffusers.KDPM2DiscreteScheduler(timestep_spacing="trailing", beta_start=0.00085, beta_end=0.012)
    theirs.set_timesteps(8)
    ks = theirs.timesteps.tolist()
    ours = SDEScheduler.from_config(theirs.config, method="dpm_2", clip_sample=False)
    ours.set_timesteps(timesteps=[int(round(k)) for k in ks[::2]])
    torch.testing.assert_close(ours.timesteps.double(), torch.tensor(ks, dtype=torch.float64), rtol=0, atol=1e-2)
    x = _start()
    scaled = x * float((theirs.sigmas[0] ** 2 + 1) ** 0.5)
    for k in theirs.timesteps:
        scaled = theirs.step(_time_free_network(theirs.scale_model_input(scaled, k), k), k, scaled).prev_sample
    y = x
    for k in ours.timesteps:
        y = ours.step(_time_free_network(y, k), k, y).prev_sample
    assert _rel(y, scaled) < 1e-6
