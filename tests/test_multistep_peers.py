"""UniPC and DEIS (``K.sample_unipc``, ``K.sample_deis``) against diffusers' own multistep schedulers.

Both sides run in float64 on the same float32 ``ᾱ`` (the scheduler's, promoted), the same σ grid and the
same network; the scheduler steps the VP state ``x``, sdekit the scaled ``x̃ = x/α = x √(1 + σ̃²)`` at
``σ̃ = √((1 − ᾱ)/ᾱ)``, and the two final states are compared in VP units.
"""

import math

import pytest
import torch

from sdekit.integrations import k_diffusion as K
from sdekit.integrations.k_diffusion_deis import deis_coefficients

diffusers = pytest.importorskip("diffusers", reason="diffusers is not installed (pip install sdekit[diffusers])")


def network(x, k):
    """A fixed smooth stand-in for an ε-prediction UNet at timestep ``k``."""
    return torch.tanh(0.7 * x + 1e-3 * float(k)) - 0.1 * x


def _sigma(ac, k) -> float:
    return float(((1 - ac[k]) / ac[k]).sqrt())


def compare(scheduler, steps: int, final_sigma_zero: bool, sampler, **options) -> float:
    """Relative max difference between the scheduler's loop and ``sampler`` on the same grid and network."""
    ac = scheduler.alphas_cumprod.double()
    scheduler.alphas_cumprod = ac
    scheduler.set_timesteps(steps)
    ks = scheduler.timesteps.tolist()
    sigmas = [_sigma(ac, k) for k in ks] + [0.0 if final_sigma_zero else _sigma(ac, 0)]
    scheduler.sigmas = torch.tensor(sigmas, dtype=torch.float64)
    x = torch.randn(3, 2, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    theirs = x.clone()
    for k in scheduler.timesteps:
        theirs = scheduler.step(network(theirs, k), k, theirs).prev_sample
    timestep_of = dict(zip(sigmas, ks))

    def denoiser(x_scaled, sigma):  # D = x̃ − σ̃ ε(α x̃)
        s = float(sigma[0])
        return x_scaled - s * network((s * s + 1) ** -0.5 * x_scaled, timestep_of[s])

    ours = sampler(denoiser, x * (sigmas[0] ** 2 + 1) ** 0.5, torch.tensor(sigmas, dtype=torch.float64), **options)
    ours = ours * (sigmas[-1] ** 2 + 1) ** -0.5
    assert bool(torch.isfinite(theirs).all())
    return float((ours - theirs).abs().max() / theirs.abs().max())


@pytest.mark.parametrize("steps", [6, 12])
@pytest.mark.parametrize("config", [
    {},  # bh2, order 2, lower_order_final, final σ = 0
    {"solver_type": "bh1", "final_sigmas_type": "sigma_min"},
    {"solver_order": 3},
    {"solver_order": 3, "lower_order_final": False, "final_sigmas_type": "sigma_min"},
    {"disable_corrector": [0, 3]},
    {"timestep_spacing": "trailing", "solver_order": 1},
])
def test_unipc_reproduces_diffusers(config, steps):
    scheduler = diffusers.UniPCMultistepScheduler(**config)
    cfg = scheduler.config
    assert compare(scheduler, steps, cfg.final_sigmas_type == "zero", K.sample_unipc, order=cfg.solver_order,
                   solver_type=cfg.solver_type, lower_order_final=cfg.lower_order_final,
                   disable_corrector=cfg.disable_corrector) < 1e-11


@pytest.mark.parametrize("steps", [6, 20])
@pytest.mark.parametrize("config", [{}, {"solver_order": 3}, {"solver_order": 3, "lower_order_final": False},
                                    {"solver_order": 1, "timestep_spacing": "trailing"}])
def test_deis_reproduces_diffusers(config, steps):
    scheduler = diffusers.DEISMultistepScheduler(**config)  # its grid ends at timestep 0's σ, not 0
    cfg = scheduler.config
    assert compare(scheduler, steps, False, K.sample_deis, order=cfg.solver_order,
                   lower_order_final=cfg.lower_order_final) < 1e-12


def test_unipc_rejects_bad_options():
    x, sigmas = torch.zeros(2, 3), torch.tensor([2.0, 1.0, 0.0])
    with pytest.raises(ValueError, match="solver_type"):
        K.sample_unipc(lambda x, s: x, x, sigmas, solver_type="bh3")
    with pytest.raises((ValueError, TypeError), match="order"):
        K.sample_unipc(lambda x, s: x, x, sigmas, order=0)


def test_unipc_step_to_sigma_zero_is_finite_where_diffusers_is_not():
    """bh1 with an order-2 step to σ = 0 is NaN in diffusers' formula; the limit here is D."""
    x, sigmas = torch.ones(2, 3), torch.tensor([2.0, 1.0, 0.0])
    out = K.sample_unipc(lambda x, s: 0.5 * x, x, sigmas, solver_type="bh1", lower_order_final=False)
    assert bool(torch.isfinite(out).all())


def test_deis_weights_integrate_log_polynomials_exactly():
    """Order m integrates any polynomial of degree < m in log σ exactly over σ."""
    sigmas = [80.0, 30.0, 9.0, 2.5, 0.6, 0.1]
    weights = deis_coefficients(sigmas, 3, lower_order_final=False)
    f = lambda s: 1 + 2 * math.log(s) - 0.5 * math.log(s) ** 2  # degree 2 in log σ
    F = lambda s: s * (1 + 2 * (math.log(s) - 1) - 0.5 * (math.log(s) ** 2 - 2 * math.log(s) + 2))
    for i in range(2, 5):
        got = sum(w * f(sigmas[i - j]) for j, w in enumerate(weights[i]))
        assert got == pytest.approx(F(sigmas[i + 1]) - F(sigmas[i]), rel=1e-12)
    assert deis_coefficients([2.0, 1.0, 0.0], 2)[-1] == [-1.0]  # to σ = 0: the Euler step, x − σ ε = D


def _scheduler_loop(scheduler, seed=0):
    x = torch.randn(3, 2, 4, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    for k in scheduler.timesteps:
        x = scheduler.step(network(x, k), k, x).prev_sample
    return x


@pytest.mark.parametrize("config", [{}, {"solver_order": 3}, {"solver_order": 3, "disable_corrector": [1, 4]},
                                    {"solver_order": 1, "lower_order_final": False}])
def test_scheduler_unipc_reproduces_unipc_multistep_scheduler(config):
    from sdekit.integrations.diffusers_scheduler import SDEScheduler

    theirs = diffusers.UniPCMultistepScheduler(**config)
    ac = theirs.alphas_cumprod.double()
    theirs.alphas_cumprod = ac
    theirs.set_timesteps(10)
    ks = theirs.timesteps.tolist()
    theirs.sigmas = torch.tensor([_sigma(ac, k) for k in ks] + [0.0], dtype=torch.float64)
    ours = SDEScheduler.from_config(theirs.config, method="unipc", clip_sample=False)  # UniPC does not clip
    ours.set_timesteps(timesteps=ks)  # UniPC's spacing rule differs from DDPM's: take its timesteps
    a, b = _scheduler_loop(ours), _scheduler_loop(theirs)
    assert float((a - b).abs().max()) < 1e-12 * float(b.abs().max())


def test_scheduler_unipc_restarts_cleanly_midway():
    """A loop that starts midway (image-to-image) is a fresh UniPC run from there: K.sample_unipc on the rest."""
    from sdekit.integrations.diffusers_scheduler import SDEScheduler

    ours = SDEScheduler(method="unipc", clip_sample=False)
    ours.set_timesteps(8)
    _scheduler_loop(ours)  # a whole run first: its history must not leak into the next one
    ours.set_timesteps(8)
    ks = ours.timesteps.tolist()
    ac = ours.sde.alphas_cumprod
    sigmas = [_sigma(ac, k) for k in ks] + [0.0]
    x = torch.randn(3, 2, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    x_mid = x.clone()
    for k in ours.timesteps[3:]:
        x_mid = ours.step(network(x_mid, k), k, x_mid).prev_sample
    timestep_of = dict(zip(sigmas, ks))

    def denoiser(x_scaled, sigma):
        s = float(sigma[0])
        return x_scaled - s * network((s * s + 1) ** -0.5 * x_scaled, timestep_of[s])

    fresh = K.sample_unipc(denoiser, x * (sigmas[3] ** 2 + 1) ** 0.5, torch.tensor(sigmas[3:], dtype=torch.float64))
    assert float((x_mid - fresh).abs().max()) < 1e-12 * float(fresh.abs().max())
    with pytest.raises(ValueError, match="solver_type"):
        SDEScheduler(method="unipc", solver_type="midpoint")
