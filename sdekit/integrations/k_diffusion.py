"""k-diffusion-compatible samplers driven by sdekit's probability flow, predictors, RK45 and DPM-Solver++.

    from sdekit.integrations import k_diffusion as K
    x = K.sample_heun(denoiser, x, sigmas)           # was: k_diffusion.sampling.sample_heun(...)

A k-diffusion denoiser ``model(x, sigma, **extra_args) → D`` (``x`` ``(B, *D)``,
``sigma`` ``(B,)``) estimates ``E[x_0 | x]`` for ``x = x_0 + σ ε``.  Its time is
the noise level: the SDE is :class:`~sdekit.EDMSDE` (``σ(t) = t``), the denoiser
becomes a score model with :func:`denoiser_score` (sdekit's
:func:`~sdekit.score_from_denoiser`), and each sampler steps that SDE's
probability flow ``dx/dσ = −½ g² s = (x − D)/σ`` (Karras et al. 2022, eq. 3),
its exact ancestral posterior, or its exponential integrator (DPM-Solver++).
``sigmas`` is descending and usually ends in 0 (``get_sigmas_karras`` etc.),
``x`` starts as ``σ_0 ε``, as in k-diffusion; σ is in the units of ``x``.

Conditioning: ``extra_args`` is per-sample conditioning (sdekit's
``model_kwargs``, :mod:`sdekit.conditioning`): every tensor in it must have the
batch ``B`` as leading dimension (``ValueError`` naming the entry otherwise),
and where a sampler evaluates part of the batch (:func:`sample_dopri5`'s RK45
active set) the tensors are gathered with the rows, so row ``b`` of the
model's input always sees row ``b`` of ``extra_args``.  Non-tensor values are
passed through unchanged.

Randomness: where k-diffusion draws from the global RNG (``randn_like``), these
samplers take ``generator`` (or k-diffusion's ``noise_sampler``) and draw the
same way by default.  With keyword-only ``seed=`` (and ``sample_index=``,
int64 ``(B,)``, default ``arange(B)``) the noise of row ``b`` at step ``i`` is
keyed on ``(seed, sample_index[b], i)`` (Philox, :func:`sdekit.kernels.normal`,
stream ``1 + i``), so it does not depend on the batch the sample is drawn in.
``sigmas`` is read to the host once per call (k-diffusion compares it on the
host every step).
"""

from __future__ import annotations

from typing import Callable

import torch
from tqdm.auto import trange

from .._checks import check_finite, check_model_output, check_positive, check_positive_int, expand_as_batch
from ..conditioning import bind_model_kwargs, flatten_model_kwargs
from ..sampling.dpm_solver import dpmpp_2m_coefficients, dpmpp_2m_update
from ..sampling.predictors import AncestralSamplingPredictor, DDIMPredictor
from ..score_models import score_from_denoiser
from ..sdes.edm import EDMSDE
from ..solvers.adaptive import solve_adaptive
from ._k_diffusion_support import (
    SDE,
    Denoiser,
    check_bound_extra_args,
    churn,
    flow_slope,
    noise_source,
    report,
    setup,
    step_noise,
)
from .k_diffusion_deis import sample_deis
from .k_diffusion_multistep import sample_dpmpp_2m_sde, sample_dpmpp_3m_sde, sample_lms
from .k_diffusion_singlestep import sample_dpm_2, sample_dpm_2_ancestral, sample_dpmpp_2s_ancestral
from .k_diffusion_unipc import sample_unipc

__all__ = [
    "denoiser_score",
    "sample_deis",
    "sample_dopri5",
    "sample_dpm_2",
    "sample_dpm_2_ancestral",
    "sample_dpmpp_2m",
    "sample_dpmpp_2m_sde",
    "sample_dpmpp_2s_ancestral",
    "sample_dpmpp_3m_sde",
    "sample_euler",
    "sample_euler_ancestral",
    "sample_heun",
    "sample_lms",
    "sample_unipc",
]


def denoiser_score(model: Callable, extra_args: dict | None = None, sde: EDMSDE | None = None):
    """The sdekit score model ``s(x, σ) = (D(x, σ) − x)/σ²`` of a k-diffusion denoiser.

    Source: Karras et al. 2022, eq. 3 (``∇ log p_σ = (D − x)/σ²``).  Use it with
    any sdekit sampler or likelihood and the SDE :class:`~sdekit.EDMSDE`:
    ``sdekit.sample(denoiser_score(model), EDMSDE(0.002, 80), shape, method="ode")``.

    ``extra_args`` is bound per-sample conditioning: its tensors are ``(B, …)``
    for the batch the score will be evaluated on; at every call their leading
    dimension is checked against ``x``'s batch, and sdekit's samplers take them
    out of the score (:func:`sdekit.conditioning.unbind_conditioning`) and
    gather them with the rows they evaluate (RK45's active set).  Conditioning
    passed at call time, ``score(x, t, **model_kwargs)``, goes to the model too.

    Args:
        model: ``model(x, sigma, **extra_args)`` → ``(B, *D)``, ``sigma`` ``(B,)`` in units of ``x``.
        extra_args: keyword arguments for ``model`` (e.g. ``{"cond": labels}``, tensors ``(B, …)``).
        sde: the :class:`~sdekit.EDMSDE` (default ``EDMSDE()``; only ``σ(t) = t`` is used).
    Returns:
        a score model ``score(x, t, **model_kwargs)`` with ``t = σ`` ``(B,)`` → ``(B, *D)``.
    Raises:
        TypeError: if ``model`` is not callable, ``sde`` is not an :class:`~sdekit.EDMSDE`,
            or ``extra_args`` is not a mapping with string keys.
        ValueError: naming the entry, if tensors of ``extra_args`` differ in leading
            dimension or are 0-d; on call, if it is not ``x``'s batch.
    """
    sde = EDMSDE() if sde is None else sde
    if not isinstance(sde, EDMSDE):
        raise TypeError(f"sde must be an EDMSDE (time = sigma), got {type(sde).__name__}")
    return score_from_denoiser(Denoiser(model, check_bound_extra_args(extra_args)), sde)


@torch.no_grad()
def sample_euler(model, x, sigmas, extra_args=None, callback=None, disable=None, s_churn=0.0, s_tmin=0.0,
                 s_tmax=float("inf"), s_noise=1.0, generator=None, *, seed=None, sample_index=None):
    """Euler steps of the probability flow ``dx/dσ = (x − D)/σ`` (sdekit's :class:`~sdekit.ProbabilityFlowODE`).

    Source: Karras et al. 2022, Algorithm 2 with Euler steps (k-diffusion's
    ``sample_euler``), including the optional churn ``s_churn``/``s_tmin``/
    ``s_tmax``/``s_noise``: ``σ̂ = σ_i (1 + γ)``, ``γ = min(s_churn/n, √2 − 1)``
    for ``s_tmin <= σ_i <= s_tmax``, ``x ← x + s_noise √(σ̂² − σ_i²) z``.

    Args:
        model: denoiser ``model(x, sigma, **extra_args)`` → ``(B, *D)``, ``sigma`` ``(B,)``.
        x: ``(B, *D)`` start, ``σ_0 ε``.
        sigmas: ``(n + 1,)`` strictly decreasing noise levels (time of :class:`~sdekit.EDMSDE`,
            units of ``x``), ``>= 0``.
        extra_args: per-sample keyword arguments for ``model`` (tensors ``(B, …)``).
        callback: called after each step's first model call with
            ``{"x", "i", "sigma", "sigma_hat", "denoised"}`` (k-diffusion's keys).
        disable: disable the tqdm bar (as k-diffusion).
        generator: ``torch.Generator`` for the churn noise (default: the global RNG).
        seed: keyed, batch-invariant churn noise instead (int in ``[0, 2**64)``).
        sample_index: int64 ``(B,)`` indices keying each row's noise with ``seed``
            (default ``arange(B)``).
    Returns:
        ``(B, *D)`` the sample at ``sigmas[-1]``.
    Raises:
        ValueError: on bad ``x``/``sigmas`` (not decreasing, negative, non-finite),
            an ``extra_args`` tensor whose leading dimension is not ``B`` (naming it),
            a model output of the wrong shape, ``seed`` with ``generator``,
            ``sample_index`` without ``seed``, or a bad ``seed``/``sample_index``.
        TypeError: on a non-callable model or non-mapping ``extra_args``.
    """
    return _churned_flow(model, x, sigmas, extra_args, callback, disable, (s_churn, s_tmin, s_tmax, s_noise),
                         noise_source(x, seed, sample_index, generator), heun=False)


@torch.no_grad()
def sample_heun(model, x, sigmas, extra_args=None, callback=None, disable=None, s_churn=0.0, s_tmin=0.0,
                s_tmax=float("inf"), s_noise=1.0, generator=None, *, seed=None, sample_index=None):
    """Heun (trapezoidal) steps of the probability flow; an Euler step where the next σ is 0.

    Source: Karras et al. 2022, Algorithm 2 (second-order Heun, k-diffusion's
    ``sample_heun``).  Two model calls per step (one on the last step to 0).
    Arguments (shapes, units), return value and errors: as :func:`sample_euler`.
    """
    return _churned_flow(model, x, sigmas, extra_args, callback, disable, (s_churn, s_tmin, s_tmax, s_noise),
                         noise_source(x, seed, sample_index, generator), heun=True)


class FlowStepper:
    """Euler and Heun steps of the probability flow ``dx/dσ = (x − D)/σ`` (Karras et al. 2022, Alg. 2 lines
    7–10) given the denoiser's outputs: the one step implementation behind :func:`sample_euler`,
    :func:`sample_heun` and the diffusers scheduler's ``method="euler"``/``"heun"``
    (:class:`~sdekit.integrations.diffusers_scheduler.SDEScheduler`).

    :meth:`predict` is the Euler step from ``σ̂`` to ``σ'`` (line 8); :meth:`correct` replaces it by the
    trapezoidal rule once ``D`` at the Euler point is known (lines 9–10).  ``x``, ``denoised`` ``(B, *D)``;
    ``sigma`` ``(B,)``; ``sigma_next`` ``(B,)`` or a 0-d tensor.
    """

    def __init__(self) -> None:
        self.pending: tuple | None = None  # (x, d, dt) of the last Euler step, awaiting its correction

    def predict(self, x: torch.Tensor, denoised: torch.Tensor, sigma: torch.Tensor, sigma_next) -> torch.Tensor:
        """``x + (σ' − σ̂) d``, ``d = (x − D)/σ̂`` (remembered for :meth:`correct`)."""
        d = flow_slope(x, denoised, sigma)
        dt = expand_as_batch(sigma_next - sigma, x)
        self.pending = (x, d, dt)
        return x + d * dt

    def correct(self, x_euler: torch.Tensor, denoised: torch.Tensor, sigma_next: torch.Tensor) -> torch.Tensor:
        """``x + (σ' − σ̂) (d + d')/2`` with ``d' = (x_euler − D')/σ'`` at the last Euler point.

        Raises:
            ValueError: if no Euler step awaits its correction.
        """
        if self.pending is None:
            raise ValueError("correct() needs the Euler step of predict() first")
        (x, d, dt), self.pending = self.pending, None
        return x + (d + flow_slope(x_euler, denoised, sigma_next)) / 2 * dt


def _churned_flow(model, x, sigmas, extra_args, callback, disable, churn_args, draw, heun: bool):
    """Karras et al. 2022, Alg. 2: churn, then an Euler step (and Heun's correction unless the next σ is 0)."""
    denoiser, _, _, values, kw = setup(model, x, sigmas, extra_args)
    s_churn, s_tmin, s_tmax, s_noise = churn_args
    ones = x.new_ones([x.shape[0]])
    stepper = FlowStepper()
    for i in trange(len(values) - 1, disable=disable):
        x, sigma_hat = churn(x, sigmas[i] * ones, values, i, s_churn, s_tmin, s_tmax, s_noise, draw)
        x0 = check_model_output("denoiser", denoiser(x, sigma_hat, **kw), x)
        report(callback, x, i, sigmas[i], sigma_hat[0], x0)
        x_euler = stepper.predict(x, x0, sigma_hat, sigmas[i + 1])
        if not heun or values[i + 1] == 0:
            x = x_euler
        else:
            sigma_next = sigmas[i + 1] * ones
            x = stepper.correct(x_euler, check_model_output("denoiser", denoiser(x_euler, sigma_next, **kw), x),
                                sigma_next)
    return x


@torch.no_grad()
def sample_euler_ancestral(model, x, sigmas, extra_args=None, callback=None, disable=None, eta=1.0, s_noise=1.0,
                           noise_sampler=None, generator=None, *, seed=None, sample_index=None):
    """Ancestral sampling: an Euler step of the flow to ``σ_down``, then fresh noise of size ``σ_up``.

    With ``eta = 1`` this is exactly the Gaussian posterior ``q(x_{σ'} | x_σ, D)``
    of the VE SDE, i.e. sdekit's :class:`~sdekit.sampling.AncestralSamplingPredictor`
    on :class:`~sdekit.EDMSDE` (Song et al. 2021, eq. 47), which is what runs;
    ``σ_up² = σ'² (σ² − σ'²)/σ²``, ``σ_down² = σ'² − σ_up²``.  Other ``eta``
    run sdekit's :class:`~sdekit.sampling.DDIMPredictor` (Song, Meng & Ermon
    2021, eqs. 12/16) on :class:`~sdekit.EDMSDE`, which is k-diffusion's
    Euler step to ``σ_down`` plus ``σ_up`` noise (``0`` = DDIM, an Euler step of
    the probability flow).  No noise is added on a step to ``σ = 0``.

    Args:
        eta: noise fraction in ``[0, 1]``.
        s_noise: noise multiplier.
        noise_sampler: k-diffusion's ``noise_sampler(sigma, sigma_next)`` → ``(B, *D)``
            standard normals; default draws from ``generator`` (or keyed on ``seed``).
        generator: ``torch.Generator`` for the default noise (default: the global RNG).
        seed, sample_index: keyed, batch-invariant noise (as :func:`sample_euler`).
        Others: as :func:`sample_euler`.
    Returns:
        ``(B, *D)`` the sample at ``sigmas[-1]``.
    Raises:
        ValueError: as :func:`sample_euler`; if ``eta`` is outside ``[0, 1]``,
            ``noise_sampler`` is given with ``seed``/``sample_index``/``generator``,
            or it returns a tensor not of ``x``'s shape.
        TypeError: as :func:`sample_euler`; if ``noise_sampler`` is not callable.
    """
    if not 0.0 <= eta <= 1.0:
        raise ValueError(f"eta must lie in [0, 1], got {eta}")
    draw = step_noise(x, sigmas, noise_sampler, seed, sample_index, generator)
    denoiser, score, _, values, kw = setup(model, x, sigmas, extra_args)
    ones = x.new_ones([x.shape[0]])
    bound = bind_model_kwargs(score, kw)  # fixed steps: the whole batch every call
    # the same law at η = 1; the posterior form there is k-diffusion's bitwise-tested default
    step = AncestralSamplingPredictor(SDE, bound) if eta == 1.0 else DDIMPredictor(SDE, bound, eta)
    for i in trange(len(values) - 1, disable=disable):
        sigma, sigma_next = sigmas[i] * ones, sigmas[i + 1] * ones
        z = torch.zeros_like(x) if values[i + 1] == 0 else draw(i) * s_noise
        x_new = step.step(x, sigma.double(), sigma_next.double(), z)[0]
        report(callback, x, i, sigmas[i], sigmas[i], denoiser.last)
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
    Finished samples leave the solver's active set; the tensors of
    ``extra_args`` ride along as ``solve_adaptive``'s ``args``
    (:func:`sdekit.conditioning.flatten_model_kwargs`), so the model always
    gets the conditioning of the rows it evaluates.  ``callback`` is called
    once, after the last model call; its ``"denoised"`` is ``D(x, σ_min)`` of
    the whole batch when ``sigmas`` ends in 0 and ``None`` otherwise.

    Args:
        rtol, atol: RK45 tolerances (sdekit's and score_sde's default 1e-5; ``atol`` in units of ``x``).
        max_steps: step attempts allowed per sample.
        return_info: also return ``{"nfe": (B,), "steps": (B,)}`` (per-sample int64 counts).
        Others: as :func:`sample_euler` (``disable`` is accepted and unused: no bar).
    Returns:
        ``x`` ``(B, *D)``, or ``(x, info)`` with ``return_info``.
    Raises:
        ToleranceNotMetError: if a sample needs more than ``max_steps`` attempts.
        ValueError / TypeError: as :func:`sample_euler`, and on bad tolerances or non-finite ``x``.
    """
    check_positive("rtol", rtol)
    check_positive("atol", atol)
    check_positive_int("max_steps", max_steps)
    check_finite("x", x)
    denoiser, _, flow, values, kw = setup(model, x, sigmas, extra_args)
    leaves, rebuild = flatten_model_kwargs(kw)

    def func(t, y, *cond):  # cond: the tensors of extra_args, gathered to the active rows
        return flow.drift(y, t, **rebuild(cond))

    sigma_min = sigmas[sum(v > 0 for v in values) - 1]
    sol = solve_adaptive(func, x, sigmas[0].to(x.dtype), sigma_min.to(x.dtype), rtol=rtol, atol=atol,
                         max_steps=max_steps, args=leaves)
    x, nfe, denoised = sol.y, sol.nfe, None
    if values[-1] == 0:  # Euler step from σ_min to 0: x + (0 − σ) (x − D)/σ = D
        s_min = sigma_min * x.new_ones([x.shape[0]])
        x = x - flow.drift(x, s_min, **kw) * expand_as_batch(s_min, x)
        nfe, denoised = nfe + 1, denoiser.last
    report(callback, x, len(values) - 2, sigma_min, sigma_min, denoised)
    if return_info:
        return x, {"nfe": nfe, "steps": sol.steps}
    return x


@torch.no_grad()
def sample_dpmpp_2m(model, x, sigmas, extra_args=None, callback=None, disable=None):
    """DPM-Solver++(2M): the second-order multistep exponential integrator of the probability flow.

    Source: Lu et al. 2022b ("DPM-Solver++"), Algorithm 2, as in k-diffusion's
    ``sample_dpmpp_2m``.  On :class:`~sdekit.EDMSDE` (``α = 1``, ``λ = −log σ``)
    the data prediction ``x̂_0`` is the denoiser's output ``D`` itself, and the
    step from ``σ_i`` to ``σ_{i+1} > 0`` is
    ``x ← (σ_{i+1}/σ_i) x + (1 − σ_{i+1}/σ_i) D_i`` with
    ``D_i = (1 + 1/(2 r_i)) D(x_i, σ_i) − 1/(2 r_i) D(x_{i−1}, σ_{i−1})``,
    ``r_i = h_{i−1}/h_i``, ``h_i = λ_{i+1} − λ_i`` (``D_0 = D(x_0, σ_0)``); the
    coefficients come from :func:`sdekit.sampling.dpm_solver.dpmpp_2m_coefficients`
    (float64).  A step to ``σ = 0`` (``λ = ∞``) is the exact first-order one,
    ``x ← D(x, σ_i)``, as in k-diffusion.  One model call per step.

    Args:
        model, x, sigmas, extra_args, disable: as :func:`sample_euler`.
        callback: called after each model call with ``{"x", "i", "sigma", "sigma_hat", "denoised"}``
            (``x`` the state before step ``i``, ``denoised`` ``D(x, σ_i)``).
    Returns:
        ``(B, *D)`` the sample at ``sigmas[-1]``.
    Raises:
        ValueError / TypeError: as :func:`sample_euler` (no noise arguments).
    """
    denoiser, _, _, values, kw = setup(model, x, sigmas, extra_args)
    grid = torch.tensor([v for v in values if v > 0], dtype=torch.float64)
    co = dpmpp_2m_coefficients(SDE, grid)
    ones = x.new_ones([x.shape[0]])
    x0_prev = None
    for i in trange(len(values) - 1, disable=disable):
        x0 = check_model_output("denoiser", denoiser(x, sigmas[i] * ones, **kw), x)
        report(callback, x, i, sigmas[i], sigmas[i], x0)
        if values[i + 1] == 0:  # σ_{i+1}/σ_i = 0 and 1 − e^{−h} = 1: the last step returns D
            x = x0
        else:
            x = dpmpp_2m_update(co, i, x, x0, x0_prev)
        x0_prev = x0
    return x
