"""UniPC (``K.sample_unipc``, ``sample(method="unipc")``) against diffusers' own UniPCMultistepScheduler."""

import pytest
import torch

from sdekit.integrations import k_diffusion as K

diffusers = pytest.importorskip("diffusers", reason="diffusers is not installed (pip install sdekit[diffusers])")


def network(x, k):
    """A fixed smooth stand-in for an ε-prediction UNet at timestep ``k``."""
    return torch.tanh(0.7 * x + 1e-3 * float(k)) - 0.1 * x


def _sigma(ac, k) -> float:
    return float(((1 - ac[k]) / ac[k]).sqrt())


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
    ac = scheduler.alphas_cumprod.double()  # the same float32 ᾱ, in float64 arithmetic on both sides
    scheduler.alphas_cumprod = ac
    scheduler.set_timesteps(steps)
    ks = scheduler.timesteps.tolist()
    final = 0.0 if config.get("final_sigmas_type", "zero") == "zero" else _sigma(ac, 0)
    sigmas = [_sigma(ac, k) for k in ks] + [final]
    scheduler.sigmas = torch.tensor(sigmas, dtype=torch.float64)
    x = torch.randn(3, 2, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    theirs = x.clone()
    for k in scheduler.timesteps:
        theirs = scheduler.step(network(theirs, k), k, theirs).prev_sample

    timestep_of = dict(zip(sigmas, ks))

    def denoiser(x_scaled, sigma):  # x̃ = x/α at σ̃ = σ/α: D = (x − σ ε)/α
        s = float(sigma[0])
        a = (s * s + 1) ** -0.5
        return x_scaled - s * network(a * x_scaled, timestep_of[s])

    cfg = scheduler.config
    ours = K.sample_unipc(denoiser, x * (sigmas[0] ** 2 + 1) ** 0.5, torch.tensor(sigmas, dtype=torch.float64),
                         order=cfg.solver_order, solver_type=cfg.solver_type,
                         lower_order_final=cfg.lower_order_final, disable_corrector=cfg.disable_corrector)
    ours = ours * (final**2 + 1) ** -0.5
    assert bool(torch.isfinite(theirs).all())
    assert float((ours - theirs).abs().max()) < 1e-11 * float(theirs.abs().max())


def test_unipc_rejects_bad_options():
    x, sigmas = torch.zeros(2, 3), torch.tensor([2.0, 1.0, 0.0])
    with pytest.raises(ValueError, match="solver_type"):
        K.sample_unipc(lambda x, s: x, x, sigmas, solver_type="bh3")
    with pytest.raises((ValueError, TypeError), match="order"):
        K.sample_unipc(lambda x, s: x, x, sigmas, order=0)


def test_a_step_to_sigma_zero_returns_the_denoised_sample():
    x, sigmas = torch.ones(2, 3), torch.tensor([2.0, 1.0, 0.0])
    out = K.sample_unipc(lambda x, s: 0.5 * x, x, sigmas, solver_type="bh1", lower_order_final=False)
    assert bool(torch.isfinite(out).all())
