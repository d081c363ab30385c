"""The per-call arithmetic of :class:`~sdekit.integrations.diffusers_scheduler.SDEScheduler`.

Each function applies one stage of an sdekit sampler to one model call's
output, already turned into a score (a "frozen" score model that returns it).
The samplers' math lives in :mod:`sdekit.sampling`; this module only wires it
to diffusers' one-model-call-per-``step`` protocol.
"""

from __future__ import annotations

import numpy as np
import torch

from .._checks import expand_as_batch
from ..sampling.correctors import CORRECTORS
from ..sampling.denoise import posterior_mean
from ..sampling.dpm_solver import dpmpp_2m_update
from ..sampling.predictors import PREDICTORS, AbstractPredictor, DDIMPredictor
from ..sampling.sigma_space import scaled_state, unscaled_state
from ..score_models import Frozen, score_from_x0
from ._scheduler_schedule import Stage


def dynamic_threshold(x0: torch.Tensor, ratio: float, max_value: float) -> torch.Tensor:
    """Dynamic thresholding of x̂₀ (Saharia et al. 2022, "Imagen", §2.3).

    Per sample, ``s`` = the ``ratio`` quantile of ``|x̂₀|``, clamped to
    ``[1, max_value]``; returns ``clamp(x̂₀, −s, s)/s``, shape and dtype of
    ``x0`` ``(B, *D)`` (the quantile is taken in float32 for half precision).
    """
    flat = x0.reshape(x0.shape[0], -1)
    if flat.dtype not in (torch.float32, torch.float64):
        flat = flat.float()
    s = torch.quantile(flat.abs(), ratio, dim=1).clamp(min=1.0, max=max_value).unsqueeze(1)
    return (flat.clamp(-s, s) / s).reshape(x0.shape).to(x0.dtype)


def score_and_x0(cfg, adapter, sde, model_output, sample, t):
    """Score and x̂₀ at ``(sample, t)`` from the network's output (thresholded or clipped if configured).

    ``adapter`` is ``score_from_epsilon``/``score_from_x0``/``score_from_v``;
    ``t`` ``(B,)`` float64.  x̂₀ is Tweedie's ``(x + σ² s)/m``; after dynamic
    thresholding (``cfg.thresholding``, which takes precedence, as in
    diffusers) or clipping (``cfg.clip_sample``) the score is recomputed from the
    processed x̂₀, so every method samples with it.
    """
    score = adapter(Frozen(model_output), sde)(sample, t).to(sample.dtype)
    m = expand_as_batch(sde.mean_coeff(t), sample)
    var = expand_as_batch(sde.std(t) ** 2, sample)
    x0 = posterior_mean(sample, score, var, m).to(sample.dtype)
    if cfg.thresholding:
        x0 = dynamic_threshold(x0, cfg.dynamic_thresholding_ratio, cfg.sample_max_value)
    elif cfg.clip_sample:
        x0 = x0.clamp(-cfg.clip_sample_range, cfg.clip_sample_range)
    else:
        return score, x0
    return score_from_x0(Frozen(x0), sde)(sample, t).to(sample.dtype), x0


def predict(cfg, sde, score, sample, t_i, t_next, noise, last: bool, eta: float = 0.0):
    """The SDE predictor from ``t_i`` to ``t_next``; the last interval (to the data) adds no noise.

    ``eta``: DDIM's noise fraction (``method="ddim"``); at ``η = 0`` no noise is
    drawn (as ``DDIMScheduler``, so a ``generator`` is not advanced).
    """
    frozen = Frozen(score)
    if cfg.method in ("ddim", "euler_ancestral"):  # k-diffusion's Euler ancestral step is DDIM at η = 1
        predictor: AbstractPredictor = DDIMPredictor(sde, frozen, 1.0 if cfg.method == "euler_ancestral" else eta)
    else:
        predictor = PREDICTORS[cfg.method](sde, frozen)
    quiet = last or (cfg.method == "ddim" and eta == 0.0)
    z = torch.zeros_like(sample) if quiet else noise()
    if cfg.method == "ancestral" and cfg.variance_type in ("fixed_large", "fixed_large_log"):
        _, x_mean = predictor.step(sample, t_i, t_next, torch.zeros_like(sample))
        g = sde.transition(t_next, t_i)[2]  # G² = 1 − ᾱ_t/ᾱ_s: the "β" of the strided step
        return x_mean + expand_as_batch(g.to(sample.dtype), sample) * z
    return predictor.step(sample, t_i, t_next, z)[0]


def correct(cfg, sde, score, sample, t_i, t_next, noise):
    """One Langevin corrector step at ``t_i`` (Song et al. 2021, Algorithms 4–5)."""
    if cfg.corrector == "langevin":
        fix = CORRECTORS["langevin"](sde, Frozen(score), cfg.snr, 1, norm=cfg.corrector_norm)
    else:
        fix = CORRECTORS[cfg.corrector](sde, Frozen(score), cfg.snr, 1, cfg.corrector_norm != "batch_mean")
    return fix.correct(sample, t_i, t_next, noise)[0]


def flow_drift(sde, score, sample, t):
    """Drift of the probability-flow ODE (Song et al. 2021, eq. 13) at ``(sample, t)``."""
    return sde.probability_flow(Frozen(score)).drift(sample, t.to(sample.dtype))


def dpmpp_2m(co, i: int, sample, x0, x0_prev, last: bool):
    """DPM-Solver++(2M) from ``t_i`` to ``t_{i+1}`` with coefficients ``co`` of
    :func:`sdekit.sampling.dpm_solver.dpmpp_2m_coefficients` (Lu et al. 2022b, Algorithm 2).

    ``x0_prev``: x̂₀ of the previous interval's call, or ``None`` (first order,
    ``D = x̂₀``).  The last interval ends at ``σ = 0``, where the first-order
    update returns x̂₀ itself (``σ_{i+1}/σ_i = 0``, ``−α(e^{−h} − 1) = 1``).
    """
    if last:
        return x0
    return dpmpp_2m_update(co, i, sample - co.offset[i], x0, x0_prev) + co.offset[i + 1]


def unipc(stepper, sde, sample, x0, t_i, t_next, i: int):
    """UniPC (:class:`~sdekit.integrations.k_diffusion_unipc.UniPCStepper`) from ``t_i`` to ``t_next``.

    The stepper works on the scaled state ``x̃ = (x − c)/α`` at ``σ̃ = σ/α``, where x̂₀ is the denoiser's
    output (:mod:`sdekit.sampling.sigma_space`); ``t_i``, ``t_next`` ``(B,)`` float64.
    """
    out = stepper.predict(i, stepper.correct(scaled_state(sde, sample, t_i), x0))
    return unscaled_state(sde, out, t_next)


def multistep(stepper, sde, sample, x0, t_i, t_next, i: int, sigma_i: float, noise):
    """A one-call multistep stepper (:mod:`sdekit.integrations.k_diffusion_multistep`) from ``t_i`` to ``t_next``.

    As :func:`unipc`: the stepper works on ``x̃ = (x − c)/α`` at ``σ̃ = σ/α`` (``sigma_i`` its ``σ̃_i``), with
    x̂₀ the denoiser's output; its noise, drawn in ``x̃``, is scaled back with the state.
    """
    out = stepper.step(i, scaled_state(sde, sample, t_i), x0, _level(sample, sigma_i), noise)
    return unscaled_state(sde, out, t_next)


def sigma_flow(stage, stepper, sde, sample, x0, t_i, t_next, sigma_i: float, sigma_next: float):
    """Euler or Heun (:class:`~sdekit.integrations.k_diffusion.FlowStepper`) in ``σ̃`` from ``t_i`` to ``t_next``.

    On the scaled state as :func:`unipc`.  ``Stage.HEUN_CORRECT`` gets the Euler point (at ``t_next``) and
    its x̂₀, and completes the trapezoidal step the stepper's last :meth:`predict` began; any other stage is
    the Euler step (the sample for the corrector's model call, for ``Stage.HEUN_PREDICT``).
    """
    if stage is Stage.HEUN_CORRECT:
        out = stepper.correct(scaled_state(sde, sample, t_next), x0, _level(sample, sigma_next))
    else:
        out = stepper.predict(scaled_state(sde, sample, t_i), x0, _level(sample, sigma_i), _level(sample, sigma_next))
    return unscaled_state(sde, out, t_next)


def midpoint_step(stage, state, method: str, sde, sample, x0, t_i, t_mid, t_next, sigmas, pp2s, i: int):
    """DPM-Solver-2 / DPM-Solver++(2S) (the steppers of :mod:`sdekit.integrations.k_diffusion_singlestep`) on
    the scaled state, one model call at a time; returns ``(prev, state)``.

    ``Stage.MID_PREDICT`` (at ``t_i``) returns the midpoint state at ``t_mid`` for the next call, or on the
    last interval (to ``σ̃ = 0``) the whole step (Euler for ``dpm_2``, x̂₀ for ``dpmpp_2s``);
    ``Stage.MID_CORRECT`` (at ``t_mid``, with ``state`` from the predictor) ends the interval at ``t_next``.
    ``sigmas``: the host ``σ̃`` of the grid; ``pp2s``: the schedule's
    :class:`~sdekit.integrations.k_diffusion_singlestep.DPMpp2SStepper` (``dpmpp_2s``); ``state``: the
    ``dpm_2`` predictor's ``(stepper, σ̃_m)``, or ``dpmpp_2s``'s saved state.
    """
    from .k_diffusion import FlowStepper
    from .k_diffusion_singlestep import DPM2Stepper

    if stage is Stage.MID_CORRECT:
        u = scaled_state(sde, sample, t_mid)
        if method == "dpm_2":
            stepper, level_mid = state
            out = stepper.correct(u, x0, level_mid)
        else:
            pp2s.pending = state
            out = pp2s.correct(i, x0)
        return unscaled_state(sde, out, t_next), None
    scaled = scaled_state(sde, sample, t_i)
    if sigmas[i + 1] == 0:  # the last interval: one call
        if method == "dpm_2":
            out = FlowStepper().predict(scaled, x0, _level(sample, sigmas[i]), _level(sample, 0.0))
        else:
            out = x0
        return unscaled_state(sde, out, t_next), None
    if method == "dpm_2":
        stepper = DPM2Stepper()
        u, level_mid = stepper.predict(scaled, x0, _level(sample, sigmas[i]), _level(sample, sigmas[i + 1]))
        return unscaled_state(sde, u, t_mid), (stepper, level_mid)
    u = pp2s.predict(i, scaled, x0)
    return unscaled_state(sde, u, t_mid), pp2s.pending


def _level(like: torch.Tensor, sigma: float) -> torch.Tensor:
    """A noise level for every row of ``like``: ``(B,)`` in its dtype and device."""
    return torch.full((like.shape[0],), sigma, dtype=like.dtype, device=like.device)


def summary(values) -> str:
    """A short text of a timestep list for error messages."""
    vals = np.asarray(values).tolist()
    if len(vals) <= 6:
        return str(vals)
    return f"[{', '.join(map(str, vals[:3]))}, …, {', '.join(map(str, vals[-2:]))}] ({len(vals)} entries)"
