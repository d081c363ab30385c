"""Bad input to sdekit.sample gets a clear error naming the argument."""

import pytest
import torch

import sdekit
from sdekit.testing import example_mixture

MIX = example_mixture()
VP = sdekit.VPSDE()
SCORE = MIX.score_model(VP)


class NonLinearSDE(sdekit.AbstractSDE):
    """dx = −x³ dt + dW: no closed-form marginal."""

    def drift(self, x, t):
        return -(x**3)

    def diffusion(self, x, t):
        return torch.ones_like(t)

    def prior_sample(self, shape, *, generator=None, device=None, dtype=None):
        return torch.randn(shape, generator=generator, device=device, dtype=dtype)

    def prior_log_prob(self, z):
        return -0.5 * (z**2).flatten(1).sum(1)


@pytest.mark.parametrize(
    "kwargs, err, match",
    [
        (dict(method="rk4"), ValueError, "method"),
        (dict(corrector="mala"), ValueError, "corrector"),
        (dict(method="ode", corrector="langevin"), ValueError, "corrector must be None"),
        (dict(corrector_norm="max"), ValueError, "corrector_norm"),
        (dict(steps=0), ValueError, "steps"),
        (dict(snr=-0.1), ValueError, "snr"),
        (dict(corrector_steps=0), ValueError, "corrector_steps"),
        (dict(eps=1.0), ValueError, r"eps must lie in \(0, T\)"),
        (dict(eps=-0.1), ValueError, "eps"),
        (dict(timesteps=[1.0, 0.5, 0.7]), ValueError, "timesteps must be strictly decreasing"),
        (dict(timesteps=[2.0, 0.5]), ValueError, r"timesteps must lie in \[0, T\]"),
        (dict(timesteps=[[1.0, 0.5]]), ValueError, "timesteps must be 1-D"),
        (dict(x_init=torch.zeros(3, 3)), ValueError, "x_init must have shape"),
        (dict(x_init=torch.full((4, 2), float("nan"))), ValueError, "x_init must be finite"),
        (dict(rtol=0.0, method="ode"), ValueError, "rtol"),
    ],
)
def test_bad_arguments(kwargs, err, match):
    with pytest.raises(err, match=match):
        sdekit.sample(SCORE, VP, (4, 2), **kwargs)


@pytest.mark.parametrize("shape", [(4,), (0, 2), "batch"])
def test_bad_shape(shape):
    with pytest.raises((ValueError, TypeError), match="shape"):
        sdekit.sample(SCORE, VP, shape)


def test_score_model_returning_the_wrong_shape():
    with pytest.raises(ValueError, match=r"score model returned shape \(4, 1\), expected .*\(4, 2\)"):
        sdekit.sample(lambda x, t: x[:, :1], VP, (4, 2), steps=3)


def test_uncallable_score():
    with pytest.raises(TypeError, match="score must be callable"):
        sdekit.sample(3.0, VP, (4, 2))


@pytest.mark.parametrize("method", ["reverse_diffusion", "ancestral"])
def test_methods_needing_closed_forms_reject_a_nonlinear_sde(method):
    with pytest.raises(TypeError, match=f"method='{method}' needs a linear SDE"):
        sdekit.sample(lambda x, t: -x, NonLinearSDE(), (4, 2), method=method, steps=3)


def test_nonlinear_sde_runs_euler_maruyama_but_cannot_denoise():
    out = sdekit.sample(lambda x, t: -x, NonLinearSDE(), (4, 2), steps=3, denoise=False)
    assert out.x.shape == (4, 2) and bool(torch.isfinite(out.x).all())
    with pytest.raises(TypeError, match="denoise=True needs a linear SDE"):
        sdekit.sample(lambda x, t: -x, NonLinearSDE(), (4, 2), steps=3)


def test_ode_exceeding_max_steps():
    with pytest.raises(sdekit.ToleranceNotMetError, match="max_steps=2"):
        sdekit.sample(SCORE, VP, (4, 2), method="ode", max_steps=2, dtype=torch.float64)
