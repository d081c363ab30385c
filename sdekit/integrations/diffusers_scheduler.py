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
``ancestral``          :class:`sdekit.sampling.Ancestral` (DDPM's posterior)   1
``euler_maruyama``     :class:`sdekit.sampling.EulerMaruyama` (reverse SDE)   1
``reverse_diffusion``  :class:`sdekit.sampling.ReverseDiffusion`              1
``ode_euler``          Euler step of the probability-flow ODE                 1
``ode_heun``           Heun step of the probability-flow ODE (2 calls)        2
+ ``corrector``        ``corrector_steps`` Langevin steps at ``t_i`` first    1 + steps
=====================  =====================================================  ==========

Multi-stage methods fit diffusers' one-model-call-per-``step`` protocol the way
``HeunDiscreteScheduler`` does: ``timesteps`` lists one entry per model call
(``order`` calls per interval), and the scheduler keeps the stage in its own
state.  With a corrector, the entries of an interval repeat ``t_i`` and the
first ``corrector_steps`` calls each return the Langevin-corrected sample at
the same time (Song et al. 2021, Algorithm 2: corrector before predictor).
``ode_heun`` lists ``t_i, t_{i+1}`` per interval: the first call returns the
Euler predictor at ``t_{i+1}``, the second the Heun average; the last interval
(to ``t = 0``, where the score is undefined) is an Euler step, so there are
``2n − 1`` entries, as in ``HeunDiscreteScheduler``.

With ``method="ancestral"`` (the default) the scheduler reproduces
``DDPMScheduler`` step for step (same timesteps, same posterior mean and
variance, the same noise drawn from the same generator), for every timestep
spacing, prediction type and beta schedule.  One difference: the final step
(to the data, ``t = 0``) never adds noise here, while ``DDPMScheduler`` adds
``variance_type="fixed_large"`` noise on a final step whose timestep is not 0
(``"trailing"`` spacing).

Device and host syncs: the schedule lives on the sample's device (one copy per
device, made on first use); ``step`` tracks its position with a Python
counter (diffusers' DDPM looks the timestep up with ``nonzero``, a host sync
per step), so no step copies anything to the host.  Coefficients are computed
in float64 (not available on Apple's MPS).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from diffusers import DDPMScheduler
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from diffusers.utils import BaseOutput
from diffusers.utils.torch_utils import randn_tensor

from .._checks import check_choice, check_model_output, check_positive, check_positive_int, expand_as_batch
from ..sampling.correctors import CORRECTORS
from ..sampling.predictors import PREDICTORS
from ..score_models import score_from_epsilon, score_from_v, score_from_x0
from ..sdes.discrete_vp import DiscreteVPSDE

METHODS = ("ancestral", "euler_maruyama", "reverse_diffusion", "ode_euler", "ode_heun")
PREDICTION_TYPES = {"epsilon": score_from_epsilon, "sample": score_from_x0, "v_prediction": score_from_v}
SPACINGS = ("leading", "trailing", "linspace")
VARIANCE_TYPES = ("fixed_small", "fixed_large")


@dataclass
class SDESchedulerOutput(BaseOutput):
    """Output of :meth:`SDEScheduler.step`.

    Attributes:
        prev_sample: ``(B, *D)`` the sample for the next model call.
        pred_original_sample: ``(B, *D)`` x̂₀ from this call's model output
            (Tweedie's formula; clipped when ``clip_sample``).
    """

    prev_sample: torch.Tensor
    pred_original_sample: torch.Tensor | None = None


class _Frozen:
    """A "network" that returns one precomputed output, so sdekit's adapters and samplers can use it."""

    def __init__(self, out: torch.Tensor):
        self.out = out

    def __call__(self, x, t):
        return self.out


class SDEScheduler(SchedulerMixin, ConfigMixin):
    """diffusers scheduler running sdekit's reverse-SDE, predictor–corrector and probability-flow samplers.

    Configuration (``@register_to_config``; the first group has diffusers'
    ``DDPMScheduler`` names and defaults, so that ``from_config`` of a DDPM,
    DDIM, PNDM… config gives the same schedule even where that config kept
    defaults, which diffusers leaves out of it):

    Args:
        num_train_timesteps: N, the training chain's length.
        beta_start, beta_end, beta_schedule, trained_betas: the betas, computed
            by diffusers' own ``DDPMScheduler`` (so every schedule it knows works).
        prediction_type: the network's output: ``"epsilon"``, ``"sample"`` (x₀)
            or ``"v_prediction"`` (Salimans & Ho 2022).
        clip_sample, clip_sample_range: clamp x̂₀ to ``±range`` before the step
            (diffusers' DDPM/DDIM default is on); the score then comes from the
            clamped x̂₀, for every method.  Turn off with ``clip_sample=False``.
        timestep_spacing, steps_offset: how ``set_timesteps`` picks inference
            timesteps (``"leading"``, ``"trailing"``, ``"linspace"``; Lin et al.
            2024, Table 2), as in diffusers.
        variance_type: ancestral noise, ``"fixed_small"`` (DDPM's posterior
            variance β̃) or ``"fixed_large"`` (β, score_sde's VP variant).
        thresholding, rescale_betas_zero_snr: accepted so that configs carrying
            them load; only ``False`` is supported (dynamic thresholding is not
            implemented, and a zero-terminal-SNR schedule has no VP SDE).
        method: the sampler (module table): ``"ancestral"``, ``"euler_maruyama"``,
            ``"reverse_diffusion"``, ``"ode_euler"`` or ``"ode_heun"``.
        corrector: ``None``, ``"langevin"`` or ``"annealed_langevin"`` (SDE methods only).
        snr, corrector_steps, corrector_norm: as in :func:`sdekit.sample`.
    Raises:
        ValueError: on an unknown option value (named), a corrector with an ODE
            method, ``thresholding``/``rescale_betas_zero_snr`` set, or a schedule
            that :class:`~sdekit.DiscreteVPSDE` rejects.

    Attributes (diffusers' protocol): ``order``, ``init_noise_sigma`` (1.0),
    ``timesteps`` (int64, one per model call), ``num_inference_steps``,
    ``alphas_cumprod``, ``sde`` (the :class:`~sdekit.DiscreteVPSDE`).

    Source: Song et al. 2021 (reverse SDE, eq. 6; predictor–corrector,
    Algorithms 2–3; probability flow, eq. 13); Ho et al. 2020 (DDPM chain and
    posterior, eqs. 2, 6–7); Karras et al. 2022, Algorithm 1 (Heun steps).
    """

    _compatibles = []

    @register_to_config
    def __init__(
        self,
        num_train_timesteps: int = 1000,
        beta_start: float = 0.0001,
        beta_end: float = 0.02,
        beta_schedule: str = "linear",
        trained_betas: np.ndarray | list[float] | None = None,
        prediction_type: str = "epsilon",
        clip_sample: bool = True,
        clip_sample_range: float = 1.0,
        timestep_spacing: str = "leading",
        steps_offset: int = 0,
        variance_type: str = "fixed_small",
        thresholding: bool = False,
        rescale_betas_zero_snr: bool = False,
        method: str = "ancestral",
        corrector: str | None = None,
        snr: float = 0.16,
        corrector_steps: int = 1,
        corrector_norm: str = "per_sample",
    ):
        check_choice("method", method, METHODS)
        check_choice("prediction_type", prediction_type, tuple(PREDICTION_TYPES))
        check_choice("timestep_spacing", timestep_spacing, SPACINGS)
        check_choice("variance_type", variance_type, VARIANCE_TYPES)
        check_choice("corrector_norm", corrector_norm, ("per_sample", "batch_mean"))
        check_positive("snr", snr)
        check_positive("clip_sample_range", clip_sample_range)
        check_positive_int("corrector_steps", corrector_steps)
        if corrector is not None:
            check_choice("corrector", corrector, tuple(CORRECTORS))
            if method.startswith("ode_"):
                raise ValueError(f"corrector must be None with method={method!r} "
                                 "(Langevin correction needs an SDE method)")
        if thresholding:
            raise ValueError("thresholding=True (dynamic thresholding) is not supported by SDEScheduler; "
                             "set thresholding=False")
        if rescale_betas_zero_snr:
            raise ValueError("rescale_betas_zero_snr=True gives ᾱ = 0 at the last timestep, which no VP SDE reaches; "
                             "set rescale_betas_zero_snr=False")
        if int(steps_offset) != steps_offset or steps_offset < 0:
            raise ValueError(f"steps_offset must be an integer >= 0, got {steps_offset!r}")
        ddpm = DDPMScheduler(num_train_timesteps=num_train_timesteps, beta_start=beta_start, beta_end=beta_end,
                             beta_schedule=beta_schedule, trained_betas=trained_betas)
        self.alphas_cumprod = ddpm.alphas_cumprod
        self.sde = DiscreteVPSDE(self.alphas_cumprod)
        self.init_noise_sigma = 1.0
        if method == "ode_heun":
            self.order = 2
        elif corrector is not None:
            self.order = 1 + corrector_steps
        else:
            self.order = 1
        self.set_timesteps(num_train_timesteps)

    # ------------------------------------------------------------------ timesteps

    def _inference_timesteps(self, n: int) -> np.ndarray:
        """Descending training timesteps for ``n`` inference steps (diffusers' spacing rules)."""
        N, cfg = self.config.num_train_timesteps, self.config
        if cfg.timestep_spacing == "linspace":
            ks = np.linspace(0, N - 1, n).round()[::-1]
        elif cfg.timestep_spacing == "leading":
            ks = (np.arange(0, n) * (N // n)).round()[::-1] + cfg.steps_offset
        else:  # trailing
            ks = np.round(np.arange(N, 0, -N / n)) - 1
        return ks.astype(np.int64)

    def set_timesteps(self, num_inference_steps: int | None = None, device=None, timesteps=None):
        """Choose the inference timesteps and reset the sampler (call before the first ``step``).

        Args:
            num_inference_steps: ``n`` intervals (``1 <= n <= num_train_timesteps``).
            device: where ``timesteps`` and the schedule live (default CPU; the
                schedule is also copied to the sample's device at the first step).
            timesteps: explicit descending training timesteps instead of ``n``.
        Raises:
            ValueError: if both or neither of ``num_inference_steps`` and
                ``timesteps`` are given, ``n`` is out of range, or ``timesteps``
                is not strictly descending within ``[0, N)``.
        """
        N = self.config.num_train_timesteps
        if (num_inference_steps is None) == (timesteps is None):
            raise ValueError("pass exactly one of num_inference_steps and timesteps")
        if timesteps is None:
            n = check_positive_int("num_inference_steps", num_inference_steps)
            if n > N:
                raise ValueError(f"num_inference_steps must be <= num_train_timesteps = {N}, got {n}")
            ks = self._inference_timesteps(n)
        else:
            ks = np.asarray(timesteps, dtype=np.int64)
            if ks.ndim != 1 or ks.size < 1 or (np.diff(ks) >= 0).any():
                raise ValueError(f"timesteps must be a non-empty strictly descending 1-D list, got {timesteps!r}")
        if ks.min() < 0 or ks.max() >= N:
            raise ValueError(f"timesteps must lie in [0, num_train_timesteps) = [0, {N}), got {ks.min()}..{ks.max()}")
        n = len(ks)
        self.num_inference_steps = n
        # Times of the n + 1 grid points: t_i = (k_i + 1)/N, then t_n = 0 (the data).
        self._grid = torch.cat([self.sde.timestep_to_time(torch.from_numpy(ks)), torch.zeros(1, dtype=torch.float64)])
        self._grids = {}
        # One (stage, interval) per model call, and the training timestep that call evaluates the model at.
        cfg = self.config
        plan, model_ks = [], []
        for i in range(n):
            last = i == n - 1
            if cfg.method == "ode_heun" and not last:
                plan += [("heun_predict", i), ("heun_correct", i)]
                model_ks += [ks[i], ks[i + 1]]
            elif cfg.method.startswith("ode_"):
                plan.append(("ode_euler", i))
                model_ks.append(ks[i])
            else:
                if cfg.corrector is not None:
                    plan += [("correct", i)] * cfg.corrector_steps
                    model_ks += [ks[i]] * cfg.corrector_steps
                plan.append(("predict", i))
                model_ks.append(ks[i])
        self._plan = plan
        self.timesteps = torch.tensor(model_ks, dtype=torch.int64, device=device)
        if device is not None:  # copy the schedule now, not inside the first step
            self._grid_on(torch.device(device))
            self.sde._table(device)
        self._step_index = None
        self._begin_index = 0  # as diffusers: a pipeline sets it after set_timesteps when it starts midway
        self._heun_state = None

    def set_begin_index(self, begin_index: int = 0):
        """Start the next run at entry ``begin_index`` of ``timesteps`` (image-to-image pipelines)."""
        if int(begin_index) != begin_index or begin_index < 0:
            raise ValueError(f"begin_index must be an integer >= 0, got {begin_index!r}")
        self._begin_index = int(begin_index)

    @property
    def step_index(self) -> int | None:
        """Index into ``timesteps`` of the next ``step`` (``None`` before the first)."""
        return self._step_index

    @property
    def begin_index(self) -> int:
        """First entry of ``timesteps`` a run uses (see :meth:`set_begin_index`)."""
        return self._begin_index

    def _grid_on(self, device: torch.device) -> torch.Tensor:
        if device not in self._grids:
            self._grids[device] = self._grid.to(device)
        return self._grids[device]

    def __len__(self) -> int:
        return self.config.num_train_timesteps

    # ------------------------------------------------------------------ model output → score

    def scale_model_input(self, sample: torch.Tensor, timestep=None) -> torch.Tensor:
        """Identity: VP inputs need no scaling (``init_noise_sigma`` = 1)."""
        return sample

    def _score_and_x0(self, model_output, sample, t):
        """Score model value and x̂₀ at ``(sample, t)`` from the network's output (clipping x̂₀ if configured)."""
        cfg = self.config
        score = PREDICTION_TYPES[cfg.prediction_type](_Frozen(model_output), self.sde)(sample, t).to(sample.dtype)
        m = expand_as_batch(self.sde.mean_coeff(t), sample)
        var = expand_as_batch(self.sde.std(t) ** 2, sample)
        x0 = ((sample + var * score) / m).to(sample.dtype)  # Tweedie's formula
        if cfg.clip_sample:
            x0 = x0.clamp(-cfg.clip_sample_range, cfg.clip_sample_range)
            score = score_from_x0(_Frozen(x0), self.sde)(sample, t).to(sample.dtype)
        return score, x0

    # ------------------------------------------------------------------ the step

    def step(self, model_output: torch.Tensor, timestep, sample: torch.Tensor, generator=None,
             return_dict: bool = True):
        """Advance by one model call: one stage of the sampler (see the module docstring).

        Args:
            model_output: ``(B, *D)`` the network's output at ``(sample, timestep)``.
            timestep: the entry of ``timesteps`` the model was called with.  The
                scheduler follows its own counter (no lookup, no host sync);
                the pipeline must call ``step`` once per entry, in order.
            sample: ``(B, *D)`` the current sample.
            generator: ``torch.Generator`` (or a list of B) for the noise.
            return_dict: return :class:`SDESchedulerOutput` (else a tuple).
        Returns:
            :class:`SDESchedulerOutput` with ``prev_sample`` and
            ``pred_original_sample`` (x̂₀); the last step returns the noise-free
            mean (no noise is drawn on the final interval, as in DDPM).
        Raises:
            ValueError: if ``model_output`` and ``sample`` differ in shape, or
                ``step`` is called more often than ``timesteps`` has entries.
        """
        check_model_output("model_output (the network)", model_output, sample)
        if self._step_index is None:
            self._step_index = self._begin_index
        if self._step_index >= len(self._plan):
            raise ValueError(f"step called {self._step_index + 1} times but timesteps has {len(self._plan)} "
                             f"entries; call set_timesteps before a new run")
        stage, i = self._plan[self._step_index]
        grid = self._grid_on(sample.device)
        ones = torch.ones(sample.shape[0], dtype=torch.float64, device=sample.device)
        t_i, t_next = grid[i] * ones, grid[i + 1] * ones
        t_eval = t_next if stage == "heun_correct" else t_i
        score, x0 = self._score_and_x0(model_output, sample, t_eval)
        frozen = lambda x, t: score  # noqa: E731  (the score of this call, for sdekit's stepping classes)
        last = i == self.num_inference_steps - 1

        def noise():
            return randn_tensor(sample.shape, generator=generator, device=sample.device, dtype=sample.dtype)

        if stage == "predict":
            predictor = PREDICTORS[self.config.method](self.sde, frozen)
            z = torch.zeros_like(sample) if last else noise()  # the final step returns the mean
            if self.config.method == "ancestral" and self.config.variance_type == "fixed_large":
                _, x_mean = predictor.step(sample, t_i, t_next, torch.zeros_like(sample))
                g = self.sde.transition(t_next, t_i)[2]  # G² = 1 − ᾱ_t/ᾱ_s: "β" of the strided step
                prev = x_mean + expand_as_batch(g.to(sample.dtype), sample) * z
            else:
                prev, _ = predictor.step(sample, t_i, t_next, z)
        elif stage == "correct":
            cfg = self.config
            fix = CORRECTORS[cfg.corrector](self.sde, frozen, cfg.snr, 1, cfg.corrector_norm == "per_sample")
            prev, _ = fix.correct(sample, t_i, t_next, noise)
        else:
            drift = self.sde.probability_flow(frozen).drift(sample, t_eval.to(sample.dtype))
            h = expand_as_batch((t_next - t_i).to(sample.dtype), sample)
            if stage == "ode_euler":
                prev = sample + h * drift
            elif stage == "heun_predict":
                self._heun_state = (sample, drift)
                prev = sample + h * drift
            else:  # heun_correct: average the slopes at both ends (trapezoidal rule)
                x_start, drift_start = self._heun_state
                self._heun_state = None
                prev = x_start + h * 0.5 * (drift_start + drift)
        self._step_index += 1
        if not return_dict:
            return (prev, x0)
        return SDESchedulerOutput(prev_sample=prev, pred_original_sample=x0)

    # ------------------------------------------------------------------ training-side helpers

    def _marginal_coeffs(self, timesteps, like: torch.Tensor):
        k = torch.as_tensor(timesteps, device=like.device).reshape(-1)
        if k.numel() == 1:
            k = k.expand(like.shape[0])
        if k.shape != (like.shape[0],):
            raise ValueError(f"timesteps must be a scalar or have shape (B,) = ({like.shape[0]},), "
                             f"got {tuple(k.shape)}")
        t = self.sde.timestep_to_time(k)
        col = lambda v: expand_as_batch(v.to(like.dtype), like)  # noqa: E731
        return col(self.sde.mean_coeff(t)), col(self.sde.std(t))

    def add_noise(self, original_samples: torch.Tensor, noise: torch.Tensor, timesteps) -> torch.Tensor:
        """Forward marginal ``x_k = √ᾱ_k x₀ + √(1 − ᾱ_k) ε`` at training timestep(s) ``k`` (scalar or ``(B,)``)."""
        m, s = self._marginal_coeffs(timesteps, original_samples)
        return m * original_samples + s * noise

    def get_velocity(self, sample: torch.Tensor, noise: torch.Tensor, timesteps) -> torch.Tensor:
        """The v-prediction target ``v = √ᾱ_k ε − √(1 − ᾱ_k) x₀`` (Salimans & Ho 2022)."""
        m, s = self._marginal_coeffs(timesteps, sample)
        return m * noise - s * sample
