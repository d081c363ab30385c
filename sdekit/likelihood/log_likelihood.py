"""``sdekit.log_likelihood``: exact log-likelihood through the probability-flow ODE."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .._checks import check_batch, check_choice, check_eps, check_finite, check_positive_int, check_sde, check_tensor
from ..conditioning import flatten_model_kwargs, unbind_conditioning
from ..faults import as_monitor
from ..noise import check_sample_index, counter_normal, counter_rademacher, noise_kind
from ..score_models import checked_score
from ..solvers.adaptive import solve_adaptive
from .divergence import exact_divergence, hutchinson_divergence, probe_noise


@dataclass
class LikelihoodResult:
    """Output of :func:`log_likelihood`.

    Attributes:
        log_prob: ``(B,)`` log p_eps(x) in nats (mean over probes).
        stderr: ``(B,)`` standard error of ``log_prob`` across probes: 0 for the
            exact trace, NaN for Hutchinson with ``probes=1`` (not estimable).
        nfe: ``(B,)`` int64, probability-flow evaluations per sample (each costs
            one forward and ``probes`` VJPs, or ``D`` VJPs for the exact trace).
        prior_log_prob: ``(B,)`` log p_T(x_T) in nats.
        x_T: ``(B, *D)`` the ODE's end state (the latent code).
    """

    log_prob: torch.Tensor
    stderr: torch.Tensor
    nfe: torch.Tensor
    prior_log_prob: torch.Tensor
    x_T: torch.Tensor


def log_likelihood(
    score,
    sde,
    x: torch.Tensor,
    trace: str = "hutchinson",
    probes: int = 1,
    noise: str = "rademacher",
    rtol: float = 1e-5,
    atol: float = 1e-5,
    eps: float = 1e-5,
    generator: torch.Generator | None = None,
    *,
    max_steps: int = 10_000,
    seed: int | None = None,
    sample_index: torch.Tensor | None = None,
    monitor=None,
    model_kwargs: dict | None = None,
) -> LikelihoodResult:
    """Log-density of ``x`` under the model ``p_eps``, by the instantaneous change of variables.

    Integrates the augmented probability-flow ODE from ``t = eps`` to ``T``:
    ``dx/dt = f̃(x, t) = f − ½ g² s``, ``dℓₚ/dt = vₚᵀ (∂f̃/∂x) vₚ`` (one VJP per
    probe per evaluation, probes fixed over the integration), then
    ``log p_eps(x) = log p_T(x_T) + mean_p ℓₚ(T)``.
    Source: Song et al. 2021, Appendix D.2, eq. 39; Chen et al. 2018 (neural
    ODEs), Theorem 1; Grathwohl et al. 2019 (FFJORD), eq. 7.  Each probe's ℓₚ
    is integrated as its own component, so the spread across probes gives a
    standard error.  RK45 with per-sample error control over the whole
    augmented state; no scipy, no host round trip but one sync per step.

    Args:
        score: score model ``score(x, t, **model_kwargs)``, differentiable in
            ``x`` (autograd is enabled inside, even under ``torch.no_grad``).
        sde: forward SDE with ``prior_log_prob``.
        x: ``(B, *D)`` data (already dequantised; see :func:`sdekit.bits_per_dim`).
        trace: ``"hutchinson"`` (unbiased estimate) or ``"exact"`` (``D`` VJPs per evaluation).
        probes: Hutchinson probes per sample ``P``.
        noise: probe distribution, ``"rademacher"`` or ``"gaussian"``.
        rtol, atol: RK45 tolerances (score_sde: 1e-5).
        eps: start time of the integration (score_sde: 1e-5).
        generator: ``torch.Generator`` for the probes.
        max_steps: RK45 step-attempt bound per sample.
        seed: draw the probes instead from counter-based Philox noise keyed by
            ``(seed, sample_index[b])`` on stream :data:`PROBE_STREAM`
            (:func:`sdekit.noise.counter_rademacher` / ``counter_normal``), so
            a sample's probes, hence its estimate, do not depend on the batch
            (not together with ``generator``).
        sample_index: int64 ``(B,)`` global indices of the rows of ``x``, values
            in [0, 2³²) (default ``arange(B)``; only with ``seed``).
        monitor: optional :class:`sdekit.faults.NonFiniteMonitor`: records where
            a sample's augmented ODE first returned a non-finite value (its
            evaluation number and ``t``), freezes that sample so the others
            finish, and sets its outputs to NaN.
        model_kwargs: per-sample conditioning for the score model (tensors
            ``(B, …)``; :mod:`sdekit.conditioning`), gathered with the samples
            RK45 still integrates, so ``log_prob[b]`` is ``log p(x_b | c_b)``.
    Returns:
        :class:`LikelihoodResult`; ``log_prob`` in nats, shape ``(B,)``.
    Raises:
        ValueError / TypeError: on a bad argument (named), e.g. ``sde`` not an
            SDE object (TypeError), ``x`` with no rows (``B = 0``), ``eps``
            outside ``(0, T)`` or with ``σ(eps) = 0``; non-finite ``x``, a
            ``model_kwargs`` tensor whose leading dimension is not ``B``, or a
            score model returning the wrong shape.
        ToleranceNotMetError: if RK45 exceeds ``max_steps``.
    """
    check_sde("sde", sde)
    check_tensor("x", x, min_dim=2)
    check_batch("x", x)
    check_finite("x", x)
    check_choice("trace", trace, ("hutchinson", "exact"))
    check_choice("noise", noise, ("rademacher", "gaussian"))
    probes = check_positive_int("probes", probes)
    eps = check_eps(sde, eps)
    B, shape = x.shape[0], x.shape[1:]
    score, model_kwargs = unbind_conditioning(checked_score(score), model_kwargs, B, device=x.device)
    flow = sde.probability_flow(score)
    D = x[0].numel()
    n_div = probes if trace == "hutchinson" else 1
    leaves, rebuild = flatten_model_kwargs(model_kwargs)
    n_cond = len(leaves)

    def augmented(t, y, *rest):
        cond, v = rebuild(rest[:n_cond]), rest[n_cond:]
        xt = y[:, :D].reshape((-1,) + tuple(shape))
        with torch.enable_grad():
            xt = xt.detach().requires_grad_(True)
            f = flow.drift(xt, t, **cond)
            div = hutchinson_divergence(f, xt, v[0]) if v else exact_divergence(f, xt)
        return torch.cat([f.detach().flatten(1), div.detach()], dim=1)

    args = leaves
    if trace == "hutchinson":
        args = leaves + (_probes(x, probes, noise, generator, seed, sample_index),)
    y0 = torch.cat([x.flatten(1), x.new_zeros(B, n_div)], dim=1)
    func, args = as_monitor(monitor).wrap_rhs(augmented, args)
    sol = solve_adaptive(func, y0, eps, sde.T, rtol=rtol, atol=atol, max_steps=max_steps, args=args)
    y_T = as_monitor(monitor).fill_nan(sol.y)
    x_T = y_T[:, :D].reshape(x.shape)
    delta = y_T[:, D:]
    prior = sde.prior_log_prob(x_T)
    if trace == "exact":
        stderr = torch.zeros(B, dtype=x.dtype, device=x.device)
    elif probes == 1:
        stderr = torch.full((B,), math.nan, dtype=x.dtype, device=x.device)
    else:
        stderr = delta.std(dim=1) / math.sqrt(probes)
    return LikelihoodResult(log_prob=prior + delta.mean(1), stderr=stderr, nfe=sol.nfe, prior_log_prob=prior, x_T=x_T)


#: Noise stream of keyed Hutchinson probes (the samplers use streams from 0 up, one per step).
PROBE_STREAM = 2**32 - 1


def _probes(x, probes: int, noise: str, generator, seed, sample_index) -> torch.Tensor:
    """``(B, P, *D)`` Hutchinson probes: from ``generator``, or keyed by ``(seed, sample_index)``."""
    B, shape = x.shape[0], (probes,) + tuple(x.shape[1:])
    if noise_kind(seed, sample_index, generator, what="the probes") == "generator":
        return probe_noise((B,) + shape, noise, generator=generator, device=x.device, dtype=x.dtype)
    idx = torch.arange(B, device=x.device) if sample_index is None else check_sample_index(sample_index, B)
    draw = counter_rademacher if noise == "rademacher" else counter_normal
    return draw(seed, PROBE_STREAM, idx.to(x.device), shape, dtype=x.dtype)
