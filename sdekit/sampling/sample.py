"""``sdekit.sample``: reverse-time SDE, predictor–corrector and probability-flow sampling."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .._checks import (
    check_choice,
    check_device,
    check_eps,
    check_finite,
    check_positive,
    check_positive_int,
    check_real,
    check_sde,
    check_tensor,
    compiler_disable,
)
from ..conditioning import bind_model_kwargs, flatten_model_kwargs, unbind_conditioning
from ..faults import as_monitor
from ..kernels import affine_update, normal, resolve_backend
from ..kernels._args import noise_key
from ..kernels.keyed import KeyedUpdate
from ..noise import check_sample_index, noise_kind
from ..score_models import checked_score
from ..solvers.adaptive import solve_adaptive
from .correctors import CORRECTORS, NORM_RULES, AbstractCorrector, Langevin, default_norm
from .denoise import check_denoisable, tweedie_coefficients
from .dpm_solver import _check_linear as check_linear
from .dpm_solver import logsnr_grid, sample_dpmpp_2m
from .grid import GRIDS, sampling_grid, time_grid
from .predictors import PREDICTORS, AbstractPredictor, AncestralSamplingPredictor, DDIMPredictor
from .sigma_samplers import SIGMA_SAMPLERS, sample_sigma_family

#: Every ``method`` of :func:`sample`.
SAMPLE_METHODS = tuple(PREDICTORS) + ("ode", "dpmpp_2m", "ncsn") + tuple(SIGMA_SAMPLERS)

#: The former name, kept so that programs importing it keep working.
METHODS = SAMPLE_METHODS


@dataclass
class SampleResult:
    """Output of :func:`sample`.

    Attributes:
        x: ``shape`` samples at ``t = eps`` (denoised to ``E[x_0 | x_eps]`` if ``denoise``).
        nfe: ``(B,)`` int64, score evaluations spent on each sample.
        steps: ``(B,)`` int64, predictor steps (accepted ODE steps for ``"ode"``).
    """

    x: torch.Tensor
    nfe: torch.Tensor
    steps: torch.Tensor


def _shape_entry(s) -> int:
    if isinstance(s, (bool, str, bytes)):
        raise TypeError
    v = int(s)
    if v != s:  # 2.5, nan
        raise TypeError
    return v


def _check_shape(shape) -> tuple:
    try:
        if isinstance(shape, (str, bytes)):
            raise TypeError
        shape = tuple(_shape_entry(s) for s in shape)
    except (TypeError, ValueError, OverflowError):
        raise TypeError(f"shape must be a tuple of ints (B, *D), got {shape!r}") from None
    if len(shape) < 2 or min(shape) < 1:
        raise ValueError(f"shape must be (B, *D) with at least 2 positive entries, got {shape}")
    return shape


#: Noise stream of the prior draw; step ``i``'s corrector step ``j`` uses stream
#: ``1 + i (K + 1) + j`` and its predictor ``1 + i (K + 1) + K`` (``K`` corrector steps).
PRIOR_STREAM = 0


def _resolve_seed(seed, generator, capturable: bool) -> int:
    """The Philox key: ``seed``, else one draw from ``generator`` (or torch's global generator)."""
    if noise_kind(seed, None, generator, what="the noise (a generator only supplies the seed)") == "keyed":
        return seed
    gen_device = generator.device if generator is not None else torch.device("cpu")
    if capturable and gen_device.type != "cpu":
        raise ValueError("capturable=True cannot draw the seed from a CUDA generator (a host sync): pass seed=")
    return int(torch.randint(0, 2**62, (1,), generator=generator, device=gen_device)[0])


def _sample_index(sample_index, B: int, device, capturable: bool) -> torch.Tensor:
    if sample_index is None:
        return torch.arange(B, dtype=torch.int64, device=device)
    if capturable:  # shape, dtype and device only: reading the values would sync
        noise_key(0, sample_index, 0, B, device)
        return sample_index
    return check_sample_index(sample_index, B).to(device)


def _initial_state(sde, shape, x_init, seed, sample_index, device, dtype, backend, capturable):
    if x_init is not None:
        check_tensor("x_init", x_init)
        if tuple(x_init.shape) != shape:
            raise ValueError(f"x_init must have shape {shape}, got {tuple(x_init.shape)}")
        if not capturable:
            check_finite("x_init", x_init)
        return x_init.clone(memory_format=torch.contiguous_format)
    z = normal(seed, sample_index, PRIOR_STREAM, shape[1:], dtype=dtype, backend=backend)
    try:
        return sde.prior_from_normal(z)
    except NotImplementedError:
        if capturable:
            raise ValueError(f"capturable=True needs x_init, or an SDE with prior_from_normal(z); "
                             f"{type(sde).__name__} has none") from None
        # Deterministic in the seed, but not batch-size invariant: the SDE only offers prior_sample().
        g = torch.Generator(device=device).manual_seed(seed % 2**63)
        return sde.prior_sample(shape, generator=g, device=device, dtype=dtype)


def sample(
    score,
    sde,
    shape,
    method: str = "euler_maruyama",
    steps: int = 1000,
    corrector: str | None = None,
    snr: float = 0.16,
    corrector_steps: int = 1,
    eps: float | None = None,
    denoise: bool = True,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    generator: torch.Generator | None = None,
    *,
    x_init: torch.Tensor | None = None,
    timesteps=None,
    corrector_norm: str | None = None,
    max_steps: int = 10_000,
    device=None,
    dtype: torch.dtype = torch.float32,
    progress: bool = False,
    seed: int | None = None,
    sample_index: torch.Tensor | None = None,
    backend: str | None = None,
    capturable: bool = False,
    monitor=None,
    model_kwargs: dict | None = None,
    variance_type: str = "fixed_small",
    step_lr: float = 2e-5,
    grid: str | None = None,
    method_options: dict | None = None,
) -> SampleResult:
    """Draw samples by integrating the reverse-time SDE or the probability-flow ODE from ``T`` to ``eps``.

    Source: Song et al. 2021, §4.2 and Algorithms 2–3 (predictor–corrector:
    the corrector runs before the predictor at each ``t_i``), §4.3 (probability
    flow, solved there with scipy's RK45; here with a Dormand–Prince RK45 in
    torch on ``x``'s device with per-sample error control).

    Noise: every draw (prior, predictor, corrector) is keyed Philox noise
    (:mod:`sdekit.noise`) on ``(seed, sample_index[b], element, stream)``,
    so sample ``b`` depends on ``sample_index[b]`` and not on the batch it is
    drawn in: batches of 1, 7 or 64 (or shards of a job) give the same samples
    for the same indices, on both backends (if the score model is itself
    batch-invariant).  The Triton kernels draw it in registers; the PyTorch
    path computes the same bits with :func:`sdekit.noise.counter_normal_unchecked`
    (the two agree up to float32 rounding of ``log``/``cos``/``sin``).

    Args:
        score: score model ``score(x, t, **model_kwargs)``, ``x`` ``(B, *D)``, ``t`` ``(B,)`` → ``(B, *D)``.
        sde: forward SDE (:class:`~sdekit.VPSDE`, :class:`~sdekit.SubVPSDE`,
            :class:`~sdekit.VESDE`, :class:`~sdekit.OrnsteinUhlenbeck`, or any
            :class:`~sdekit.sdes.AbstractSDE` for ``"euler_maruyama"``/``"ode"``).
        shape: ``(B, *D)``, batch included.
        method: predictor ``"euler_maruyama"`` | ``"reverse_diffusion"`` |
            ``"ancestral"`` | ``"ddim"`` (Song, Meng & Ermon 2021, eqs. 12/16,
            :class:`~sdekit.sampling.DDIMPredictor`; ``method_options={"eta": η}``,
            default 0), ``"ode"`` for the adaptive probability flow, or
            ``"dpmpp_2m"`` for DPM-Solver++(2M) on the probability flow (linear
            SDEs; Lu et al. 2022b, Algorithm 2; :mod:`sdekit.sampling.dpm_solver`),
            or ``"ncsn"`` for NCSN's annealed Langevin dynamics without a
            predictor (Song & Ermon 2019, Algorithm 1; linear SDEs, levels
            ``σ(t_i)`` on the uniform grid ``T → eps``, ``steps`` levels of
            ``corrector_steps`` steps each, step ``step_lr``; ``snr`` unused;
            :func:`sdekit.sampling.sample_ncsn`), or one of the noise-level
            family on linear SDEs (:data:`sdekit.sampling.sigma_samplers.SIGMA_SAMPLERS`,
            each the k-diffusion-signature sampler of
            :mod:`sdekit.integrations.k_diffusion` run on ``x̃ = (x − c)/α`` at
            ``σ̃ = σ/α``): ``"euler"``, ``"heun"``
            (EDM, Karras et al. 2022, Alg. 2; ``s_churn``, ``s_tmin``,
            ``s_tmax``, ``s_noise``), ``"euler_ancestral"`` (η, default 1),
            ``"dpm_2"``, ``"dpm_2_ancestral"``, ``"lms"`` (``order``),
            ``"dpmpp_2s"``, ``"dpmpp_2s_ancestral"``, ``"dpmpp_3m"``,
            ``"dpmpp_2m_sde"`` (``solver_type``), ``"dpmpp_3m_sde"`` (Lu et al.
            2022b); ``steps`` steps on ``grid`` (default: the registry's, its
            paper's), keyed noise as every other method (step ``i``: stream ``1 + i``).
        steps: predictor steps ``N`` on the uniform grid ``T → eps`` (fixed-step methods;
            uniform in log-SNR for ``"dpmpp_2m"``; noise levels ``L`` for ``"ncsn"``).
        corrector: ``None`` | ``"langevin"`` | ``"annealed_langevin"`` (not with ``"ode"``/``"dpmpp_2m"``).
        snr: corrector signal-to-noise ratio ``r`` (score_sde: 0.16 for CIFAR-10 VE).
        corrector_steps: Langevin steps per time step.
        eps: last time; default ``sde.sampling_eps`` (1e-3 VP/sub-VP, 1e-5 VE).
        denoise: return Tweedie's ``E[x_0 | x_eps]`` (one extra evaluation).
        rtol, atol: RK45 tolerances (``"ode"``).
        generator: fallback source of the seed: when ``seed`` is ``None``, one
            integer is drawn from it (from torch's global generator if it is
            ``None`` too) and used as ``seed``; same generator state → same samples.
        x_init: optional ``shape`` state at ``t = T`` instead of prior samples.
        timesteps: optional explicit decreasing grid (overrides ``steps``/``eps``;
            for ``"ode"`` only its end points are used).
        corrector_norm: step rule of ``corrector="langevin"`` (see
            :class:`~sdekit.sampling.Langevin`): ``"sigma"`` (the default on
            linear SDEs: ``ε = 2α(snr·σ(t))²``, safe in every dimension),
            ``"per_sample"`` (score_sde's ``‖z‖/‖s‖`` ratio per sample, the
            default before and still the default on non-linear SDEs; unsafe
            below ~100 dimensions, where it can inflate the variance by orders
            of magnitude), or ``"batch_mean"`` (score_sde's rule exactly, which
            couples the samples of a batch).  ``None``: the default.
        max_steps: RK45 step-attempt bound per sample (``"ode"``).
        device, dtype: of the samples when ``x_init`` is not given.
        progress: show a tqdm progress bar (for ``"ode"`` this costs one
            extra host sync per step to read the time).
        seed: the noise key, an integer in [0, 2⁶⁴) (not together with ``generator``).
        sample_index: int64 ``(B,)`` global indices of the samples (default
            ``arange(B)``), values in [0, 2³²); give each shard of a job its own
            range to get the samples one big batch would give.
        backend: ``"auto"`` (Triton kernels for CUDA float32/16/bf16 data when
            Triton imports, else PyTorch), ``"triton"``, ``"torch"``, or ``None``
            (``$SDEKIT_BACKEND``, default ``"auto"``); see :func:`sdekit.kernels.resolve_backend`.
        capturable: make the whole call free of host syncs, so that it can be
            captured in one CUDA graph or compiled with
            ``torch.compile(mode="reduce-overhead")``: the checks that read
            device memory (``x_init`` finite, ``sample_index`` range) are
            skipped, and fixed-step methods only.  Per-step coefficients are
            always computed on the host, once, before the loop; the kernels read
            ``sample_index`` from device memory, so a captured graph replayed
            after ``sample_index.copy_(new)`` draws new samples.  Run once
            before capturing (kernel compilation).
        monitor: optional :class:`sdekit.faults.NonFiniteMonitor` built on the
            batch's ``sample_index``: records where each sample first became
            non-finite (step, ``t``) without host syncs, sets faulted samples
            to NaN, and (``"ode"``) freezes them so the others finish.
        model_kwargs: per-sample conditioning passed to every score call
            (tensors with leading dimension ``B``; :mod:`sdekit.conditioning`).
        variance_type: ``method="ancestral"`` only: ``"fixed_small"`` (default,
            DDPM's posterior variance β̃_t) or ``"fixed_large"`` (DDPM's β_t, the
            forward transition's variance; diffusers' names), see
            :class:`~sdekit.sampling.AncestralSamplingPredictor`.
        step_lr: ``method="ncsn"`` only: ``ε`` of the annealed step
            ``α_i = ε σ_i²/σ_L²``.
        grid: the time grid of a fixed-step method (not with ``timesteps``):
            ``"uniform"`` (the predictors' default), ``"logsnr"`` (``"dpmpp_2m"``'s),
            ``"exponential"`` (the same grid), ``"karras"`` (ρ = 7), ``"quadratic"``
            or ``"discrete"`` (a :class:`~sdekit.DiscreteVPSDE`'s own timesteps);
            see :func:`sdekit.sampling.grid.sampling_grid`.  ``None``: the method's default.
        method_options: options of ``"ddim"`` (``{"eta": 0.5}``) or of a
            noise-level-family method (e.g. ``{"eta": 0.5, "s_noise": 1.0}`` for ``"euler_ancestral"``, ``{"s_churn": 40, "s_tmin": 0.05, "s_tmax": 50}`` for
            ``"heun"``); the noise and conditioning arguments are set by ``sample``.
    Returns:
        :class:`SampleResult` with ``x`` of shape ``shape`` and per-sample NFE.
    Raises:
        ValueError / TypeError: on a bad argument (named in the message), e.g.
            ``sde`` not an SDE object (TypeError), ``shape`` with a zero batch,
            ``steps`` not an integer >= 1 (TypeError for a bool or non-number),
            ``eps`` outside ``(0, T)`` or with ``σ(eps) = 0`` (VP / sub-VP / EDM
            at ``t = 0``; VE needs ``eps > 0`` too), a ``device`` that is not
            available (e.g. ``"cuda"`` without CUDA), a
            non-linear SDE for a method that needs closed forms, a
            ``model_kwargs`` tensor whose leading dimension is not ``B``, or a
            score model returning the wrong shape.
        RuntimeError: ``backend="triton"`` where the kernels cannot run.
        ToleranceNotMetError: if RK45 cannot reach ``eps`` within ``max_steps``.

    Host syncs: none inside the fixed-step loop (none at all with
    ``capturable=True``); one per RK45 step for ``"ode"``.
    """
    shape = _check_shape(shape)
    check_sde("sde", sde)
    check_choice("method", method, SAMPLE_METHODS)
    _check_method_arguments(sde, method, corrector, corrector_norm, grid, timesteps, capturable, method_options,
                            variance_type)
    snr = check_positive("snr", snr)
    corrector_steps = check_positive_int("corrector_steps", corrector_steps)
    if timesteps is None:
        steps = check_positive_int("steps", steps)
        eps = check_eps(sde, sde.sampling_eps if eps is None else eps)
    else:  # eps is unused: the grid ends at timesteps[-1]
        eps = check_real("eps", sde.sampling_eps if eps is None else eps)
    max_steps = check_positive_int("max_steps", max_steps)
    if method == "ncsn":
        if capturable or monitor is not None or timesteps is not None:
            raise ValueError("method='ncsn' takes no capturable, monitor or timesteps (its levels are "
                             "steps uniform times T → eps)")
        from .ncsn import sample_ncsn

        return sample_ncsn(score, sde, shape, n_levels=steps, steps_per_level=corrector_steps, step_lr=step_lr,
                           eps=eps, denoise=denoise, x_init=x_init, seed=seed, generator=generator,
                           sample_index=sample_index, model_kwargs=model_kwargs, device=device, dtype=dtype,
                           backend=backend)
    B = shape[0]
    dev = check_device("device", device)  # canonical: "cuda" → "cuda:0"
    if x_init is not None:
        check_tensor("x_init", x_init)
        dev, dtype = x_init.device, x_init.dtype
    score, model_kwargs = unbind_conditioning(checked_score(score), model_kwargs, B,
                                              device=dev if method == "ode" else None)
    if method != "ode" and method not in SIGMA_SAMPLERS:  # these evaluate the whole batch at every call
        score = bind_model_kwargs(score, model_kwargs)
    predictor = _predictor(method, sde, score, variance_type, method_options) if method in PREDICTORS else None
    if denoise:
        check_denoisable(sde)
    backend = resolve_backend(backend, dev, dtype)
    idx = _sample_index(sample_index, B, dev, capturable)
    if method == "ode":
        seed = _resolve_seed(seed, generator, capturable)
        x = _initial_state(sde, shape, x_init, seed, idx, dev, dtype, backend, capturable)
        return _sample_ode(score, sde, x, time_grid(sde, steps, eps, timesteps, device="cpu"), denoise, rtol, atol,
                           max_steps, progress, backend, monitor, model_kwargs)
    if method == "dpmpp_2m" or method in SIGMA_SAMPLERS:
        times = _fixed_grid(sde, method, steps, eps, timesteps, grid)
        seed = _resolve_seed(seed, generator, False)
        x = _initial_state(sde, shape, x_init, seed, idx, dev, dtype, backend, False)
        if method in SIGMA_SAMPLERS:
            x, nfe = sample_sigma_family(method, score, sde, x, times, denoise=denoise, seed=seed, sample_index=idx,
                                         model_kwargs=model_kwargs, method_options=method_options,
                                         progress=progress, monitor=monitor)
        else:
            x, nfe = sample_dpmpp_2m(score, sde, x, times, denoise, monitor)
        return _result(x, nfe, times.numel() - 1, monitor)
    fix = _corrector(corrector, sde, score, snr, corrector_steps, corrector_norm)
    plan = _plan(sde, predictor, fix, steps, eps, timesteps, seed, generator, capturable, denoise, grid)
    x = _initial_state(sde, shape, x_init, plan.seed, idx, dev, dtype, backend, capturable)
    x = run_plan(plan, x, score, predictor, fix, idx, backend, progress=progress, monitor=monitor)
    n = len(plan.times) - 1
    return _result(x, n * (1 + plan.corrector_steps) + (plan.denoise is not None), n, monitor)


def _result(x, nfe: int, steps: int, monitor) -> SampleResult:
    """The :class:`SampleResult` of a fixed-step method (NaN where the monitor saw a fault)."""
    x = as_monitor(monitor).fill_nan(x)
    full = lambda v: torch.full((x.shape[0],), v, dtype=torch.int64, device=x.device)
    return SampleResult(x=x, nfe=full(nfe), steps=full(steps))


def _fixed_grid(sde, method: str, steps, eps, timesteps, grid) -> torch.Tensor:
    """The time grid of ``dpmpp_2m`` and the noise-level family: explicit, named, or the method's default."""
    if timesteps is not None:
        return time_grid(sde, steps, eps, timesteps)
    if method == "dpmpp_2m" and grid is None:
        return logsnr_grid(sde, steps, eps)
    return sampling_grid(sde, steps, eps, grid or SIGMA_SAMPLERS[method].grid)


def _predictor(method: str, sde, score, variance_type: str, method_options) -> AbstractPredictor:
    if method == "ancestral":
        return AncestralSamplingPredictor(sde, score, variance_type)
    if method == "ddim":
        return DDIMPredictor(sde, score, **_ddim_options(method_options))
    return PREDICTORS[method](sde, score)


def _corrector(corrector, sde, score, snr: float, corrector_steps: int, corrector_norm) -> AbstractCorrector | None:
    if corrector is None:
        return None
    if corrector == "langevin":
        norm = default_norm(sde) if corrector_norm is None else corrector_norm
        return Langevin(sde, score, snr, corrector_steps, norm=norm)
    return CORRECTORS[corrector](sde, score, snr, corrector_steps)


def _check_method_arguments(sde, method, corrector, corrector_norm, grid, timesteps, capturable, method_options,
                            variance_type) -> None:
    """The checks of :func:`sample` that depend on the method: what each family of methods accepts."""
    if corrector is not None:
        check_choice("corrector", corrector, tuple(CORRECTORS))
        if method == "ode":
            raise ValueError("corrector must be None with method='ode' (Langevin correction needs a stochastic sampler)")
        if method == "dpmpp_2m":
            raise ValueError("corrector must be None with method='dpmpp_2m' (a deterministic multistep solver)")
        if method == "ncsn":
            raise ValueError("corrector must be None with method='ncsn' (annealed Langevin is the whole sampler; "
                             "set its steps per level with corrector_steps)")
    sigma_family = method in SIGMA_SAMPLERS
    if sigma_family:
        check_linear(sde, f"method={method!r}")
    if corrector is not None and sigma_family:
        raise ValueError(f"corrector must be None with method={method!r} (the noise-level family has no corrector)")
    if method_options is not None and not sigma_family and method != "ddim":
        raise ValueError(f"method_options applies to method='ddim' and the noise-level family "
                         f"{list(SIGMA_SAMPLERS)}, not method={method!r}")
    if grid is not None:
        check_choice("grid", grid, GRIDS)
        if timesteps is not None:
            raise ValueError("pass either grid= (a named grid) or timesteps= (an explicit one), not both")
        if method in ("ode", "ncsn"):
            raise ValueError(f"grid applies to fixed-step methods, not method={method!r}")
    if capturable and sigma_family:
        raise ValueError(f"capturable=True needs a predictor method, not method={method!r}")
    check_choice("variance_type", variance_type, ("fixed_small", "fixed_large"))
    if variance_type != "fixed_small" and method != "ancestral":
        raise ValueError(f"variance_type={variance_type!r} needs method='ancestral', got method={method!r}")
    if capturable and method == "ode":
        raise ValueError("capturable=True needs a fixed-step method: method='ode' adapts its steps on the host")
    if capturable and method == "dpmpp_2m":
        raise ValueError("capturable=True needs a predictor method, not method='dpmpp_2m'")
    if corrector_norm is not None:
        check_choice("corrector_norm", corrector_norm, NORM_RULES)


def _ddim_options(method_options) -> dict:
    """``method_options`` of ``method="ddim"``: at most ``{"eta": η}``."""
    if method_options is None:
        return {}
    if not isinstance(method_options, dict):
        raise TypeError(f"method_options must be a dict of the method's options, got {type(method_options).__name__}")
    unknown = sorted(set(method_options) - {"eta"})
    if unknown:
        raise TypeError(f"method_options {unknown} are not options of method='ddim'; it takes ['eta']")
    return dict(method_options)


@dataclass(frozen=True)
class StepPlan:
    """Host-side schedule of a fixed-step sample: everything the loop needs, as Python numbers.

    Attributes:
        seed: the Philox key.
        times: the ``N + 1`` grid times ``t_0 = T > … > t_N``.
        coef: per-step ``(a, b, c, d)`` tuples of the predictor's affine update
            (``coef[i]`` for the step from ``t_i``), or ``None`` (Euler–Maruyama
            without affine coefficients).
        corrector: per-step corrector scalars (:meth:`AbstractCorrector.schedule`), or ``None``.
        corrector_steps: ``K``, corrector steps per time step (0 without a corrector).
        denoise: ``(a, b, d)`` of Tweedie's formula at ``t_N``, or ``None``.
    """

    seed: int
    times: tuple
    coef: tuple | None
    corrector: tuple | None
    corrector_steps: int
    denoise: tuple | None


@compiler_disable
def _plan(sde, predictor, fix, steps, eps, timesteps, seed, generator, capturable, denoise,
          kind: str | None = None) -> StepPlan:
    """Build the :class:`StepPlan` on the host (float64 CPU tensors, converted to Python floats once).

    Excluded from ``torch.compile`` tracing: it is host work by design, done
    before the loop; under ``torch.compile`` it is the one graph break.
    """
    seed = _resolve_seed(seed, generator, capturable)
    grid = time_grid(sde, steps, eps, timesteps, device="cpu") if kind is None else sampling_grid(sde, steps, eps, kind)
    n = grid.numel() - 1
    K = fix.n_steps if fix is not None else 0
    if n * (K + 1) >= 2**32:
        raise ValueError(f"steps × (corrector_steps + 1) must be below 2**32 (one noise stream each), "
                         f"got {n * (K + 1)}")
    coef = predictor.coefficients(grid[:-1], grid[1:])
    coef = None if coef is None else tuple(zip(*(v.tolist() for v in coef)))  # one (a, b, c, d) row per step
    params = tuple(fix.schedule(grid[:-1], grid[1:])) if fix is not None else None
    tweedie = None
    if denoise:
        tweedie = tuple(float(v) for v in tweedie_coefficients(sde, grid[-1:]))
    return StepPlan(seed, tuple(grid.tolist()), coef, params, K, tweedie)


def run_plan(plan: StepPlan, x, score, predictor, fix, sample_index, backend, *, progress: bool = False,
             monitor=None):
    """The fixed-step predictor–corrector loop of :func:`sample` (Song et al. 2021, Algorithms 2–3).

    Only device work and Python numbers: no host syncs, no reads of device
    memory, so it compiles with ``torch.compile(fullgraph=True)`` and records
    into a CUDA graph.  Noise streams: step ``i``'s corrector step ``j`` uses
    ``1 + i (K + 1) + j``, its predictor ``1 + i (K + 1) + K``; the prior uses
    :data:`PRIOR_STREAM`.  Returns the final state (denoised if ``plan.denoise``).
    ``monitor`` (a :class:`sdekit.faults.NonFiniteMonitor`) checks the state after
    each step ``i`` (reported with ``t_i``) and after denoising (step ``N``).
    """
    B, K, times, coef = x.shape[0], plan.corrector_steps, plan.times, plan.coef
    monitor = as_monitor(monitor)
    corrector = () if plan.corrector is None else plan.corrector  # None only without a corrector (K = 0)
    update = KeyedUpdate(x, seed=plan.seed, sample_index=sample_index, backend=backend)  # key checked once
    iterator = range(len(times) - 1)
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(iterator, desc=f"sample ({predictor.name})", total=len(times) - 1)
    for i in iterator:
        t = torch.full((B,), times[i], dtype=x.dtype, device=x.device)
        for j in range(K):
            x = fix.bound_step(update, x, score(x, t), corrector[i], stream=1 + i * (K + 1) + j)
        s = score(x, t)
        stream = 1 + i * (K + 1) + K
        if coef is not None:
            x = update.affine(x, s, *coef[i], stream=stream)
        else:
            x = predictor.keyed_step(x, s, t, times[i + 1] - times[i], seed=plan.seed, sample_index=sample_index,
                                       stream=stream, backend=backend)
        monitor.after_step(i, times[i], x)
    if plan.denoise is not None:
        a, b, d = plan.denoise
        s = score(x, torch.full((B,), times[-1], dtype=x.dtype, device=x.device))
        x = affine_update(x, s, a, b, 0.0, d, backend=backend)
        monitor.after_step(len(times) - 1, times[-1], x)
    return x


def _denoise(sde, score, x, t_last: float, backend, model_kwargs):
    """Tweedie's ``E[x_0 | x]`` at time ``t_last`` as one fused noise-free update (one evaluation)."""
    a, b, d = (float(v) for v in tweedie_coefficients(sde, torch.tensor([t_last], dtype=torch.float64)))
    s = score(x, torch.full((x.shape[0],), t_last, dtype=x.dtype, device=x.device), **model_kwargs)
    return affine_update(x, s, a, b, 0.0, d, backend=backend)


def _ode_progress(func, t_start: float, t_end: float):
    """Wrap ``func(t, y)`` so that a tqdm bar follows the least advanced sample (one sync per call)."""
    from tqdm.auto import tqdm

    bar = tqdm(total=round(abs(t_end - t_start), 6), desc="sample (ode)", unit="t")

    def wrapped(t, y, *args):
        done = round(float((t - t_start).abs().min()), 6)  # least advanced sample; RK stages can step back
        if done > bar.n:
            bar.n = done
            bar.refresh()
        return func(t, y, *args)

    return wrapped, bar


def _sample_ode(score, sde, x, grid, denoise, rtol, atol, max_steps, progress, backend, monitor,
                model_kwargs) -> SampleResult:
    """Probability-flow sampling from ``grid[0]`` to ``grid[-1]`` with per-sample RK45.

    Only the end points of ``grid`` are used: the solver chooses its own steps.
    The tensors of ``model_kwargs`` ride along as ``solve_adaptive`` args, so
    they are gathered with the active samples.  With a ``monitor``, the
    right-hand side is guarded (:meth:`NonFiniteMonitor.guard`).
    """
    flow = sde.probability_flow(score)
    t0, t1 = float(grid[0]), float(grid[-1])
    leaves, rebuild = flatten_model_kwargs(model_kwargs)

    def func(t, y, *cond):
        return flow.drift(y, t, **rebuild(cond))

    bar = None
    if progress:
        func, bar = _ode_progress(func, t0, t1)
    monitor = as_monitor(monitor)
    func, args = monitor.wrap_rhs(func, leaves)
    sol = solve_adaptive(func, x, t0, t1, rtol=rtol, atol=atol, max_steps=max_steps, args=args)
    if bar is not None:
        bar.close()
    x, nfe = sol.y, sol.nfe
    if denoise:
        x = _denoise(sde, score, x, t1, backend, model_kwargs)
        nfe = nfe + 1
        monitor.after_step(monitor.evaluations, t1, x)
    return SampleResult(x=monitor.fill_nan(x), nfe=nfe, steps=sol.steps)
