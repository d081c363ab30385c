"""DPM-Solver++(2M): a second-order multistep exponential integrator of the probability flow.

For a linear SDE with marginal ``x_t = m(t) x_0 + c(t) + σ(t) ε`` write
``α = m``, the log signal-to-noise ratio ``λ(t) = log(α(t)/σ(t))`` (decreasing
in ``t``) and the data prediction ``x̂_0(x, t) = (x − c + σ² s(x, t))/α``
(Tweedie's formula).  In ``y = x − c`` the probability-flow ODE is
semi-linear, ``dy/dλ = (dσ/dλ)/σ · y + σ e^{λ} x̂_0``, and its exact solution
from ``t_{i−1}`` to ``t_i`` is (Lu et al. 2022b, eq. 8)

    y_i = (σ_i/σ_{i−1}) y_{i−1} + σ_i ∫_{λ_{i−1}}^{λ_i} e^{λ} x̂_0 dλ.

DPM-Solver++(2M) keeps ``x̂_0`` linear in ``λ`` through the last two
evaluations (one new evaluation per step), giving (Lu et al. 2022b,
Algorithm 2)

    h_i = λ_i − λ_{i−1},   r_i = h_{i−1}/h_i,
    D_i = (1 + 1/(2 r_i)) x̂_0(t_{i−1}) − 1/(2 r_i) x̂_0(t_{i−2})   (D_1 = x̂_0(t_0)),
    y_i = (σ_i/σ_{i−1}) y_{i−1} − α_i (e^{−h_i} − 1) D_i,

globally second order in the step ``h``.  Default grid: uniform in ``λ``
(Lu et al. 2022a, §3.3, "uniform logSNR" time steps).
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from .._checks import check_positive_int
from ..faults import as_monitor
from ..sdes.base import AbstractLinearSDE
from .denoise import posterior_mean
from .grid import time_grid


def _check_linear(sde, what: str = "method='dpmpp_2m'") -> None:
    if not isinstance(sde, AbstractLinearSDE):
        raise TypeError(
            f"{what} needs a linear SDE with closed-form marginals "
            f"(VPSDE, SubVPSDE, VESDE, EDMSDE, DiscreteVPSDE), got {type(sde).__name__}"
        )


def log_snr(sde, t: torch.Tensor) -> torch.Tensor:
    """``λ(t) = log(α(t)/σ(t))`` of a linear SDE, float64 of ``t``'s shape (``+inf`` where ``σ(t) = 0``).

    Source: Lu et al. 2022a (DPM-Solver), §3.1 (half the log signal-to-noise ratio).

    Raises:
        TypeError: if ``sde`` is not linear.
    """
    _check_linear(sde)
    t = torch.as_tensor(t, dtype=torch.float64)
    return torch.log(sde.mean_coeff(t)) - torch.log(sde.std(t))


def logsnr_grid(sde, steps: int, eps: float) -> torch.Tensor:
    """The descending grid ``T = t_0 > … > t_N = eps`` whose ``λ(t_i)`` are equally spaced.

    Source: Lu et al. 2022a, §3.3 (uniform logSNR step schedule).  ``λ`` is
    inverted by bisection in float64 (``λ`` must decrease strictly on ``[eps, T]``).

    Args:
        sde: a linear SDE (gives ``T``).
        steps: ``N >= 1``.
        eps: the last time, ``0 <= eps < T``, with ``σ(eps) > 0``.
    Returns:
        float64 CPU tensor of shape ``(N + 1,)``.
    Raises:
        TypeError: if ``sde`` is not linear.
        ValueError: on a bad ``steps``/``eps``, ``σ(eps) = 0`` (infinite ``λ``),
            or a ``λ`` that does not decrease from ``eps`` to ``T``.
    """
    steps = check_positive_int("steps", steps)
    ends = time_grid(sde, 1, eps)  # validates eps in [0, T)
    lam_T, lam_eps = (float(v) for v in log_snr(sde, ends))
    if not (torch.isfinite(torch.tensor([lam_T, lam_eps])).all() and lam_T < lam_eps):
        raise ValueError(
            f"eps: the log-SNR must be finite and decrease from t=eps to t=T for a log-SNR grid, "
            f"got λ(eps)={lam_eps}, λ(T)={lam_T} (σ(eps) must be > 0)"
        )
    target = torch.linspace(lam_T, lam_eps, steps + 1, dtype=torch.float64)
    lo = torch.full_like(target, float(ends[1]))  # λ(lo) >= target
    hi = torch.full_like(target, float(ends[0]))  # λ(hi) <= target
    for _ in range(100):  # interval halves each pass: 2^-100 of T, below float64 resolution
        mid = 0.5 * (lo + hi)
        above = log_snr(sde, mid) >= target
        lo, hi = torch.where(above, mid, lo), torch.where(above, hi, mid)
    grid = 0.5 * (lo + hi)
    grid[0], grid[-1] = ends[0], ends[1]
    if not bool((grid[1:] < grid[:-1]).all()):
        raise ValueError("eps: log-SNR grid is not strictly decreasing (λ(t) not strictly monotone?)")
    return grid


class DPMSolverCoefficients(NamedTuple):
    """Per-step scalars of DPM-Solver++(2M) on a grid of ``N + 1`` times (Python floats, float64).

    Attributes:
        ratio: ``σ_{i+1}/σ_i`` (``N``).
        phi: ``−α_{i+1} (e^{−h_i} − 1)`` (``N``).
        r: ``h_{i−1}/h_i``, ``None`` for the first step (``N``).
        alpha, sigma, offset: ``α(t_i)``, ``σ(t_i)``, ``c(t_i)`` (``N + 1`` each).
    """

    ratio: list
    phi: list
    r: list
    alpha: list
    sigma: list
    offset: list


def dpmpp_2m_coefficients(sde, grid: torch.Tensor) -> DPMSolverCoefficients:
    """Per-step scalars of DPM-Solver++(2M) on ``grid`` (Lu et al. 2022b, Algorithm 2).

    Args:
        sde: a linear SDE.
        grid: ``(N + 1,)`` float64 strictly decreasing times with ``σ > 0`` on all of them.
    Returns:
        :class:`DPMSolverCoefficients` (Python-float lists): ``ratio[i] = σ_{i+1}/σ_i``,
        ``phi[i] = −α_{i+1} (e^{−h} − 1)``, ``r[i] = h_{i−1}/h_i`` (``None`` for the first step),
        and the per-time ``alpha``, ``sigma``, ``offset`` (``N + 1`` each), for steps ``i = 0 … N−1``.
    Raises:
        ValueError: if ``λ`` is not finite on the grid (``σ(t) = 0``) or does not increase along it.
    """
    _check_linear(sde)
    lam = log_snr(sde, grid)
    if not bool(torch.isfinite(lam).all()):
        raise ValueError("timesteps: σ(t) must be > 0 at every grid time for dpmpp_2m (eps > 0 for EDMSDE)")
    h = lam[1:] - lam[:-1]
    if not bool((h > 0).all()):
        raise ValueError("timesteps: the log-SNR must increase along the grid (times decreasing towards 0)")
    alpha, sigma = sde.mean_coeff(grid), sde.std(grid)
    phi = -alpha[1:] * torch.expm1(-h)
    r = [None] + (h[:-1] / h[1:]).tolist()
    return DPMSolverCoefficients((sigma[1:] / sigma[:-1]).tolist(), phi.tolist(), r, alpha.tolist(), sigma.tolist(),
                                 sde.mean_offset(grid).tolist())


def dpmpp_2m_update(co: DPMSolverCoefficients, i: int, y: torch.Tensor, x0: torch.Tensor,
                    x0_prev: torch.Tensor | None) -> torch.Tensor:
    """One DPM-Solver++(2M) step from ``t_i`` to ``t_{i+1}`` of the offset-free state ``y = x − c`` (Lu et al. 2022b, Alg. 2).

    ``y_{i+1} = (σ_{i+1}/σ_i) y_i + φ_i D_i`` with ``D_i = (1 + 1/(2r)) x̂_0(t_i) − x̂_0(t_{i−1})/(2r)``, or
    ``D_i = x̂_0(t_i)`` on a first step (``x0_prev`` or ``r`` ``None``).  The one step of :func:`sample_dpmpp_2m`,
    the diffusers scheduler's ``dpmpp_2m`` and :func:`sdekit.integrations.k_diffusion.sample_dpmpp_2m`.

    Args:
        co: :func:`dpmpp_2m_coefficients` of the grid.  i: the step.
        y, x0: ``(B, *D)`` state and data prediction at ``t_i``.  x0_prev: the data prediction at ``t_{i−1}``.
    Returns:
        ``(B, *D)`` ``y`` at ``t_{i+1}``.
    """
    r = co.r[i]
    d = x0 if x0_prev is None or r is None else (1 + 0.5 / r) * x0 - (0.5 / r) * x0_prev
    return co.ratio[i] * y + co.phi[i] * d


def sample_dpmpp_2m(score, sde, x: torch.Tensor, grid: torch.Tensor, denoise: bool = True, monitor=None):
    """Integrate the probability flow from ``grid[0]`` to ``grid[-1]`` with DPM-Solver++(2M).

    Source: Lu et al. 2022b ("DPM-Solver++: Fast Solver for Guided Sampling of
    Diffusion Probabilistic Models"), Algorithm 2 (multistep second order, data
    prediction), on the log-SNR ``λ``; the data prediction comes from the score
    by Tweedie's formula.  ``N`` steps cost ``N`` score evaluations (at
    ``t_0 … t_{N−1}``), plus one for ``denoise``, which returns
    ``x̂_0(x, t_N)`` (what k-diffusion's final step to ``σ = 0`` returns).

    Args:
        score: ``score(x, t)``, ``x`` ``(B, *D)``, ``t`` ``(B,)`` → ``(B, *D)`` (already shape-checked).
        sde: a linear SDE (VP, sub-VP, VE, EDM, discrete VP).
        x: ``(B, *D)`` state at ``t = grid[0]``.
        grid: ``(N + 1,)`` float64 strictly decreasing times, ``σ > 0`` on all of them.
        denoise: return ``x̂_0`` at ``grid[-1]`` (one more evaluation).
        monitor: optional :class:`sdekit.faults.NonFiniteMonitor`, told the state after every step
            (step ``i`` ends at ``grid[i + 1]``; the denoised output counts as step ``N``).
    Returns:
        ``(x, nfe)``: ``(B, *D)`` and the evaluations per sample (Python int).
    Raises:
        TypeError: if ``sde`` is not linear.
        ValueError: as :func:`dpmpp_2m_coefficients`.
    """
    co = dpmpp_2m_coefficients(sde, grid)
    monitor = as_monitor(monitor)
    times = grid.tolist()
    B = x.shape[0]

    def data_prediction(x, i):  # x̂_0 = (x − c + σ² s)/α at t_i
        t = torch.full((B,), times[i], dtype=x.dtype, device=x.device)
        return posterior_mean(x, score(x, t), co.sigma[i] ** 2, co.alpha[i], co.offset[i])

    y = x - co.offset[0]
    x0_prev = None
    for i in range(len(times) - 1):
        x0 = data_prediction(y + co.offset[i], i)
        y = dpmpp_2m_update(co, i, y, x0, x0_prev)
        x0_prev = x0
        monitor.after_step(i, times[i + 1], y + co.offset[i + 1])
    x = y + co.offset[-1]
    nfe = len(times) - 1
    if denoise:
        x = data_prediction(x, len(times) - 1)
        nfe += 1
        monitor.after_step(len(times) - 1, times[-1], x)
    return monitor.fill_nan(x), nfe
