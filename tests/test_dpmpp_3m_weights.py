"""DPM-Solver++(3M)'s third-order weight: the peers' update and sdekit's opt-in exact one.

Along a step from λ = −log σ to λ' (h = λ' − λ), the data term of the (SDE-)DPM-Solver++ update is
∫ ĥ e^{−ĥ(1−v)} D(λ + h v) dv with ĥ = (1 + η) h.  A three-step method built on D_i, D_{i−1}, D_{i−2} is
exact for a quadratic D(λ) only if its weight on d₂ ≈ h² D''/2 is −2φ₃; the official 3M update (k-diffusion,
diffusers, sdekit's default) uses −φ₃.
"""

import math

import numpy as np
import pytest
import torch

from sdekit.integrations import k_diffusion as K
from sdekit.integrations.k_diffusion_multistep import DPMSolverSDEStepper

NODES, WEIGHTS = np.polynomial.legendre.leggauss(40)  # exact to round-off for this smooth integrand on [0, 1]


def integral(f) -> float:
    v = 0.5 * (NODES + 1.0)
    return float(np.sum(0.5 * WEIGHTS * np.array([f(x) for x in v])))

SIGMAS = [20.0, 6.0, 2.5, 0.9, 0.3]


def D(lam: float) -> float:
    return 1.3 - 0.7 * lam + 0.45 * lam * lam  # quadratic in λ


def _third_step(eta: float, quadratic: float) -> tuple[float, float]:
    """(the stepper's data term at step 2, the exact integral) for x = 0 and D quadratic in λ."""
    stepper = DPMSolverSDEStepper(SIGMAS, eta, 1.0, 3, midpoint=False, quadratic=quadratic)
    zero = torch.zeros(1, dtype=torch.float64)
    lam = [-math.log(s) for s in SIGMAS]
    noise = lambda: torch.zeros(1, dtype=torch.float64)
    for i in range(2):
        stepper.step(i, zero, torch.full((1,), D(lam[i]), dtype=torch.float64), noise=noise)
    got = float(stepper.step(2, zero, torch.full((1,), D(lam[2]), dtype=torch.float64), noise=noise))
    h = lam[3] - lam[2]
    hh = (1 + eta) * h
    exact = integral(lambda v: hh * math.exp(-hh * (1 - v)) * D(lam[2] + h * v))
    return got, exact


@pytest.mark.parametrize("eta", [0.0, 0.7])
def test_exact_third_order_integrates_a_quadratic_denoiser(eta):
    got, exact = _third_step(eta, 2.0)
    assert got == pytest.approx(exact, rel=1e-12, abs=1e-12)


@pytest.mark.parametrize("eta", [0.0, 0.7])
def test_the_peers_update_misses_the_quadratic_term(eta):
    """By −φ₃ d₂ with d₂ = c h² for D = … + c λ²: the deficit the opt-in removes (checked, not hidden)."""
    got, exact = _third_step(eta, 1.0)
    lam = [-math.log(s) for s in SIGMAS]
    h, hh = lam[3] - lam[2], (1 + eta) * (lam[3] - lam[2])
    phi3 = (1 - (1 - math.exp(-hh)) / hh) / hh - 0.5
    assert exact - got == pytest.approx(-phi3 * 0.45 * h * h, rel=1e-9)


def test_exact_third_order_is_an_option_of_the_samplers():
    """The default is the peers' update (bitwise); the option changes only steps 2 onward."""
    den = lambda x, s: x / (1 + s.reshape(-1, 1) ** 2)
    x = torch.linspace(-30, 30, 8, dtype=torch.float64).reshape(4, 2)
    sig = torch.tensor(SIGMAS + [0.0], dtype=torch.float64)
    base = K.sample_dpmpp_3m_sde(den, x, sig, eta=0.0, disable=True)
    assert torch.equal(base, K.sample_dpmpp_3m_sde(den, x, sig, eta=0.0, disable=True, exact_third_order=False))
    assert not torch.equal(base, K.sample_dpmpp_3m_sde(den, x, sig, eta=0.0, disable=True, exact_third_order=True))
    short = torch.tensor(SIGMAS[:3] + [0.0], dtype=torch.float64)  # no third-order step: the same run
    assert torch.equal(K.sample_dpmpp_3m_sde(den, x, short, eta=0.0, disable=True),
                       K.sample_dpmpp_3m_sde(den, x, short, eta=0.0, disable=True, exact_third_order=True))
