"""DEIS (``K.sample_deis``, ``sample(method="deis")``) against diffusers' own DEISMultistepScheduler."""

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


@pytest.mark.parametrize("steps", [6, 20])
@pytest.mark.parametrize("config", [{}, {"solver_order": 3}, {"solver_order": 3, "lower_order_final": False},
                                    {"solver_order": 1, "timestep_spacing": "trailing"}])
def test_deis_reproduces_diffusers(config, steps):
    scheduler = diffusers.DEISMultistepScheduler(**config)
    ac = scheduler.alphas_cumprod.double()  # the same float32 ᾱ, in float64 arithmetic on both sides
    scheduler.alphas_cumprod = ac
    scheduler.set_timesteps(steps)
    ks = scheduler.timesteps.tolist()
    sigmas = [_sigma(ac, k) for k in ks] + [_sigma(ac, 0)]  # diffusers' last σ: timestep 0's
    scheduler.sigmas = torch.tensor(sigmas, dtype=torch.float64)
    x = torch.randn(3, 2, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    theirs = x.clone()
    for k in scheduler.timesteps:
        theirs = scheduler.step(network(theirs, k), k, theirs).prev_sample
    timestep_of = dict(zip(sigmas, ks))

    def denoiser(x_scaled, sigma):  # x̃ = x/α at σ̃ = σ/α: D = x̃ − σ̃ ε
        s = float(sigma[0])
        return x_scaled - s * network((s * s + 1) ** -0.5 * x_scaled, timestep_of[s])

    cfg = scheduler.config
    ours = K.sample_deis(denoiser, x * (sigmas[0] ** 2 + 1) ** 0.5, torch.tensor(sigmas, dtype=torch.float64),
                        order=cfg.solver_order, lower_order_final=cfg.lower_order_final)
    ours = ours * (sigmas[-1] ** 2 + 1) ** -0.5
    assert float((ours - theirs).abs().max()) < 1e-12 * float(theirs.abs().max())


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
