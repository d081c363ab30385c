"""Noise-level grids optimised for one deterministic sampler and step count (:func:`optimize_sigmas`).

A derivative-free search over the interior levels of a k-diffusion-style σ
grid ``σ_max = σ_0 > σ_1 > … > σ_min`` (then 0): the grid that brings a given
sampler's final samples closest to the converged solution of the same
probability-flow ODE from the same starts, on a calibration batch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch

from .._checks import (
    check_batch,
    check_callable,
    check_choice,
    check_finite,
    check_positive,
    check_positive_int,
    check_tensor,
)

__all__ = ["GridOptimizationInfo", "karras_sigmas", "optimize_sigmas"]

_METHODS = {"powell": "Powell", "nelder-mead": "Nelder-Mead"}
_INITS = ("karras", "exponential", "screen")
#: ``init="screen"``: Karras grids of these ρ (7 first: k-diffusion's default), then the exponential grid (ρ → ∞).
_SCREEN_RHOS = (7.0, 2.0, 3.0, 5.0, 10.0, 20.0)
#: Smallest ratio of neighbouring levels of a grid the search may try (below it, a gap is rounding).
_MIN_RATIO = 1.0 + 1e-9
#: Two runs of the initial grid whose errors differ by more than this (relative) mean a random sampler.
_DETERMINISM_RTOL = 1e-6
#: Objective value of a parameter vector whose grid is not strictly decreasing after rounding, or not finite.
_BAD = 1e300


@dataclass(frozen=True)
class GridOptimizationInfo:
    """What :func:`optimize_sigmas` did.

    Attributes:
        initial_error: mean squared error (per element, in units of ``x²``) of the
            calibration samples on the initial grid (the best candidate when
            ``init`` lists several) against the reference.
        final_error: the same on the returned grid (``<= initial_error``).
        evaluations: sampler runs on the calibration batch (one per ``init``
            candidate and the determinism check's rerun included).
        reference_nfe: mean model evaluations per sample of the default
            reference solve (0.0 when ``reference`` was given).
        free_parameters: number of optimised parameters.
        message: the optimiser's termination message.
        candidate_errors: the calibration MSE of every ``init`` candidate, in order
            (for ``"screen"``: Karras ρ = 7, 2, 3, 5, 10, 20, then exponential).
    """

    initial_error: float
    final_error: float
    evaluations: int
    reference_nfe: float
    free_parameters: int
    message: str
    candidate_errors: tuple[float, ...] = ()


def _check_range(sigma_min, sigma_max) -> tuple[float, float]:
    lo, hi = check_positive("sigma_min", sigma_min), check_positive("sigma_max", sigma_max)
    if not lo < hi:
        raise ValueError(f"sigma_min must be < sigma_max, got sigma_min={lo}, sigma_max={hi}")
    return lo, hi


def _levels(steps: int, final_zero: bool) -> int:
    """Number of positive levels of a grid of ``steps`` steps (ValueError if there are fewer than 2)."""
    n = steps if final_zero else steps + 1
    if n < 2:
        raise ValueError(f"steps must be >= 2 with final_zero=True (sigma_max, sigma_min, 0), got {steps}")
    return n


def karras_sigmas(steps: int, sigma_min: float, sigma_max: float, rho: float = 7.0, *,
                  final_zero: bool = True) -> torch.Tensor:
    """Karras et al.'s grid ``σ_i = (σ_max^{1/ρ} + i/(n−1) (σ_min^{1/ρ} − σ_max^{1/ρ}))^ρ``, float64.

    Source: Karras et al. 2022 ("EDM"), eq. 5; k-diffusion's ``get_sigmas_karras``
    (which computes it in float32).  ``n = steps`` positive levels then 0 when
    ``final_zero`` (``steps + 1`` entries either way; without ``final_zero``
    ``n = steps + 1``).  σ in the units of ``x``.

    Returns:
        float64 ``(steps + 1,)`` on the CPU, from exactly ``sigma_max`` to exactly ``sigma_min`` (then 0).
    Raises:
        TypeError / ValueError: naming the argument, if ``steps`` is not an integer >= 1 (>= 2 with
            ``final_zero``), ``0 < sigma_min < sigma_max`` fails, or ``rho`` is not > 0.
    """
    steps = check_positive_int("steps", steps)
    lo, hi = _check_range(sigma_min, sigma_max)
    rho = check_positive("rho", rho)
    if not isinstance(final_zero, bool):
        raise TypeError(f"final_zero must be a bool, got {type(final_zero).__name__}")
    n = _levels(steps, final_zero)
    ramp = torch.linspace(0, 1, n, dtype=torch.float64)
    sig = (hi ** (1 / rho) + ramp * (lo ** (1 / rho) - hi ** (1 / rho))) ** rho
    sig[0], sig[-1] = hi, lo  # exact end points (the power rounds them)
    return torch.cat([sig, sig.new_zeros(1)]) if final_zero else sig


def _exponential_sigmas(steps: int, lo: float, hi: float, final_zero: bool) -> torch.Tensor:
    sig = torch.logspace(math.log10(hi), math.log10(lo), _levels(steps, final_zero), dtype=torch.float64)
    sig[0], sig[-1] = hi, lo
    return torch.cat([sig, sig.new_zeros(1)]) if final_zero else sig


def _initial_grids(init, steps: int, lo: float, hi: float, final_zero: bool) -> list:
    """The candidate start grids named or given by ``init``."""
    if isinstance(init, str):
        check_choice("init", init, _INITS)
        if init == "karras":
            return [karras_sigmas(steps, lo, hi, final_zero=final_zero)]
        if init == "exponential":
            return [_exponential_sigmas(steps, lo, hi, final_zero)]
        return [karras_sigmas(steps, lo, hi, r, final_zero=final_zero) for r in _SCREEN_RHOS] + [
            _exponential_sigmas(steps, lo, hi, final_zero)]
    if isinstance(init, (list, tuple)):
        if not init or any(isinstance(c, (list, tuple)) for c in init):
            raise ValueError("init must be a non-empty list of names or grid tensors (not nested)")
        return [g for c in init for g in _initial_grids(c, steps, lo, hi, final_zero)]
    if not isinstance(init, torch.Tensor):
        raise TypeError(f"init must be 'karras', 'exponential', 'screen', a tensor grid or a list of them, got "
                        f"{type(init).__name__}")
    grid = check_tensor("init", init, min_dim=1).detach().to("cpu", torch.float64)
    check_finite("init", grid)
    if grid.shape != (steps + 1,):
        raise ValueError(f"init must be a grid of steps + 1 = {steps + 1} noise levels, got shape {tuple(grid.shape)}")
    if final_zero and grid[-1] != 0:
        raise ValueError(f"init must end in 0 with final_zero=True, got {float(grid[-1])}")
    positive = grid[:-1] if final_zero else grid
    if not bool((positive[1:] < positive[:-1]).all()) or not bool((positive > 0).all()):
        raise ValueError("init must be strictly decreasing with positive levels (then 0 if final_zero)")
    if not (math.isclose(float(positive[0]), hi, rel_tol=1e-9) and math.isclose(float(positive[-1]), lo,
                                                                                rel_tol=1e-9)):
        raise ValueError(f"init must run from sigma_max={hi} to sigma_min={lo}, got "
                         f"{float(positive[0])} ... {float(positive[-1])}")
    grid = grid.clone()
    grid[0], grid[-2 if final_zero else -1] = hi, lo
    return [grid]


def _gap_logits(positive: torch.Tensor) -> torch.Tensor:
    """``log`` of the gaps in ``log σ`` of a grid's positive levels, ``(m,)``."""
    return (-torch.diff(positive.log())).log()


def _grid_from_logits(logits: torch.Tensor, hi: float, lo: float) -> torch.Tensor:
    """Positive levels ``(m + 1,)``: ``log σ`` falls from ``log hi`` to ``log lo`` by ``log(hi/lo) softmax(logits)``."""
    log_hi = math.log(hi)
    gaps = torch.softmax(logits, 0) * (log_hi - math.log(lo))
    sig = (log_hi - torch.cat([gaps.new_zeros(1), torch.cumsum(gaps, 0)])).exp()
    sig[0], sig[-1] = hi, lo  # exact end points (exp, log and the cumulative sum round them)
    return sig


def _legendre(j: int, u: torch.Tensor) -> torch.Tensor:
    """The Legendre polynomial ``P_j(u)`` (Bonnet's recursion)."""
    p0, p1 = torch.ones_like(u), u
    if j == 0:
        return p0
    for n in range(1, j):
        p0, p1 = p1, ((2 * n + 1) * u * p1 - n * p0) / (n + 1)
    return p1


def _design(m: int, basis: int | None) -> torch.Tensor:
    """``(m, k)``: how the ``k`` free parameters move the ``m`` gap logits."""
    if basis is None or basis >= m - 1:  # every gap free but the last (softmax ignores a common shift)
        return torch.eye(m, m - 1, dtype=torch.float64)
    u = torch.linspace(-1, 1, m, dtype=torch.float64)  # the gap's position; P_0 would be the ignored shift
    return torch.stack([_legendre(j, u) for j in range(1, basis + 1)], 1)


def optimize_sigmas(sampler: Callable, model: Callable, x_calib: torch.Tensor, sigma_max: float, sigma_min: float,
                    steps: int, *, reference: torch.Tensor | None = None, init="screen",
                    extra_args: dict | None = None, sampler_kwargs: dict | None = None, final_zero: bool = True,
                    basis: int | None = 4, max_evals: int = 500, method: str = "powell", xtol: float = 1e-2,
                    ftol: float = 1e-3, reference_rtol: float = 1e-9, reference_atol: float = 1e-9):
    """Optimise the interior noise levels of a σ grid for one deterministic sampler and step count.

    What is optimised: the interior levels of the grid ``σ_max = σ_0 > σ_1 > … >
    σ_min`` (then 0 when ``final_zero``; ``steps − 2`` interior levels, ``steps − 1``
    without ``final_zero``), with fixed end points, to minimise the mean squared
    error ``mean_{b,j} (x_b − x_b^ref)_j²`` of the final samples
    ``x = sampler(model, x_calib, sigmas)`` against the converged solution
    ``x^ref`` of the same probability-flow ODE from the same starts.  The grid
    is parameterised by unconstrained logits of its gaps in ``log σ``,
    ``log σ_i = log σ_max − L Σ_{j<i} softmax(ℓ)_j`` with ``L = log(σ_max/σ_min)``,
    so every parameter vector is a strictly decreasing grid with the requested
    end points; the logits are the initial grid's plus a correction, either
    ``Σ_{j=1..basis} θ_j P_j(u)`` (Legendre polynomials of the gap's position
    ``u ∈ [−1, 1]``: a smooth reshaping of the initial grid, the default with
    ``basis=4``; fewer parameters generalise better from a finite calibration
    batch) or, with ``basis=None`` (or ``basis >= steps − 2``), one free logit per
    gap.  ``log MSE`` is minimised derivative-free (SciPy's Powell or
    Nelder–Mead) from ``θ = 0``, the initial grid: by default
    (``init="screen"``) the best on the calibration batch of Karras et al.'s
    ρ = 7 grid, Karras grids of ρ = 2, 3, 5, 10, 20 and the exponential grid.  The
    sampler is a black box: any deterministic sampler works, multistep ones
    included.  The result is never worse on the calibration batch than the
    initial grid; on other starts it usually generalises, but judge it on a
    held-out batch (a calibration batch of a few hundred to a few thousand
    starts; the error of multimodal data is dominated by rare starts).

    Inspiration: Sabour et al. 2024 ("Align Your Steps") optimise a schedule per
    sampler and step count, there by minimising an upper bound on the KL
    divergence between the discretised and the true reverse SDE; Chen et al.
    2024 ("GITS") search time steps by dynamic programming against a teacher
    trajectory, a coarse global search before any refinement.  Here the target
    is the one a deterministic sampler can be measured on without Monte-Carlo
    noise: the final sample's error against the converged ODE solution,
    searched directly over the grid (a screen of a few standard grids, then a
    local search; no dynamic programming, no surrogate bound).

    Default reference: :func:`sdekit.integrations.k_diffusion.sample_dopri5` at
    ``rtol = reference_rtol``, ``atol = reference_atol`` from ``σ_max`` to
    ``σ_min``, then (``final_zero``) ``x ← D(x, σ_min)``, the step most samplers
    take to 0.  Nothing random happens here: the result is a deterministic
    function of the arguments (``x_calib`` is drawn by the caller).

    Args:
        sampler: k-diffusion-signature sampler, called as ``sampler(model, x, sigmas, extra_args=...,
            disable=True, **sampler_kwargs)`` → ``(B, *D)`` with ``sigmas`` float64 on ``x_calib``'s device;
            deterministic (e.g. :func:`sdekit.integrations.k_diffusion.sample_dpmpp_2m`, ``sample_heun``,
            ``sample_euler``).
        model: denoiser ``model(x, sigma, **extra_args)`` → ``(B, *D)``, ``sigma`` ``(B,)``
            (estimates ``E[x_0 | x_0 + σ ε = x]``).
        x_calib: ``(B, *D)`` calibration starts, ``σ_max ε``.
        sigma_max, sigma_min: end points ``0 < sigma_min < sigma_max``, in the units of ``x``.
        steps: the sampler's number of steps, ``len(sigmas) − 1`` (>= 2 with ``final_zero``, >= 1 without).
        reference: ``(B, *D)`` converged solutions from ``x_calib`` (default: computed as above).
        init: the start: ``"karras"`` (ρ = 7), ``"exponential"`` (uniform in log σ), a grid tensor
            ``(steps + 1,)`` with the same end points (and 0 last with ``final_zero``), or several of these
            (a list): each is run once on the calibration batch and the search starts from the best.
            ``"screen"`` (default) is the list Karras ρ = 7, 2, 3, 5, 10, 20 and exponential (a coarse
            search over the Karras family before the local one; 7 runs).
        extra_args: keyword arguments for the model (per-sample tensors ``(B, …)``), given to the sampler
            and to the default reference solve.
        sampler_kwargs: further keyword arguments for ``sampler`` (e.g. ``{"eta": 0.0}``).
        final_zero: the grid ends in 0 (k-diffusion's convention); else at ``σ_min``.
        basis: number of Legendre modes of the correction (``None``: every gap free).
        max_evals: bound on the sampler runs of the search.
        method: ``"powell"`` (default) or ``"nelder-mead"``.
        xtol, ftol: the optimiser's tolerances (``xtol`` on the parameters, ``ftol`` on ``log MSE``).
        reference_rtol, reference_atol: tolerances of the default reference solve.
    Returns:
        ``(sigmas, info)``: ``sigmas`` float64 ``(steps + 1,)`` on the CPU, strictly decreasing from exactly
        ``sigma_max`` to exactly ``sigma_min`` (then 0 with ``final_zero``); ``info`` a
        :class:`GridOptimizationInfo`.
    Raises:
        TypeError: naming the argument, if ``sampler`` or ``model`` is not callable, ``x_calib``,
            ``reference`` or a tensor ``init`` is not a floating tensor, ``init`` is neither a name, a
            tensor nor a list of them, ``extra_args``/``sampler_kwargs`` is not a dict, ``final_zero`` is not
            a bool.
        ValueError: naming the argument: ``x_calib`` with no batch or non-finite; ``sigma_min``/``sigma_max``
            not finite, > 0 and ordered; ``steps``, ``basis`` or ``max_evals`` not an integer >= 1 (``steps``
            >= 2 with ``final_zero``); ``reference`` not of ``x_calib``'s shape or non-finite; ``init`` an
            unknown name, an empty or nested list, or a grid of the wrong length, order or end points; ``method`` unknown; ``xtol``,
            ``ftol`` or the reference tolerances not > 0; ``sampler`` not deterministic (two runs on the
            initial grid disagree), its output not a tensor of ``x_calib``'s shape or not finite on the
            initial grid.
        ImportError: if SciPy is not installed (imported on the first call, not by ``import sdekit``).
    """
    lo, hi, steps, basis, max_evals, extra, skw, candidates = _checked_arguments(
        sampler, model, x_calib, sigma_min, sigma_max, steps, reference, init, extra_args, sampler_kwargs,
        final_zero, basis, max_evals, method, xtol, ftol, reference_rtol, reference_atol)
    ref_nfe = 0.0
    if reference is None:
        from ..integrations.k_diffusion import sample_dopri5  # lazy: sdekit.integrations imports sdekit.sampling

        ends = torch.tensor([hi, lo, 0.0] if final_zero else [hi, lo], dtype=torch.float64, device=x_calib.device)
        reference, rinfo = sample_dopri5(model, x_calib, ends, extra_args=extra, rtol=reference_rtol,
                                         atol=reference_atol, return_info=True)
        ref_nfe = float(rinfo["nfe"].double().mean())
    ref = reference.detach().to(torch.float64)

    def mse(grid: torch.Tensor) -> float:
        out = sampler(model, x_calib, grid.to(x_calib.device), extra_args=extra, disable=True, **skw)
        if not isinstance(out, torch.Tensor) or out.shape != x_calib.shape:
            raise ValueError(f"sampler must return a tensor of x_calib's shape {tuple(x_calib.shape)}, got "
                             f"{type(out).__name__} {tuple(getattr(out, 'shape', ()))}")
        err = float((out.detach().to(torch.float64) - ref).pow(2).mean())
        return err if math.isfinite(err) else math.inf

    if candidates[0].numel() - int(final_zero) <= 2:  # σ_max, σ_min (, 0): every candidate is this grid
        candidates = candidates[:1]
    errors = [mse(g) for g in candidates]
    start = min(range(len(errors)), key=errors.__getitem__)
    grid0, e0 = candidates[start], errors[start]
    if not math.isfinite(e0):
        raise ValueError("sampler's output on the initial grid is not finite")
    e0_again = mse(grid0)
    if abs(e0_again - e0) > _DETERMINISM_RTOL * e0:
        raise ValueError(f"sampler must be deterministic: two runs on the initial grid gave errors {e0!r} and "
                         f"{e0_again!r} (pass a noise-free sampler, e.g. eta=0 through sampler_kwargs)")
    runs = [len(candidates) + 1]
    positive0 = grid0[:-1] if final_zero else grid0
    if positive0.numel() <= 2 or e0 == 0.0:
        why = "no interior levels to optimise" if positive0.numel() <= 2 else "zero error on the initial grid"
        return grid0, GridOptimizationInfo(e0, e0, runs[0], ref_nfe, 0, why, tuple(errors))

    grid, error, free, message = _search(mse, grid0, e0, hi, lo, final_zero, basis, method, max_evals, xtol, ftol,
                                         runs)
    return grid, GridOptimizationInfo(e0, error, runs[0], ref_nfe, free, message, tuple(errors))


def _checked_arguments(sampler, model, x_calib, sigma_min, sigma_max, steps, reference, init, extra_args,
                       sampler_kwargs, final_zero, basis, max_evals, method, xtol, ftol, reference_rtol,
                       reference_atol):
    """The argument checks of :func:`optimize_sigmas`; returns the normalised values and the initial grids."""
    check_callable("sampler", sampler)
    check_callable("model", model)
    check_tensor("x_calib", x_calib, min_dim=1)
    check_batch("x_calib", x_calib)
    check_finite("x_calib", x_calib)
    lo, hi = _check_range(sigma_min, sigma_max)
    steps = check_positive_int("steps", steps)
    if not isinstance(final_zero, bool):
        raise TypeError(f"final_zero must be a bool, got {type(final_zero).__name__}")
    _levels(steps, final_zero)
    if basis is not None:
        basis = check_positive_int("basis", basis)
    max_evals = check_positive_int("max_evals", max_evals)
    check_choice("method", method, _METHODS)
    for name, value in (("xtol", xtol), ("ftol", ftol), ("reference_rtol", reference_rtol),
                        ("reference_atol", reference_atol)):
        check_positive(name, value)
    for label, kwargs in (("extra_args", extra_args), ("sampler_kwargs", sampler_kwargs)):
        if kwargs is not None and not isinstance(kwargs, dict):
            raise TypeError(f"{label} must be a dict of keyword arguments (or None), got {type(kwargs).__name__}")
    extra, skw = dict(extra_args or {}), dict(sampler_kwargs or {})
    candidates = _initial_grids(init, steps, lo, hi, final_zero)
    if reference is not None:
        check_tensor("reference", reference)
        if reference.shape != x_calib.shape:
            raise ValueError(f"reference must have x_calib's shape {tuple(x_calib.shape)}, got "
                             f"{tuple(reference.shape)}")
        check_finite("reference", reference)

    return lo, hi, steps, basis, max_evals, extra, skw, candidates


def _search(mse, grid0, e0, hi, lo, final_zero, basis, method, max_evals, xtol, ftol, runs) -> tuple:
    """SciPy's local search over the smooth log-gap correction from ``grid0``; ``(grid, error, free, message)``.

    ``runs[0]`` counts the sampler runs (shared with the caller's screening).
    """
    from scipy.optimize import minimize  # lazy: `import sdekit` does not import scipy

    base = _gap_logits(grid0[:-1] if final_zero else grid0)  # the initial grid's logits: theta = 0
    design = _design(base.numel(), basis)
    free = design.shape[1]
    tail = torch.zeros(int(final_zero), dtype=torch.float64)
    best_f, best_theta = [math.log(e0)], [torch.zeros(free, dtype=torch.float64)]  # updated by objective()

    def to_grid(theta) -> torch.Tensor:
        logits = base + design @ torch.as_tensor(theta, dtype=torch.float64)
        return torch.cat([_grid_from_logits(logits, hi, lo), tail])

    def objective(theta) -> float:
        grid = to_grid(theta)
        positive = grid[:-1] if final_zero else grid
        if not bool(torch.isfinite(positive).all() & (positive[:-1] > _MIN_RATIO * positive[1:]).all()):
            return _BAD  # a gap (nearly) rounded away: not a grid a sampler can take
        runs[0] += 1
        err = mse(grid)
        f = math.log(err) if 0 < err < math.inf else (-_BAD if err == 0 else _BAD)
        if f < best_f[0]:
            best_f[0], best_theta[0] = f, torch.as_tensor(theta, dtype=torch.float64).clone()
        return f

    theta0 = best_theta[0].numpy().copy()
    if method == "powell":
        # unbounded on purpose: SciPy's bounded Powell brackets every line search over the whole box and
        # lands in a far local minimum; unbounded, the first bracket is one unit around the current point
        options: dict = {"maxfev": max_evals, "xtol": xtol, "ftol": ftol}
    else:  # SciPy's default simplex around 0 is 0.00025 wide: start from unit steps instead
        simplex = [theta0] + [theta0 + 0.5 * e for e in torch.eye(free, dtype=torch.float64).numpy()]
        options = {"maxfev": max_evals, "xatol": xtol, "fatol": ftol, "initial_simplex": simplex}
    result = minimize(objective, theta0, method=_METHODS[method], options=options)
    improved = best_f[0] < math.log(e0)
    grid = to_grid(best_theta[0].numpy()) if improved else grid0
    return grid, (math.exp(best_f[0]) if improved else e0), free, str(result.message)
