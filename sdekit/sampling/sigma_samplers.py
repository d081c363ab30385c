"""The samplers of the noise-level family in :func:`sdekit.sample`: one implementation, two front doors.

Each method here *is* a k-diffusion-signature sampler of
:mod:`sdekit.integrations.k_diffusion` (its one step implementation), run on
the scaled state ``x̃ = (x − c)/α`` at noise levels ``σ̃ = σ/α`` with
:class:`~sdekit.sampling.sigma_space.ScaledDenoiser`, so it works on every
linear SDE (VP, sub-VP, VE, EDM, discrete VP, OU): :func:`sample_sigma_family`
maps the SDE grid to ``σ̃``, the prior sample to ``x̃``, runs the sampler with
keyed noise (``seed``, ``sample_index``; stream ``1 + i`` for step ``i``) and
maps the result back.  :data:`SIGMA_SAMPLERS` is the registry that
:func:`~sdekit.sample`, its docs and the order/power tests read.
"""

from __future__ import annotations

import inspect
from typing import Callable, NamedTuple

import torch


class SigmaSampler(NamedTuple):
    """A registered sampler.

    Attributes:
        function: name of the k-diffusion-signature function in :mod:`sdekit.integrations.k_diffusion`.
        grid: the default time grid (:data:`sdekit.sampling.grid.GRIDS`), its paper's.
        defaults: options that differ from the function's own defaults (e.g. ``eta = 0`` for a deterministic variant).
        order: global order in the step of the deterministic sampler at its defaults
            (start-up steps included), ``None`` for a stochastic one.
        source: paper and algorithm.
    """

    function: str
    grid: str
    defaults: dict
    order: int | None
    source: str


SIGMA_SAMPLERS: dict[str, SigmaSampler] = {
    "euler": SigmaSampler("sample_euler", "karras", {}, 1,
                          "Karras et al. 2022, Alg. 2 with Euler steps (churn: s_churn, s_tmin, s_tmax, s_noise)"),
    "heun": SigmaSampler("sample_heun", "karras", {}, 2,
                         "Karras et al. 2022 (EDM), Alg. 2 (stochastic Heun: s_churn, s_tmin, s_tmax, s_noise)"),
    "euler_ancestral": SigmaSampler("sample_euler_ancestral", "karras", {}, None,
                                    "k-diffusion's sample_euler_ancestral: DDIM (Song, Meng & Ermon 2021, eqs. 12, 16) "
                                    "with eta (default 1) on the Karras grid"),
    "dpm_2": SigmaSampler("sample_dpm_2", "karras", {}, 2, "Lu et al. 2022a (DPM-Solver), Alg. 1, r1 = 1/2"),
    "dpm_2_ancestral": SigmaSampler("sample_dpm_2_ancestral", "karras", {}, None,
                                    "Lu et al. 2022a, Alg. 1 with ancestral noise (k-diffusion)"),
    "lms": SigmaSampler("sample_lms", "karras", {}, 2,
                        "linear multistep (Adams–Bashforth) in sigma, order 4 after lower-order start-up "
                        "(k-diffusion's sample_lms; Karras et al. 2022, §3)"),
    "dpmpp_2s": SigmaSampler("sample_dpmpp_2s_ancestral", "logsnr", {"eta": 0.0}, 2,
                             "Lu et al. 2022b (DPM-Solver++), Alg. 1 (2S, r = 1/2)"),
    "dpmpp_2s_ancestral": SigmaSampler("sample_dpmpp_2s_ancestral", "logsnr", {}, None,
                                       "Lu et al. 2022b, Alg. 1 with ancestral noise (k-diffusion)"),
    "dpmpp_3m": SigmaSampler("sample_dpmpp_3m_sde", "logsnr", {"eta": 0.0}, 2,
                             "Lu et al. 2022b, multistep data prediction, 3M (order 3 after a first-order start)"),
    "deis": SigmaSampler("sample_deis", "logsnr", {}, 2,
                         "Zhang & Chen 2023 (DEIS), §4, tAB in log rho, order 3; order 2 overall because of "
                         "its first-order start"),
    "unipc": SigmaSampler("sample_unipc", "logsnr", {}, 2,
                          "Zhao et al. 2023 (UniPC), Algs. 1-2, bh2, order 2 (+ corrector); order 2 overall "
                          "because the last step is first order (lower_order_final)"),
    "dpmpp_2m_sde": SigmaSampler("sample_dpmpp_2m_sde", "logsnr", {}, None,
                                 "Lu et al. 2022b, SDE-DPM-Solver++(2M) (solver_type midpoint | heun)"),
    "dpmpp_3m_sde": SigmaSampler("sample_dpmpp_3m_sde", "logsnr", {}, None, "Lu et al. 2022b, SDE-DPM-Solver++(3M)"),
}

#: Arguments of the k-diffusion functions that :func:`sample_sigma_family` sets itself.
_RESERVED = ("model", "x", "sigmas", "extra_args", "callback", "disable", "noise_sampler", "generator", "seed",
             "sample_index")


def sampler_function(method: str) -> Callable:
    """The k-diffusion-signature function behind ``method`` (imported on first use)."""
    from ..integrations import k_diffusion

    return getattr(k_diffusion, SIGMA_SAMPLERS[method].function)


def sampler_options(method: str, method_options) -> dict:
    """``method``'s registry defaults updated with ``method_options``, checked against the function's parameters.

    Raises:
        TypeError: if ``method_options`` is not a mapping, or names an option
            the method does not take (the message lists those it takes).
    """
    spec = SIGMA_SAMPLERS[method]
    options = dict(spec.defaults)
    if method_options is None:
        return options
    if not isinstance(method_options, dict):
        raise TypeError(f"method_options must be a dict of the method's options, got {type(method_options).__name__}")
    allowed = [p for p in inspect.signature(sampler_function(method)).parameters if p not in _RESERVED]
    unknown = sorted(set(method_options) - set(allowed))
    if unknown:
        raise TypeError(f"method_options {unknown} are not options of method={method!r}; it takes {allowed}")
    options.update(method_options)
    return options


def _churn_ceiling(options: dict, sigma_max: float) -> float:
    """The highest ``σ̃`` the sampler evaluates: EDM's churn raises ``σ̃`` by at most ``√2`` (γ <= √2 − 1)."""
    if options.get("s_churn", 0.0) > 0 and options.get("s_tmax", float("inf")) >= 0:
        return sigma_max * 2**0.5
    return sigma_max


def sample_sigma_family(method: str, score, sde, x: torch.Tensor, grid: torch.Tensor, *, denoise: bool,
                        seed: int, sample_index: torch.Tensor, model_kwargs: dict, method_options: dict | None,
                        progress: bool = False, monitor=None) -> tuple[torch.Tensor, int]:
    """Run a :data:`SIGMA_SAMPLERS` method from ``grid[0]`` to ``grid[-1]`` on a linear SDE.

    Args:
        method: a key of :data:`SIGMA_SAMPLERS`.
        score: checked score model ``score(x, t, **model_kwargs)`` (not bound to the conditioning).
        sde: a linear SDE.
        x: ``(B, *D)`` state at ``t = grid[0]``.
        grid: ``(N + 1,)`` float64 strictly decreasing SDE times with ``σ(t) > 0``.
        denoise: return ``E[x_0 | x]`` at ``grid[-1]`` (one more evaluation) instead of ``x``; a grid
            ending where ``σ = 0`` ends at the data already (``x̃ = x_0``; no evaluation).
        seed, sample_index: the noise key (``(B,)`` int64) of every step's draw.
        model_kwargs: per-sample conditioning, passed to every call (the whole batch each time).
        method_options: options of the sampler (:func:`sampler_options`).
        progress: show k-diffusion's tqdm bar.
        monitor: optional :class:`sdekit.faults.NonFiniteMonitor`, told the state after
            each step ``i`` (reported with ``t_i``) and after denoising (step ``N``).
    Returns:
        ``(x, nfe)``: the sample in ``x``'s space and the evaluations per sample.
    Raises:
        TypeError: a non-linear SDE, or as :func:`sampler_options`.
        ValueError: as the sampler function (e.g. ``eta`` outside its range).
    """
    from ..faults import as_monitor
    from .dpm_solver import _check_linear
    from .sigma_space import ScaledDenoiser, sigma_of_time

    _check_linear(sde, f"method={method!r}")
    options = sampler_options(method, method_options)
    sigma_grid = sigma_of_time(sde, grid)
    denoiser = ScaledDenoiser(score, sde, t_max=_time_ceiling(sde, options, float(sigma_grid[0])))
    t0 = torch.full((x.shape[0],), float(grid[0]), dtype=torch.float64, device=x.device)
    sigmas = sigma_grid.to(device=x.device, dtype=x.dtype)
    monitor, times = as_monitor(monitor), grid.tolist()

    def callback(info):  # k-diffusion reports the state *before* step i: that is the state after step i − 1
        if info["i"] > 0:
            monitor.after_step(info["i"] - 1, times[info["i"] - 1], info["x"])

    function = sampler_function(method)
    if "seed" in inspect.signature(function).parameters:  # a sampler that draws noise: keyed on (seed, index)
        options.update(seed=seed, sample_index=sample_index)
    out = function(denoiser, denoiser.to_scaled(x, t0), sigmas, model_kwargs, callback, not progress, **options)
    n = grid.numel() - 1
    t_last = torch.full_like(t0, float(grid[-1]))
    monitor.after_step(n - 1, times[-2], out)
    if denoise and float(sigma_grid[-1]) == 0:  # σ̃ = 0: x̃ is x_0 itself, no evaluation (σ = 0 there)
        monitor.after_step(n, times[-1], out)
    elif denoise:
        out = denoiser(out, sigmas[-1] * out.new_ones(out.shape[0]), **model_kwargs)
        monitor.after_step(n, times[-1], out)
    else:
        out = denoiser.to_state(out, t_last)
    return out, denoiser.nfe


def _time_ceiling(sde, options: dict, sigma_max: float) -> float | None:
    """Upper end of the bisected time inversion: ``T``, or (with churn) a time whose ``σ̃`` is ``√2 σ̃(T)``."""
    from .sigma_space import sigma_of_time

    ceiling = _churn_ceiling(options, sigma_max)
    if ceiling == sigma_max:
        return None
    t = float(sde.T)
    for _ in range(64):
        if float(sigma_of_time(sde, torch.tensor([t], dtype=torch.float64))[0]) >= ceiling:
            return t
        t *= 2
    raise ValueError(f"s_churn: the SDE's σ/α never reaches the churned noise level {ceiling} (= √2 σ̃(T))")
