"""k-diffusion-compatible samplers driven by sdekit's probability flow, predictors and RK45.

    from sdekit.integrations import k_diffusion as K
    x = K.sample_heun(denoiser, x, sigmas)           # was: k_diffusion.sampling.sample_heun(...)

A k-diffusion denoiser ``model(x, sigma, **extra_args) → D`` (``x`` ``(B, *D)``,
``sigma`` ``(B,)``) estimates ``E[x_0 | x]`` for ``x = x_0 + σ ε``.  Its time is
the noise level: the SDE is :class:`~sdekit.EDMSDE` (``σ(t) = t``), the denoiser
becomes a score model with :func:`denoiser_score` (sdekit's
:func:`~sdekit.score_from_denoiser`), and each sampler steps that SDE's
probability flow ``dx/dσ = −½ g² s = (x − D)/σ`` (Karras et al. 2022, eq. 3)
or its exact ancestral posterior.  ``sigmas`` is descending and usually ends
in 0 (``get_sigmas_karras`` etc.), ``x`` starts as ``σ_0 ε``, as in k-diffusion.

Randomness: where k-diffusion draws from the global RNG (``randn_like``), these
samplers take ``generator`` (or k-diffusion's ``noise_sampler``).  ``sigmas``
is read to the host once per call (k-diffusion compares it on the host every
step).
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from tqdm.auto import trange

from .._checks import check_finite, check_positive, check_positive_int, check_tensor, expand_as_batch
from ..sampling.predictors import Ancestral
from ..score_models import score_from_denoiser
from ..sdes.edm import EDMSDE
from ..solvers.adaptive import solve_adaptive

__all__ = [
    "denoiser_score",
    "sample_euler",
    "sample_heun",
    "sample_euler_ancestral",
    "sample_dopri5",
]


class _Denoiser:
    """``model(x, sigma, **extra_args)``, remembering its last output for ``callback``."""

    def __init__(self, model: Callable, extra_args: dict | None):
        if not callable(model):
            raise TypeError(f"model must be callable as model(x, sigma, **extra_args), got {type(model).__name__}")
        self.model, self.extra_args, self.last = model, dict(extra_args or {}), None

    def __call__(self, x, sigma):
        self.last = self.model(x, sigma, **self.extra_args)
        return self.last


def denoiser_score(model: Callable, extra_args: dict | None = None, sde: EDMSDE | None = None):
    """The sdekit score model ``s(x, σ) = (D(x, σ) − x)/σ²`` of a k-diffusion denoiser.

    Source: Karras et al. 2022, eq. 3 (``∇ log p_σ = (D − x)/σ²``).  Use it with
    any sdekit sampler or likelihood and the SDE :class:`~sdekit.EDMSDE`:
    ``sdekit.sample(denoiser_score(model), EDMSDE(0.002, 80), shape, method="ode")``.

    Args:
        model: ``model(x, sigma, **extra_args)`` → ``(B, *D)``.
        extra_args: keyword arguments passed on every call (e.g. ``cond``).
        sde: the :class:`~sdekit.EDMSDE` (default ``EDMSDE()``; only ``σ(t) = t`` is used).
    Returns:
        a score model ``score(x, t)`` with ``t = σ`` ``(B,)``.
    Raises:
        TypeError: if ``model`` is not callable or ``sde`` is not an :class:`~sdekit.EDMSDE`.
    """
    sde = EDMSDE() if sde is None else sde
    if not isinstance(sde, EDMSDE):
        raise TypeError(f"sde must be an EDMSDE (time = sigma), got {type(sde).__name__}")
    return score_from_denoiser(_Denoiser(model, extra_args), sde)


_SDE = EDMSDE()


def _setup(model, x, sigmas, extra_args):
    check_tensor("x", x, min_dim=1)
    check_tensor("sigmas", sigmas, min_dim=1)
    if sigmas.dim() != 1 or sigmas.numel() < 2:
        raise ValueError(f"sigmas must be 1-D with at least 2 entries, got shape {tuple(sigmas.shape)}")
    values = sigmas.tolist()  # the one host read of the call
    if not all(math.isfinite(v) for v in values) or min(values) < 0:
        raise ValueError("sigmas must be finite and >= 0")
    if any(b >= a for a, b in zip(values, values[1:])):
        raise ValueError("sigmas must be strictly decreasing (from sigma_max towards 0)")
    sde = _SDE  # only σ(t) = t enters the steps; its σ_min/σ_max are not used
    denoiser = _Denoiser(model, extra_args)
    score = score_from_denoiser(denoiser, sde)
    flow = sde.probability_flow(score)
    return sde, denoiser, score, flow, values


def _churn(x, sigma, values, i, s_churn, s_tmin, s_tmax, s_noise, sde, generator):
    """EDM's stochastic churn (Karras et al. 2022, Alg. 2 lines 5–6): raise σ_i to σ̂ = σ_i (1 + γ)
    with the VE SDE's exact forward transition; returns ``(x, σ̂)``."""
    n = len(values) - 1
    gamma = min(s_churn / n, math.sqrt(2.0) - 1.0) if s_tmin <= values[i] <= s_tmax else 0.0
    sigma_hat = sigma * (gamma + 1.0)
    if gamma > 0:
        g = sde.transition(sigma, sigma_hat)[2]  # √(σ̂² − σ²)
        z = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        x = x + expand_as_batch(g, x) * z * s_noise
    return x, sigma_hat


def _report(callback, x, i, sigma, sigma_hat, denoiser):
    if callback is not None:
        callback({"x": x, "i": i, "sigma": sigma, "sigma_hat": sigma_hat, "denoised": denoiser.last})


@torch.no_grad()
def sample_euler(model, x, sigmas, extra_args=None, callback=None, disable=None, s_churn=0.0, s_tmin=0.0,
                 s_tmax=float("inf"), s_noise=1.0, generator=None):
    """Euler steps of the probability flow ``dx/dσ = (x − D)/σ`` (sdekit's :class:`~sdekit.ProbabilityFlowODE`).

    Source: Karras et al. 2022, Algorithm 2 with Euler steps (k-diffusion's
    ``sample_euler``), including the optional churn ``s_churn``/``s_tmin``/
    ``s_tmax``/``s_noise``.

    Args:
        model: denoiser ``model(x, sigma, **extra_args)`` → ``(B, *D)``.
        x: ``(B, *D)`` start, ``σ_0 ε``.
        sigmas: ``(n + 1,)`` strictly decreasing noise levels (time of :class:`~sdekit.EDMSDE`).
        extra_args: keyword arguments for ``model``.
        callback: called after each model call with ``{"x", "i", "sigma", "sigma_hat", "denoised"}``.
        disable: disable the tqdm bar (as k-diffusion).
        generator: ``torch.Generator`` for the churn noise.
    Returns:
        ``(B, *D)`` the sample at ``sigmas[-1]``.
    Raises:
        ValueError / TypeError: on bad ``x``/``sigmas`` (not decreasing, negative,
            non-finite) or a model output of the wrong shape.
    """
    return _churned_flow(model, x, sigmas, extra_args, callback, disable, (s_churn, s_tmin, s_tmax, s_noise),
                         generator, heun=False)


@torch.no_grad()
def sample_heun(model, x, sigmas, extra_args=None, callback=None, disable=None, s_churn=0.0, s_tmin=0.0,
                s_tmax=float("inf"), s_noise=1.0, generator=None):
    """Heun (trapezoidal) steps of the probability flow; an Euler step where the next σ is 0.

    Source: Karras et al. 2022, Algorithm 2 (second-order Heun, k-diffusion's
    ``sample_heun``).  Two model calls per step (one on the last step to 0).
    Arguments, return value and errors: as :func:`sample_euler`.
    """
    return _churned_flow(model, x, sigmas, extra_args, callback, disable, (s_churn, s_tmin, s_tmax, s_noise),
                         generator, heun=True)


def _churned_flow(model, x, sigmas, extra_args, callback, disable, churn, generator, heun: bool):
    """Karras et al. 2022, Alg. 2: churn, then an Euler step (and Heun's correction unless the next σ is 0)."""
    sde, denoiser, _, flow, values = _setup(model, x, sigmas, extra_args)
    ones = x.new_ones([x.shape[0]])
    for i in trange(len(values) - 1, disable=disable):
        x, sigma_hat = _churn(x, sigmas[i] * ones, values, i, *churn, sde, generator)
        d = flow.drift(x, sigma_hat)
        _report(callback, x, i, sigmas[i], sigma_hat[0], denoiser)
        dt = expand_as_batch(sigmas[i + 1] - sigma_hat, x)
        if not heun or values[i + 1] == 0:
            x = x + d * dt
        else:
            d_next = flow.drift(x + d * dt, sigmas[i + 1] * ones)
            x = x + (d + d_next) / 2 * dt
    return x


@torch.no_grad()
def sample_euler_ancestral(model, x, sigmas, extra_args=None, callback=None, disable=None, eta=1.0, s_noise=1.0,
                           noise_sampler=None, generator=None):
    """Ancestral sampling: an Euler step of the flow to ``σ_down``, then fresh noise of size ``σ_up``.

    With ``eta = 1`` this is exactly the Gaussian posterior ``q(x_{σ'} | x_σ, D)``
    of the VE SDE, i.e. sdekit's :class:`~sdekit.sampling.Ancestral` predictor
    on :class:`~sdekit.EDMSDE` (Song et al. 2021, eq. 47), which is what runs;
    ``σ_up² = σ'² (σ² − σ'²)/σ²``, ``σ_down² = σ'² − σ_up²``.  Other ``eta``
    (0 = the probability flow's DDIM-like step) take the Euler-to-``σ_down``
    form of k-diffusion's ``sample_euler_ancestral``.  No noise is added on a
    step to ``σ = 0``.

    Args:
        eta: noise fraction in ``[0, 1]``.
        s_noise: noise multiplier.
        noise_sampler: k-diffusion's ``noise_sampler(sigma, sigma_next)`` → ``(B, *D)``
            standard normals; default draws from ``generator``.
        generator: ``torch.Generator`` for the default noise.
        Others: as :func:`sample_euler`.
    Returns, Raises: as :func:`sample_euler`; ``ValueError`` if ``eta`` is outside ``[0, 1]``.
    """
    if not 0.0 <= eta <= 1.0:
        raise ValueError(f"eta must lie in [0, 1], got {eta}")
    sde, denoiser, score, flow, values = _setup(model, x, sigmas, extra_args)
    if noise_sampler is None:
        def noise_sampler(sigma, sigma_next):
            return torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    ones = x.new_ones([x.shape[0]])
    ancestral = Ancestral(sde, score)
    for i in trange(len(values) - 1, disable=disable):
        sigma, sigma_next = sigmas[i] * ones, sigmas[i + 1] * ones
        last = values[i + 1] == 0
        z = torch.zeros_like(x) if last else noise_sampler(sigmas[i], sigmas[i + 1]) * s_noise
        if eta == 1.0:
            x_new = ancestral.step(x, sigma.double(), sigma_next.double(), z)[0]
        else:
            var_up = sigma_next**2 * (sigma**2 - sigma_next**2) / sigma**2
            sigma_up = torch.minimum(sigma_next, eta * var_up.sqrt())
            sigma_down = (sigma_next**2 - sigma_up**2).sqrt()
            x_new = x + flow.drift(x, sigma) * expand_as_batch(sigma_down - sigma, x) + expand_as_batch(sigma_up, x) * z
        _report(callback, x, i, sigmas[i], sigmas[i], denoiser)
        x = x_new
    return x


@torch.no_grad()
def sample_dopri5(model, x, sigmas, extra_args=None, callback=None, disable=None, rtol=1e-5, atol=1e-5,
                  max_steps=10_000, return_info=False):
    """Adaptive probability-flow sampling with sdekit's per-sample Dormand–Prince RK45.

    Integrates ``dx/dσ = (x − D)/σ`` from ``sigmas[0]`` to the smallest
    positive σ with :func:`sdekit.solve_adaptive` (each sample with its own
    steps and error control; Dormand & Prince 1980), then, if ``sigmas`` ends
    in 0, takes the final Euler step to 0, ``x ← D(x, σ_min)``, as
    :func:`sample_euler` does.  Only the end points of ``sigmas`` are used.
    ``callback`` is called once, after the last model call.

    Args:
        rtol, atol: RK45 tolerances (sdekit's and score_sde's default 1e-5).
        max_steps: step attempts allowed per sample.
        return_info: also return ``{"nfe": (B,), "steps": (B,)}`` (per-sample counts).
        Others: as :func:`sample_euler` (``disable`` is accepted and unused: no bar).
    Returns:
        ``x`` ``(B, *D)``, or ``(x, info)`` with ``return_info``.
    Raises:
        ToleranceNotMetError: if a sample needs more than ``max_steps`` attempts.
        ValueError / TypeError: as :func:`sample_euler`, and on bad tolerances.
    """
    check_positive("rtol", rtol)
    check_positive("atol", atol)
    check_positive_int("max_steps", max_steps)
    check_finite("x", x)
    sde, denoiser, score, flow, values = _setup(model, x, sigmas, extra_args)
    positive = [v for v in values if v > 0]
    sigma_min = sigmas[len(positive) - 1]
    sol = solve_adaptive(lambda t, y: flow.drift(y, t), x, sigmas[0].to(x.dtype), sigma_min.to(x.dtype),
                         rtol=rtol, atol=atol, max_steps=max_steps)
    x, nfe = sol.y, sol.nfe
    if values[-1] == 0:  # Euler step from σ_min to 0: x + (0 − σ) (x − D)/σ = D
        s_min = sigma_min * x.new_ones([x.shape[0]])
        x = x - flow.drift(x, s_min) * expand_as_batch(s_min, x)
        nfe = nfe + 1
    if callback is not None:
        callback({"x": x, "i": len(values) - 2, "sigma": sigma_min, "sigma_hat": sigma_min, "denoised": denoiser.last})
    if return_info:
        return x, {"nfe": nfe, "steps": sol.steps}
    return x
