"""``sdeint`` Euler–Maruyama against the bare in-place loop a user writes, interleaved, with the spread.

OU and GBM of the path suite (batch 4096 × 64, 1000 steps of 1e-3, float32, noise from a
``torch.Generator``): ``sdekit.sdeint(..., method="euler", generator=...)`` and the loop of
``suite_paths.run_loop`` (``torch.randn(out=z)``, in-place ``add_``/``addcmul_``), timed alternately for
``--repeats`` rounds so that load on a shared machine hits both alike.  Reported: min and the 20th/80th
percentiles of each, and the ratio sdekit / loop of the minima and of the percentiles (issue 15's goal:
at most 1.1).  Torch's default thread count.  With ``--callgrind`` (valgrind on the PATH) also the
instructions per step of each route at batch 256 × 64 (callgrind's Ir of a process running 200 steps,
minus one that only warms up), which the machine's load does not change.

``python benchmarks/sdeint_overhead.py [--repeats N] [--callgrind] [--out benchmarks/results/sdeint_overhead.md]``
"""

from __future__ import annotations

import argparse
import platform
from pathlib import Path

import torch
from checkout import use_checkout
from timing import instruction_counts, interleaved, write_report

CHECKOUT_ENV = use_checkout()  # the checkout's sdekit, here and in the callgrind subprocesses

from suite_paths import initial, run_loop, run_sdekit

STEPS = 1000
CG_STEPS = 200
_CG_SCRIPT = f"""
import sys
sys.path.insert(0, {str(Path(__file__).resolve().parent)!r})
import torch
torch.set_num_threads(1)
from suite_paths import initial, run_loop, run_sdekit
y0 = initial(256, 64)
for p in ("ou", "gbm"):  # warm up every route: first-call costs stay out of the difference
    run_sdekit(p, "euler", y0, 2, 1)
    run_loop(p, y0, 2, 1)
what = sys.argv[1]
if what != "none":
    route, p = what.split("-")
    (run_sdekit(p, "euler", y0, {CG_STEPS}, 1) if route == "sdekit" else run_loop(p, y0, {CG_STEPS}, 1))
"""


def callgrind() -> dict | None:
    """Instructions per step of each route (batch 256 × 64), or None without valgrind (``{"error": ...}``)."""
    variants = ("none",) + tuple(f"{r}-{p}" for p in ("ou", "gbm") for r in ("sdekit", "loop"))
    counts = instruction_counts(_CG_SCRIPT, variants, CHECKOUT_ENV)
    if counts is None or "error" in counts:
        return counts
    return {k: (v - counts["none"]) / CG_STEPS for k, v in counts.items() if k != "none"}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=9)
    p.add_argument("--callgrind", action="store_true", help="also count instructions per step (valgrind)")
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "sdeint_overhead.md")
    a = p.parse_args()
    y0 = initial(4096, 64)
    lines = [
        "# sdeint Euler–Maruyama vs the bare in-place loop",
        "",
        (f"Batch 4096 × 64, {STEPS} steps, float32, generator noise; {a.repeats} interleaved rounds, torch threads "
         f"{torch.get_num_threads()}; torch {torch.__version__}, Python {platform.python_version()}, "
         f"{platform.machine()}."),
        "",
        "| problem | route | min (s) | p20 (s) | p80 (s) | sdekit / loop (min) | (p20) | (p80) |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for problem in ("ou", "gbm"):
        routes = {"sdekit": lambda problem=problem: run_sdekit(problem, "euler", y0, STEPS, 1),
                  "loop": lambda problem=problem: run_loop(problem, y0, STEPS, 1)}
        stats = interleaved(routes, a.repeats)
        ratio = [x / y for x, y in zip(stats["sdekit"], stats["loop"])]
        for k, (lo, p20, p80) in stats.items():
            tail = " | ".join(f"{r:.2f}" for r in ratio) if k == "sdekit" else "– | – | –"
            lines.append(f"| {problem.upper()} | {k} | {lo:.3f} | {p20:.3f} | {p80:.3f} | {tail} |")
    cg = callgrind() if a.callgrind else None
    if cg is not None and "error" in cg:
        lines += ["", f"Instruction counts: callgrind failed: `{cg['error'][-300:]}`"]
    elif cg is not None:
        lines += ["", f"Instructions per step (callgrind Ir, batch 256 × 64, one thread, {CG_STEPS} steps minus none):",
                  "", "| problem | sdekit | loop | sdekit / loop |", "|---|---:|---:|---:|"]
        lines += [f"| {p.upper()} | {cg['sdekit-' + p]:,.0f} | {cg['loop-' + p]:,.0f} | "
                  f"{cg['sdekit-' + p] / cg['loop-' + p]:.2f} |" for p in ("ou", "gbm")]
    flags = " --callgrind" if a.callgrind else ""
    lines += ["", f"Command: `python benchmarks/sdeint_overhead.py --repeats {a.repeats}{flags}`", ""]
    write_report("\n".join(lines), a.out)


if __name__ == "__main__":
    main()
