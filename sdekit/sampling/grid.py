"""Time grids for fixed-step reverse-time samplers."""

from __future__ import annotations

import torch

from .._checks import check_positive_int


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
