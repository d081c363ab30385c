"""Power of the samplers' statistical tests: each detects a 2% change of its noise scale or of its drift.

Problem: Gaussian data ``N(μ, s²)`` per element (``μ = 0.7``, ``s = 0.5``) on the
VP SDE with the exact score, ``M × D = 4096 × 64`` samples (keyed noise, fixed
seed).  The output of every sampler is then Gaussian, and its mean and
variance are compared with a reference by z-scores from their standard
errors (``√(v/n)`` and ``v √(2/(n − 1))``), rejected at 5 SE:

- first-order samplers (DDIM/Euler ancestral, the predictors) have an O(1/N)
  variance bias far above the SE at any affordable ``N`` (−12% at 100
  Karras steps for Euler ancestral), so their reference is the exact law of
  *their* discrete chain: each step is linear in ``x`` on this problem,
  ``x' = A x + b + C z``, and ``(A, b, C)`` are written here from the papers'
  formulas (Song et al. 2021 eqs. 46–47 and App. D.1, Ho et al. 2020 eqs. 6–7,
  k-diffusion's ancestral split), independently of the code under test;
- the second-order stochastic samplers are compared with the data law itself,
  at enough steps that their bias is below 1 SE.

Every case is run three times: as it is (must pass), with the step noise
multiplied by 1.02 and with the score multiplied by 1.02 (each must be
rejected).  This is the mutation check the sampler tests rely on, kept in the
suite so that it cannot silently stop holding.  (Before this module, a 3%
increase of the ancestral noise scale passed every ancestral test in
``tests/test_sampling.py``.)
"""

from __future__ import annotations

import math

import pytest
import torch

import sdekit
import sdekit.integrations._k_diffusion_support as k_support
from sdekit.sampling import predictors
from sdekit.sampling.grid import sampling_grid
from sdekit.sampling.sigma_samplers import SIGMA_SAMPLERS
from sdekit.sampling.sigma_space import sigma_of_time

MU, S = 0.7, 0.5
M, D = 4096, 64
N_VALUES = M * D
Z_REJECT = 5.0
MUTATION = 1.02
SDE = sdekit.VPSDE()
EPS = SDE.sampling_eps


def exact_score(gain: float = 1.0):
    """The data's exact VP score, times ``gain`` (the drift mutation)."""

    def score(x, t):
        t = t.double()
        a = SDE.mean_coeff(t).to(x.dtype)[:, None]
        var = (SDE.mean_coeff(t) ** 2 * S**2 + SDE.std(t) ** 2).to(x.dtype)[:, None]
        return -gain * (x - a * MU) / var

    return score


def _scalar(f, t: float) -> float:
    return float(f(torch.tensor([t], dtype=torch.float64))[0])


def _var_x(t: float) -> float:
    """Marginal variance ``α² s² + σ²`` of ``x_t``."""
    return _scalar(SDE.mean_coeff, t) ** 2 * S**2 + _scalar(SDE.std, t) ** 2


def _x0_hat(t: float):
    """``E[x_0 | x_t] = p x + q`` (Tweedie on the Gaussian data) as ``(p, q)``."""
    a, var = _scalar(SDE.mean_coeff, t), _scalar(SDE.std, t) ** 2
    v = _var_x(t)
    return (1 - var / v) / a, var * a * MU / v / a


def _chain_law(steps):
    """Mean and variance of ``x`` after the linear steps ``(A, b, C)`` from the prior ``N(0, 1)``."""
    m, v = 0.0, 1.0
    for A, b, C in steps:
        m, v = A * m + b, A * A * v + C * C
    return m, v


def _predictor_steps(method: str, grid, variance_type: str = "fixed_small"):
    """``(A, b, C)`` per step of sdekit's predictors on this problem, from the papers' formulas."""
    out = []
    for t, s in zip(grid[:-1], grid[1:]):
        r, _, G = (float(v) for v in SDE.transition(torch.tensor([s]), torch.tensor([t])))
        a_t = _scalar(SDE.mean_coeff, t)
        v_t = _var_x(t)
        score_gain, score_bias = -1 / v_t, a_t * MU / v_t  # s = gain x + bias
        if method == "euler_maruyama":  # App. D.1: x + (½β x + β s) Δ + √(βΔ) z
            beta, dt = _scalar(SDE.beta, t), t - s
            out.append((1 + 0.5 * beta * dt + beta * dt * score_gain, beta * dt * score_bias, math.sqrt(beta * dt)))
        elif method == "reverse_diffusion":  # eq. 46 with exact f, G: (2 − r) x + G² s + G z
            out.append((2 - r + G * G * score_gain, G * G * score_bias, G))
        else:  # Ho et al. eqs. 6–7: posterior mean of x_s given x_t and x̂_0
            p, q = _x0_hat(t)
            a_s, var_s, var_t = _scalar(SDE.mean_coeff, s), _scalar(SDE.std, s) ** 2, _scalar(SDE.std, t) ** 2
            A = (G * G * a_s * p + r * var_s) / var_t
            b = G * G * a_s * q / var_t
            C = G if variance_type == "fixed_large" else math.sqrt(var_s * G * G / var_t)
            out.append((A, b, C))
    return out


def _euler_ancestral_steps(grid, eta: float):
    """k-diffusion's ancestral Euler step in ``x̃ = x/α`` at ``σ̃ = σ/α``: ``x̃ + (σ_d − σ̃)(x̃ − D)/σ̃ + σ_u z``."""
    sig = sigma_of_time(SDE, torch.as_tensor(grid, dtype=torch.float64)).tolist()
    a_T, a_eps = _scalar(SDE.mean_coeff, grid[0]), _scalar(SDE.mean_coeff, grid[-1])
    out = [(1 / a_T, 0.0, 0.0)]  # to x̃
    for sg, sn in zip(sig[:-1], sig[1:]):
        k = S**2 / (S**2 + sg**2)  # D = MU + k (x̃ − MU)
        up = min(sn, eta * sn * math.sqrt(sg**2 - sn**2) / sg)
        c = (math.sqrt(sn**2 - up**2) - sg) * (1 - k) / sg
        out.append((1 + c, -c * MU, up))
    out.append((a_eps, 0.0, 0.0))  # back to x
    return out


class Case:
    """One sampler configuration and its reference law (``None``: the data law ``N(μ, s²)``... at ``t = eps``)."""

    def __init__(self, method, steps, reference, **kwargs):
        self.method, self.steps, self.reference, self.kwargs = method, steps, reference, kwargs

    def run(self, gain: float = 1.0) -> torch.Tensor:
        return sdekit.sample(exact_score(gain), SDE, (M, D), method=self.method, steps=self.steps, seed=11,
                             denoise=False, **self.kwargs).x

    def law(self):
        if self.reference is None:  # the marginal at t = eps
            return _scalar(SDE.mean_coeff, EPS) * MU, _var_x(EPS)
        return _chain_law(self.reference())


def _grid(kind, steps):
    return sampling_grid(SDE, steps, EPS, kind).tolist()


PREDICTOR_CASES = {
    "euler_maruyama": Case("euler_maruyama", 60, lambda: _predictor_steps("euler_maruyama", _grid("uniform", 60))),
    "reverse_diffusion": Case("reverse_diffusion", 60,
                              lambda: _predictor_steps("reverse_diffusion", _grid("uniform", 60))),
    "ancestral": Case("ancestral", 60, lambda: _predictor_steps("ancestral", _grid("uniform", 60))),
    "ancestral_fixed_large": Case("ancestral", 60,
                                  lambda: _predictor_steps("ancestral", _grid("uniform", 60), "fixed_large"),
                                  variance_type="fixed_large"),
}

SECOND_ORDER_STEPS = 300  # their variance bias is below 1 SE here (measured: |z| <= 0.5 at 400 steps)


def _sigma_case(method: str) -> Case:
    spec = SIGMA_SAMPLERS[method]
    if spec.function == "sample_euler_ancestral":  # first order: the exact chain
        eta = SIGMA_SAMPLERS[method].defaults.get("eta", 1.0)
        return Case(method, 60, lambda: _euler_ancestral_steps(_grid(spec.grid, 60), eta))
    return Case(method, SECOND_ORDER_STEPS, None)


#: Every stochastic method of ``sample()``: the predictors and the stochastic noise-level family
#: (registry entries with no declared order); DDIM at η = 0.5 stands for the η family.
STOCHASTIC = {**PREDICTOR_CASES, **{m: _sigma_case(m) for m, s in SIGMA_SAMPLERS.items() if s.order is None}}
STOCHASTIC["ddim_eta_0.5"] = Case("ddim", 60, lambda: _euler_ancestral_steps(_grid("uniform", 60), 0.5),
                                  method_options={"eta": 0.5})


def _z_scores(x: torch.Tensor, law) -> tuple[float, float]:
    mean, var = law
    x = x.double()
    z_mean = (float(x.mean()) - mean) / math.sqrt(var / N_VALUES)
    z_var = (float(x.var()) - var) / (var * math.sqrt(2 / (N_VALUES - 1)))
    return z_mean, z_var


def _scale_noise(monkeypatch, name: str) -> None:
    """The noise mutation: every step's noise ×1.02 (the prior draw is left alone)."""
    if STOCHASTIC[name].method in predictors.PREDICTORS:
        for cls in predictors.PREDICTORS.values():
            original = cls.coefficients

            def scaled(self, t, t_next, _original=original):
                co = _original(self, t, t_next)
                return None if co is None else co._replace(c=co.c * MUTATION)

            monkeypatch.setattr(cls, "coefficients", scaled)
    else:
        original = k_support.normal
        monkeypatch.setattr(k_support, "normal", lambda *a, **k: MUTATION * original(*a, **k))


def test_every_stochastic_method_is_covered():
    """A new stochastic method in ``sample()`` must join this module."""
    covered = {case.method for case in STOCHASTIC.values()}
    stochastic = set(predictors.PREDICTORS) | {m for m, s in SIGMA_SAMPLERS.items() if s.order is None}
    assert stochastic <= covered


@pytest.mark.parametrize("name", sorted(STOCHASTIC))
def test_sampler_matches_its_law_and_rejects_2_percent_mutations(name, monkeypatch):
    case = STOCHASTIC[name]
    law = case.law()
    z = _z_scores(case.run(), law)
    assert max(abs(v) for v in z) < Z_REJECT, f"{name}: unmutated sampler rejected, z(mean, var) = {z}"
    z_drift = _z_scores(case.run(gain=MUTATION), law)
    assert max(abs(v) for v in z_drift) > Z_REJECT, f"{name}: score ×1.02 not detected, z = {z_drift}"
    _scale_noise(monkeypatch, name)
    z_noise = _z_scores(case.run(), law)
    assert max(abs(v) for v in z_noise) > Z_REJECT, f"{name}: noise ×1.02 not detected, z = {z_noise}"
