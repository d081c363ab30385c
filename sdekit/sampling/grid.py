"""Time grids for fixed-step reverse-time samplers."""

from __future__ import annotations

import math

import torch

from .._checks import check_choice, check_positive, check_positive_int


def time_grid(sde, steps: int, eps: float, timesteps=None, *, device=None) -> torch.Tensor:
    """The descending grid ``T = t_0 > t_1 > … > t_N = eps`` a sampler steps through.

    Source: score_sde's ``torch.linspace(T, eps, N)``; here the grid has
    ``N + 1`` points so that each of the ``N`` predictor steps goes from
    ``t_i`` to ``t_{i+1}`` and the last lands exactly on ``eps``.

    Args:
        sde: the forward SDE (gives ``T``).
        steps: number of steps ``N >= 1`` (ignored when ``timesteps`` is given).
        eps: the last time, ``0 <= eps < T``.
        timesteps: optional explicit grid, 1-D, strictly decreasing, in ``[0, T]``.
        device: device of the returned grid.
    Returns:
        float64 tensor of shape ``(N + 1,)``.
    Raises:
        ValueError: if ``steps`` < 1, ``eps`` is outside ``[0, T)``, or
            ``timesteps`` is not 1-D, not strictly decreasing, or leaves ``[0, T]``.
    """
    if timesteps is None:
        steps = check_positive_int("steps", steps)
        if not (0.0 <= eps < sde.T):
            raise ValueError(f"eps must lie in [0, T) = [0, {sde.T}), got {eps}")
        return torch.linspace(sde.T, eps, steps + 1, dtype=torch.float64, device=device)
    grid = torch.as_tensor(timesteps, dtype=torch.float64).to(device)
    if grid.dim() != 1 or grid.numel() < 2:
        raise ValueError(f"timesteps must be 1-D with at least 2 points, got shape {tuple(grid.shape)}")
    if not bool((grid[1:] < grid[:-1]).all()):
        raise ValueError("timesteps must be strictly decreasing (from T towards 0), got a grid out of order")
    if not bool((grid >= 0).all() & (grid <= sde.T).all()):
        raise ValueError(f"timesteps must lie in [0, T] = [0, {sde.T}]")
    return grid


#: The grids :func:`sampling_grid` builds (``sample(grid=...)``).
GRIDS = ("uniform", "logsnr", "exponential", "karras", "quadratic", "discrete")


def sampling_grid(sde, steps: int, eps: float, kind: str = "uniform", *, rho: float = 7.0) -> torch.Tensor:
    """A descending time grid ``T = t_0 > … > t_N = eps`` of a named kind, float64 on the CPU.

    - ``"uniform"``: equal steps in ``t`` (score_sde; DDIM's "uniform" skip).
    - ``"logsnr"`` / ``"exponential"``: equal steps in the half log-SNR
      ``λ = −log σ̃`` (Lu et al. 2022a, §3.3; k-diffusion's ``get_sigmas_exponential``
      in the scaled noise level ``σ̃ = σ/α`` is the same grid):
      :func:`~sdekit.sampling.dpm_solver.logsnr_grid`; linear SDEs.
    - ``"karras"``: ``σ̃_i^{1/ρ}`` equally spaced from ``σ̃(T)`` to ``σ̃(eps)``
      (Karras et al. 2022, eq. 5, ρ = 7 by default); linear SDEs.
    - ``"quadratic"``: ``t_i = eps + (T − eps) (1 − i/N)²``, dense near ``eps``
      (Song, Meng & Ermon 2021, DDIM, Appendix D.2's quadratic sub-sequence).
    - ``"discrete"``: ``N + 1`` of a :class:`~sdekit.DiscreteVPSDE`'s own timesteps,
      ``k_i = round((K − 1)(1 − i/N))`` from the last (``t = T``) to timestep 0
      (``t = eps = T/K``; diffusers' ``"linspace"`` spacing); ``eps`` must be its
      ``sampling_eps`` and ``N <= K − 1``.

    Times come back from the noise levels by :func:`~sdekit.sampling.sigma_space.time_of_sigma`;
    the end points are exactly ``T`` and ``eps``.

    Args:
        sde: the forward SDE (a linear one for ``"logsnr"``, ``"exponential"``, ``"karras"``).
        steps: ``N >= 1``.
        eps: the last time, ``0 < eps < T``.
        kind: one of :data:`GRIDS`.
        rho: Karras's ``ρ > 0``.
    Returns:
        float64 ``(N + 1,)`` strictly decreasing.
    Raises:
        ValueError: on an unknown ``kind``, a bad ``steps``/``eps``/``rho``, ``"discrete"`` on an
            SDE without timesteps (or ``eps`` not its first timestep, or ``steps`` above ``K − 1``),
            or a grid that is not strictly decreasing (``σ̃`` not monotone in ``t``).
        TypeError: a non-linear SDE for a noise-level grid.
    """
    check_choice("grid", kind, GRIDS)
    steps = check_positive_int("steps", steps)
    rho = check_positive("rho", rho)
    T = float(sde.T)
    if kind == "uniform":
        return time_grid(sde, steps, eps)
    if kind in ("logsnr", "exponential"):
        from .dpm_solver import logsnr_grid

        return logsnr_grid(sde, steps, eps)
    if not (0.0 < eps < T):
        raise ValueError(f"eps must lie in (0, T) = (0, {T}) for grid={kind!r}, got {eps}")
    ramp = torch.linspace(0, 1, steps + 1, dtype=torch.float64)
    if kind == "quadratic":
        grid = eps + (T - eps) * (1 - ramp) ** 2
    elif kind == "discrete":
        grid = _discrete_grid(sde, steps, eps)
    else:  # karras
        from .dpm_solver import _check_linear
        from .sigma_space import sigma_of_time, time_of_sigma

        _check_linear(sde, f"grid={kind!r}")
        hi, lo = (float(v) for v in sigma_of_time(sde, torch.tensor([T, eps], dtype=torch.float64)))
        if not (0 < lo < hi < math.inf):
            raise ValueError(f"grid={kind!r} needs 0 < σ̃(eps) < σ̃(T) < inf, got σ̃(eps)={lo}, σ̃(T)={hi}")
        sig = (hi ** (1 / rho) + ramp * (lo ** (1 / rho) - hi ** (1 / rho))) ** rho
        grid = time_of_sigma(sde, sig, T)
    grid[0], grid[-1] = T, eps
    if not bool((grid[1:] < grid[:-1]).all()):
        raise ValueError(f"grid={kind!r} with steps={steps} is not strictly decreasing in t "
                         f"(σ̃ not strictly monotone, or steps too many for the grid's resolution)")
    return grid


def _discrete_grid(sde, steps: int, eps: float) -> torch.Tensor:
    K = getattr(sde, "num_timesteps", None)
    if K is None or not hasattr(sde, "timestep_to_time"):
        raise ValueError(f"grid='discrete' needs an SDE with discrete timesteps (DiscreteVPSDE), "
                         f"got {type(sde).__name__}")
    if steps > K - 1:
        raise ValueError(f"steps must be <= K - 1 = {K - 1} for grid='discrete' (distinct timesteps), got {steps}")
    if not math.isclose(eps, sde.sampling_eps, rel_tol=1e-12):
        raise ValueError(f"eps must be the SDE's first timestep's time {sde.sampling_eps} for grid='discrete', "
                         f"got {eps}")
    k = torch.round((K - 1) * (1 - torch.linspace(0, 1, steps + 1, dtype=torch.float64)))
    return sde.timestep_to_time(k)
