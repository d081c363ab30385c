"""Measured strong and weak orders of every ``sdekit.sdeint`` method, and error against work.

``python benchmarks/orders_sde.py`` prints a markdown table (declared vs measured orders)
and an error-vs-work table; ``--plot FILE.png`` also draws strong error against NFE.
``measure_orders()`` returns the rows for the combined order table (the ODE half lives
elsewhere).  Methodology as in tests/test_sde_orders.py:

* strong error ``E|Y_N − Y(T)|`` on the same Brownian path (counter-based tree, ``dt = 2^-k``),
  against the closed form, or a fine SRA solution for the nonlinear additive problem;
* weak error by the coupled estimator ``mean(φ(Y_N) − φ(Y(T)))`` (Monte Carlo error of the
  size of the strong error over ``√M``); a weak order is reported only when every point is
  more than 4 standard errors from zero;
* orders are log–log slopes (:func:`sdekit.testing.fit_order`) ± their standard error.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from checkout import use_checkout  # noqa: E402

use_checkout()  # the checkout's sdekit

import sdekit  # noqa: E402
from sdekit.brownian import BrownianTree  # noqa: E402
from sdekit.solvers.sde import resolve  # noqa: E402
from sdekit.testing import (  # noqa: E402
    GBM,
    AdditiveProblem,
    ArctanProblem,
    NonlinearAdditiveProblem,
    fit_order,
)

F64 = torch.float64
T = 1.0
SEED = 20240611
S = "stratonovich"


class _Counting:
    """Proxy counting drift (``f``) and diffusion (``g``) evaluations of a torchsde-style SDE."""

    def __init__(self, sde):
        self.sde, self.noise_type, self.sde_type = sde, sde.noise_type, sde.sde_type
        self.nf = self.ng = 0

    def f(self, t, y):
        self.nf += 1
        return self.sde.f(t, y)

    def g(self, t, y):
        self.ng += 1
        return self.sde.g(t, y)


@dataclass
class OrderRow:
    """One (method, problem) measurement.

    ``work`` holds ``(dt, strong error, NFE per step, wall seconds)`` for each step size;
    NFE counts drift plus diffusion evaluations (the batch shares them).
    """

    method: str
    problem: str
    noise_type: str
    sde_type: str
    declared_strong: float
    strong: float
    strong_se: float
    declared_weak: float | None
    weak: float | None
    weak_se: float | None
    work: list = field(default_factory=list)


# (method, problem, y0, strong k range, weak k range or None, φ)
CASES = [
    ("euler", GBM(0.5, 0.5), 1.0, range(4, 10), None, None),
    ("euler", GBM(1.0, 0.5), 1.0, None, range(3, 8), "y"),
    ("euler", AdditiveProblem(), 1.0, range(4, 10), None, None),
    ("milstein", GBM(0.5, 0.5), 1.0, range(4, 10), None, None),
    ("milstein", GBM(1.0, 0.5), 1.0, None, range(3, 8), "y"),
    ("milstein", ArctanProblem(0.5, S), 0.5, range(4, 10), None, None),
    ("derivative_free_milstein", ArctanProblem(0.5), 0.5, range(4, 10), None, None),
    ("derivative_free_milstein", GBM(1.0, 0.5), 1.0, None, range(3, 8), "y"),
    ("heun", ArctanProblem(0.5, S), 0.5, range(4, 10), None, None),
    ("heun", GBM(1.0, 0.5, S), 1.0, None, range(3, 8), "y"),
    ("midpoint", ArctanProblem(0.5, S), 0.5, range(4, 10), None, None),
    ("midpoint", GBM(1.0, 0.5, S), 1.0, None, range(3, 8), "y"),
    ("euler_heun", GBM(0.5, 0.5, S), 1.0, range(4, 10), range(3, 8), "y"),
    ("reversible_heun", ArctanProblem(0.5, S), 0.5, range(4, 10), None, None),
    ("reversible_heun", GBM(1.0, 0.5, S), 1.0, None, range(3, 8), "y"),
    ("sra1", NonlinearAdditiveProblem(), 0.5, range(3, 9), range(2, 6), "y"),
    ("sra1", AdditiveProblem(), 1.0, range(3, 9), None, None),
    ("sra3", NonlinearAdditiveProblem(), 0.5, range(3, 9), range(2, 6), "y"),
    ("sri2", GBM(0.5, 0.5), 1.0, range(4, 10), range(2, 7), "y2"),
    ("sri2", ArctanProblem(0.5), 0.5, range(5, 11), None, None),
]

PHI = {"y": lambda y: y, "y2": lambda y: y * y}


def problem_label(prob) -> str:
    """Short name with parameters, e.g. ``GBM μ=0.5 σ=0.5``."""
    if isinstance(prob, GBM):
        return f"GBM μ={prob.mu:g} σ={prob.sigma:g}"
    if isinstance(prob, ArctanProblem):
        return f"arctan p={prob.p:g}"
    if isinstance(prob, AdditiveProblem):
        return f"linear additive a={prob.a:g} b={prob.b:g}"
    if isinstance(prob, NonlinearAdditiveProblem):
        return f"−sin y, additive σ={prob.sigma:g}"
    return type(prob).__name__


def _solve(prob, method, k, paths, y0):
    counting = _Counting(prob)
    start = torch.full((paths, 1), y0, dtype=F64)
    t0 = time.perf_counter()
    out = sdekit.sdeint(counting, start, [0.0, T], method=method, dt=T / 2**k, seed=SEED)[-1]
    wall = time.perf_counter() - t0
    return out, (counting.nf + counting.ng) / 2**k, wall


def _exact(prob, method, paths, y0, k_ref):
    if isinstance(prob, NonlinearAdditiveProblem):
        ref = "sra1" if method == "sra3" else "sra3"
        start = torch.full((paths, 1), y0, dtype=F64)
        return sdekit.sdeint(prob, start, [0.0, T], method=ref, dt=T / 2**k_ref, seed=SEED)[-1]
    W_T = BrownianTree(0.0, T, (paths, 1), seed=SEED, depth=0, dtype=F64)(0.0, T)
    return prob.exact(torch.full((paths, 1), y0, dtype=F64), T, W_T)


def measure_orders(strong_paths: int = 1000, weak_paths: int = 8000, cases=CASES) -> list[OrderRow]:
    """Measure every case of ``cases``; returns one :class:`OrderRow` per (method, problem).

    Args:
        strong_paths: Monte Carlo paths for strong errors.
        weak_paths: paths for weak errors.
        cases: ``(method, problem, y0, strong k range | None, weak k range | None, φ name)``.
    """
    rows: dict[tuple, OrderRow] = {}
    for method, prob, y0, ks, wks, phi_name in cases:
        cls = resolve(method, prob.noise_type, prob.sde_type)
        key = (method, problem_label(prob), prob.sde_type)
        row = rows.setdefault(key, OrderRow(method, problem_label(prob), prob.noise_type, prob.sde_type,
                                            cls.strong_order(prob.noise_type), math.nan, math.nan,
                                            cls.weak_order(prob.noise_type), None, None))
        if ks is not None:
            exact = _exact(prob, method, strong_paths, y0, 11)
            errors = []
            for k in ks:
                y, nfe, wall = _solve(prob, method, k, strong_paths, y0)
                errors.append(float((y - exact).abs().mean()))
                row.work.append((T / 2**k, errors[-1], nfe, wall))
            fit = fit_order([T / 2**k for k in ks], errors)
            row.strong, row.strong_se = fit.order, fit.stderr
        if wks is not None:
            phi = PHI[phi_name]
            exact = _exact(prob, method, weak_paths, y0, 9)
            errors, ses = [], []
            for k in wks:
                diff = phi(_solve(prob, method, k, weak_paths, y0)[0]) - phi(exact)
                errors.append(float(diff.mean()))
                ses.append(float(diff.std()) / math.sqrt(weak_paths))
            if all(abs(e) > 4 * s for e, s in zip(errors, ses)):
                fit = fit_order([T / 2**k for k in wks], [abs(e) for e in errors])
                row.weak, row.weak_se = fit.order, fit.stderr
    return list(rows.values())


def _fmt(x, se):
    return "—" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.2f} ± {se:.2f}"


def markdown_table(rows: list[OrderRow]) -> str:
    """Declared vs measured orders as a markdown table."""
    lines = ["| method | problem | noise | SDE | strong (declared) | strong (measured) | weak (declared) "
             "| weak (measured) |", "|---|---|---|---|---:|---:|---:|---:|"]
    for r in rows:
        dw = "—" if r.declared_weak is None else f"{r.declared_weak:.1f}"
        lines.append(f"| `{r.method}` | {r.problem} | {r.noise_type} | {r.sde_type} | {r.declared_strong:.1f} | "
                     f"{_fmt(r.strong, r.strong_se)} | {dw} | {_fmt(r.weak, r.weak_se)} |")
    return "\n".join(lines)


def work_table(rows: list[OrderRow]) -> str:
    """Strong error, NFE per step and wall time at ``dt = 2^-6`` and ``2^-9`` (where measured).

    Wall times include building the Brownian tree and are only comparable within one run
    on an otherwise idle machine; NFE is the machine-independent measure of work.
    """
    lines = ["| method | problem | NFE / step | error at dt=2⁻⁶ | error at dt=2⁻⁹ | wall (s) at dt=2⁻⁹ |",
             "|---|---|---:|---:|---:|---:|"]
    for r in rows:
        at = {round(-math.log2(dt)): (err, nfe, wall) for dt, err, nfe, wall in r.work}
        if not at:
            continue
        nfe = next(iter(at.values()))[1]
        e6 = f"{at[6][0]:.2e}" if 6 in at else "—"
        e9 = f"{at[9][0]:.2e}" if 9 in at else "—"
        w9 = f"{at[9][2]:.2f}" if 9 in at else "—"
        lines.append(f"| `{r.method}` | {r.problem} ({r.sde_type}) | {nfe:.0f} | {e6} | {e9} | {w9} |")
    return "\n".join(lines)


def plot_error_vs_work(rows: list[OrderRow], path: str) -> None:
    """Strong error against NFE per path (log–log), one line per (method, problem)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 5))
    colors = plt.cm.tab20.colors
    for i, r in enumerate(row for row in rows if row.work):
        ax.loglog([w[2] / w[0] for w in r.work], [w[1] for w in r.work], marker="o", ms=3, color=colors[i % 20],
                  label=f"{r.method} / {r.problem} ({r.sde_type[:5]})")
    ax.set_xlabel("NFE per path (drift + diffusion evaluations)")
    ax.set_ylabel("strong error E|Y_N − Y(T)|")
    ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--strong-paths", type=int, default=1000)
    parser.add_argument("--weak-paths", type=int, default=8000)
    parser.add_argument("--plot", help="write strong error vs NFE to this PNG")
    args = parser.parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    start = time.perf_counter()
    rows = measure_orders(args.strong_paths, args.weak_paths)
    print(markdown_table(rows))
    print()
    print(work_table(rows))
    print(f"\n({time.perf_counter() - start:.0f} s; strong: {args.strong_paths} paths, weak: {args.weak_paths} paths, "
          f"torch {torch.__version__})")
    if args.plot:
        plot_error_vs_work(rows, args.plot)


if __name__ == "__main__":
    main()
