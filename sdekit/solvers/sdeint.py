"""``sdekit.sdeint``: SDE integration (fixed or adaptive steps) with outputs exactly at the requested times."""

from __future__ import annotations

import dataclasses
import math
import numbers
import warnings

import torch

from .._checks import check_batch, check_finite, check_nonnegative, check_positive, check_tensor
from ..brownian import BrownianTree, CallableBrownian, SequentialBrownian, depth_for_step
from .sde import as_problem, default_method, resolve
from .sde.adaptive import compose_area, doubling_query, per_row, solve_adaptive, solve_adaptive_rows
from .sde.base import AbstractSDESolver
from .sde.euler import StepFromNormals
from .sde.problem import RenamedSDE, SDEProblem, check_prior_drift, with_logqp


def _check_ts(ts) -> list[float]:
    if isinstance(ts, torch.Tensor):
        ts = ts.detach().to("cpu", torch.float64)
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


def _is_number(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _legacy_positional(bm, method, dt, adaptive, generator):
    """Read sdekit's old positional order ``sdeint(sde, y0, ts, method, dt, generator)``.

    A ``str`` where ``bm`` now stands is the old ``method``; a number where ``method``
    stands is the old ``dt``; a ``torch.Generator`` where ``dt`` or ``adaptive`` stands is
    the old ``generator``.  Warns (``DeprecationWarning``) with the keyword call to write.

    Raises:
        ValueError: if the old and new readings collide (``dt`` or ``generator`` twice, or a
            ``str`` both where ``bm`` and where ``method`` stand).
    """
    moved = []

    def take_generator(value):
        if generator is not None:
            raise ValueError("sdeint got a torch.Generator positionally (sdekit's old order) and generator= too")
        moved.append("generator=...")
        return value

    if isinstance(bm, str):
        if method is not None and not _is_number(method):
            raise ValueError(f"sdeint got {bm!r} where bm stands and method={method!r}: "
                             "write sdeint(sde, y0, ts, method=..., dt=...)")
        moved.append(f"method={bm!r}")
        bm, method, old_dt = None, bm, method
    elif _is_number(method):
        method, old_dt = None, method
    else:
        old_dt = None
    if old_dt is not None:
        moved.append(f"dt={old_dt!r}")
        if isinstance(dt, torch.Generator):
            generator = take_generator(dt)
        elif dt != 1e-3:
            raise ValueError(f"sdeint got dt twice: {old_dt!r} where method stands (sdekit's old order) and dt={dt!r}")
        dt = old_dt
    elif isinstance(dt, torch.Generator):
        generator, dt = take_generator(dt), 1e-3
    if isinstance(adaptive, torch.Generator):
        generator, adaptive = take_generator(adaptive), False
    if moved:
        warnings.warn(
            "sdeint's positional order is now torchsde's (sde, y0, ts, bm, method, dt, adaptive, ...); this call "
            "used sdekit's old order (sde, y0, ts, method, dt, generator). Write "
            f"sdeint(sde, y0, ts, {', '.join(moved)}) with keywords instead",
            DeprecationWarning, stacklevel=3)
    return bm, method, dt, adaptive, generator


def _padded(increments, extra: int):
    """Append ``extra`` zero channels to each ``(ΔW, ΔZ)`` (the logqp coordinate's unused noise).

    A Lévy area ``A`` ``(B, m, m)`` in place of ``ΔZ`` gets ``extra`` zero rows and columns.
    """
    for dW, dZ in increments:
        pad = dW.new_zeros(dW.shape[:-1] + (extra,))
        if dZ is not None:
            dZ = torch.nn.functional.pad(dZ, (0, extra, 0, extra) if dZ.dim() > dW.dim() else (0, extra))
        yield torch.cat([dW, pad], dim=-1), dZ


def _has_area(bm) -> bool:
    """Whether a ``bm`` gives ``∫ (W − W_ta) ds`` (``return_U=True``): torchsde's levy_area_approximation."""
    return getattr(bm, "levy_area_approximation", "none") != "none"


def _check_extra_state(given, initial: tuple) -> tuple:
    if not isinstance(given, (tuple, list)) or not all(isinstance(v, torch.Tensor) for v in given):
        raise TypeError(f"extra_solver_state must be a tuple of tensors (as returned with extra=True), "
                        f"got {type(given).__name__}")
    if len(given) != len(initial):
        raise ValueError(f"extra_solver_state has {len(given)} tensors, this method's state has {len(initial)}")
    for k, (a, b) in enumerate(zip(given, initial)):
        if a.shape != b.shape:
            raise ValueError(f"extra_solver_state[{k}] has shape {tuple(a.shape)}, expected {tuple(b.shape)}")
    return tuple(given)


def sdeint(sde, y0: torch.Tensor, ts, bm=None, method: str | None = None, dt: float = 1e-3,
           adaptive: bool = False, rtol: float = 1e-5, atol: float = 1e-4, dt_min: float = 1e-5,
           options: dict | None = None, names: dict | None = None, logqp: bool = False, extra: bool = False,
           extra_solver_state=None, *, generator=None, seed: int | None = None, sample_index=None,
           per_sample: bool = False):
    """Solve ``dy = f(t, y) dt + g(t, y) dW`` (Itô or Stratonovich) from ``ts[0]``; the path at ``ts``.

    Fixed steps (default) or adaptive ones (``adaptive=True``).

    torchsde's ``sdeint`` signature and return conventions (``torchsde.sdeint``,
    v0.2.6), plus sdekit's keyed Brownian sources (``generator``, ``seed``,
    ``sample_index``, keyword-only).  Each interval ``[ts[k], ts[k+1]]`` is split into
    ``ceil(length/dt)`` equal steps, so the outputs land exactly on ``ts`` (no
    interpolation).  Methods (torchsde's names work; the README's migration table maps them):

    ========================== ============== ================================ ====== =====
    method                     SDE type       noise types                      strong weak
    ========================== ============== ================================ ====== =====
    ``euler``                  Itô            all (Stratonovich: additive²)    0.5¹   1.0
    ``milstein``               Itô, Strat.    diagonal, scalar, additive       1.0    1.0
    ``derivative_free_milstein`` Itô, Strat.  diagonal, scalar, additive       1.0    1.0
    ``heun``                   Stratonovich²  all                              1.0³   1.0
    ``midpoint``               Stratonovich²  all                              1.0³   1.0
    ``euler_heun``             Stratonovich²  all                              1.0³   1.0
    ``reversible_heun``        Stratonovich²  all                              1.0³   1.0
    ``sra1``                   both           additive                         1.5    2.0
    ``log_ode``                Stratonovich²  all (needs ``bm``'s Lévy area A)  1.0³   1.0
    ``sra3``                   both           additive                         1.5    —⁴
    ``sri2``                   Itô            diagonal, scalar                 1.5    —⁴
    ``srk``                    = ``sra1`` for additive noise, ``sri2`` for diagonal / scalar
    ========================== ============== ================================ ====== =====

    ¹ 1.0 for additive noise.  ² with additive noise the other SDE type too, for sdekit-style
    SDEs only (torchsde-style SDEs follow torchsde's rule, see below).
    ³ 0.5 for general noise.
    ⁴ not declared (no source we can cite; measured by benchmarks/orders_sde.py).
    Sources are in each solver's docstring (:mod:`sdekit.solvers.sde`).  For torchsde-style
    SDEs a method raises ``ValueError`` exactly where torchsde's raises: torchsde's names
    keep torchsde's SDE type even for additive noise (``euler``, ``srk``: Itô; ``heun``,
    ``midpoint``, ``euler_heun``, ``reversible_heun``: Stratonovich).  With additive noise
    Itô and Stratonovich SDEs coincide, so for sdekit-style SDEs (``drift`` / ``diffusion``,
    which torchsde does not take) both families are accepted there.  ``log_ode`` (the
    log-ODE midpoint scheme, Stratonovich, all noise types) needs the Lévy area between
    noise channels: from ``bm`` (a ``torchsde.BrownianInterval`` with
    ``levy_area_approximation`` ``"davie"`` or ``"foster"``), or, without a ``bm``, from
    sdekit's tree (its keyed approximation with the exact conditional mean and variance,
    :class:`~sdekit.brownian.BrownianTree`; torchsde builds a Foster interval there).

    Default method: for torchsde-style SDEs torchsde's — ``srk`` for Itô SDEs with
    diagonal, scalar or additive noise, ``euler`` for Itô SDEs with general noise,
    ``midpoint`` for Stratonovich SDEs; where ``srk`` cannot run (a ``bm`` without the
    space-time area: ``levy_area_approximation`` missing or ``"none"``; an SDE with only
    ``g_prod``) ``euler`` (torchsde raises there).  sdekit used to default to ``euler``
    for these too, so a torchsde-style program that passes no method now gets another
    valid solve of the same SDE: the same law, different numbers on the same path, more
    evaluations per step (pass ``method="euler"`` for the old numbers).  For sdekit-style
    SDEs (``drift`` / ``diffusion``, which torchsde does not take) the default is
    unchanged: ``euler`` for Itô SDEs and additive noise, ``heun`` for Stratonovich SDEs.

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

    Old positional calls ``sdeint(sde, y0, ts, method, dt, generator)`` (sdekit before
    torchsde's order) still work: a ``str`` in the ``bm`` position is read as the method,
    then a number in the ``method`` position as ``dt``, and a ``torch.Generator`` in the
    ``dt`` or ``adaptive`` position as ``generator``, with a ``DeprecationWarning`` giving
    the keyword call to write.

    Args:
        sde: sdekit-style (``drift(x, t)``, ``diffusion(x, t)`` with ``t`` ``(B,)``; diffusion
            ``(B,)`` or ``(B, *D)``; optional ``noise_type`` / ``sde_type`` attributes) or
            torchsde-style (``f(t, y)``, ``g(t, y)``, ``noise_type``, ``sde_type``, optional
            ``f_and_g``, ``g_prod``, ``f_and_g_prod``, and ``h(t, y)`` for ``logqp``); see
            :mod:`sdekit.solvers.sde.problem`.
        y0: ``(B, *D)`` initial state at ``ts[0]`` (``(B, d)`` for torchsde-style SDEs).
        ts: 1-D strictly increasing times (SDE time), at least 2: a tensor or a sequence.
        bm: a Brownian motion object (see above); its shape must be ``(B, *S)`` (with
            ``logqp`` and diagonal noise ``(B, d + 1)``, as torchsde, or ``(B, d)``).
        method: a name from the table (default: see above).
        dt: the step size (> 0; each interval takes the largest step ≤ ``dt`` that divides it).
        adaptive: step sizes chosen by step doubling (:mod:`sdekit.solvers.sde.adaptive`;
            Gaines & Lyons 1997): starting from ``dt``, each attempt compares one step with
            two half steps on the same Brownian path and keeps the halves, with torchsde's
            controller, so on a two-point ``ts`` and the same ``bm`` the accepted steps are
            torchsde's (``euler`` reproduces torchsde's numbers bitwise; other methods agree
            to their rounding, which the accept/reject decisions may amplify).  Outputs land
            exactly on every ``ts[k]`` (torchsde interpolates linearly between steps).  Needs
            a path that can be queried at any time: ``bm``, ``seed`` or neither (the default
            tree's leaves are ``≤ dt_min / 2``), not ``generator``.  With ``euler`` and
            non-additive noise it warns as torchsde does.
        rtol, atol: tolerances of the error estimate, the RMS over all elements of
            ``(y_full − y_half) / (rtol·max(|y_full|, |y_half|) + atol)`` (as torchsde);
            ignored without ``adaptive`` (as torchsde).
        dt_min: the smallest step with ``adaptive``: an attempt that fails at ``dt_min`` is
            accepted with a ``UserWarning`` ("Hitting minimum allowed step size", torchsde's).
        options: ``{"grad_free": True}`` turns ``milstein`` into ``derivative_free_milstein``
            (torchsde's option).
        names: torchsde's method renaming, a dict with keys among ``drift``, ``diffusion``,
            ``prior_drift``, ``diffusion_prod``, ``drift_and_diffusion``,
            ``drift_and_diffusion_prod`` and values the SDE's method names, e.g.
            ``{"drift": "forward"}`` (:class:`~sdekit.solvers.sde.problem.RenamedSDE`).
        logqp: also return the log-ratio penalty ``∫ ½‖u‖² dt`` per interval, ``u`` solving
            ``g u = f − h`` with ``h`` the prior drift ``sde.h(t, y)`` (torchsde-style SDEs
            with ``f`` / ``g`` or ``f_and_g``, and ``h``): the state gets one more
            coordinate that the chosen method integrates
            (:func:`~sdekit.solvers.sde.problem.with_logqp`; Li et al. 2020, §9.6).
        extra: also return the solver's state after the last step (a tuple of tensors;
            ``()`` for one-step methods, ``(f, g, z)`` for ``reversible_heun``, torchsde's
            order).  With ``logqp`` the state is the augmented one, ``(B, d + 1)``; its
            penalty entry restarts with each solve and does not feed back into ``ys``.
        extra_solver_state: the solver state to start from (as returned with ``extra=True``;
            default: the method's own initial state at ``(ts[0], y0)``).
        generator: ``torch.Generator`` for the increments (see above).
        seed: integer in [0, 2⁶⁴) keying the Brownian tree.
        sample_index: int64 ``(B,)`` per-sample keys (default ``arange(B)``), with ``seed``.
        per_sample: with ``adaptive=True``, a step size, controller and acceptance per row
            (sdekit's opt-in; :func:`~sdekit.solvers.sde.adaptive.solve_adaptive_rows`): a
            row's error is the RMS over its own elements, so one hard sample does not shrink
            everyone's steps.  Needs an sdekit-style SDE (``t`` of shape ``(B,)``) and the
            keyed tree (``seed=``, or ``bm=BrownianTree``); every attempt evaluates all rows,
            so per-row conditioning stays aligned.
    Returns:
        ``ys``: ``(len(ts), B, *D)`` in ``y0``'s dtype, with ``ys[0] = y0``; with
        ``logqp=True`` ``(ys, log_ratio)``, ``log_ratio`` of shape ``(len(ts) − 1, B)`` (the
        penalty over each interval ``[ts[k], ts[k+1]]``); with ``extra=True`` the solver
        state is appended: ``(ys, state)`` or ``(ys, log_ratio, state)``.
    Raises:
        ValueError: ``per_sample=True`` without ``adaptive``, with a torchsde-style SDE or a
            ``bm`` other than a :class:`~sdekit.brownian.BrownianTree`; ``adaptive=True`` with ``generator``, or with ``rtol`` / ``atol`` negative
            or ``dt_min`` not positive; non-finite ``y0`` or one with no rows (``B = 0``); ``dt <= 0``; ``ts`` not 1-D, not finite
            or not strictly increasing; an unknown method or one sdekit does not provide
            (``adjoint_reversible_heun``, sdeint_adjoint's own); ``log_ode`` with a ``bm`` that
            does not give the Lévy area; a method that does not support the SDE's noise type or SDE type
            (the message names both); ``sra*``/``sri2``/``srk`` with a ``bm`` without the
            space-time area; ``f`` / ``g`` / ``h`` returning the wrong shape or non-finite
            values at ``(ts[0], y0)``; a ``bm`` of the wrong shape or span; more than one of
            ``bm`` / ``seed`` / ``generator``; unsupported torchsde options; ``names`` keys
            or values that do not exist; ``logqp`` without ``h`` or with only ``g_prod``;
            an ``extra_solver_state`` of the wrong length or shapes.
        FloatingPointError: ``adaptive=True`` and the state is non-finite even at ``dt_min``.
        TypeError: ``y0`` not a floating tensor, ``dt`` not a real number, ``sde``
            following neither protocol, ``names`` not a dict, ``extra_solver_state`` not a
            tuple of tensors.
    """
    bm, method, dt, adaptive, generator = _legacy_positional(bm, method, dt, adaptive, generator)
    plan = plan_solve(sde, y0, ts, bm, method, dt, adaptive, rtol, atol, dt_min, options, names, logqp,
                      extra_solver_state, generator=generator, seed=seed, sample_index=sample_index,
                      per_sample=per_sample)
    ys, state = integrate(plan)
    return _result(ys, state, logqp, extra)


@dataclasses.dataclass
class SolvePlan:
    """Everything :func:`integrate` needs, checked: built by :func:`plan_solve`.

    ``y0`` is the initial state the solver integrates (with ``logqp``, ``(B, d + 1)``: the
    penalty coordinate appended), ``state`` the solver state there; ``grid`` / ``counts``
    the fixed-step grid (unused with ``adaptive``); ``pad`` the zero noise channels
    appended to each increment for the logqp coordinate; ``graph`` whether autograd may record
    the solve (grad mode on and ``y0`` or the SDE module's parameters requiring gradients), so that
    generator noise must not reuse one buffer for every step's draws.
    """

    problem: SDEProblem
    solver: AbstractSDESolver
    source: BrownianTree | CallableBrownian | SequentialBrownian
    times: list
    grid: list
    counts: list
    y0: torch.Tensor
    state: tuple
    pad: int
    adaptive: bool
    dt: float
    rtol: float
    atol: float
    dt_min: float
    per_sample: bool = False
    graph: bool = True


def _may_record_graph(sde, y0: torch.Tensor) -> bool:
    """Whether backprop may run through the solve: grad mode on, and ``y0`` or ``sde``'s parameters need gradients."""
    if not torch.is_grad_enabled():
        return False
    params = sde.parameters() if isinstance(sde, torch.nn.Module) else ()
    return y0.requires_grad or any(p.requires_grad for p in params)


def plan_solve(sde, y0, ts, bm, method, dt, adaptive, rtol, atol, dt_min, options, names, logqp,
               extra_solver_state, *, generator=None, seed=None, sample_index=None,
               per_sample: bool = False) -> SolvePlan:
    """Check :func:`sdeint`'s arguments and build the problem, the solver and the Brownian source.

    Raises: see :func:`sdeint`.
    """


    if method is not None and not isinstance(method, str):
        raise TypeError(f"method must be a method name (str) or None, got {type(method).__name__}")
    if options is not None and not set(options) <= {"grad_free"}:
        raise ValueError(f"options may only hold 'grad_free', got {sorted(options)}")
    if names is not None:
        sde = RenamedSDE(sde, names)
    check_tensor("y0", y0, min_dim=1)
    check_batch("y0", y0)
    check_finite("y0", y0)
    dt = check_positive("dt", dt)
    times = _check_ts(ts)
    grid, counts = step_grid(times, dt)
    t_start = torch.tensor(times[0], dtype=y0.dtype, device=y0.device)

    noise_size = getattr(bm, "shape", (None, None))[-1] if bm is not None else None
    problem = as_problem(sde, y0, t_start, noise_size)
    base_noise = problem.noise_shape
    if logqp:
        if hasattr(sde, "drift") and hasattr(sde, "diffusion"):
            raise ValueError("logqp=True needs a torchsde-style SDE (f, g and the prior drift h(t, y))")
        h = getattr(sde, "h", None)
        if h is None:
            raise ValueError("logqp=True needs the prior drift h(t, y) as a method of sde (or names={'prior_drift': ...})")
        check_prior_drift(h, t_start, y0)
        problem = with_logqp(problem, h, y0)
    if method is None:
        method = default_method(problem.noise_type, problem.sde_type, problem.torchsde_style)
        if method == "srk" and ((bm is not None and not _has_area(bm)) or not problem.has_diffusion):
            method = "euler"
    if adaptive and method == "euler" and problem.noise_type != "additive":  # torchsde warns here, before its checks
        warnings.warn("adaptive time-stepping with the Euler–Maruyama method and non-additive noise is not "
                      "guaranteed to converge to the correct solution", UserWarning, stacklevel=3)
    solver = resolve(method, problem.noise_type, problem.sde_type, options,
                     torchsde_types=problem.torchsde_style)(problem)
    if solver.uses_area and bm is not None and not isinstance(bm, BrownianTree) and not _has_area(bm):
        raise ValueError(f"method={method!r} needs the space-time Lévy area ∫(W − W_ta) ds from bm: create it with "
                         "levy_area_approximation='space-time' (or 'davie' / 'foster')")
    if not isinstance(adaptive, (bool, int)):
        raise TypeError(f"adaptive must be a bool, got {type(adaptive).__name__}")
    if adaptive:
        rtol, atol = check_nonnegative("rtol", rtol), check_nonnegative("atol", atol)
        dt_min = check_positive("dt_min", dt_min)
        if generator is not None:
            raise ValueError("adaptive=True queries the Brownian motion at times chosen while solving, which a "
                             "generator cannot do: pass seed= (or bm=) instead of generator=")
        grid = [times[0], times[0] + min(dt_min, times[-1] - times[0]) / 2]  # the tree's leaves ≤ dt_min / 2

    y_aug = torch.cat([y0, y0.new_zeros((y0.shape[0], 1))], dim=1) if logqp else y0
    size = (y0.shape[0],) + problem.noise_shape
    pad = 0
    if problem.noise_shape != base_noise and tuple(getattr(bm, "shape", ())) != size:
        size, pad = (y0.shape[0],) + base_noise, problem.noise_shape[-1] - base_noise[-1]
    source = _brownian(bm, seed, sample_index, generator, times, grid, size, y0)
    state = solver.init(t_start, y_aug)
    if extra_solver_state is not None:
        state = _check_extra_state(extra_solver_state, state)
    if per_sample:
        if not adaptive:
            raise ValueError("per_sample=True gives each row its own step sizes: it needs adaptive=True")
        if problem.torchsde_style:
            raise ValueError("per_sample=True needs an sdekit-style SDE (drift(x, t) / diffusion(x, t) with t of "
                             "shape (B,)): a torchsde-style f(t, y) takes one time for the whole batch")
        if not isinstance(source, BrownianTree):
            raise ValueError("per_sample=True queries each row's path at its own times: pass seed= or "
                             "bm=sdekit.BrownianTree(...), not another bm")
    return SolvePlan(problem, solver, source, times, grid, counts, y_aug, state, pad, bool(adaptive), dt,
                     rtol, atol, dt_min, bool(per_sample), _may_record_graph(sde, y0))


def _increments(plan: SolvePlan, times):
    """The step increments ``(ΔW, ΔZ)`` over consecutive ``times`` from the plan's source (padded).

    A :class:`SequentialBrownian` reuses its buffers (each step's increments are used up
    before the next is drawn), unless autograd may record the solve (``plan.graph``): a step's
    product with the increments saves them for backward.
    """
    solver, source = plan.solver, plan.source
    if isinstance(source, SequentialBrownian):
        steps = source.increments(times, area=solver.uses_area, reuse=not plan.graph, levy_area=solver.needs_levy_area)
    else:
        steps = source.increments(times, area=solver.uses_area, levy_area=solver.needs_levy_area)
    return _padded(steps, plan.pad) if plan.pad else steps


def integrate(plan: SolvePlan, record: list | None = None) -> tuple[torch.Tensor, tuple]:
    """Run the plan: ``(ys, state)``, ``ys`` of shape ``(len(ts), B, *D)`` (augmented with ``logqp``).

    ``record``: if a list, one list per interval ``[ts[k], ts[k+1]]`` is appended to it,
    holding ``(ta, tb, h)`` for each step taken (``h`` the step size given to the solver),
    so that the same steps can be replayed on the same path (:func:`step_increments`).
    """
    solver, times, y, state = plan.solver, plan.times, plan.y0, plan.state
    if plan.per_sample:
        tree = plan.source
        assert isinstance(tree, BrownianTree)

        def query_rows(ta, tm, tb):
            (dW1, dZ1), (dW2, dZ2) = tree.increments_rows(torch.stack([ta, tm, tb]), area=solver.uses_area)
            return [(dW1 + dW2, compose_area(per_row(tb - tm, dW1), dW1, dZ1, dZ2)), (dW1, dZ1), (dW2, dZ2)]

        outs, state = solve_adaptive_rows(solver, query_rows, y, state, times, dt=plan.dt, rtol=plan.rtol,
                                          atol=plan.atol, dt_min=plan.dt_min)
        return torch.stack([y] + outs), state
    if plan.adaptive:
        query = doubling_query(plan.source, solver.uses_area,
                               (lambda steps: _padded(steps, plan.pad)) if plan.pad else None,
                               levy_area=solver.needs_levy_area)
        outs, state = solve_adaptive(solver, query, y, state, times, dt=plan.dt, rtol=plan.rtol, atol=plan.atol,
                                     dt_min=plan.dt_min, record=record)
        return torch.stack([y] + outs), state
    grid = plan.grid
    t_grid = torch.tensor(grid, dtype=y.dtype, device=y.device).unbind(0)  # one 0-dim time per grid point
    fused = _fused_euler(plan)
    increments = fused[1] if fused is not None else _increments(plan, grid)
    # without a graph the fused steps alternate between two state buffers (never the user's y0)
    buffers = [torch.empty_like(y), torch.empty_like(y)] if fused is not None and not plan.graph else None
    out = [y]
    i = 0
    for k, n in enumerate(plan.counts):
        h_step = (times[k + 1] - times[k]) / n
        if record is not None:
            record.append([(grid[j], grid[j + 1], h_step) for j in range(i, i + n)])
        for _ in range(n):
            if fused is not None:
                z, sqrt_h = next(increments)
                y = fused[0].step_normal(t_grid[i], h_step, y, z, sqrt_h, None if buffers is None else buffers[i % 2])
            else:
                dW, dZ = next(increments)
                y, state = solver.step(t_grid[i], h_step, y, state, dW, dZ)
            i += 1
        out.append(y if buffers is None else y.clone())
    return torch.stack(out), state


def _fused_euler(plan: SolvePlan):
    """``(solver, normals)`` for the Euler–Maruyama update on generator noise, else ``None``.

    Then each step is the hand-written loop's two fused operations (``step_normal`` on the
    standard normals); a torchsde ``bm`` or the keyed tree keep the step torchsde computes, bit for bit.
    """
    solver, source = plan.solver, plan.source
    if (isinstance(solver, StepFromNormals) and isinstance(source, SequentialBrownian) and not plan.pad
            and solver.fuses(plan.y0)):
        return solver, source.normals(plan.grid)
    return None


def step_increments(plan: SolvePlan, ta: float, tb: float):
    """``(ΔW, ΔZ)`` of one recorded step ``[ta, tb]`` on the plan's path (not for ``generator`` sources)."""
    return next(iter(_increments(plan, [ta, tb])))


def _result(ys: torch.Tensor, state: tuple, logqp: bool, extra: bool):
    """torchsde's return convention: ``ys``, then ``log_ratio`` with ``logqp``, then the state with ``extra``."""
    result: tuple = (ys,)
    if logqp:
        ys, L = ys[..., :-1], ys[..., -1]
        result = (ys, L[1:] - L[:-1])
    if extra:
        result = result + (state,)
    return result[0] if len(result) == 1 else result
