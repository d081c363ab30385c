"""A diffusers scheduler that runs sdekit's samplers inside existing pipelines.

    from sdekit.integrations.diffusers_scheduler import SDEScheduler
    pipe.scheduler = SDEScheduler.from_config(pipe.scheduler.config, method="euler_maruyama")

The pipeline's discrete schedule (``num_train_timesteps``, betas) becomes the
:class:`~sdekit.DiscreteVPSDE` whose marginals equal ``ᾱ_k`` exactly at every
training timestep ``k`` (SDE time ``t_k = (k + 1)/N``; data at ``t = 0``), and
each ``step`` applies one stage of an sdekit sampler on the grid of inference
timesteps ``t_0 > … > t_{n−1} > t_n = 0``:

=====================  =====================================================  ==========
``method``             stage(s) per interval ``t_i → t_{i+1}``                 ``order``
=====================  =====================================================  ==========
``ancestral``          :class:`~sdekit.sampling.AncestralSamplingPredictor`   1
``euler_maruyama``     :class:`~sdekit.sampling.EulerMaruyamaPredictor`       1
``reverse_diffusion``  :class:`~sdekit.sampling.ReverseDiffusionPredictor`    1
``ddim``               :class:`~sdekit.sampling.DDIMPredictor`, step(eta=η)   1
``euler_ancestral``    DDIM at η = 1: k-diffusion's / EulerAncestralDiscrete  1
``dpm_2``              DPM-Solver-2 in σ̃ (2 calls: σ̃_i, √(σ̃_i σ̃_{i+1}))      2
``dpmpp_2s``           DPM-Solver++(2S) in σ̃ (2 calls; the midpoint in λ)    2
``ode_euler``          Euler step of the probability-flow ODE                 1
``ode_heun``           Heun step of the probability-flow ODE (2 calls)        2
``euler``              Euler step of the flow in σ̃ = σ/α (EulerDiscrete)     1
``heun``               Heun step in σ̃ (HeunDiscrete; 2 calls, last Euler)    2
``dpmpp_2m``           DPM-Solver++(2M) (Lu et al. 2022b, Algorithm 2)        1
``unipc``              UniPC (Zhao et al. 2023; ``solver_order``, …)          1
``lms``                linear multistep in σ (``solver_order``, default 4)    1
``deis``               DEIS, tAB in log ρ (``solver_order``, default 2)       1
``dpmpp_3m``           DPM-Solver++(3M) (Lu et al. 2022b)                     1
``dpmpp_2m_sde``       SDE-DPM-Solver++(2M), η = 1 (``solver_type``)          1
``dpmpp_3m_sde``       SDE-DPM-Solver++(3M), η = 1                            1
+ ``corrector``        ``corrector_steps`` Langevin steps at ``t_i`` first    1 + steps
=====================  =====================================================  ==========

The diffusers contract: ``timesteps`` lists one entry per model call
(``order`` calls per interval, as ``HeunDiscreteScheduler`` lays them out), and
``step(model_output, timestep, sample)`` steps from the entry ``timestep``
names, so loops over a slice of ``timesteps`` (image-to-image, inpainting,
SDXL's ``denoising_start``, resumed loops) step the right intervals.  The
position is found without a host sync when ``timestep`` is an element of
``scheduler.timesteps`` (what pipelines pass: a view, located by its storage
offset), a Python number or a CPU tensor; any other device tensor is read once
(one sync).  A timestep that continues the run (the next entry) takes that
entry; otherwise it starts the interval that begins at it (diffusers'
``index_for_timestep`` rule for duplicated timesteps); ``set_begin_index``
fixes the first position instead.  A timestep not on the schedule raises.

With ``method="ancestral"`` (the default) the scheduler reproduces
``DDPMScheduler`` step for step (same timesteps, same posterior mean and
variance, the same noise drawn from the same generator), for every timestep
spacing, prediction type and beta schedule, also when a loop starts midway.
One difference: the final step (to the data, ``t = 0``) never adds noise
here, while ``DDPMScheduler`` adds ``variance_type="fixed_large"`` noise on a
final step whose timestep is not 0 (``"trailing"`` spacing).  Coefficients
are float64: DDPM's float32 ``1 − ᾱ_t/ᾱ_prev`` cancels near ``k = 0`` (up to
~5e-4 relative at stride 1), so there the two agree to that precision only.
``dpmpp_2m`` matches ``DPMSolverMultistepScheduler`` (DPM-Solver++, order 2,
first-order final step to σ = 0) on the same timesteps, and so do ``dpmpp_3m``
(``solver_order=3``), ``dpmpp_2m_sde`` and ``dpmpp_3m_sde``
(``algorithm_type="sde-dpmsolver++"``; with ``lower_order_final=False`` on
grids under 15 steps, where diffusers also lowers the second-to-last order).
``unipc`` and the one-call multistep methods (``lms``, ``deis``, ``dpmpp_3m``,
``dpmpp_2m_sde``, ``dpmpp_3m_sde``) run the very steppers of
:mod:`sdekit.integrations.k_diffusion` (the one implementation of each) on
``x̃ = x/α`` at ``σ̃ = σ/α``; a loop that starts midway is a fresh run from
there, at the order the stored outputs allow.

Noise: from ``generator`` (``randn_tensor``, DDPM-exact) by default; keyed and
batch-invariant (:func:`sdekit.kernels.normal`, stream 1 + the entry's
index) with ``step(..., seed=, sample_index=)`` or :meth:`SDEScheduler.set_noise_seed`.

The schedule lives on the sample's device (one copy per device, made on first
use).  Coefficients are computed in float64 (not available on Apple's MPS).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.schedulers.scheduling_utils import KarrasDiffusionSchedulers, SchedulerMixin
from diffusers.utils import BaseOutput

from .._checks import check_choice, check_model_output, check_positive, check_positive_int, expand_as_batch
from ..sampling.correctors import CORRECTORS, NORM_RULES
from ..sampling.dpm_solver import dpmpp_2m_coefficients
from ..sampling.sigma_space import sigma_of_time
from ..score_models import score_from_epsilon, score_from_v, score_from_x0
from ..sdes.discrete_vp import DiscreteVPSDE
from . import _scheduler_stages as stages
from ._scheduler_lookup import TimestepLookup
from ._scheduler_noise import KeyedNoise
from ._scheduler_schedule import (
    SCHEDULER_METHODS,
    SDE_METHODS,
    SIGMA_GRIDS,
    SPACINGS,
    TWO_CALL_METHODS,
    Stage,
    build_plan,
    sigma_grid_timesteps,
    spaced_timesteps,
    training_schedule,
)
from .k_diffusion import FlowStepper
from .k_diffusion_deis import deis_coefficients
from .k_diffusion_multistep import DPMSolverSDEStepper, SlopeMultistepStepper, lms_coefficients
from .k_diffusion_singlestep import DPMpp2SStepper
from .k_diffusion_unipc import UniPCStepper

#: ``solver_type`` per method that has one, its default first (UniPC's and DPM-Solver's names; DEIS' one type).
SOLVER_TYPES = {"unipc": ("bh2", "bh1"), "deis": ("logrho",),
                **{m: ("midpoint", "heun") for m in ("dpmpp_2m_sde", "dpmpp_3m", "dpmpp_3m_sde")}}
#: ``solver_order``'s default per method that reads it (UniPC's and DEIS' schedulers' 2, LMSDiscreteScheduler's 4).
SOLVER_ORDERS = {"unipc": 2, "deis": 2, "lms": 4}
PREDICTION_TYPES = {"epsilon": score_from_epsilon, "sample": score_from_x0, "v_prediction": score_from_v}
VARIANCE_TYPES = ("fixed_small", "fixed_small_log", "fixed_large", "fixed_large_log")
#: The former name, kept so that programs importing it keep working.
METHODS = SCHEDULER_METHODS

__all__ = ["SCHEDULER_METHODS", "SDEScheduler", "SDESchedulerOutput"]


@dataclass
class SDESchedulerOutput(BaseOutput):
    """Output of :meth:`SDEScheduler.step`.

    Attributes:
        prev_sample: ``(B, *D)`` the sample for the next model call.
        pred_original_sample: ``(B, *D)`` x̂₀ from this call's model output
            (Tweedie's formula; thresholded or clipped when configured).
    """

    prev_sample: torch.Tensor
    pred_original_sample: torch.Tensor | None = None


class SDEScheduler(TimestepLookup, KeyedNoise, SchedulerMixin, ConfigMixin):  # type: ignore[misc, unused-ignore]
    """diffusers scheduler running sdekit's reverse-SDE, predictor–corrector, probability-flow and DPM-Solver++ samplers.

    Configuration (``@register_to_config``; the first group has diffusers'
    ``DDPMScheduler`` names and defaults, so ``from_config`` of a DDPM, DDIM,
    PNDM, Euler… config gives the same schedule even where it kept defaults):

    Args:
        num_train_timesteps: N, the training chain's length.
        beta_start, beta_end, beta_schedule, trained_betas: the betas, computed
            by diffusers' ``DDPMScheduler`` (every schedule it knows); they must lie in ``[0, 1)``.
        variance_type: ancestral noise, ``"fixed_small"`` (DDPM's posterior
            variance β̃) or ``"fixed_large"`` (β); the ``*_log`` names are the
            same variances (``None``, as DPM-Solver configs store, means ``"fixed_small"``).
        clip_sample, clip_sample_range: clamp x̂₀ to ``±range`` before the step
            (diffusers' DDPM default is on); the score then comes from the
            clamped x̂₀, for every method.
        prediction_type: the network's output: ``"epsilon"``, ``"sample"`` (x₀)
            or ``"v_prediction"`` (Salimans & Ho 2022).
        thresholding, dynamic_thresholding_ratio, sample_max_value: dynamic
            thresholding of x̂₀ (Saharia et al. 2022); replaces ``clip_sample``.
        timestep_spacing, steps_offset: how ``set_timesteps`` picks inference
            timesteps (``"leading"`` + ``steps_offset``, ``"trailing"``,
            ``"linspace"``; Lin et al. 2024, Table 2), as in diffusers.
        rescale_betas_zero_snr: rescale to zero terminal SNR (Lin et al. 2024,
            Algorithm 1); ``ᾱ_{N−1} = 0`` becomes the log-linear continuation of
            ``ᾱ_{N−3}, ᾱ_{N−2}`` (a VP SDE needs ``ᾱ > 0``; see ``_scheduler_schedule.training_schedule``).
        use_karras_sigmas, use_exponential_sigmas, use_beta_sigmas: inference
            timesteps from a noise-level grid over the training range (Karras
            et al. 2022, eq. 5, ρ = 7; log-uniform; Beta(0.6, 0.6) quantiles),
            as fractional float32 timesteps; these replace ``timestep_spacing``.
        method: the sampler (module table).
        corrector: ``None``, ``"langevin"`` or ``"annealed_langevin"`` (SDE methods only).
        snr, corrector_steps, corrector_norm: as in :func:`sdekit.sample`.
        solver_order, solver_type, lower_order_final, disable_corrector: the multistep methods' options,
            the peers' names and defaults (``None``: the method's default). ``unipc``:
            ``UniPCMultistepScheduler``'s (order 2, ``"bh2"``/``"bh1"``, lower orders on the last steps, no
            step uncorrected; :func:`sdekit.integrations.k_diffusion.sample_unipc`); ``deis``: order 2,
            ``"logrho"``, ``lower_order_final`` (:func:`~sdekit.integrations.k_diffusion.sample_deis`);
            ``lms``: order 4 (``LMSDiscreteScheduler.step``'s default); the DPM-Solver++ methods:
            ``DPMSolverMultistepScheduler``'s ``"midpoint"`` (default) or ``"heun"`` second-order term and
            its ``lower_order_final`` (under 15 steps the second-to-last step at order <= 2); their order
            is in their name (``solver_order`` is not read).  ``lms`` has no ``lower_order_final``.
    Raises:
        ValueError: on an unknown option value (named), more than one sigma
            grid, a corrector without an SDE method, or betas outside ``[0, 1)``.
            A ``trained_betas`` whose length is not ``num_train_timesteps``
            constructs (as in diffusers) but ``set_timesteps``, ``step`` and
            ``add_noise`` raise a ValueError naming both.

    Attributes (diffusers' protocol): ``order``, ``init_noise_sigma`` (1.0),
    ``timesteps`` (one per model call; int64, float32 for a sigma grid),
    ``num_inference_steps``, ``betas``, ``alphas``, ``alphas_cumprod`` (float32
    ``(N,)``), ``step_index``, ``begin_index``; ``sde`` (the :class:`~sdekit.DiscreteVPSDE`).

    Source: Song et al. 2021 (reverse SDE, eq. 6; predictor–corrector,
    Algorithms 2–3; probability flow, eq. 13); Ho et al. 2020 (DDPM chain and
    posterior, eqs. 2, 6–7); Karras et al. 2022, Algorithm 1 (Heun steps);
    Lu et al. 2022b, Algorithm 2 (DPM-Solver++(2M)).
    """

    #: diffusers' Karras-pipeline schedulers (what DDPMScheduler lists): ``from_config`` works both ways.
    _compatibles = [e.name for e in KarrasDiffusionSchedulers]  # noqa: RUF012 (diffusers reads the class attribute)

    @register_to_config
    def __init__(
        self,
        num_train_timesteps: int = 1000,
        beta_start: float = 0.0001,
        beta_end: float = 0.02,
        beta_schedule: str = "linear",
        trained_betas: np.ndarray | list[float] | None = None,
        variance_type: str | None = "fixed_small",
        clip_sample: bool = True,
        prediction_type: str = "epsilon",
        thresholding: bool = False,
        dynamic_thresholding_ratio: float = 0.995,
        clip_sample_range: float = 1.0,
        sample_max_value: float = 1.0,
        timestep_spacing: str = "leading",
        steps_offset: int = 0,
        rescale_betas_zero_snr: bool = False,
        use_karras_sigmas: bool = False,
        use_exponential_sigmas: bool = False,
        use_beta_sigmas: bool = False,
        method: str = "ancestral",
        corrector: str | None = None,
        snr: float = 0.16,
        corrector_steps: int = 1,
        corrector_norm: str | None = None,
        solver_order: int | None = None,
        solver_type: str | None = None,
        lower_order_final: bool = True,
        disable_corrector: list | None = None,
    ):
        check_positive_int("num_train_timesteps", num_train_timesteps)
        check_choice("method", method, SCHEDULER_METHODS)
        check_choice("prediction_type", prediction_type, tuple(PREDICTION_TYPES))
        check_choice("timestep_spacing", timestep_spacing, SPACINGS)
        if variance_type is not None and variance_type not in VARIANCE_TYPES:
            raise ValueError(f"variance_type must be one of {list(VARIANCE_TYPES)} or None, got {variance_type!r} "
                             f"(learned variances need the network's variance output, which SDEScheduler does not use)")
        if corrector_norm is not None:
            check_choice("corrector_norm", corrector_norm, NORM_RULES)
        check_positive("snr", snr)
        check_positive("clip_sample_range", clip_sample_range)
        check_positive("sample_max_value", sample_max_value)
        if not 0.0 < dynamic_thresholding_ratio <= 1.0:
            raise ValueError(f"dynamic_thresholding_ratio must lie in (0, 1], got {dynamic_thresholding_ratio!r}")
        check_positive_int("corrector_steps", corrector_steps)
        if method in SOLVER_TYPES:  # UniPC's / DPM-Solver's names (other schedulers' configs reuse them)
            check_choice("solver_type", SOLVER_TYPES[method][0] if solver_type is None else solver_type,
                         SOLVER_TYPES[method])
        if method in SOLVER_ORDERS and solver_order is not None:
            check_positive_int("solver_order", solver_order)
        if corrector is not None:
            check_choice("corrector", corrector, tuple(CORRECTORS))
            if method not in SDE_METHODS:
                raise ValueError(f"corrector must be None with method={method!r} "
                                 f"(Langevin correction needs an SDE method: {list(SDE_METHODS)})")
        if isinstance(steps_offset, bool) or int(steps_offset) != steps_offset or steps_offset < 0:
            raise ValueError(f"steps_offset must be an integer >= 0, got {steps_offset!r}")
        chosen = dict(zip(SIGMA_GRIDS, (use_karras_sigmas, use_exponential_sigmas, use_beta_sigmas)))
        grids = [name for name in SIGMA_GRIDS if chosen[name]]
        if len(grids) > 1:
            raise ValueError(f"at most one of {list(SIGMA_GRIDS)} may be True, got {grids}")
        self._sigma_grid = grids[0] if grids else None
        self.betas, self.alphas, alphas_cumprod = training_schedule(self.config)
        self.sde = DiscreteVPSDE(alphas_cumprod)
        self.alphas_cumprod = alphas_cumprod.to(torch.float32)
        self.init_noise_sigma = 1.0
        self.order = 2 if method in TWO_CALL_METHODS else (1 + corrector_steps if corrector is not None else 1)
        self._unusable = None
        if len(self.betas) != num_train_timesteps:
            self._unusable = (f"trained_betas has {len(self.betas)} entries but num_train_timesteps = "
                              f"{num_train_timesteps}; they must agree")
        self._noise_key: tuple | None = None
        self._install(np.arange(len(self.betas))[::-1].astype(np.int64), None, None)  # the whole chain, as DDPM

    @property
    def _cfg(self) -> Any:
        """``self.config``: diffusers' FrozenDict with attribute access (typed as a plain dict there)."""
        return self.config

    @property
    def compatibles(self):
        """diffusers' compatible scheduler classes (the Karras-pipeline schedulers), and this class."""
        return [type(self)] + [c for c in super().compatibles if c is not type(self)]

    def _check_usable(self):
        if self._unusable is not None:
            raise ValueError(self._unusable)

    # ------------------------------------------------------------------ timesteps

    def set_timesteps(self, num_inference_steps: int | None = None, device=None, timesteps=None):
        """Choose the inference timesteps and reset the run (call before the first ``step``).

        Args:
            num_inference_steps: ``n`` intervals (``1 <= n <= num_train_timesteps``),
                spaced by ``timestep_spacing`` or by the configured sigma grid.
            device: where ``timesteps`` and the schedule live (default CPU; the
                schedule is also copied to the sample's device at the first step).
            timesteps: explicit strictly descending training timesteps in
                ``[0, N − 1]`` (integers, or fractional) instead of ``n``.
        Raises:
            ValueError: if both or neither of ``num_inference_steps`` and
                ``timesteps`` are given, ``n`` is out of range, ``timesteps`` is not
                strictly descending within ``[0, N − 1]``, ``timesteps`` is combined
                with a sigma grid, or ``leading`` + ``steps_offset`` overshoots ``N − 1``.
        """
        self._check_usable()
        N = self._cfg.num_train_timesteps
        if (num_inference_steps is None) == (timesteps is None):
            raise ValueError("pass exactly one of num_inference_steps and timesteps")
        if timesteps is not None:
            if self._sigma_grid is not None:
                raise ValueError(f"timesteps= cannot be combined with {self._sigma_grid}=True (the grid chooses them)")
            if isinstance(timesteps, torch.Tensor):
                timesteps = timesteps.detach().cpu().numpy()
            ks = np.asarray(timesteps, dtype=np.float64)
            n = None
        else:
            n = check_positive_int("num_inference_steps", num_inference_steps)
            if n > N:
                raise ValueError(f"num_inference_steps must be <= num_train_timesteps = {N}, got {n}")
            if self._sigma_grid is None:
                ks = spaced_timesteps(n, N, self._cfg.timestep_spacing, self._cfg.steps_offset)
            else:
                ks = sigma_grid_timesteps(self.sde.alphas_cumprod, n, self._sigma_grid)
        if ks.ndim != 1 or ks.size < 1 or not bool(np.isfinite(ks).all()):
            raise ValueError(f"timesteps must be a non-empty 1-D list of finite numbers, got {stages.summary(ks)}")
        ks = ks.astype(np.int64) if bool((ks == np.round(ks)).all()) else ks.astype(np.float32).astype(np.float64)
        if (np.diff(ks) >= 0).any():
            raise ValueError(f"timesteps must be strictly descending, got {stages.summary(ks)}")
        if ks.min() < 0 or ks.max() > N - 1:
            raise ValueError(f"timesteps must lie in [0, num_train_timesteps - 1] = [0, {N - 1}], "
                             f"got {ks.min()}..{ks.max()}")
        self._install(ks, len(ks) if n is None else n, device)

    def _install(self, ks: np.ndarray, num_inference_steps, device):
        cfg = self._cfg
        self._plan = plan = build_plan(ks, self.sde, cfg.method, cfg.corrector_steps if cfg.corrector else 0)
        self.num_inference_steps = num_inference_steps
        dtype = torch.int64 if plan.model_timesteps.dtype == np.int64 else torch.float32
        self.timesteps = torch.from_numpy(plan.model_timesteps).to(dtype=dtype, device=device)
        self._dpm = None
        if cfg.method == "dpmpp_2m" and len(ks) > 1:  # the last interval (to σ = 0) returns x̂₀
            self._dpm = dpmpp_2m_coefficients(self.sde, plan.grid[:-1])
        self._sigmas = sigma_of_time(self.sde, plan.grid).tolist()  # σ̃ = σ/α of the grid (0 at t = 0)
        self._pp2s = DPMpp2SStepper(self._sigmas[:-1], self._sigmas[1:]) if cfg.method == "dpmpp_2s" else None
        self._mids: dict = {}
        self._grids: dict = {}
        if device is not None:  # copy the schedule now, not inside the first step
            self._grid_on(torch.device(device))
            self.sde._table(device)
        self._step_index: int | None = None
        self._begin_index: int | None = None
        self._state: tuple | None = None  # (entry index, …) of Heun's predictor or DPM-Solver's x̂₀

    def _mid_times_on(self, device: torch.device) -> torch.Tensor:
        if device not in self._mids:
            assert self._plan.mid_times is not None
            self._mids[device] = self._plan.mid_times.to(device)
        return self._mids[device]

    def _grid_on(self, device: torch.device) -> torch.Tensor:
        if device not in self._grids:
            self._grids[device] = self._plan.grid.to(device)
        return self._grids[device]

    def __len__(self) -> int:
        return self._cfg.num_train_timesteps

    # ------------------------------------------------------------------ the step

    def scale_model_input(self, sample: torch.Tensor, timestep=None) -> torch.Tensor:
        """Identity: VP inputs need no scaling (``init_noise_sigma`` = 1)."""
        return sample

    def step(self, model_output: torch.Tensor, timestep, sample: torch.Tensor, generator=None,
             return_dict: bool = True, *, seed: int | None = None, sample_index: torch.Tensor | None = None,
             eta: float = 0.0):
        """Advance by one model call: one stage of the sampler, from the entry ``timestep`` names.

        Args:
            model_output: ``(B, *D)`` the network's output at ``(sample, timestep)``.
            timestep: an entry of ``timesteps`` (element tensor, scalar tensor or
                number); found as the module docstring describes.
            sample: ``(B, *D)`` the current sample.
            generator: ``torch.Generator`` (or a list of B) for the noise (DDPM-exact).
            return_dict: return :class:`SDESchedulerOutput` (else a tuple).
            seed, sample_index: keyed noise instead (keyword-only; see :meth:`set_noise_seed`).
            eta: ``method="ddim"``'s noise fraction ``η`` in ``[0, 1]`` (keyword, as
                ``DDIMScheduler.step``; pipelines pass their ``eta`` when ``step`` takes one);
                must be 0 for the other methods.
        Returns:
            :class:`SDESchedulerOutput` with ``prev_sample`` and
            ``pred_original_sample`` (x̂₀), or ``(prev_sample, pred_original_sample)``;
            the last interval returns the noise-free mean.
        Raises:
            ValueError: if ``model_output`` and ``sample`` differ in shape, the
                timestep is not on the schedule or contradicts ``begin_index``, a
                Heun corrector entry comes without its predictor, or both ``seed``
                and ``generator`` are given; a non-zero ``eta`` with a method other
                than ``"ddim"``, or one outside ``[0, 1]``.
        """
        self._check_usable()
        if eta != 0.0 and self._cfg.method != "ddim":
            raise ValueError(f"eta={eta!r} applies to method='ddim', not method={self._cfg.method!r}")
        check_model_output("model_output (the network)", model_output, sample)
        j = self.index_for_timestep(timestep)
        stage, i = self._plan.stages[j]
        cfg = self._cfg
        grid = self._grid_on(sample.device)
        ones = torch.ones(sample.shape[0], dtype=torch.float64, device=sample.device)
        t_i, t_next = grid[i] * ones, grid[i + 1] * ones
        t_mid = self._mid_times_on(sample.device)[i] * ones if self._plan.mid_times is not None else None
        t_eval = t_next if stage is Stage.HEUN_CORRECT else (t_mid if stage is Stage.MID_CORRECT else t_i)
        score, x0 = stages.score_and_x0(cfg, PREDICTION_TYPES[cfg.prediction_type], self.sde, model_output,
                                        sample, t_eval)
        noise = self._noise(sample, generator, seed, sample_index, 1 + j)
        last = i == len(self._plan.interval_timesteps) - 1
        state, self._state = self._state, None
        prev = self._advance(stage, i, j, state, sample, score, x0, (t_i, t_mid, t_next, t_eval), noise, last, eta)
        self._step_index = j + 1
        if not return_dict:
            return (prev, x0)
        return SDESchedulerOutput(prev_sample=prev, pred_original_sample=x0)

    def _advance(self, stage, i: int, j: int, state, sample, score, x0, times, noise, last: bool, eta: float):
        """Entry ``j``'s stage (interval ``i``) from the model's score and x̂₀; sets the state the next entry
        reads (``(j, …)``) and returns the sample for the next model call.  ``times``: ``(t_i, t_mid, t_next,
        t_eval)`` ``(B,)`` float64 (``t_mid`` ``None`` without midpoints)."""
        cfg = self._cfg
        t_i, t_mid, t_next, t_eval = times
        if stage is Stage.PREDICT:
            prev = stages.predict(cfg, self.sde, score, sample, t_i, t_next, noise, last, eta)
        elif stage is Stage.CORRECT:
            prev = stages.correct(cfg, self.sde, score, sample, t_i, t_next, noise)
        elif stage is Stage.UNIPC:
            stepper = state[1] if state is not None and state[0] == j - 1 else UniPCStepper(
                self._sigmas, self._solver_order(), self._solver_type(), cfg.lower_order_final,
                cfg.disable_corrector or ())
            prev = stages.unipc(stepper, self.sde, sample, x0, t_i, t_next, i)
            self._state = (j, stepper)
        elif stage in (Stage.MID_PREDICT, Stage.MID_CORRECT):
            if stage is Stage.MID_CORRECT and (state is None or state[0] != j - 1):
                raise ValueError(f"timestep {self._plan.values[j]:g} at entry {j} is the midpoint call of "
                                 f"interval {i}; step its first call (entry {j - 1}) first")
            prev, kept = stages.midpoint_step(stage, state[1] if stage is Stage.MID_CORRECT and state else None,
                                              cfg.method, self.sde, sample, x0, t_i, t_mid, t_next, self._sigmas,
                                              self._pp2s, i)
            if kept is not None:
                self._state = (j, kept)
        elif stage is Stage.MULTISTEP:
            stepper = state[1] if state is not None and state[0] == j - 1 else self._multistep_stepper()
            prev = stages.multistep(stepper, self.sde, sample, x0, t_i, t_next, i, self._sigmas[i], noise)
            self._state = (j, stepper)
        elif stage is Stage.DPMPP:
            x0_prev = state[1] if state is not None and state[0] == j - 1 else None
            prev = stages.dpmpp_2m(self._dpm, i, sample, x0, x0_prev, last)
            self._state = (j, x0)
        else:
            if stage is Stage.HEUN_CORRECT and (state is None or state[0] != j - 1):
                raise ValueError(f"timestep {self._plan.values[j]:g} at entry {j} is the Heun corrector of "
                                 f"interval {i}; step its predictor (entry {j - 1}) first")
            if cfg.method in ("euler", "heun"):  # in σ̃, k-diffusion's steps
                stepper = state[1] if stage is Stage.HEUN_CORRECT and state is not None else FlowStepper()
                prev = stages.sigma_flow(stage, stepper, self.sde, sample, x0, t_i, t_next, self._sigmas[i],
                                         self._sigmas[i + 1])
                if stage is Stage.HEUN_PREDICT:
                    self._state = (j, stepper)
                return prev
            drift = stages.flow_drift(self.sde, score, sample, t_eval)
            h = expand_as_batch((t_next - t_i).to(sample.dtype), sample)
            if stage is Stage.HEUN_CORRECT and state is not None:  # the trapezoidal rule (state checked above)
                prev = state[1] + h * 0.5 * (state[2] + drift)
            else:
                prev = sample + h * drift
                if stage is Stage.HEUN_PREDICT:
                    self._state = (j, sample, drift)
        return prev

    def _solver_order(self) -> int:
        """``solver_order``, or the method's default (:data:`SOLVER_ORDERS`) where it is ``None``."""
        cfg = self._cfg
        return cfg.solver_order if cfg.solver_order is not None else SOLVER_ORDERS[cfg.method]

    def _solver_type(self) -> str:
        """``solver_type``, or the method's default (the first of :data:`SOLVER_TYPES`) where it is ``None``."""
        cfg = self._cfg
        return cfg.solver_type if cfg.solver_type is not None else SOLVER_TYPES[cfg.method][0]

    def _multistep_stepper(self):
        """A fresh stepper of ``method`` (a one-call multistep method) on this schedule's σ̃ grid."""
        cfg = self._cfg
        if cfg.method == "lms":
            return SlopeMultistepStepper(self._sigmas, self._solver_order(), lms_coefficients)
        if cfg.method == "deis":
            return SlopeMultistepStepper(self._sigmas, self._solver_order(),
                                         lambda v, m: deis_coefficients(v, m, cfg.lower_order_final))
        eta = 0.0 if cfg.method == "dpmpp_3m" else 1.0
        return DPMSolverSDEStepper(self._sigmas, eta, 1.0, 2 if cfg.method == "dpmpp_2m_sde" else 3,
                                   self._solver_type() == "midpoint", cfg.lower_order_final)

    # ------------------------------------------------------------------ training-side helpers

    def _marginal_coeffs(self, timesteps, like: torch.Tensor):
        """``(√ᾱ, √(1 − ᾱ))`` at ``timesteps`` as ``(b, 1, …, 1)`` columns of ``like``'s dtype, ``b`` ∈ {1, B}."""
        self._check_usable()
        k = torch.as_tensor(timesteps).to(like.device).reshape(-1)
        if k.numel() not in (1, like.shape[0]):
            raise ValueError(f"timesteps must hold 1 or B = {like.shape[0]} values, got shape "
                             f"{tuple(torch.as_tensor(timesteps).shape)}")
        if k.device.type == "cpu" and k.numel() and not bool(((k >= 0) & (k <= len(self) - 1)).all()):
            raise ValueError(f"timesteps must lie in [0, num_train_timesteps - 1] = [0, {len(self) - 1}], "
                             f"got {k.min().item()}..{k.max().item()}")
        work = k if like.device.type != "mps" else k.cpu()  # float64 is not available on MPS
        t = self.sde.timestep_to_time(work)
        col = lambda v: v.to(like.device, like.dtype).reshape((-1,) + (1,) * (like.dim() - 1))
        return col(self.sde.mean_coeff(t)), col(self.sde.std(t))

    def add_noise(self, original_samples: torch.Tensor, noise: torch.Tensor, timesteps) -> torch.Tensor:
        """Forward marginal ``x_k = √ᾱ_k x₀ + √(1 − ᾱ_k) ε`` at training timestep(s) ``k``.

        Args:
            original_samples, noise: ``(B, *D)``, any float dtype and device.
            timesteps: a number or a tensor of 1 or ``B`` values (any shape, any
                device; fractional timesteps interpolate the schedule).
        Returns:
            ``(B, *D)`` in the dtype of the product (``original_samples``' for equal dtypes).
        Raises:
            ValueError: if ``timesteps`` holds another number of values, or (CPU) leaves ``[0, N − 1]``.
        """
        m, s = self._marginal_coeffs(timesteps, original_samples)
        return m * original_samples + s * noise

    def get_velocity(self, sample: torch.Tensor, noise: torch.Tensor, timesteps) -> torch.Tensor:
        """The v-prediction target ``v = √ᾱ_k ε − √(1 − ᾱ_k) x₀`` (Salimans & Ho 2022); arguments as :meth:`add_noise`."""
        m, s = self._marginal_coeffs(timesteps, sample)
        return m * noise - s * sample

    def _get_variance(self, t, predicted_variance=None, variance_type=None) -> torch.Tensor:
        """Variance of the ancestral step that starts at ``t`` (``DDPMScheduler._get_variance``'s contract).

        ``fixed_small``: β̃ = (1 − ᾱ_prev)/(1 − ᾱ_t) · β, clamped to ≥ 1e-20;
        ``fixed_large``: β = 1 − ᾱ_t/ᾱ_prev (``prev`` = :meth:`previous_timestep`;
        ᾱ = 1 at the data).  The ``*_log`` names return the same variance.
        Returns a 0-d float32 tensor.

        Raises:
            ValueError: for a ``predicted_variance`` (learned variances are not
                supported) or a timestep not on the schedule.
        """
        self._check_usable()
        if predicted_variance is not None:
            raise ValueError("predicted_variance: learned variances are not supported by SDEScheduler")
        vt = variance_type or self._cfg.variance_type or "fixed_small"
        check_choice("variance_type", vt, VARIANCE_TYPES)
        j = self._view_index(t)
        i = self._plan.stages[self._start_index(self._value(t)) if j is None else j][1]
        grid = self._plan.grid
        a_t, a_prev = self.sde.mean_coeff(grid[i]) ** 2, self.sde.mean_coeff(grid[i + 1]) ** 2
        beta = 1 - a_t / a_prev
        var = beta if vt.startswith("fixed_large") else ((1 - a_prev) / (1 - a_t) * beta).clamp_min(1e-20)
        return var.to(torch.float32)
