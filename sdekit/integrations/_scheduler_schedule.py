"""Schedule arithmetic of :class:`~sdekit.integrations.diffusers_scheduler.SDEScheduler` (no diffusers state).

* :func:`training_schedule` — the training chain's ``betas``, ``alphas``,
  ``alphas_cumprod`` from a scheduler config (diffusers' beta schedules).
* :func:`spaced_timesteps` — diffusers' ``leading``/``trailing``/``linspace``
  inference timesteps (Lin et al. 2024, Table 2).
* :func:`sigma_grid_timesteps` — Karras / exponential / beta noise levels
  mapped to (fractional) training timesteps.
* :func:`build_plan` — one stage per model call, the timestep of each call,
  and the table that finds a run's position from a timestep.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass

import numpy as np
import torch

#: The SDE methods (one ``step`` = one stage of the sampler; see the scheduler's module docstring).
SDE_METHODS = ("ancestral", "euler_maruyama", "reverse_diffusion", "ddim", "euler_ancestral")
#: The one-call multistep methods of the noise-level family (one ``step`` each, a stepper of
#: :mod:`sdekit.integrations.k_diffusion_multistep` on the scaled state).
MULTISTEP_METHODS = ("lms", "deis", "dpmpp_3m", "dpmpp_2m_sde", "dpmpp_3m_sde")
#: Every ``method`` of :class:`~sdekit.integrations.diffusers_scheduler.SDEScheduler`.
#: Euler and Heun steps of the probability flow in ``σ̃ = σ/α`` (k-diffusion's, diffusers' Euler/Heun Discrete).
SIGMA_FLOW_METHODS = ("euler", "heun")
#: Two-call single-step methods with a model call at the log-σ midpoint of each interval (DPM-Solver-2, 2S).
MIDPOINT_METHODS = ("dpm_2", "dpmpp_2s")
SCHEDULER_METHODS = (SDE_METHODS + ("ode_euler", "ode_heun", "dpmpp_2m", "unipc") + MULTISTEP_METHODS
                     + SIGMA_FLOW_METHODS + MIDPOINT_METHODS)
#: The methods with two model calls per interval (diffusers' ``order`` 2; ``build_plan`` lays them out).
TWO_CALL_METHODS = ("ode_heun", "heun") + MIDPOINT_METHODS
SPACINGS = ("leading", "trailing", "linspace")
SIGMA_GRIDS = ("use_karras_sigmas", "use_exponential_sigmas", "use_beta_sigmas")
#: ᾱ at the last timestep of a zero-terminal-SNR schedule of fewer than 3 timesteps (diffusers' Euler floor).
ZERO_SNR_FLOOR = 2.0**-24


def training_schedule(cfg) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(betas, alphas, alphas_cumprod)`` of a scheduler config: float32, float32, float64, each ``(N,)``.

    The betas come from diffusers' own ``DDPMScheduler`` (every ``beta_schedule``
    it knows, ``trained_betas``; ``N`` is ``len(trained_betas)`` when given), and
    ``rescale_betas_zero_snr`` applies Lin et al. 2024, Algorithm 1.
    ``alphas_cumprod`` is DDPM's float32 ``ᾱ_k`` (so the marginals match
    ``DDPMScheduler``'s), except where float32 underflows to 0 (steep schedules):
    there the float64 product is kept.  A zero-terminal-SNR schedule has
    ``ᾱ_{N−1} = 0``, which no VP SDE reaches; it is replaced by the log-linear
    continuation ``ᾱ_{N−2}²/ᾱ_{N−3}`` of the last two values (diffusers' Euler
    schedulers use ``2⁻²⁴``, which can exceed ``ᾱ_{N−2}``).

    Raises:
        ValueError: on an unknown ``beta_schedule``, betas outside ``[0, 1)``
            (e.g. ``beta_end > 1``) or an ``ᾱ`` that reaches 0 even in float64,
            naming the options that made them.
    """
    from diffusers import DDPMScheduler

    try:
        ddpm = DDPMScheduler(num_train_timesteps=cfg.num_train_timesteps, beta_start=cfg.beta_start,
                             beta_end=cfg.beta_end, beta_schedule=cfg.beta_schedule, trained_betas=cfg.trained_betas)
    except NotImplementedError as err:
        raise ValueError(f"beta_schedule {cfg.beta_schedule!r} is not one diffusers' DDPMScheduler knows "
                         f"({err})") from None
    betas = vars(ddpm)["betas"].to(torch.float32)  # set in DDPMScheduler.__init__
    source = ("trained_betas" if cfg.trained_betas is not None else
              f"beta_start={cfg.beta_start}, beta_end={cfg.beta_end}, beta_schedule={cfg.beta_schedule!r}")
    if betas.numel() < 1 or not bool(torch.isfinite(betas).all()) or bool((betas < 0).any()) \
            or bool((betas >= 1).any()):
        raise ValueError(f"betas must be finite and lie in [0, 1) (a VP chain), got min {float(betas.min())}, "
                         f"max {float(betas.max())} from {source}")
    if cfg.rescale_betas_zero_snr:
        from diffusers.schedulers.scheduling_ddpm import rescale_zero_terminal_snr

        betas = rescale_zero_terminal_snr(betas).to(torch.float32)
    alphas = 1.0 - betas
    ac32 = torch.cumprod(alphas, dim=0)
    ac = torch.where(ac32 >= torch.finfo(torch.float32).tiny, ac32.double(), torch.cumprod(alphas.double(), dim=0))
    if cfg.rescale_betas_zero_snr:
        n = len(ac)
        ac[-1] = ac[-2] ** 2 / ac[-3] if n >= 3 else (ac[-2] * ZERO_SNR_FLOOR if n == 2 else ZERO_SNR_FLOOR)
    ac = torch.cummin(ac, dim=0).values
    if not bool((ac > 0).all()):
        raise ValueError(f"the betas from {source} drive alphas_cumprod to 0 even in float64 "
                         f"(a zero-SNR chain has no VP SDE); use smaller betas")
    return betas, alphas, ac


def spaced_timesteps(n: int, N: int, spacing: str, steps_offset: int) -> np.ndarray:
    """Descending int64 training timesteps of ``n`` inference steps, as diffusers spaces them.

    Source: Lin et al. 2024 ("Common Diffusion Noise Schedules and Sample Steps
    are Flawed"), Table 2: ``linspace`` (rounded ``linspace(0, N−1, n)``),
    ``leading`` (multiples of ``N // n``, plus ``steps_offset``), ``trailing``
    (``round(N − i N/n) − 1``).  ``steps_offset`` applies to ``leading`` only, as in diffusers.

    Raises:
        ValueError: if ``leading`` + ``steps_offset`` reaches ``N`` (no such timestep).
    """
    if spacing == "linspace":
        ks = np.linspace(0, N - 1, n).round()[::-1]
    elif spacing == "leading":
        ks = (np.arange(0, n) * (N // n)).round()[::-1] + steps_offset
    else:
        ks = np.round(np.arange(N, 0, -N / n)) - 1
    ks = ks.astype(np.int64)
    if ks.max() >= N:
        raise ValueError(f"num_inference_steps={n} with timestep_spacing='leading' and steps_offset={steps_offset} "
                         f"gives timestep {ks.max()} >= num_train_timesteps={N}; use fewer steps, "
                         f"steps_offset=0 or another timestep_spacing")
    return ks


def sigma_grid_timesteps(alphas_cumprod: torch.Tensor, n: int, grid: str) -> np.ndarray:
    """Fractional training timesteps (descending, float64) of ``n`` noise levels ``σ_0 > … > σ_{n−1}``.

    ``σ_k = √((1 − ᾱ_k)/ᾱ_k)`` is the training chain's noise level (VE
    coordinates).  The grid spans ``[σ_min, σ_max] = [σ_0, σ_{N−1}]`` (the whole
    training range, as diffusers' ``DPMSolverMultistepScheduler``):

    * ``use_karras_sigmas``: ``σ_i = (σ_max^{1/ρ} + i/(n−1) (σ_min^{1/ρ} − σ_max^{1/ρ}))^ρ``,
      ρ = 7 (Karras et al. 2022, eq. 5);
    * ``use_exponential_sigmas``: ``log σ`` uniform;
    * ``use_beta_sigmas``: ``σ_i = σ_min + F⁻¹(1 − i/(n−1)) (σ_max − σ_min)``, ``F`` the
      Beta(0.6, 0.6) CDF (Lee et al. 2024, "Beta Sampling is All You Need"; needs scipy).

    Each ``σ`` becomes a timestep by linear interpolation of the timestep index
    in ``log σ`` between neighbouring training timesteps (diffusers'
    ``_sigma_to_t``); timesteps stay fractional (as ``EulerDiscreteScheduler``).

    Raises:
        ImportError: ``use_beta_sigmas`` without scipy.
    """
    ac = alphas_cumprod.to(torch.float64).numpy()
    log_sigmas = 0.5 * np.log((1.0 - ac) / ac)
    s_min, s_max = math.exp(log_sigmas[0]), math.exp(log_sigmas[-1])
    ramp = np.linspace(0.0, 1.0, n)
    if grid == "use_karras_sigmas":
        rho = 7.0
        sigmas = (s_max ** (1 / rho) + ramp * (s_min ** (1 / rho) - s_max ** (1 / rho))) ** rho
    elif grid == "use_exponential_sigmas":
        sigmas = np.exp(np.linspace(math.log(s_max), math.log(s_min), n))
    else:
        try:
            from scipy.stats import beta as beta_distribution
        except ImportError:
            raise ImportError("use_beta_sigmas=True needs scipy (pip install scipy)") from None
        sigmas = s_min + beta_distribution.ppf(1.0 - ramp, 0.6, 0.6) * (s_max - s_min)
    ks = np.interp(np.log(sigmas), log_sigmas, np.arange(len(ac), dtype=np.float64))
    return ks


class Stage(str, enum.Enum):
    """What one model call of the scheduler does (a ``str`` enum: each member equals its value)."""

    PREDICT = "predict"  # an SDE predictor step
    CORRECT = "correct"  # a Langevin corrector step
    ODE_EULER = "ode_euler"  # an Euler step of the probability flow
    HEUN_PREDICT = "heun_predict"  # Heun's Euler predictor (its slope is kept)
    HEUN_CORRECT = "heun_correct"  # Heun's trapezoidal corrector at the interval's end
    DPMPP = "dpmpp"  # a DPM-Solver++(2M) step
    UNIPC = "unipc"  # UniC on the last predicted state, then UniP
    MULTISTEP = "multistep"  # a step of a one-call multistep stepper (LMS, DEIS, DPM-Solver++ 3M / SDE)
    MID_PREDICT = "mid_predict"  # DPM-Solver-2 / 2S: to the interval's midpoint (the last interval: its whole step)
    MID_CORRECT = "mid_correct"  # DPM-Solver-2 / 2S: the step with the midpoint's model output


@dataclass
class Plan:
    """The stages of one inference schedule.

    Attributes:
        stages: ``(Stage, interval)`` per model call.
        model_timesteps: ``(calls,)`` the training timestep of each call (int64 or float64).
        grid: ``(n + 1,)`` float64 SDE times ``t_0 > … > t_{n−1} > t_n = 0``.
        interval_timesteps: ``(n,)`` the timestep at the start of each interval.
        start_of: timestep value → index of the call that starts its interval
            (diffusers' duplicate-timestep rule; see :func:`build_plan`).
        values: the host copy of ``model_timesteps`` as Python numbers.
        mid_times: ``(n,)`` float64 SDE times of the intervals' log-σ̃ midpoints (the
            :data:`MIDPOINT_METHODS`; ``None`` otherwise), and ``mid_sigmas`` their ``σ̃`` (host floats).
    """

    stages: list
    model_timesteps: np.ndarray
    grid: torch.Tensor
    interval_timesteps: np.ndarray
    start_of: dict
    values: list
    mid_times: torch.Tensor | None = None
    mid_sigmas: list | None = None


def timestep_key(value) -> float:
    """Dictionary key of a timestep value: its float32 rounding (the ``timesteps`` tensor's precision)."""
    return float(np.float32(value))


def build_plan(ks: np.ndarray, sde, method: str, corrector_steps: int) -> Plan:
    """Lay out the model calls of ``n = len(ks)`` intervals (``ks`` descending training timesteps).

    Per interval ``i``: SDE methods call ``corrector_steps`` corrector stages
    (when ``corrector_steps > 0``) then the predictor, all at ``k_i``;
    ``ode_heun`` and ``heun`` call ``k_i`` (Euler predictor) and ``k_{i+1}`` (trapezoidal
    corrector), except the last interval (one Euler call), as
    ``HeunDiscreteScheduler`` lays out its ``2n − 1`` timesteps; ``ode_euler``, ``euler``,
    ``dpmpp_2m``, ``unipc`` and the :data:`MULTISTEP_METHODS` call ``k_i`` once.

    ``start_of`` maps a timestep to the first call of the interval that starts
    there: the first of repeated corrector entries, and for ``ode_heun`` the
    second of the two equal neighbours (``k_{i+1}`` ends interval ``i`` and
    starts ``i + 1``) — diffusers' ``index_for_timestep`` rule, which takes the
    second occurrence of a duplicated timestep.
    """
    n = len(ks)
    grid = torch.cat([sde.timestep_to_time(torch.from_numpy(ks.astype(np.float64))),
                      torch.zeros(1, dtype=torch.float64)])
    mid_times = mid_sigmas = mid_ks = None
    if method in MIDPOINT_METHODS:
        mid_times, mid_sigmas = midpoints(sde, grid, method)
        mid_ks = sde.time_to_timestep(mid_times).numpy()
    stages, model_ks = [], []
    for i in range(n):
        if mid_ks is not None and i < n - 1:
            stages += [(Stage.MID_PREDICT, i), (Stage.MID_CORRECT, i)]
            model_ks += [ks[i], mid_ks[i]]
        elif mid_ks is not None:
            stages.append((Stage.MID_PREDICT, i))
            model_ks.append(ks[i])
        elif method in ("ode_heun", "heun") and i < n - 1:
            stages += [(Stage.HEUN_PREDICT, i), (Stage.HEUN_CORRECT, i)]
            model_ks += [ks[i], ks[i + 1]]
        elif method in ("ode_euler", "ode_heun", "dpmpp_2m", "unipc") + MULTISTEP_METHODS + SIGMA_FLOW_METHODS:
            one = {"dpmpp_2m": Stage.DPMPP, "unipc": Stage.UNIPC}.get(
                method, Stage.MULTISTEP if method in MULTISTEP_METHODS else Stage.ODE_EULER)
            stages.append((one, i))
            model_ks.append(ks[i])
        else:
            stages += [(Stage.CORRECT, i)] * corrector_steps + [(Stage.PREDICT, i)]
            model_ks += [ks[i]] * (corrector_steps + 1)
    model_timesteps = np.asarray(model_ks, dtype=ks.dtype if mid_ks is None else np.float64)
    values = model_timesteps.tolist()
    start_of: dict = {}
    for j, (_, i) in enumerate(stages):
        if j == 0 or stages[j - 1][1] != i:
            start_of[timestep_key(ks[i])] = j
    return Plan(stages, model_timesteps, grid, ks, start_of, values, mid_times, mid_sigmas)


def midpoints(sde, grid: torch.Tensor, method: str) -> tuple[torch.Tensor, list]:
    """The SDE times and ``σ̃`` of the log-σ̃ midpoints of the intervals of ``grid`` (``σ̃ = σ/α``; the last
    interval, to ``σ̃ = 0``, has none: its entry repeats its start).  ``dpm_2``: ``√(σ̃_i σ̃_{i+1})``, as
    :class:`~sdekit.integrations.k_diffusion_singlestep.DPM2Stepper`; ``dpmpp_2s``: the
    :class:`~sdekit.integrations.k_diffusion_singlestep.DPMpp2SStepper` midpoints."""
    from ..sampling.sigma_space import sigma_of_time, time_of_sigma
    from .k_diffusion_singlestep import DPMpp2SStepper

    sig = sigma_of_time(sde, grid).tolist()
    if method == "dpm_2":
        mids = [math.sqrt(a * b) if b > 0 else a for a, b in zip(sig[:-1], sig[1:])]
    else:
        mids = [m if b > 0 else a for m, a, b in zip(DPMpp2SStepper(sig[:-1], sig[1:]).mid, sig[:-1], sig[1:])]
    return time_of_sigma(sde, torch.tensor(mids, dtype=torch.float64)), mids
