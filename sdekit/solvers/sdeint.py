"""``sdekit.sdeint``: fixed-step SDE integration with outputs exactly at the requested times."""

from __future__ import annotations

import math

import torch

from .._checks import check_batch, check_finite, check_positive, check_tensor
from ..brownian import BrownianTree, CallableBrownian, SequentialBrownian, depth_for_step
from .sde import as_problem, default_method, resolve


def _check_ts(ts) -> list[float]:
    ts = torch.as_tensor(ts, dtype=torch.float64)
    if ts.dim() != 1 or ts.numel() < 2:
        raise ValueError(f"ts must be 1-D with at least 2 times, got shape {tuple(ts.shape)}")
    if not bool(torch.isfinite(ts).all()):
        raise ValueError("ts must be finite")
    if not bool((ts[1:] > ts[:-1]).all()):
        raise ValueError("ts must be strictly increasing")
    return ts.tolist()


def step_grid(times: list[float], dt: float) -> tuple[list[float], list[int]]:
    """The step grid: each ``[ts[k], ts[k+1]]`` split into ``ceil(length/dt)`` equal steps.

    Returns the grid points (``ts[0]`` first, every ``ts[k]`` exactly on it) and the number
    of steps per interval.
    """
    grid, counts = [times[0]], []
    for a, b in zip(times[:-1], times[1:]):
        n = max(1, math.ceil((b - a) / dt - 1e-9))
        counts.append(n)
        grid.extend(a + (b - a) * j / n for j in range(1, n))
        grid.append(b)
    return grid, counts


def _brownian(bm, seed, sample_index, generator, times, grid, size, y0):
    """The source of step increments (see :func:`sdeint`'s ``bm`` / ``seed`` / ``generator``)."""
    given = [name for name, v in (("bm", bm), ("seed", seed), ("generator", generator)) if v is not None]
    if len(given) > 1:
        raise ValueError(f"give at most one of bm, seed and generator, got {' and '.join(given)}")
    if sample_index is not None and (bm is not None or generator is not None):
        raise ValueError("sample_index keys sdeint's own Brownian tree: use it with seed (a bm carries its own)")
    if isinstance(bm, BrownianTree):
        if tuple(bm.shape) != size:
            raise ValueError(f"bm has shape {tuple(bm.shape)}, expected (batch, *noise shape) = {size}")
        span = 1e-12 * (bm.t1 - bm.t0)
        if times[0] < bm.t0 - span or times[-1] > bm.t1 + span:
            raise ValueError(f"bm covers [{bm.t0}, {bm.t1}], which does not contain ts [{times[0]}, {times[-1]}]")
        return bm
    if bm is not None:
        shape = getattr(bm, "shape", None)
        if shape is not None and tuple(shape) != size:
            raise ValueError(f"bm has shape {tuple(shape)}, expected (batch, *noise shape) = {size}")
        return CallableBrownian(bm, size, dtype=y0.dtype, device=y0.device)
    if generator is not None:
        return SequentialBrownian(size, generator=generator, dtype=y0.dtype, device=y0.device)
    if seed is None:
        seed = int(torch.randint(0, 2**62, ()))
    if sample_index is None:
        sample_index = torch.arange(size[0], device=y0.device)
    min_step = min(b - a for a, b in zip(grid[:-1], grid[1:]))
    return BrownianTree(times[0], times[-1], size, seed=seed, sample_index=sample_index,
                        depth=depth_for_step(times[0], times[-1], min_step), dtype=y0.dtype, device=y0.device)


def sdeint(sde, y0: torch.Tensor, ts, method: str | None = None, dt: float = 1e-3, generator=None, *,
           bm=None, seed: int | None = None, sample_index=None, options: dict | None = None,
           adaptive: bool = False, rtol=None, atol=None, dt_min=None, names=None, logqp: bool = False
           ) -> torch.Tensor:
    """Solve ``dy = f(t, y) dt + g(t, y) dW`` (Itô or Stratonovich) from ``ts[0]``; the path at ``ts``.

    Each interval ``[ts[k], ts[k+1]]`` is split into ``ceil(length/dt)`` equal steps, so the
    outputs land exactly on ``ts`` (no interpolation).  Methods (torchsde's names work;
    the README's migration table maps them):

    ========================== ============== ================================ ====== =====
    method                     SDE type       noise types                      strong weak
    ========================== ============== ================================ ====== =====
    ``euler``                  Itô            all (Stratonovich: additive)     0.5¹   1.0
    ``milstein``               Itô, Strat.    diagonal, scalar, additive       1.0    1.0
    ``derivative_free_milstein`` Itô, Strat.  diagonal, scalar, additive       1.0    1.0
    ``heun``                   Stratonovich²  all                              1.0³   1.0
    ``midpoint``               Stratonovich²  all                              1.0³   1.0
    ``euler_heun``             Stratonovich²  all                              1.0³   1.0
    ``reversible_heun``        Stratonovich²  all                              1.0³   1.0
    ``sra1``                   both           additive                         1.5    2.0
    ``sra3``                   both           additive                         1.5    —⁴
    ``sri2``                   Itô            diagonal, scalar                 1.5    —⁴
    ``srk``                    = ``sra1`` for additive noise, ``sri2`` for diagonal / scalar
    ========================== ============== ================================ ====== =====

    ¹ 1.0 for additive noise.  ² also Itô SDEs with additive noise.  ³ 0.5 for general noise.
    ⁴ not declared (no source we can cite; measured by benchmarks/orders_sde.py).
    Sources are in each solver's docstring (:mod:`sdekit.solvers.sde`).

    The Brownian motion, in order of precedence:

    * ``bm``: a :class:`~sdekit.brownian.BrownianTree`, or any object with torchsde's
      protocol (``bm(ta, tb)``, and ``bm(ta, tb, return_U=True)`` for ``sra*``/``sri2``),
      e.g. ``torchsde.BrownianInterval``;
    * ``seed`` (+ ``sample_index``): a :class:`~sdekit.brownian.BrownianTree` over
      ``[ts[0], ts[-1]]`` keyed by ``(seed, sample_index[b])`` whose leaves are no longer
      than the smallest step, so the increments on the step grid are exactly Brownian.  A
      sample's path does not depend on the batch, and grids of step
      ``(ts[-1] − ts[0])/2^k`` are nodes of one tree: ``dt`` and ``dt/2`` see the same path
      (for other grids pass one ``bm=BrownianTree(..., depth=...)`` to share a path);
    * ``generator``: increments drawn step by step from this ``torch.Generator``
      (:class:`~sdekit.brownian.SequentialBrownian`) — the fastest source on CPU, but the
      path changes with ``dt`` and with the batch;
    * none: a seed is drawn from torch's global generator (``torch.manual_seed`` reproduces it).

    Args:
        sde: sdekit-style (``drift(x, t)``, ``diffusion(x, t)`` with ``t`` ``(B,)``; diffusion
            ``(B,)`` or ``(B, *D)``; optional ``noise_type`` / ``sde_type`` attributes) or
            torchsde-style (``f(t, y)``, ``g(t, y)``, ``noise_type``, ``sde_type``, optional
            ``f_and_g``, ``g_prod``); see :mod:`sdekit.solvers.sde.problem`.
        y0: ``(B, *D)`` initial state at ``ts[0]`` (``(B, d)`` for torchsde-style SDEs).
        ts: 1-D strictly increasing times (SDE time), at least 2.
        method: a name from the table (default ``euler`` for Itô SDEs and additive noise,
            ``heun`` for Stratonovich SDEs).
        dt: largest step size (> 0).
        generator: ``torch.Generator`` for the increments (see above).
        bm: a Brownian motion object (see above); its shape must be ``(B, *S)``.
        seed: integer in [0, 2⁶⁴) keying the Brownian tree.
        sample_index: int64 ``(B,)`` per-sample keys (default ``arange(B)``), with ``seed``.
        options: ``{"grad_free": True}`` turns ``milstein`` into ``derivative_free_milstein``
            (torchsde's option).
        adaptive, rtol, atol, dt_min, names, logqp: torchsde's arguments.  Adaptive stepping,
            renamed methods and the log-ratio penalty are not supported: ``adaptive=True``,
            ``names`` or ``logqp=True`` raise; ``rtol``/``atol``/``dt_min`` are ignored as
            torchsde ignores them without ``adaptive``.
    Returns:
        ``(len(ts), B, *D)`` in ``y0``'s dtype, with ``out[0] = y0``.
    Raises:
        ValueError: non-finite ``y0`` or one with no rows (``B = 0``); ``dt <= 0``; ``ts`` not 1-D, not finite or not strictly
            increasing; an unknown method; a method that does not support the SDE's noise
            type or SDE type (the message names both); ``f`` / ``g`` returning the wrong
            shape or non-finite values at ``(ts[0], y0)``; a ``bm`` of the wrong shape or span;
            more than one of ``bm`` / ``seed`` / ``generator``; unsupported torchsde options.
        TypeError: ``y0`` not a floating tensor, ``dt`` not a real number, or ``sde``
            following neither protocol.
    """
    if adaptive:
        raise ValueError("adaptive=True is not supported: sdekit's SDE solvers take fixed steps of at most dt")
    if names is not None:
        raise ValueError("names is not supported: give the SDE methods the names f and g (or drift and diffusion)")
    if logqp:
        raise ValueError("logqp is not supported by sdekit.sdeint")
    if options is not None and not set(options) <= {"grad_free"}:
        raise ValueError(f"options may only hold 'grad_free', got {sorted(options)}")
    check_tensor("y0", y0, min_dim=1)
    check_batch("y0", y0)
    check_finite("y0", y0)
    dt = check_positive("dt", dt)
    times = _check_ts(ts)
    grid, counts = step_grid(times, dt)
    t_grid = torch.tensor(grid, dtype=y0.dtype, device=y0.device)

    noise_size = getattr(bm, "shape", (None, None))[-1] if bm is not None else None
    problem = as_problem(sde, y0, t_grid[0], noise_size)
    if method is None:
        method = default_method(problem.noise_type, problem.sde_type)
    solver = resolve(method, problem.noise_type, problem.sde_type, options)(problem)
    size = (y0.shape[0],) + problem.noise_shape
    source = _brownian(bm, seed, sample_index, generator, times, grid, size, y0)
    if isinstance(source, SequentialBrownian):  # each step's increments are used up before the next is drawn
        increments = source.increments(grid, area=solver.uses_area, reuse=True)
    else:
        increments = source.increments(grid, area=solver.uses_area)

    y = y0
    state = solver.init(t_grid[0], y0)
    out = [y0]
    i = 0
    for k, n in enumerate(counts):
        h = (times[k + 1] - times[k]) / n
        for _ in range(n):
            dW, dZ = next(increments)
            y, state = solver.step(t_grid[i], h, y, state, dW, dZ)
            i += 1
        out.append(y)
    return torch.stack(out)
