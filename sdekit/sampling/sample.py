"""``sdekit.sample``: reverse-time SDE, predictor–corrector and probability-flow sampling."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .._checks import (
    check_choice,
    check_finite,
    check_positive,
    check_positive_int,
    check_tensor,
)
from ..score_models import checked_score
from ..solvers.adaptive import solve_adaptive
from .correctors import CORRECTORS
from .denoise import tweedie_denoise
from .grid import time_grid
from .predictors import PREDICTORS

METHODS = tuple(PREDICTORS) + ("ode",)


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


def _check_shape(shape) -> tuple:
    try:
        if isinstance(shape, str):
            raise TypeError
        shape = tuple(int(s) for s in shape)
    except (TypeError, ValueError):
        raise TypeError(f"shape must be a tuple of ints (B, *D), got {shape!r}") from None
    if len(shape) < 2 or min(shape) < 1:
        raise ValueError(f"shape must be (B, *D) with at least 2 positive entries, got {shape}")
    return shape


def _initial_state(sde, shape, x_init, generator, device, dtype):
    if x_init is None:
        return sde.prior_sample(shape, generator=generator, device=device, dtype=dtype)
    check_tensor("x_init", x_init)
    if tuple(x_init.shape) != shape:
        raise ValueError(f"x_init must have shape {shape}, got {tuple(x_init.shape)}")
    return check_finite("x_init", x_init).clone()


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
    corrector_norm: str = "per_sample",
    max_steps: int = 10_000,
    device=None,
    dtype: torch.dtype = torch.float32,
    progress: bool = False,
) -> SampleResult:
    """Draw samples by integrating the reverse-time SDE or the probability-flow ODE from ``T`` to ``eps``.

    Source: Song et al. 2021, §4.2 and Algorithms 2–3 (predictor–corrector:
    the corrector runs before the predictor at each ``t_i``), §4.3 (probability
    flow, solved there with scipy's RK45; here with a Dormand–Prince RK45 in
    torch on ``x``'s device with per-sample error control).

    Args:
        score: score model ``score(x, t)``, ``x`` ``(B, *D)``, ``t`` ``(B,)`` → ``(B, *D)``.
        sde: forward SDE (:class:`~sdekit.VPSDE`, :class:`~sdekit.SubVPSDE`,
            :class:`~sdekit.VESDE`, :class:`~sdekit.OrnsteinUhlenbeck`, or any
            :class:`~sdekit.sdes.AbstractSDE` for ``"euler_maruyama"``/``"ode"``).
        shape: ``(B, *D)``, batch included.
        method: predictor ``"euler_maruyama"`` | ``"reverse_diffusion"`` |
            ``"ancestral"``, or ``"ode"`` for the adaptive probability flow.
        steps: predictor steps ``N`` on the uniform grid ``T → eps`` (fixed-step methods).
        corrector: ``None`` | ``"langevin"`` | ``"annealed_langevin"`` (not with ``"ode"``).
        snr: corrector signal-to-noise ratio ``r`` (score_sde: 0.16 for CIFAR-10 VE).
        corrector_steps: Langevin steps per time step.
        eps: last time; default ``sde.sampling_eps`` (1e-3 VP/sub-VP, 1e-5 VE).
        denoise: return Tweedie's ``E[x_0 | x_eps]`` (one extra evaluation).
        rtol, atol: RK45 tolerances (``"ode"``).
        generator: ``torch.Generator`` for the prior and all noise.
        x_init: optional ``shape`` state at ``t = T`` instead of prior samples.
        timesteps: optional explicit decreasing grid (overrides ``steps``/``eps``;
            for ``"ode"`` only its end points are used).
        corrector_norm: ``"per_sample"`` (default) or ``"batch_mean"``
            (score_sde's rule, which couples the samples of a batch).
        max_steps: RK45 step-attempt bound per sample (``"ode"``).
        device, dtype: of the samples when ``x_init`` is not given.
        progress: show a tqdm progress bar (for ``"ode"`` this costs one
            extra host sync per step to read the time).
    Returns:
        :class:`SampleResult` with ``x`` of shape ``shape`` and per-sample NFE.
    Raises:
        ValueError / TypeError: on a bad argument (named in the message), a
            non-linear SDE for a method that needs closed forms, or a score model
            returning the wrong shape.
        ToleranceNotMetError: if RK45 cannot reach ``eps`` within ``max_steps``.

    Host syncs: none inside the fixed-step loop; one per RK45 step for ``"ode"``.
    """
    shape = _check_shape(shape)
    check_choice("method", method, METHODS)
    if corrector is not None:
        check_choice("corrector", corrector, tuple(CORRECTORS))
        if method == "ode":
            raise ValueError("corrector must be None with method='ode' (Langevin correction needs a stochastic sampler)")
    check_choice("corrector_norm", corrector_norm, ("per_sample", "batch_mean"))
    snr = check_positive("snr", snr)
    corrector_steps = check_positive_int("corrector_steps", corrector_steps)
    eps = sde.sampling_eps if eps is None else float(eps)
    score = checked_score(score)
    x = _initial_state(sde, shape, x_init, generator, device, dtype)
    grid = time_grid(sde, steps, eps, timesteps, device=x.device)
    B = shape[0]
    if method == "ode":
        return _sample_ode(score, sde, x, grid, denoise, rtol, atol, max_steps, progress)

    predictor = PREDICTORS[method](sde, score)
    fix = None
    if corrector is not None:
        fix = CORRECTORS[corrector](sde, score, snr, corrector_steps, corrector_norm == "per_sample")
    noise = lambda: torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)  # noqa: E731
    n = grid.numel() - 1
    iterator = range(n)
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(iterator, desc=f"sample ({method})", total=n)
    ones = torch.ones(B, dtype=torch.float64, device=x.device)
    for i in iterator:
        t, t_next = grid[i] * ones, grid[i + 1] * ones
        if fix is not None:
            x, _ = fix.correct(x, t, t_next, noise)
        x, _ = predictor.step(x, t, t_next, noise())
    nfe = n * (1 + (corrector_steps if fix is not None else 0))
    if denoise:
        x = tweedie_denoise(sde, score, x, grid[-1] * ones)
        nfe += 1
    full = lambda v: torch.full((B,), v, dtype=torch.int64, device=x.device)  # noqa: E731
    return SampleResult(x=x, nfe=full(nfe), steps=full(n))


def _ode_progress(func, t_start: float, t_end: float):
    """Wrap ``func(t, y)`` so that a tqdm bar follows the least advanced sample (one sync per call)."""
    from tqdm.auto import tqdm

    bar = tqdm(total=round(abs(t_end - t_start), 6), desc="sample (ode)", unit="t")

    def wrapped(t, y):
        done = round(float((t - t_start).abs().min()), 6)  # least advanced sample; RK stages can step back
        if done > bar.n:
            bar.n = done
            bar.refresh()
        return func(t, y)

    return wrapped, bar


def _sample_ode(score, sde, x, grid, denoise, rtol, atol, max_steps, progress) -> SampleResult:
    """Probability-flow sampling from ``grid[0]`` to ``grid[-1]`` with per-sample RK45.

    Only the end points of ``grid`` are used: the solver chooses its own steps.
    """
    flow = sde.probability_flow(score)
    t0, t1 = float(grid[0]), float(grid[-1])
    func = lambda t, y: flow.drift(y, t)  # noqa: E731
    bar = None
    if progress:
        func, bar = _ode_progress(func, t0, t1)
    sol = solve_adaptive(func, x, t0, t1, rtol=rtol, atol=atol, max_steps=max_steps)
    if bar is not None:
        bar.close()
    x, nfe = sol.y, sol.nfe
    if denoise:
        x = tweedie_denoise(sde, score, x, torch.full((x.shape[0],), t1, dtype=torch.float64, device=x.device))
        nfe = nfe + 1
    return SampleResult(x=x, nfe=nfe, steps=sol.steps)
