"""Every SDE method's measured strong (and weak) order is within ±0.15 of its declared order.

Strong error ``E|Y_N − Y(T)|`` over ``M`` paths, against the exact solution on the same
Brownian path (``W_T`` read off the same counter-based Brownian tree) or, for the nonlinear
additive problem, against a fine-step solution on the same path; ``dt = T/2^k`` so every
grid is a set of nodes of one tree.  The order is the slope of a log–log fit
(:func:`sdekit.testing.fit_order`).  Problems are in sdekit/testing/sde_problems.py; parameters and
step ranges were chosen in the asymptotic regime (errors halve at the declared rate at the
finest steps), and linear problems are kept away from schemes they flatter (SRA and the
Heun family reach order 2 on the linear additive problem; see sde_problems).

Weak error ``E φ(Y_N) − E φ(Y(T))`` is estimated by the coupled mean ``mean(φ(Y_N) − φ(Y(T)))``
on the same paths: its Monte Carlo error is ``std(φ(Y_N) − φ(Y(T)))/√M``, of the size of the
strong error over ``√M``, far below the bias ``∝ h^p``.  Each test asserts that every point
lies more than 4 standard errors from zero, so the fit measures the bias, not the noise.
"""

from __future__ import annotations

import functools
import math

import pytest
import torch

import sdekit
from sdekit.brownian import BrownianTree
from sdekit.solvers.sde import resolve
from sdekit.testing import fit_order
from sdekit.testing.sde_problems import GBM, AdditiveProblem, ArctanProblem, NonlinearAdditiveProblem, ScalarNoiseGBM

F64 = torch.float64
T = 1.0
SEED = 20240611
TOL = 0.15
S = "stratonovich"


@functools.lru_cache(maxsize=None)
def _reference(problem_key: str, method: str, k: int, paths: int, y0: float):
    """Fine-step solution of the nonlinear additive problem on the tree keyed by SEED."""
    prob = NonlinearAdditiveProblem(sde_type=problem_key)
    start = torch.full((paths, 1), y0, dtype=F64)
    return sdekit.sdeint(prob, start, [0.0, T], method=method, dt=T / 2**k, seed=SEED)[-1]


def _terminal(prob, method, k, paths, y0, d):
    start = torch.full((paths, d), y0, dtype=F64)
    return sdekit.sdeint(prob, start, [0.0, T], method=method, dt=T / 2**k, seed=SEED)[-1]


def _exact(prob, method, paths, y0, d):
    """The exact terminal value on the tree's path (a fine SRA solution for the nonlinear problem)."""
    if isinstance(prob, NonlinearAdditiveProblem):
        return _reference(prob.sde_type, "sra1" if method == "sra3" else "sra3", 11, paths, y0)
    m = 1 if prob.noise_type == "scalar" else d
    W_T = BrownianTree(0.0, T, (paths, m), seed=SEED, depth=0, dtype=F64)(0.0, T)
    return prob.exact(torch.full((paths, d), y0, dtype=F64), T, W_T)


# (method, problem, y0, state dimension, k range (dt = 2^-k), paths).  The additive problem is declared
# Stratonovich for torchsde's Stratonovich methods (the same SDE: additive noise), as torchsde requires.
STRONG = [
    ("euler", GBM(0.5, 0.5), 1.0, 1, range(4, 10), 1000),
    ("euler", ArctanProblem(0.5), 0.5, 1, range(4, 10), 1000),
    ("euler", AdditiveProblem(), 1.0, 1, range(4, 10), 1000),
    ("milstein", GBM(0.5, 0.5), 1.0, 1, range(4, 10), 1000),
    ("milstein", ArctanProblem(0.5), 0.5, 1, range(4, 10), 1000),
    ("milstein", ArctanProblem(0.5, S), 0.5, 1, range(4, 10), 1000),
    ("milstein", ScalarNoiseGBM(0.5, 0.5), 1.0, 2, range(4, 10), 1000),
    ("derivative_free_milstein", ArctanProblem(0.5), 0.5, 1, range(4, 10), 1000),
    ("derivative_free_milstein", GBM(0.5, 0.5, S), 1.0, 1, range(4, 10), 1000),
    ("heun", ArctanProblem(0.5, S), 0.5, 1, range(4, 10), 1000),
    ("heun", NonlinearAdditiveProblem(sde_type=S), 0.5, 1, range(3, 9), 500),
    ("midpoint", ArctanProblem(0.5, S), 0.5, 1, range(4, 10), 1000),
    ("euler_heun", GBM(0.5, 0.5, S), 1.0, 1, range(4, 10), 1000),
    ("reversible_heun", ArctanProblem(0.5, S), 0.5, 1, range(4, 10), 1000),
    ("reversible_heun", NonlinearAdditiveProblem(sde_type=S), 0.5, 1, range(3, 9), 500),
    ("sra1", NonlinearAdditiveProblem(), 0.5, 1, range(3, 9), 500),
    ("sra3", NonlinearAdditiveProblem(), 0.5, 1, range(3, 9), 500),
    ("sri2", GBM(0.5, 0.5), 1.0, 1, range(4, 10), 1000),
    ("sri2", ArctanProblem(0.5), 0.5, 1, range(5, 11), 1000),
]


def _case_id(case):
    method, prob = case[0], case[1]
    return f"{method}-{type(prob).__name__}-{prob.sde_type}"


@pytest.mark.parametrize("case", STRONG, ids=_case_id)
def test_strong_order(case):
    method, prob, y0, d, ks, paths = case
    exact = _exact(prob, method, paths, y0, d)
    errors = [float((_terminal(prob, method, k, paths, y0, d) - exact).abs().mean()) for k in ks]
    fit = fit_order([T / 2**k for k in ks], errors)
    declared = resolve(method, prob.noise_type, prob.sde_type).strong_order(prob.noise_type)
    assert abs(fit.order - declared) <= TOL, (
        f"{method} on {type(prob).__name__} ({prob.sde_type}): strong order {fit.order:.3f} ± {fit.stderr:.3f}, "
        f"declared {declared}; errors {errors}"
    )


# (method, problem, y0, φ, k range, paths)
WEAK = [
    ("euler", GBM(1.0, 0.5), 1.0, "y", range(3, 8), 8000),
    ("milstein", GBM(1.0, 0.5), 1.0, "y", range(3, 8), 4000),
    ("heun", GBM(1.0, 0.5, S), 1.0, "y", range(3, 8), 4000),
    ("sra1", NonlinearAdditiveProblem(), 0.5, "y", range(2, 6), 4000),
]


@pytest.mark.parametrize("case", WEAK, ids=_case_id)
def test_weak_order(case):
    method, prob, y0, phi_name, ks, paths = case
    phi = {"y": lambda y: y, "y2": lambda y: y * y}[phi_name]
    if isinstance(prob, NonlinearAdditiveProblem):
        exact = _reference(prob.sde_type, "sra3", 9, paths, y0)
    else:
        exact = _exact(prob, method, paths, y0, 1)
    errors, ses = [], []
    for k in ks:
        diff = phi(_terminal(prob, method, k, paths, y0, 1)) - phi(exact)
        errors.append(float(diff.mean()))
        ses.append(float(diff.std()) / math.sqrt(paths))
    assert all(abs(e) > 4 * se for e, se in zip(errors, ses)), (
        f"Monte Carlo error not below the bias: errors {errors}, standard errors {ses}"
    )
    fit = fit_order([T / 2**k for k in ks], [abs(e) for e in errors])
    declared = resolve(method, prob.noise_type, prob.sde_type).weak_order(prob.noise_type)
    assert abs(fit.order - declared) <= TOL, (
        f"{method}: weak order {fit.order:.3f} ± {fit.stderr:.3f}, declared {declared}; errors {errors}"
    )
