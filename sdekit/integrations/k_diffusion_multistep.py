"""k-diffusion's multistep samplers: linear multistep (LMS) and DPM-Solver++(2M)/(3M) SDE.

Re-exported by :mod:`sdekit.integrations.k_diffusion` (import them from there);
the conventions (denoiser ``model(x, sigma, **extra_args)``, descending
``sigmas`` in units of ``x`` usually ending in 0, per-sample ``extra_args``,
``generator`` / keyed ``seed=`` noise, callback keys) are that module's.  Each
sampler calls the model once per step and reuses the last ``order`` outputs;
the per-step scalars are computed once per call on the host in float64 from
``sigmas`` (read once).
"""

from __future__ import annotations

import math

import torch
from numpy.polynomial import polynomial as P
from tqdm.auto import trange

from .._checks import check_choice, check_model_output, check_nonnegative, check_positive_int, check_real
from ..sampling.dpm_solver import dpmpp_2m_coefficients, log_snr
from ._k_diffusion_support import SDE, report, setup, step_noise

__all__ = ["lms_coefficients", "sample_dpmpp_2m_sde", "sample_dpmpp_3m_sde", "sample_lms"]


def lms_coefficients(sigmas, order: int) -> list[list[float]]:
    """The weights of the linear multistep method on the grid ``sigmas``.

    ``c[i][j] = ∫_{σ_i}^{σ_{i+1}} ℓ_j(τ) dτ`` with ``ℓ_j`` the Lagrange basis
    polynomial of the node ``σ_{i−j}`` among ``σ_i, σ_{i−1}, …, σ_{i−m+1}``,
    ``m = min(i + 1, order)`` (Adams–Bashforth on a variable grid: Hairer,
    Nørsett & Wanner, *Solving ODEs I*, §III.5; k-diffusion's
    ``linear_multistep_coeff``, which integrates by quadrature).  Here each
    ``ℓ_j`` is integrated exactly, in float64, in the step's own variable
    ``u = (τ − σ_i)/(σ_{i+1} − σ_i) ∈ [0, 1]``, which keeps the polynomial's
    coefficients of order one.

    Args:
        sigmas: the ``n + 1`` grid points (floats, distinct; units of ``x``).
        order: the number of past slopes used, ``>= 1``.
    Returns:
        ``n`` lists, list ``i`` holding ``m`` weights (units of σ), newest slope first.
    Raises:
        ValueError / TypeError: if ``order`` is not an integer ``>= 1``.
    """
    order = check_positive_int("order", order)
    sigmas = [float(s) for s in sigmas]
    weights = []
    for i in range(len(sigmas) - 1):
        step = sigmas[i + 1] - sigmas[i]
        nodes = [(sigmas[i - k] - sigmas[i]) / step for k in range(min(i + 1, order))]
        row = []
        for j, node in enumerate(nodes):
            others = nodes[:j] + nodes[j + 1:]
            basis = P.polyfromroots(others) / math.prod(node - o for o in others)
            row.append(step * float(P.polyval(1.0, P.polyint(basis))))
        weights.append(row)
    return weights


@torch.no_grad()
def sample_lms(model, x, sigmas, extra_args=None, callback=None, disable=None, order=4):
    """Linear multistep (variable-step Adams–Bashforth) on the probability flow ``dx/dσ = (x − D)/σ``.

    Source: Karras et al. 2022, eq. 3 (the flow), stepped with the
    ``order``-step Adams–Bashforth formula on the non-uniform grid (Hairer,
    Nørsett & Wanner, §III.5), ``x ← x + Σ_j c_ij ε_{i−j}``,
    ``ε_k = (x_k − D(x_k, σ_k))/σ_k``, weights from :func:`lms_coefficients`
    (the first steps use the ``i + 1`` slopes there are); k-diffusion's
    ``sample_lms`` (whose weights come from ``scipy.integrate.quad``; here
    they are exact).  The step to ``σ = 0`` is a multistep step too.  One
    model call per step.

    Args:
        model: denoiser ``model(x, sigma, **extra_args)`` → ``(B, *D)``, ``sigma`` ``(B,)``.
        x: ``(B, *D)`` start, ``σ_0 ε``.
        sigmas: ``(n + 1,)`` strictly decreasing noise levels ``>= 0`` (units of ``x``).
        extra_args: per-sample keyword arguments for ``model`` (tensors ``(B, …)``).
        callback: called after each model call with ``{"x", "i", "sigma", "sigma_hat", "denoised"}``
            (k-diffusion's keys; ``sigma_hat`` is ``sigma``).
        disable: disable the tqdm bar.
        order: the number of slopes combined per step, an integer ``>= 1`` (1: Euler).
    Returns:
        ``(B, *D)`` the sample at ``sigmas[-1]``.
    Raises:
        ValueError: on ``order < 1``, bad ``x``/``sigmas`` (not decreasing,
            negative, non-finite), an ``extra_args`` tensor whose leading
            dimension is not ``B`` (naming it), a model output of the wrong shape.
        TypeError: on a non-integer ``order``, a non-callable model or non-mapping ``extra_args``.
    """
    order = check_positive_int("order", order)
    return slope_multistep(model, x, sigmas, extra_args, callback, disable, lambda v: lms_coefficients(v, order))


def slope_multistep(model, x, sigmas, extra_args, callback, disable, coefficients):
    """The loop of a linear multistep method on the flow slopes: ``x ← x + Σ_j c_ij ε_{i−j}``.

    ``coefficients(values)`` gives the weights per step (newest slope first)
    from the host copy of ``sigmas``; ``ε_k = (x_k − D(x_k, σ_k))/σ_k``.
    """
    denoiser, _, flow, values, kw = setup(model, x, sigmas, extra_args)
    weights = coefficients(values)
    depth = max((len(w) for w in weights), default=1)
    ones = x.new_ones([x.shape[0]])
    slopes = []  # ε of the last steps, newest first
    for i in trange(len(values) - 1, disable=disable):
        slopes = [flow.drift(x, sigmas[i] * ones, **kw)] + slopes[:depth - 1]
        report(callback, x, i, sigmas[i], sigmas[i], denoiser.last)
        x = x + sum(w * s for w, s in zip(weights[i], slopes))
    return x


@torch.no_grad()
def sample_dpmpp_2m_sde(model, x, sigmas, extra_args=None, callback=None, disable=None, eta=1.0, s_noise=1.0,
                        noise_sampler=None, solver_type="midpoint", generator=None, *, seed=None,
                        sample_index=None):
    """DPM-Solver++(2M) SDE: the second-order multistep data-prediction integrator of a reverse SDE.

    Source: Lu et al. 2022b ("DPM-Solver++"), the data-prediction exponential
    integrator (eq. 8) with the multistep correction of Algorithm 2, applied
    to the reverse SDE family ``dx = (1 + η)(x − D)/σ dσ + √(2ησ) dW̄`` of
    :class:`~sdekit.EDMSDE` (Karras et al. 2022, eq. 6 with ``β = η σ̇/σ``;
    ``η = 0`` the probability flow, ``η = 1`` the reverse-time SDE of Song
    et al. 2021, eq. 6), whose linear part is solved exactly; k-diffusion's
    ``sample_dpmpp_2m_sde``.  With ``λ = −log σ``, ``h = λ_{i+1} − λ_i``,
    ``ĥ = (1 + η) h``, ``r = h_{i−1}/h`` the step to ``σ' = σ_{i+1} > 0`` is

        x ← (σ'/σ) e^{−ηh} x + (1 − e^{−ĥ}) D_i + c (D_i − D_{i−1})/r + s_noise σ' √(1 − e^{−2ηh}) z

    with ``c = ½ (1 − e^{−ĥ})`` (``"midpoint"``, at ``η = 0`` exactly
    :func:`~sdekit.integrations.k_diffusion.sample_dpmpp_2m`) or
    ``c = 1 − (1 − e^{−ĥ})/ĥ`` (``"heun"``, the exact integral of ``D``
    linear in ``λ``); no correction on the first step, and the step to
    ``σ' = 0`` returns ``D(x, σ_i)``.  One model call per step.  The
    coefficients come from :func:`sdekit.sampling.dpm_solver.dpmpp_2m_coefficients`
    and :func:`~sdekit.sampling.dpm_solver.log_snr` (float64).

    The one deliberate difference from k-diffusion: its default ``noise_sampler``
    is a ``BrownianTreeNoiseSampler`` (torchsde); here the default noise ``z``
    is drawn from ``generator`` (the global RNG when ``None``), or keyed on
    ``seed``/``sample_index``, one draw per step.  With the same explicit
    ``noise_sampler`` (called as ``noise_sampler(sigmas[i], sigmas[i + 1])``,
    only where ``η > 0`` and ``σ' > 0``) the results agree with k-diffusion's.

    Args:
        model, x, sigmas, extra_args, disable: as :func:`sample_lms`.
        callback: called after each model call with ``{"x", "i", "sigma", "sigma_hat", "denoised"}``
            (``x`` the state before step ``i``, ``denoised`` ``D(x, σ_i)``).
        eta: ``η >= 0``, the SDE's noise (0: the deterministic DPM-Solver++(2M)).
        s_noise: noise multiplier.
        noise_sampler: ``noise_sampler(sigma, sigma_next)`` → ``(B, *D)`` standard normals.
        solver_type: ``"midpoint"`` or ``"heun"``.
        generator: ``torch.Generator`` for the default noise (default: the global RNG).
        seed: keyed, batch-invariant noise instead (int in ``[0, 2**64)``).
        sample_index: int64 ``(B,)`` indices keying each row's noise with ``seed`` (default ``arange(B)``).
    Returns:
        ``(B, *D)`` the sample at ``sigmas[-1]``.
    Raises:
        ValueError: on ``eta < 0``, non-finite ``eta``/``s_noise``, an unknown
            ``solver_type``, ``noise_sampler`` with ``seed``/``sample_index``/``generator``,
            ``seed`` with ``generator``, ``sample_index`` without ``seed``, a bad
            ``seed``/``sample_index``, a ``noise_sampler`` or model output not of
            ``x``'s shape, or as :func:`sample_lms`.
        TypeError: as :func:`sample_lms`; if ``noise_sampler`` is not callable.
    """
    check_choice("solver_type", solver_type, ("heun", "midpoint"))
    return _multistep_sde(model, x, sigmas, extra_args, callback, disable, eta, s_noise,
                          (noise_sampler, seed, sample_index, generator), order=2, midpoint=solver_type == "midpoint")


@torch.no_grad()
def sample_dpmpp_3m_sde(model, x, sigmas, extra_args=None, callback=None, disable=None, eta=1.0, s_noise=1.0,
                        noise_sampler=None, generator=None, *, seed=None, sample_index=None):
    """DPM-Solver++(3M) SDE: the third-order multistep data-prediction integrator of a reverse SDE.

    Source: Lu et al. 2022b ("DPM-Solver++"), multistep data prediction
    (Algorithm 2, extended to three steps as DPM-Solver++(3M)) on the
    reverse SDE of :func:`sample_dpmpp_2m_sde`; k-diffusion's
    ``sample_dpmpp_3m_sde``.  With ``h``, ``ĥ = (1 + η) h``, ``φ₁ = 1 − e^{−ĥ}``,
    ``φ₂ = 1 − φ₁/ĥ``, ``φ₃ = φ₂/ĥ − ½`` and ``r₀ = h_{i−1}/h``,
    ``r₁ = h_{i−2}/h``, the step to ``σ' > 0`` is

        x ← (σ'/σ) e^{−ηh} x + φ₁ D_i + φ₂ d₁ − φ₃ d₂ + s_noise σ' √(1 − e^{−2ηh}) z,

    ``d₁ = δ₀ + (δ₀ − δ₁) r₀/(r₀ + r₁)``, ``d₂ = (δ₀ − δ₁)/(r₀ + r₁)``,
    ``δ₀ = (D_i − D_{i−1})/r₀``, ``δ₁ = (D_{i−1} − D_{i−2})/r₁`` (the
    official DPM-Solver++(3M) update; evaluated here as one weighted sum of
    ``D_i, D_{i−1}, D_{i−2}`` with float64 weights).  The second step uses
    ``φ₂ δ₀`` alone (:func:`sample_dpmpp_2m_sde`'s ``"heun"``), the first none;
    the step to ``σ' = 0`` returns ``D(x, σ_i)``.  One model call per step.
    Default noise: as :func:`sample_dpmpp_2m_sde` (the one deliberate
    difference from k-diffusion, whose default is a Brownian tree).

    Args:
        eta, s_noise, noise_sampler, generator, seed, sample_index, and the rest:
            as :func:`sample_dpmpp_2m_sde`.
    Returns:
        ``(B, *D)`` the sample at ``sigmas[-1]``.
    Raises:
        ValueError / TypeError: as :func:`sample_dpmpp_2m_sde` (there is no ``solver_type``).
    """
    return _multistep_sde(model, x, sigmas, extra_args, callback, disable, eta, s_noise,
                          (noise_sampler, seed, sample_index, generator), order=3, midpoint=False)


def _multistep_sde(model, x, sigmas, extra_args, callback, disable, eta, s_noise, noise_args, order, midpoint):
    """The loop of DPM-Solver++(2M)/(3M) SDE: ``x ← a x + Σ_j w_j D_{i−j} + b z`` (scalars precomputed)."""
    eta, s_noise = check_nonnegative("eta", eta), check_real("s_noise", s_noise)
    denoiser, _, _, values, kw = setup(model, x, sigmas, extra_args)
    draw = step_noise(x, sigmas, *noise_args)
    steps = _sde_steps([v for v in values if v > 0], eta, order, midpoint)
    ones = x.new_ones([x.shape[0]])
    history = []  # D of the last steps, newest first
    for i in trange(len(values) - 1, disable=disable):
        x0 = check_model_output("denoiser", denoiser(x, sigmas[i] * ones, **kw), x)
        report(callback, x, i, sigmas[i], sigmas[i], x0)
        history = [x0] + history[:order - 1]
        if values[i + 1] == 0:  # λ = ∞: the exact step to σ = 0 returns D
            x = x0
            continue
        decay, weights, noise = steps[i]
        x = decay * x + sum(w * d for w, d in zip(weights, history))
        if noise > 0:
            x = x + draw(i) * (s_noise * noise)
    return x


def _sde_steps(grid: list[float], eta: float, order: int, midpoint: bool):
    """Per step between the positive ``grid`` points: ``(decay, weights of D_i, D_{i−1}, …, noise scale)``."""
    if len(grid) < 2:
        return []
    sigma = torch.tensor(grid, dtype=torch.float64)
    co = dpmpp_2m_coefficients(SDE, sigma)  # ratio σ_{i+1}/σ_i, r_i = h_{i−1}/h_i (λ checked to increase)
    h = log_snr(SDE, sigma[1:]) - log_snr(SDE, sigma[:-1])
    h_hat = (1 + eta) * h
    decay = (torch.tensor(co.ratio, dtype=torch.float64) * torch.exp(-eta * h)).tolist()
    phi1 = -torch.expm1(-h_hat)
    phi2 = 1 - phi1 / h_hat
    phi3 = phi2 / h_hat - 0.5
    noise = (sigma[1:] * torch.sqrt(-torch.expm1(-2 * eta * h))).tolist()
    phi1_, phi2_, phi3_, r = phi1.tolist(), phi2.tolist(), phi3.tolist(), co.r
    steps = []
    for i in range(len(h)):
        p1, p2, p3 = phi1_[i], phi2_[i], phi3_[i]
        if i == 0:
            weights: tuple[float, ...] = (p1,)
        elif order == 2 or i == 1:  # c (D_i − D_{i−1})/r
            c = (0.5 * p1 if order == 2 and midpoint else p2) / r[i]
            weights = (p1 + c, -c)
        else:  # φ₂ d₁ − φ₃ d₂ = (φ₂ + k) δ₀ − k δ₁, k = (φ₂ r₀ − φ₃)/(r₀ + r₁)
            r0, r1 = r[i], r[i] * r[i - 1]
            k = (p2 * r0 - p3) / (r0 + r1)
            weights = (p1 + (p2 + k) / r0, -(p2 + k) / r0 - k / r1, k / r1)
        steps.append((decay[i], weights, noise[i]))
    return steps
