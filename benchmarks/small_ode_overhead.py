"""Per-step overhead of a small ODE solve: y' = y cos t, 16 components, 11 outputs on [0, 10], rtol = atol = 1e-6.

sdekit.odeint (whole state, the default; and per_sample=True on (16, 1)) against torchdiffeq's odeint and
scipy's solve_ivp RK45 in the same run, one thread.  The four routes are timed interleaved (one call of each
per round, ``--repeats`` rounds) so that load on a shared machine hits them alike; the table gives the min and
the 20th/80th percentiles of the wall times and the ratios of the mins.  With ``--callgrind`` (valgrind on the
PATH) also the instructions per solve of each route (callgrind's Ir of a process making 20 solves, minus one
that only warms up), which the machine's load does not change.

``python benchmarks/small_ode_overhead.py [--repeats N] [--callgrind] [--out benchmarks/results/small_ode_overhead.md]``
"""
from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import numpy as np
import scipy
import torch
import torchdiffeq
from checkout import use_checkout
from scipy.integrate import solve_ivp
from timing import instruction_counts, write_report

CHECKOUT_ENV = use_checkout()  # the checkout's sdekit, here and in the callgrind subprocesses

import sdekit

torch.set_num_threads(1)
f64 = {"dtype": torch.float64}
TOL = 1e-6
y0 = torch.ones(16, **f64)
t = torch.linspace(0, 10, 11, **f64)
t_np = np.linspace(0, 10, 11)


def f(t, y):
    return y * torch.cos(t)


ROUTES = {
    "sdekit whole-state": lambda: sdekit.odeint(f, y0, t, rtol=TOL, atol=TOL),
    "sdekit per_sample=True": lambda: sdekit.odeint(f, y0[:, None], t, rtol=TOL, atol=TOL, per_sample=True),
    "torchdiffeq": lambda: torchdiffeq.odeint(f, y0, t, rtol=TOL, atol=TOL),
    "scipy RK45": lambda: solve_ivp(lambda s, y: y * np.cos(s), (0, 10), np.ones(16), t_eval=t_np, rtol=TOL, atol=TOL),
}


CG_CALLS = 20
_CG_SCRIPT = f"""
import sys
sys.path.insert(0, {str(Path(__file__).resolve().parent)!r})
import small_ode_overhead as bench
for fn in bench.ROUTES.values():  # warm up every route: first-call costs stay out of the difference
    for _ in range(3):
        fn()
what = sys.argv[1]
for _ in range({CG_CALLS} if what != "none" else 0):
    bench.ROUTES[what]()
"""


def callgrind() -> dict | None:
    """Instructions per solve of each route, or None without valgrind (``{"error": ...}`` on failure)."""
    counts = instruction_counts(_CG_SCRIPT, ("none",) + tuple(ROUTES), CHECKOUT_ENV)
    if counts is None or "error" in counts:
        return counts
    return {k: (v - counts["none"]) / CG_CALLS for k, v in counts.items() if k != "none"}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=200)
    p.add_argument("--callgrind", action="store_true", help="also count instructions per solve (valgrind)")
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "small_ode_overhead.md")
    a = p.parse_args()
    for fn in ROUTES.values():  # warm up
        for _ in range(3):
            fn()
    times = {k: [] for k in ROUTES}
    for _ in range(a.repeats):
        for k, fn in ROUTES.items():
            s = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - s)
    sol = sdekit.odeint(f, y0, t, rtol=TOL, atol=TOL, return_solution=True)
    ref = sdekit.odeint(f, y0, t, rtol=TOL, atol=TOL)
    err = float((ref - torch.exp(torch.sin(t))[:, None]).abs().max())
    best = {k: min(v) for k, v in times.items()}
    tdq, sp = best["torchdiffeq"], best["scipy RK45"]
    lines = [
        "# Small-ODE per-step overhead",
        "",
        (f"y' = y cos t, 16 components, 11 outputs on [0, 10], rtol = atol = {TOL:g}, dopri5 "
         f"({int(sol.steps)} steps, {int(sol.nfe)} evaluations; max error {err:.1e}); one thread, "
         f"{a.repeats} interleaved rounds."),
        "",
        (f"torch {torch.__version__}, torchdiffeq {torchdiffeq.__version__}, scipy {scipy.__version__}, "
         f"Python {platform.python_version()}, {platform.machine()}."),
        "",
        "| route | min (ms) | p20 (ms) | p80 (ms) | min / torchdiffeq | min / scipy |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for k, v in times.items():
        q20, q80 = np.percentile(v, [20, 80])
        lines.append(f"| {k} | {best[k] * 1e3:.2f} | {q20 * 1e3:.2f} | {q80 * 1e3:.2f} | "
                     f"{best[k] / tdq:.2f} | {best[k] / sp:.2f} |")
    cg = callgrind() if a.callgrind else None
    if cg is not None and "error" in cg:
        lines += ["", f"Instruction counts: callgrind failed: `{cg['error'][-300:]}`"]
    elif cg is not None:
        lines += ["", f"Instructions per solve (callgrind Ir, one thread, {CG_CALLS} solves minus none):", "",
                  "| route | instructions per solve | / torchdiffeq | / scipy |", "|---|---:|---:|---:|"]
        lines += [f"| {k} | {v:,.0f} | {v / cg['torchdiffeq']:.2f} | {v / cg['scipy RK45']:.2f} |"
                  for k, v in cg.items()]
    flags = " --callgrind" if a.callgrind else ""
    lines += ["", f"Command: `python benchmarks/small_ode_overhead.py --repeats {a.repeats}{flags}`", ""]
    write_report("\n".join(lines), a.out)


if __name__ == "__main__":
    main()
