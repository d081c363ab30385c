"""ULA and MALA (sdekit.sampling.langevin_mcmc): stationary laws on Gaussian mixtures, MALA's exactness.

Chains start from exact samples of ``p`` (a 1-D and a 2-D Gaussian mixture
with diagonal covariances), so an invariant ``p`` must still be the law after
``K`` steps.  Checked: component weights, means and variances (5 SE,
``mixture_checks``) and the pooled within-component statistic ``q``
(``E[q] = 1`` exactly under ``p``; ``Z_VAR`` SE).  ULA's stationary law is
biased by ``O(h)``: for a component ``N(μ, v)`` its variance is
``v/(1 − h/(2v))`` (the fixed point of ``v' = (1 − h/v)² v' + 2h``), which is
the deterministic ``bias`` allowed at the small step (an approximation for a
mixture of separated components).  At a large step, ULA's bias of ``q``
exceeds 5 SE and MALA's error stays within 4 SE.

Power (mutation done once by hand, 2026-12-02): multiplying the keyed noise
of ``langevin_mcmc`` by 1.02 (``sdekit.sampling.langevin_mcmc.normal``
monkeypatched; MALA's acceptance ratio not told) makes the ``q`` checks of
ULA (small step) and of MALA fail.
"""

import pytest
import torch
from mixture_checks import assert_matches_mixture
from test_corrector_safety import MIX1, MIX2, Z_VAR, component_q

from sdekit.sampling import langevin_mcmc

MIXES = {"1d": (MIX1, 100_000), "2d": (MIX2, 30_000)}
#: ULA at the small step runs K_ULA·SMALL_H = 1 time unit (> the component variances: mixed within modes);
#: MALA and the large-step comparison K_MALA·LARGE_H = 3.
K_ULA, K_MALA = 250, 30
SMALL_H, LARGE_H = 0.004, 0.1


def ula_bias(mix, h):
    """Deterministic excess of ``E[q]`` under ULA at step ``h``: ``Σ_k w_k mean_d (1/(1 − h/(2 v_kd)) − 1)``."""
    return float(mix.w @ (1 / (1 - h / (2 * mix.var)) - 1).mean(1))


def start(mix, n, seed):
    x, _ = mix.mixture.sample(n, generator=torch.Generator().manual_seed(seed))
    return x


def check_q(q, expected, what, z=Z_VAR, bias=0.0):
    se = float(q.std()) / q.numel() ** 0.5
    err = abs(float(q.mean()) - expected)
    assert err <= z * se + bias, f"{what}: E[q] = {float(q.mean()):.4f} ± {se:.4f}, expected {expected:.4f} within {z} SE"
    return float(q.mean()), se


@pytest.mark.parametrize("dim", list(MIXES))
def test_ula_small_step_keeps_the_mixture(dim):
    mix, n = MIXES[dim]
    out = langevin_mcmc(start(mix, n, 1), score=mix.score, step_size=SMALL_H, n_steps=K_ULA, seed=11)
    assert bool((out.acceptance_rate == 1).all()) and bool((out.nfe == K_ULA + 1).all())
    assert_matches_mixture(out.x, mix.mixture, None, None, f"ula/{dim}")
    check_q(component_q(out.x, mix, None, None), 1.0, f"ula/{dim}", bias=ula_bias(mix, SMALL_H))


@pytest.mark.parametrize("dim", list(MIXES))
def test_mala_keeps_the_mixture(dim):
    mix, n = MIXES[dim]
    out = langevin_mcmc(start(mix, n, 2), score=mix.score, log_prob=mix.log_prob, step_size=LARGE_H, n_steps=K_MALA,
                        method="mala", seed=12)
    rate = out.acceptance_rate
    assert rate.shape == (n,) and 0.5 < float(rate.mean()) < 1.0
    assert_matches_mixture(out.x, mix.mixture, None, None, f"mala/{dim}")
    check_q(component_q(out.x, mix, None, None), 1.0, f"mala/{dim}")


def test_mala_is_unbiased_where_ula_is_not():
    """Same large step, same start and noise: ULA's q is off by > 5 SE, MALA's within 4 SE."""
    mix, n = MIXES["2d"]
    x0 = start(mix, n, 3)
    ula = langevin_mcmc(x0, score=mix.score, step_size=LARGE_H, n_steps=K_MALA, seed=13).x
    q = component_q(ula, mix, None, None)
    se = float(q.std()) / n**0.5
    assert float(q.mean()) - 1 > 5 * se, f"ULA at h={LARGE_H}: q = {float(q.mean()):.4f} ± {se:.4f} not biased"
    mala = langevin_mcmc(x0, score=mix.score, log_prob=mix.log_prob, step_size=LARGE_H, n_steps=K_MALA,
                         method="mala", seed=13).x
    check_q(component_q(mala, mix, None, None), 1.0, "MALA at the large step", z=4.0)


def test_mala_with_log_prob_only_uses_autograd_and_matches_the_explicit_score():
    x0 = start(MIX2, 64, 4)
    a = langevin_mcmc(x0, log_prob=MIX2.log_prob, step_size=0.05, n_steps=5, method="mala", seed=5)
    b = langevin_mcmc(x0, score=MIX2.score, log_prob=MIX2.log_prob, step_size=0.05, n_steps=5, method="mala", seed=5)
    torch.testing.assert_close(a.x, b.x)
    assert torch.equal(a.accepted, b.accepted)


def test_chains_do_not_depend_on_the_batch():
    x0 = start(MIX2, 16, 5)
    idx = torch.arange(200, 216)
    kw = {"score": MIX2.score, "log_prob": MIX2.log_prob, "step_size": 0.05, "n_steps": 10, "method": "mala", "seed": 6}
    full = langevin_mcmc(x0, sample_index=idx, **kw)
    part = langevin_mcmc(x0[3:7], sample_index=idx[3:7], **kw)
    assert torch.equal(part.x, full.x[3:7]) and torch.equal(part.accepted, full.accepted[3:7])


def test_per_chain_step_sizes_and_conditioning():
    x0 = torch.zeros(4, 2, dtype=torch.float64)
    loc = torch.tensor([[0.0, 0.0], [1.0, 1.0], [2.0, 2.0], [3.0, 3.0]], dtype=torch.float64)
    h = torch.tensor([1e-3, 1e-2, 1e-1, 1.0], dtype=torch.float64)
    out = langevin_mcmc(x0, score=lambda x, loc: loc - x, step_size=h, n_steps=1, seed=0, model_kwargs={"loc": loc})
    assert out.x.shape == (4, 2) and bool(torch.isfinite(out.x).all())


@pytest.mark.parametrize("kw, err, match", [
    ({"step_size": 0.0}, ValueError, "step_size"),
    ({"step_size": "a"}, TypeError, "step_size"),
    ({"step_size": torch.ones(3)}, ValueError, "step_size"),
    ({"n_steps": 0}, ValueError, "n_steps"),
    ({"method": "hmc"}, ValueError, "method"),
    ({"method": "mala", "log_prob": None}, ValueError, "log_prob"),
    ({"score": None, "log_prob": None}, ValueError, "score or log_prob"),
    ({"seed": -1}, ValueError, "seed"),
    ({"sample_index": torch.arange(3)}, ValueError, "sample_index"),
])
def test_bad_input_is_named(kw, err, match):
    args = {"score": MIX2.score, "log_prob": MIX2.log_prob, "step_size": 0.1, "n_steps": 2, "seed": 0}
    args.update(kw)
    with pytest.raises(err, match=match):
        langevin_mcmc(torch.zeros(4, 2, dtype=torch.float64), **args)
    with pytest.raises(ValueError, match="x_init"):
        langevin_mcmc(torch.full((4, 2), float("nan")), score=MIX2.score, step_size=0.1, n_steps=1, seed=0)
