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
from ._k_diffusion_support import SDE, flow_slope, report, setup, step_noise

__all__ = ["DPMSolverSDEStepper", "SlopeMultistepStepper", "lms_coefficients", "sample_dpmpp_2m_sde",
           "sample_dpmpp_3m_sde", "sample_lms"]


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
    return slope_multistep(model, x, sigmas, extra_args, callback, disable, order, lms_coefficients)


class SlopeMultistepStepper:
    """The state of one linear-multistep run on the flow slopes (LMS, DEIS): ``x ← x + Σ_j c_ij ε_{i−j}``.

    The one step implementation behind :func:`sample_lms`, :func:`~sdekit.integrations.k_diffusion.sample_deis`
    and the diffusers scheduler's ``method="lms"``/``"deis"``
    (:class:`~sdekit.integrations.diffusers_scheduler.SDEScheduler`).  ``ε_k = (x_k − D_k)/σ_k``
    (:func:`~sdekit.integrations._k_diffusion_support.flow_slope`).  Step ``i`` uses the weights
    ``coefficients(values, order)[i]``; a run that starts at ``i > 0`` (fewer slopes stored than those
    weights combine) uses the weights of the order it has, ``coefficients(values, stored)[i]``.

    Args:
        values: the ``n + 1`` noise levels (host floats, strictly decreasing, ``>= 0``).
        order: the number of slopes combined, ``>= 1``.
        coefficients: ``coefficients(values, order)`` → ``n`` weight lists, newest slope first
            (:func:`lms_coefficients`, :func:`~sdekit.integrations.k_diffusion_deis.deis_coefficients`).
    """

    def __init__(self, values, order: int, coefficients) -> None:
        self.values, self.order, self._coefficients = [float(v) for v in values], order, coefficients
        self._tables = {order: coefficients(self.values, order)}
        self.slopes: list = []  # ε of the last steps, newest first

    def step(self, i: int, x: torch.Tensor, denoised: torch.Tensor, sigma: torch.Tensor, noise=None) -> torch.Tensor:
        """From ``σ_i`` to ``σ_{i+1}``, given ``D(x, σ_i)``; ``sigma`` ``(B,)`` holds ``σ_i`` (``noise`` unused)."""
        self.slopes = [flow_slope(x, denoised, sigma)] + self.slopes[:self.order - 1]
        row = self._tables[self.order][i]
        if len(row) > len(self.slopes):  # a run started midway: the order it has
            m = len(self.slopes)
            if m not in self._tables:  # computed once per order, not per step
                self._tables[m] = self._coefficients(self.values, m)
            row = self._tables[m][i]
        return x + sum(w * e for w, e in zip(row, self.slopes))


def one_call_loop(model, x, sigmas, extra_args, callback, disable, make_stepper, draw=None):
    """The loop of a one-call-per-step sampler: ``D = model(x, σ_i)``, then ``x ← stepper.step(i, x, D, …)``.

    ``make_stepper(values)`` builds the stepper from the host copy of ``sigmas``; ``draw(i)``, if given,
    is step ``i``'s noise (passed to the stepper as a thunk, drawn only if it is used).
    """
    denoiser, _, _, values, kw = setup(model, x, sigmas, extra_args)
    stepper = make_stepper(values)
    ones = x.new_ones([x.shape[0]])
    for i in trange(len(values) - 1, disable=disable):
        sigma = sigmas[i] * ones
        x0 = check_model_output("denoiser", denoiser(x, sigma, **kw), x)
        report(callback, x, i, sigmas[i], sigmas[i], x0)
        x = stepper.step(i, x, x0, sigma, None if draw is None else (lambda i=i: draw(i)))
    return x


def slope_multistep(model, x, sigmas, extra_args, callback, disable, order, coefficients):
    """:func:`one_call_loop` with a :class:`SlopeMultistepStepper` (``coefficients(values, order)``)."""
    return one_call_loop(model, x, sigmas, extra_args, callback, disable,
                         lambda values: SlopeMultistepStepper(values, order, coefficients))


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
                        noise_sampler=None, generator=None, *, seed=None, sample_index=None,
                        exact_third_order=False):
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

    ``exact_third_order=True`` (opt-in; sdekit's, not the peers'): the weight ``−2φ₃`` on ``d₂`` instead of
    ``−φ₃``.  ``d₂ ≈ h² D''/2``, and the exact integral of a quadratic ``D(λ)`` over the step weights it by
    ``∫₀¹ ĥ e^{−ĥ(1−v)} v² dv = 1 − 2φ₂/ĥ = −2φ₃``; with ``−φ₃`` (the official update, k-diffusion's and
    diffusers') the step is exact only for linear ``D`` and the method is second order.

    Args:
        eta, s_noise, noise_sampler, generator, seed, sample_index, and the rest:
            as :func:`sample_dpmpp_2m_sde`.
        exact_third_order: the weight that integrates a quadratic ``D`` exactly (default ``False``: the
            peers' update).
    Returns:
        ``(B, *D)`` the sample at ``sigmas[-1]``.
    Raises:
        ValueError / TypeError: as :func:`sample_dpmpp_2m_sde` (there is no ``solver_type``).
    """
    return _multistep_sde(model, x, sigmas, extra_args, callback, disable, eta, s_noise,
                          (noise_sampler, seed, sample_index, generator), order=3, midpoint=False,
                          quadratic=2.0 if exact_third_order else 1.0)


class DPMSolverSDEStepper:
    """The state of one DPM-Solver++(2M)/(3M) SDE run: ``x ← a x + Σ_j w_j D_{i−j} + b z``, the last ``D``.

    The one step implementation behind :func:`sample_dpmpp_2m_sde`, :func:`sample_dpmpp_3m_sde` (and so
    ``dpmpp_3m`` at ``η = 0``) and the diffusers scheduler's ``method="dpmpp_2m_sde"``/``"dpmpp_3m_sde"``/
    ``"dpmpp_3m"``.  Step ``i`` combines the ``k = min(order, stored)`` newest ``D`` (``k = min(order, i + 1)``
    on a whole run: first order on the first step, as the papers); the step to ``σ = 0`` returns ``D``.

    Args:
        values: the ``n + 1`` noise levels (host floats, strictly decreasing, ``>= 0``).
        eta, s_noise: the SDE's ``η >= 0`` and the noise multiplier.
        order: 2 or 3.
        midpoint: the second-order correction ``½ φ₁ (D_i − D_{i−1})/r`` (``"midpoint"``, k-diffusion's
            2M default and diffusers' default at every order) instead of ``φ₂ (D_i − D_{i−1})/r``
            (``"heun"``, what k-diffusion's 3M takes on its second step).
        lower_order_final: diffusers' rule for grids of fewer than 15 steps: the second-to-last step at
            order ``<= 2`` (k-diffusion has no such rule: ``False``).
        quadratic: the multiple of ``−φ₃`` that weights ``d₂`` in the third-order step (1: the peers'
            update; 2: exact for a quadratic ``D``, :func:`sample_dpmpp_3m_sde`'s ``exact_third_order``).
    """

    def __init__(self, values, eta: float, s_noise: float, order: int, midpoint: bool,
                 lower_order_final: bool = False, quadratic: float = 1.0) -> None:
        self.values, self.order, self.s_noise = [float(v) for v in values], order, s_noise
        self.steps = _sde_steps([v for v in self.values if v > 0], eta, order, midpoint, quadratic)
        n = len(self.values) - 1
        self._lowered = n - 2 if lower_order_final and n < 15 else None  # the step capped at order 2
        self.history: list = []  # D of the last steps, newest first

    def step(self, i: int, x: torch.Tensor, denoised: torch.Tensor, sigma=None, noise=None) -> torch.Tensor:
        """From ``σ_i`` to ``σ_{i+1}`` given ``D(x, σ_i)``; ``noise()`` → ``(B, *D)`` standard normals, called
        only where the step adds noise (``η > 0``, ``σ_{i+1} > 0``)."""
        self.history = [denoised] + self.history[:self.order - 1]
        if self.values[i + 1] == 0:  # λ = ∞: the exact step to σ = 0 returns D
            return denoised
        decay, rows, scale = self.steps[i]
        k = min(len(self.history), 2) if i == self._lowered else len(self.history)
        x = decay * x + sum(w * d for w, d in zip(rows[k - 1], self.history))
        if scale > 0:
            x = x + noise() * (self.s_noise * scale)
        return x


def _multistep_sde(model, x, sigmas, extra_args, callback, disable, eta, s_noise, noise_args, order, midpoint,
                   quadratic=1.0):
    """:func:`one_call_loop` with a :class:`DPMSolverSDEStepper`."""
    eta, s_noise = check_nonnegative("eta", eta), check_real("s_noise", s_noise)
    return one_call_loop(model, x, sigmas, extra_args, callback, disable,
                         lambda values: DPMSolverSDEStepper(values, eta, s_noise, order, midpoint, quadratic=quadratic),
                         step_noise(x, sigmas, *noise_args))


def _sde_steps(grid: list[float], eta: float, order: int, midpoint: bool, quadratic: float = 1.0):
    """Per step between the positive ``grid`` points: ``(decay, rows, noise scale)``, ``rows[k − 1]`` the
    weights of ``D_i, D_{i−1}, …`` at order ``k = 1 … min(order, i + 1)``."""
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
        rows: list[tuple[float, ...]] = [(p1,)]
        if i >= 1:  # c (D_i − D_{i−1})/r
            c = (0.5 * p1 if midpoint else p2) / r[i]
            rows.append((p1 + c, -c))
        if i >= 2 and order == 3:  # φ₂ d₁ − qφ₃ d₂ = (φ₂ + k) δ₀ − k δ₁, k = (φ₂ r₀ − qφ₃)/(r₀ + r₁)
            r0, r1 = r[i], r[i] * r[i - 1]
            k = (p2 * r0 - quadratic * p3) / (r0 + r1)
            rows.append((p1 + (p2 + k) / r0, -(p2 + k) / r0 - k / r1, k / r1))
        steps.append((decay[i], rows, noise[i]))
    return steps
