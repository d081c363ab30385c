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
from ._k_diffusion_support import SDE, ancestral_split, churn, flow_slope, noise_source, report, setup, step_noise

__all__ = ["DPM2Stepper", "DPMpp2SStepper", "sample_dpm_2", "sample_dpm_2_ancestral", "sample_dpmpp_2s_ancestral"]


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
    denoiser, _, _, values, kw = setup(model, x, sigmas, extra_args)
    draw = noise_source(x, seed, sample_index, generator)
    ones = x.new_ones([x.shape[0]])
    stepper = DPM2Stepper()
    for i in trange(len(values) - 1, disable=disable):
        x, sigma_hat = churn(x, sigmas[i] * ones, values, i, s_churn, s_tmin, s_tmax, s_noise, draw)
        x0 = check_model_output("denoiser", denoiser(x, sigma_hat, **kw), x)
        report(callback, x, i, sigmas[i], sigma_hat[0], x0)
        x = _dpm_2_step(stepper, denoiser, kw, x, x0, sigma_hat, sigmas[i + 1], values[i + 1] == 0, ones)
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
    denoiser, _, _, values, kw = setup(model, x, sigmas, extra_args)
    draw = step_noise(x, sigmas, noise_sampler, seed, sample_index, generator)
    down, up = ancestral_split(sigmas[:-1], sigmas[1:], eta)
    downs, ups = torch.stack([down, up]).tolist()
    ones = x.new_ones([x.shape[0]])
    stepper = DPM2Stepper()
    for i in trange(len(values) - 1, disable=disable):
        sigma = sigmas[i] * ones
        x0 = check_model_output("denoiser", denoiser(x, sigma, **kw), x)
        report(callback, x, i, sigmas[i], sigmas[i], x0)
        if downs[i] == 0:
            x = x - flow_slope(x, x0, sigma) * expand_as_batch(sigma, x)
        else:
            x = _dpm_2_step(stepper, denoiser, kw, x, x0, sigma, down[i], False, ones)
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
    stepper = DPMpp2SStepper(values[:-1], downs)
    ones = x.new_ones([x.shape[0]])
    for i in trange(len(values) - 1, disable=disable):
        x0 = check_model_output("denoiser", denoiser(x, sigmas[i] * ones, **kw), x)
        report(callback, x, i, sigmas[i], sigmas[i], x0)
        if downs[i] == 0:
            x = x0
        else:
            u = stepper.predict(i, x, x0)
            x = stepper.correct(i, check_model_output("denoiser", denoiser(u, stepper.mid[i] * ones, **kw), x))
        if ups[i] > 0:  # σ_up > 0 needs σ' > 0
            x = x + draw(i) * (s_noise * ups[i])
    return x


class DPM2Stepper:
    """DPM-Solver-2 (Lu et al. 2022a, Alg. 1, ``r₁ = ½``) on the VE flow ``dx/dσ = (x − D)/σ`` given the
    denoiser's outputs: :meth:`predict`, the Euler step to ``σ_m = √(σ σ')`` (the log-σ midpoint), then
    :meth:`correct`, the step from ``σ`` to ``σ'`` with the midpoint's slope.  The one step implementation
    behind :func:`sample_dpm_2`, :func:`sample_dpm_2_ancestral` and the diffusers scheduler's
    ``method="dpm_2"``.  ``sigma``, ``sigma_to``: ``(B,)`` tensors (``σ' > 0``)."""

    def __init__(self) -> None:
        self.pending: tuple | None = None  # (x, σ, σ') of the step awaiting its midpoint's D

    def predict(self, x: torch.Tensor, denoised: torch.Tensor, sigma: torch.Tensor, sigma_to: torch.Tensor):
        """``(u, σ_m)``: the Euler point ``u = x + (σ_m − σ)(x − D)/σ`` and its noise level ``σ_m`` ``(B,)``."""
        sigma_mid = (sigma * sigma_to).sqrt()
        self.pending = (x, sigma, sigma_to)
        return x + flow_slope(x, denoised, sigma) * expand_as_batch(sigma_mid - sigma, x), sigma_mid

    def correct(self, u: torch.Tensor, denoised_mid: torch.Tensor, sigma_mid: torch.Tensor) -> torch.Tensor:
        """``x + (σ' − σ)(u − D(u, σ_m))/σ_m``.  Raises ``ValueError`` without a :meth:`predict` first."""
        if self.pending is None:
            raise ValueError("correct() needs the midpoint of predict() first")
        (x, sigma, sigma_to), self.pending = self.pending, None
        return x + flow_slope(u, denoised_mid, sigma_mid) * expand_as_batch(sigma_to - sigma, x)


class DPMpp2SStepper:
    """DPM-Solver++(2S) (Lu et al. 2022b, Alg. 1, ``r = ½``) on the VE flow from ``σ_i`` to ``σ'_i``
    (the ancestral ``σ_down`` of :func:`sample_dpmpp_2s_ancestral`, ``σ_{i+1}`` at ``η = 0``), given the
    denoiser's outputs; the one step implementation behind :func:`sample_dpmpp_2s_ancestral` and the diffusers
    scheduler's ``method="dpmpp_2s"``.  With ``h = λ(σ') − λ(σ)``: ``u = e^{−h/2} x + (1 − e^{−h/2}) D``
    (:meth:`predict`), then ``x ← e^{−h} x + (1 − e^{−h}) D(u, σ_m)`` at ``σ_m = σ e^{−h/2}``
    (:meth:`correct`).  The scalars are float64 on the host (:func:`sdekit.sampling.dpm_solver.log_snr`).

    Args:
        starts: the ``n`` step starts ``σ_i`` (host floats).  targets: the ``n`` step ends (``0``: no midpoint).
    """

    def __init__(self, starts, targets) -> None:
        start, target = torch.tensor(starts, dtype=torch.float64), torch.tensor(targets, dtype=torch.float64)
        h = torch.where(target > 0, log_snr(SDE, target) - log_snr(SDE, start), 0.0)
        self.half_decay, self.half_phi = torch.exp(-h / 2).tolist(), (-torch.expm1(-h / 2)).tolist()
        self.decay, self.phi = torch.exp(-h).tolist(), (-torch.expm1(-h)).tolist()
        #: the midpoints ``σ_m`` (host floats) at which :meth:`correct` needs ``D``
        self.mid = (start * torch.exp(-h / 2)).tolist()
        self.pending: torch.Tensor | None = None

    def predict(self, i: int, x: torch.Tensor, denoised: torch.Tensor) -> torch.Tensor:
        """The midpoint state ``u`` of step ``i``, from ``D(x, σ_i)``."""
        self.pending = x
        return self.half_decay[i] * x + self.half_phi[i] * denoised

    def correct(self, i: int, denoised_mid: torch.Tensor) -> torch.Tensor:
        """Step ``i``'s end from ``D(u, σ_m)``.  Raises ``ValueError`` without a :meth:`predict` first."""
        if self.pending is None:
            raise ValueError("correct() needs the midpoint of predict() first")
        x, self.pending = self.pending, None
        return self.decay[i] * x + self.phi[i] * denoised_mid


def _dpm_2_step(stepper: DPM2Stepper, denoiser, kw, x, x0, sigma, sigma_to, to_zero: bool, ones):
    """One DPM-Solver-2 step of the loops (Euler where ``σ' = 0``); ``sigma_to`` a 0-d tensor."""
    if to_zero:
        return x + flow_slope(x, x0, sigma) * expand_as_batch(sigma_to - sigma, x)
    u, sigma_mid = stepper.predict(x, x0, sigma, sigma_to * ones)
    return stepper.correct(u, check_model_output("denoiser", denoiser(u, sigma_mid, **kw), x), sigma_mid)
