"""k-diffusion's two-stage single-step samplers: DPM-Solver-2 (with EDM churn or ancestral noise), DPM-Solver++(2S).

Re-exported by :mod:`sdekit.integrations.k_diffusion` (import them from there);
the conventions (denoiser ``model(x, sigma, **extra_args)``, descending
``sigmas`` in units of ``x`` usually ending in 0, per-sample ``extra_args``,
``generator`` / keyed ``seed=`` noise, callback keys) are that module's.

Each step evaluates the denoiser at ``σ`` and once more at the midpoint of the
step in ``log σ``, ``σ_m = √(σ σ_to)`` (``λ = −log σ`` is the log-SNR of
:class:`~sdekit.EDMSDE`).  On the VE flow ``dx/dσ = (x − D)/σ`` the
noise-prediction exponential integrator DPM-Solver-2 is an Euler step with
the midpoint's slope, the data-prediction one DPM-Solver++(2S) is exact for a
denoiser constant over the step (Lu et al. 2022a, §3.3; Lu et al. 2022b,
Algorithm 1).  A step whose target is ``σ = 0`` is an Euler step (one model
call), as in k-diffusion.
"""

from __future__ import annotations

import torch
from tqdm.auto import trange

from .._checks import check_model_output, check_nonnegative, check_real, expand_as_batch
from ..sampling.dpm_solver import log_snr
from ._k_diffusion_support import SDE, ancestral_split, churn, noise_source, report, setup, step_noise

__all__ = ["sample_dpm_2", "sample_dpm_2_ancestral", "sample_dpmpp_2s_ancestral"]


@torch.no_grad()
def sample_dpm_2(model, x, sigmas, extra_args=None, callback=None, disable=None, s_churn=0.0, s_tmin=0.0,
                 s_tmax=float("inf"), s_noise=1.0, generator=None, *, seed=None, sample_index=None):
    """DPM-Solver-2 steps of the probability flow ``dx/dσ = (x − D)/σ``, with EDM's optional churn.

    Source: Lu et al. 2022a ("DPM-Solver"), Algorithm 1 (DPM-Solver-2, ``r₁ = ½``)
    on :class:`~sdekit.EDMSDE`, inside Karras et al. 2022, Algorithm 2 (churn
    ``s_churn``/``s_tmin``/``s_tmax``/``s_noise`` as :func:`~sdekit.integrations.k_diffusion.sample_euler`);
    k-diffusion's ``sample_dpm_2``.  With ``ε = (x − D)/σ`` and ``λ = −log σ``
    the step from ``σ̂`` to ``σ' > 0`` is ``u = x + (σ_m − σ̂) ε(x, σ̂)``,
    ``x ← x + (σ' − σ̂) ε(u, σ_m)``, ``σ_m = √(σ̂ σ')`` (the log-σ midpoint);
    a step to ``σ' = 0`` is the Euler step.  Two model calls per step (one on
    the step to 0).

    Args:
        model: denoiser ``model(x, sigma, **extra_args)`` → ``(B, *D)``, ``sigma`` ``(B,)``.
        x: ``(B, *D)`` start, ``σ_0 ε``.
        sigmas: ``(n + 1,)`` strictly decreasing noise levels ``>= 0`` (units of ``x``).
        extra_args: per-sample keyword arguments for ``model`` (tensors ``(B, …)``).
        callback: called after each step's first model call with
            ``{"x", "i", "sigma", "sigma_hat", "denoised"}`` (k-diffusion's keys).
        disable: disable the tqdm bar.
        s_churn, s_tmin, s_tmax, s_noise: EDM's churn (as ``sample_euler``).
        generator: ``torch.Generator`` for the churn noise (default: the global RNG).
        seed, sample_index: keyed, batch-invariant churn noise (as ``sample_euler``).
    Returns:
        ``(B, *D)`` the sample at ``sigmas[-1]``.
    Raises:
        ValueError / TypeError: as :func:`~sdekit.integrations.k_diffusion.sample_euler`.

    Unlike k-diffusion, which draws a normal every step, churn noise is drawn
    only on the steps where ``γ > 0`` (as sdekit's ``sample_euler``/``sample_heun``);
    the global-RNG stream matches k-diffusion's when every step churns.
    """
    denoiser, _, flow, values, kw = setup(model, x, sigmas, extra_args)
    draw = noise_source(x, seed, sample_index, generator)
    ones = x.new_ones([x.shape[0]])
    for i in trange(len(values) - 1, disable=disable):
        x, sigma_hat = churn(x, sigmas[i] * ones, values, i, s_churn, s_tmin, s_tmax, s_noise, draw)
        d = flow.drift(x, sigma_hat, **kw)
        report(callback, x, i, sigmas[i], sigma_hat[0], denoiser.last)
        if values[i + 1] == 0:
            x = x + d * expand_as_batch(sigmas[i + 1] - sigma_hat, x)
        else:
            x = _dpm_solver_2(flow, kw, x, d, sigma_hat, sigmas[i + 1] * ones)
    return x


@torch.no_grad()
def sample_dpm_2_ancestral(model, x, sigmas, extra_args=None, callback=None, disable=None, eta=1.0, s_noise=1.0,
                           noise_sampler=None, generator=None, *, seed=None, sample_index=None):
    """Ancestral sampling with DPM-Solver-2 steps: the flow to ``σ_down``, then fresh noise of size ``σ_up``.

    Source: k-diffusion's ``sample_dpm_2_ancestral``: the ancestral split
    ``σ_up = min(σ', η σ' √(σ² − σ'²)/σ)``, ``σ_down = √(σ'² − σ_up²)`` (exact
    VE posterior at ``η = 1``, Song et al. 2021, eq. 47), the deterministic
    part a DPM-Solver-2 step (Lu et al. 2022a, Algorithm 1, ``r₁ = ½``, as
    :func:`sample_dpm_2`) from ``σ`` to ``σ_down``, then ``x ← x + s_noise σ_up z``.
    Where ``σ_down = 0`` (the last step to 0, or an ``η`` so large that
    ``σ_up = σ'``) the step is the Euler step to 0 and, as in k-diffusion, no
    noise is added.  Two model calls per step (one where ``σ_down = 0``).
    ``σ_down``/``σ_up`` are computed in ``sigmas``' dtype and read to the host
    once per call.  Noise is drawn only where it is added with ``σ_up > 0``
    (k-diffusion also calls ``noise_sampler`` at ``η = 0``, and multiplies by 0).

    Args:
        eta: noise fraction ``>= 0`` (1: ancestral, 0: deterministic DPM-Solver-2).
        s_noise: noise multiplier.
        noise_sampler: k-diffusion's ``noise_sampler(sigma, sigma_next)`` → ``(B, *D)``
            standard normals; default draws from ``generator`` (or keyed on ``seed``).
        generator: ``torch.Generator`` for the default noise (default: the global RNG, k-diffusion's).
        seed, sample_index: keyed, batch-invariant noise (``sample_index`` int64 ``(B,)``).
        model, x, sigmas, extra_args, callback, disable: as :func:`sample_dpm_2`
            (the callback's ``sigma_hat`` is ``sigma``).
    Returns:
        ``(B, *D)`` the sample at ``sigmas[-1]``.
    Raises:
        ValueError: as :func:`sample_dpm_2`; on ``eta < 0`` or non-finite ``eta``/``s_noise``,
            ``noise_sampler`` with ``seed``/``sample_index``/``generator``, or a
            ``noise_sampler`` output not of ``x``'s shape.
        TypeError: as :func:`sample_dpm_2`; if ``noise_sampler`` is not callable.
    """
    eta, s_noise = check_nonnegative("eta", eta), check_real("s_noise", s_noise)
    denoiser, _, flow, values, kw = setup(model, x, sigmas, extra_args)
    draw = step_noise(x, sigmas, noise_sampler, seed, sample_index, generator)
    down, up = ancestral_split(sigmas[:-1], sigmas[1:], eta)
    downs, ups = torch.stack([down, up]).tolist()
    ones = x.new_ones([x.shape[0]])
    for i in trange(len(values) - 1, disable=disable):
        sigma = sigmas[i] * ones
        d = flow.drift(x, sigma, **kw)
        report(callback, x, i, sigmas[i], sigmas[i], denoiser.last)
        if downs[i] == 0:
            x = x - d * expand_as_batch(sigma, x)
        else:
            x = _dpm_solver_2(flow, kw, x, d, sigma, down[i] * ones)
            if ups[i] > 0:
                x = x + draw(i) * (s_noise * ups[i])
    return x


@torch.no_grad()
def sample_dpmpp_2s_ancestral(model, x, sigmas, extra_args=None, callback=None, disable=None, eta=1.0,
                              s_noise=1.0, noise_sampler=None, generator=None, *, seed=None, sample_index=None):
    """Ancestral sampling with DPM-Solver++(2S) steps: the data-prediction integrator to ``σ_down``, then noise.

    Source: Lu et al. 2022b ("DPM-Solver++"), Algorithm 1 (single-step
    second order, ``r = ½``) on :class:`~sdekit.EDMSDE` (``α = 1``,
    ``λ = −log σ``, data prediction ``x̂_0 = D``), with the ancestral split of
    :func:`sample_dpm_2_ancestral`; k-diffusion's ``sample_dpmpp_2s_ancestral``.
    With ``h = λ(σ_down) − λ(σ)`` and ``σ_m = σ e^{−h/2}``:
    ``u = e^{−h/2} x + (1 − e^{−h/2}) D(x, σ)``,
    ``x ← e^{−h} x + (1 − e^{−h}) D(u, σ_m)``, then ``x ← x + s_noise σ_up z``
    where ``σ' > 0``.  Where ``σ_down = 0`` the deterministic part is the
    step to 0, ``x ← D(x, σ)`` (k-diffusion's Euler step, equal up to
    rounding), and noise is still added if ``σ' > 0``.  Noise is drawn only
    where ``σ_up > 0`` (k-diffusion also draws at ``η = 0``).  The scalars are
    computed in float64 (:func:`sdekit.sampling.dpm_solver.log_snr`);
    ``σ_down``/``σ_up`` in ``sigmas``' dtype, read to the host once per call.
    Two model calls per step (one where ``σ_down = 0``).

    Args:
        eta, s_noise, noise_sampler, generator, seed, sample_index: as :func:`sample_dpm_2_ancestral`.
        model, x, sigmas, extra_args, callback, disable: as :func:`sample_dpm_2`
            (the callback's ``sigma_hat`` is ``sigma``, its ``denoised`` ``D(x, σ)``).
    Returns:
        ``(B, *D)`` the sample at ``sigmas[-1]``.
    Raises:
        ValueError / TypeError: as :func:`sample_dpm_2_ancestral`; a model output not of ``x``'s shape.
    """
    eta, s_noise = check_nonnegative("eta", eta), check_real("s_noise", s_noise)
    denoiser, _, _, values, kw = setup(model, x, sigmas, extra_args)
    draw = step_noise(x, sigmas, noise_sampler, seed, sample_index, generator)
    down, up = ancestral_split(sigmas[:-1], sigmas[1:], eta)
    downs, ups = torch.stack([down, up]).tolist()
    start, target = torch.tensor(values[:-1], dtype=torch.float64), torch.tensor(downs, dtype=torch.float64)
    h = torch.where(target > 0, log_snr(SDE, target) - log_snr(SDE, start), 0.0)
    half_decay, half_phi = torch.exp(-h / 2).tolist(), (-torch.expm1(-h / 2)).tolist()
    decay, phi = torch.exp(-h).tolist(), (-torch.expm1(-h)).tolist()
    mid = (start * torch.exp(-h / 2)).tolist()
    ones = x.new_ones([x.shape[0]])
    for i in trange(len(values) - 1, disable=disable):
        x0 = check_model_output("denoiser", denoiser(x, sigmas[i] * ones, **kw), x)
        report(callback, x, i, sigmas[i], sigmas[i], x0)
        if downs[i] == 0:
            x = x0
        else:
            u = half_decay[i] * x + half_phi[i] * x0
            x0_mid = check_model_output("denoiser", denoiser(u, mid[i] * ones, **kw), x)
            x = decay[i] * x + phi[i] * x0_mid
        if ups[i] > 0:  # σ_up > 0 needs σ' > 0
            x = x + draw(i) * (s_noise * ups[i])
    return x


def _dpm_solver_2(flow, kw, x, d, sigma, sigma_to):
    """One DPM-Solver-2 step (Lu et al. 2022a, Alg. 1, ``r₁ = ½``) of the VE flow from ``σ`` to ``σ_to > 0``
    (``(B,)`` each), given ``d = (x − D(x, σ))/σ``: Euler to ``σ_m = √(σ σ_to)``, then the step with its slope."""
    sigma_mid = (sigma * sigma_to).sqrt()
    u = x + d * expand_as_batch(sigma_mid - sigma, x)
    return x + flow.drift(u, sigma_mid, **kw) * expand_as_batch(sigma_to - sigma, x)
