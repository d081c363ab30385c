"""Closed-form laws of two linear-Gaussian chains: NCSN's annealed Langevin and DDPM with σ² = β_t.

On Gaussian data ``N(μ, diag v)`` the exact score is affine in ``x``, so each
step ``x ← A x + B + C z`` keeps the law Gaussian, and its mean and variance
follow ``m ← A m + B``, ``V ← A² V + C²`` exactly.  The recursions below are
written from the papers' formulas (Song & Ermon 2019, Algorithm 1; Ho et al.
2020, eqs. 6–7 and §3.2), not from sdekit's coefficients.  A sample's
standardised square ``q = mean_d (x_d − m_d)²/V_d`` has ``E[q] = 1`` under
that law, checked within ``Z_VAR`` SE; the tests also show that the check
rejects the neighbouring law (``fixed_small`` instead of ``fixed_large``).

Power (mutation done once by hand, 2026-12-02): multiplying the noise by
1.02 (``c`` of ``affine_update`` in ``sdekit.sampling.ncsn`` and
``sdekit.sampling.sample``, monkeypatched) makes both ``q`` checks fail.
"""

import math

import pytest
import torch
from stats import assert_mean_close

import sdekit
from sdekit.sampling import ncsn_levels, sample_ncsn

Z_VAR = 4.5
D = 16
GEN = torch.Generator().manual_seed(0)
MU = torch.rand(D, generator=GEN, dtype=torch.float64) - 0.5
VAR = 0.05 + 0.95 * torch.rand(D, generator=GEN, dtype=torch.float64)
VE = sdekit.VESDE(sigma_min=0.01, sigma_max=3.0)
VP = sdekit.VPSDE()


def gaussian_score(sde):
    """Exact score of ``N(MU, diag VAR)`` data under a linear ``sde`` at SDE time ``t``."""

    def score(x, t, shift=None):
        t = t.double()
        m, s2 = sde.mean_coeff(t)[:, None], (sde.std(t) ** 2)[:, None]
        mu = MU if shift is None else MU + shift.double()
        return (-(x.double() - m * mu) / (m**2 * VAR + s2)).to(x.dtype)

    return score


def q_stat(x, mean, var):
    return ((x.double() - mean) ** 2 / var).mean(1)


def assert_q(q, what):
    se = float(q.std()) / q.numel() ** 0.5
    assert abs(float(q.mean()) - 1) <= Z_VAR * se, f"{what}: E[q] = {float(q.mean()):.4f} ± {se:.4f}, not 1"
    return float(q.mean()), se


# --- NCSN (Song & Ermon 2019, Algorithm 1) ---------------------------------------------------------------------
L, T, LR = 6, 30, 2e-5


def ncsn_law(sigmas, denoise):
    """Mean and variance ``(D,)`` of Algorithm 1 on N(MU, VAR) from x_0 ~ N(0, σ_1² I), for levels ``sigmas``."""
    mean, var = torch.zeros(D, dtype=torch.float64), torch.full((D,), float(sigmas[0]) ** 2, dtype=torch.float64)
    for sig in sigmas.tolist():
        alpha = LR * sig**2 / float(sigmas[-1]) ** 2
        k = 1 / (VAR + sig**2)  # s = −k (x − MU)
        A = 1 - alpha / 2 * k
        for _ in range(T):
            mean, var = A * mean + alpha / 2 * k * MU, A**2 * var + alpha
    if denoise:  # x + σ_L² s(x, σ_L)
        k = 1 / (VAR + float(sigmas[-1]) ** 2)
        A = 1 - float(sigmas[-1]) ** 2 * k
        mean, var = A * mean + float(sigmas[-1]) ** 2 * k * MU, A**2 * var
    return mean, var


@pytest.mark.parametrize("denoise", [False, True])
def test_ncsn_law_on_gaussian_data_is_the_closed_form(denoise):
    n = 4000
    out = sample_ncsn(gaussian_score(VE), VE, (n, D), n_levels=L, steps_per_level=T, step_lr=LR, denoise=denoise,
                      seed=1, dtype=torch.float64)
    assert out.nfe.tolist() == [L * T + denoise] * n and out.steps.tolist() == [L * T] * n
    _, sigmas = ncsn_levels(VE, L)
    mean, var = ncsn_law(sigmas, denoise)
    assert_mean_close(out.x, mean, what="NCSN mean")
    assert_q(q_stat(out.x, mean, var), f"NCSN law (denoise={denoise})")


def test_ncsn_levels_are_geometric_on_the_ve_sde():
    times, sigmas = ncsn_levels(VE, 5)
    assert times[0] == VE.T and math.isclose(float(times[-1]), VE.sampling_eps)
    ratios = sigmas[1:] / sigmas[:-1]
    torch.testing.assert_close(ratios, ratios[:1].expand(4))
    assert math.isclose(float(sigmas[0]), 3.0) and math.isclose(float(sigmas[-1]), 0.01, rel_tol=1e-3)
    s2 = ncsn_levels(None, 5, sigma_max=3.0, sigma_min=0.01)[1]
    torch.testing.assert_close(s2, torch.exp(torch.linspace(math.log(3.0), math.log(0.01), 5, dtype=torch.float64)))


def test_noise_conditional_model_without_an_sde_matches_the_ve_path():
    """sde=None calls score(x, σ); with sigmas = σ(t_i) of the VE SDE it is the same chain."""
    _times, sigmas = ncsn_levels(VE, 4)
    by_t = gaussian_score(VE)

    def by_sigma(x, sig):  # σ → t for the VE SDE
        t = VE.T * torch.log(sig.double() / VE.sigma_min) / math.log(VE.sigma_max / VE.sigma_min)
        return by_t(x, t)

    kw = {"steps_per_level": 5, "seed": 2, "dtype": torch.float64, "denoise": True}
    a = sample_ncsn(by_t, VE, (6, D), n_levels=4, **kw).x
    b = sample_ncsn(by_sigma, None, (6, D), sigmas=sigmas, **kw).x
    torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)


def test_sample_method_ncsn_is_sample_ncsn():
    score, shape = gaussian_score(VE), (5, D)
    a = sdekit.sample(score, VE, shape, method="ncsn", steps=3, corrector_steps=4, step_lr=1e-4, seed=3).x
    b = sample_ncsn(score, VE, shape, n_levels=3, steps_per_level=4, step_lr=1e-4, seed=3).x
    assert torch.equal(a, b)
    with pytest.raises(ValueError, match="corrector must be None with method='ncsn'"):
        sdekit.sample(score, VE, shape, method="ncsn", corrector="langevin")


def test_ncsn_keyed_noise_and_conditioning():
    """Per-sample noise and conditioning: a sample drawn alone equals the same sample in a batch."""
    score = gaussian_score(VE)
    idx = torch.arange(50, 58)
    shift = torch.linspace(-1, 1, 8, dtype=torch.float64)[:, None].expand(8, D)
    kw = {"n_levels": 3, "steps_per_level": 5, "seed": 4, "dtype": torch.float64}
    full = sample_ncsn(score, VE, (8, D), sample_index=idx, model_kwargs={"shift": shift}, **kw).x
    one = sample_ncsn(score, VE, (1, D), sample_index=idx[6:7], model_kwargs={"shift": shift[6:7]}, **kw).x
    assert torch.equal(one, full[6:7])
    g = sample_ncsn(score, VE, (8, D), n_levels=3, steps_per_level=5, generator=torch.Generator().manual_seed(0))
    assert torch.equal(g.x, sample_ncsn(score, VE, (8, D), n_levels=3, steps_per_level=5,
                                        generator=torch.Generator().manual_seed(0)).x)


@pytest.mark.parametrize("kw, err, match", [
    ({"n_levels": 0}, ValueError, "n_levels"),
    ({"steps_per_level": 0}, ValueError, "steps_per_level"),
    ({"step_lr": -1.0}, ValueError, "step_lr"),
    ({"sigmas": [1.0, 2.0]}, ValueError, "sigmas"),
    ({"shape": (0, D)}, ValueError, "shape"),
    ({"sde": sdekit.VESDE(), "sigma_max": 1.0}, ValueError, "sigma_max"),
    ({"sde": None}, ValueError, "sigmas or both sigma_max and sigma_min"),
    ({"sde": None, "sigma_max": 1.0, "sigma_min": 2.0}, ValueError, "sigma_max must be > sigma_min"),
    ({"seed": -1}, ValueError, "seed"),
])
def test_ncsn_bad_input_is_named(kw, err, match):
    args = {"sde": VE, "shape": (2, D), "n_levels": 2, "steps_per_level": 2, "seed": 0}
    args.update(kw)
    sde, shape = args.pop("sde"), args.pop("shape")
    if "sigmas" in kw:
        sde = None
    with pytest.raises(err, match=match):
        sample_ncsn(gaussian_score(VE), sde, shape, **args)


# --- DDPM ancestral sampling with σ_t² = β_t (Ho et al. 2020, §3.2) ----------------------------------------------
GRID = torch.linspace(1.0, 1e-3, 21, dtype=torch.float64)


def ddpm_law(variance_type):
    """Mean and variance ``(D,)`` of DDPM's chain on N(MU, VAR) data from the exact x_T, on ``GRID`` (VP)."""
    abar = VP.mean_coeff(GRID) ** 2
    mean, var = abar[0].sqrt() * MU, abar[0] * VAR + 1 - abar[0]
    for i in range(len(GRID) - 1):
        at, as_ = float(abar[i]), float(abar[i + 1])
        alpha = at / as_
        beta = 1 - alpha
        k = 1 / (at * VAR + 1 - at)  # s = −k (x − √ᾱ_t MU)
        # x̂_0 = (x + (1 − ᾱ_t) s)/√ᾱ_t; posterior mean = c0 x̂_0 + ct x (Ho et al. eq. 7)
        c0, ct = math.sqrt(as_) * beta / (1 - at), math.sqrt(alpha) * (1 - as_) / (1 - at)
        A = c0 * (1 - (1 - at) * k) / math.sqrt(at) + ct
        B = c0 * (1 - at) * k * MU
        noise = beta if variance_type == "fixed_large" else (1 - as_) / (1 - at) * beta
        mean, var = A * mean + B, A**2 * var + noise
    return mean, var


def test_ddpm_fixed_large_law_on_gaussian_data_is_the_closed_form():
    n = 4000
    g = torch.Generator().manual_seed(7)
    abar_T = float(VP.mean_coeff(GRID[:1]) ** 2)
    x_T = math.sqrt(abar_T) * MU + (abar_T * VAR + 1 - abar_T).sqrt() * torch.randn(n, D, generator=g,
                                                                                     dtype=torch.float64)
    out = sdekit.sample(gaussian_score(VP), VP, (n, D), method="ancestral", timesteps=GRID.tolist(), x_init=x_T,
                        denoise=False, seed=8, variance_type="fixed_large").x
    mean, var = ddpm_law("fixed_large")
    assert_mean_close(out, mean, what="DDPM fixed_large mean")
    assert_q(q_stat(out, mean, var), "DDPM fixed_large law")
    # The check tells the two variances apart: the β̃ law is rejected for these samples.
    small_mean, small_var = ddpm_law("fixed_small")
    q = q_stat(out, small_mean, small_var)
    assert float(q.mean()) - 1 > 10 * float(q.std()) / n**0.5


def test_variance_type_is_checked():
    score = gaussian_score(VP)
    with pytest.raises(ValueError, match="variance_type"):
        sdekit.sample(score, VP, (2, D), method="ancestral", steps=3, variance_type="learned")
    with pytest.raises(ValueError, match="variance_type='fixed_large' needs method='ancestral'"):
        sdekit.sample(score, VP, (2, D), method="euler_maruyama", steps=3, variance_type="fixed_large")
    a = sdekit.sample(score, VP, (2, D), method="ancestral", steps=3, seed=0).x
    assert torch.equal(a, sdekit.sample(score, VP, (2, D), method="ancestral", steps=3, seed=0,
                                        variance_type="fixed_small").x)
