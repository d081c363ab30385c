"""Keyed Brownian paths: ``sdeint(..., seed=)`` (sdekit's BrownianTree) against torchsde's tuned BrownianInterval.

The path suite's keyed case (OU, Euler–Maruyama, batch 4096 × 64, float32, ``dt = 1/steps`` on
``[0, 1]``, output at ``t = 1``) timed alternately for ``--repeats`` rounds so that load on a shared
machine hits every route alike:

* ``sdekit seed=``: ``sdekit.sdeint(..., seed=0)``, the tree evaluated by its C evaluator on the CPU;
* ``sdekit seed=, torch code``: the same tree through its torch code (the C evaluator switched off), the
  route of CUDA tensors and of machines without a C compiler (one call per round: it is the slow one);
* ``torchsde tuned BI``: ``torchsde.sdeint`` with ``bm=BrownianInterval(0, 1, size, dt=dt)``, the step
  hint torchsde's docs recommend for fixed steps (no Lévy area for Euler).

Reported: min and the 20th/80th percentiles of each, and time(tuned BI) / time(sdekit seed=) of the
minima and of the percentiles (issue 15's goal: at least 1, "at least as fast").  Torch's default thread
count.  With ``--callgrind`` (valgrind on the PATH) also the instructions of each fast route at batch
256 × 64 and one thread (callgrind's Ir of a process solving once, minus one that only warms up), which
the machine's load does not change.

``python benchmarks/keyed_paths.py [--steps 100] [--repeats N] [--callgrind] [--out benchmarks/results/keyed_paths.md]``
"""

from __future__ import annotations

import argparse
import platform
from pathlib import Path

import torch
from checkout import use_checkout
from timing import instruction_counts, interleaved, write_report

CHECKOUT_ENV = use_checkout()  # the checkout's sdekit, here and in the callgrind subprocesses

from suite_paths import initial, run_sdekit, run_torchsde

from sdekit.brownian import native_tree

_CG_SCRIPT = f"""
import sys
sys.path.insert(0, {str(Path(__file__).resolve().parent)!r})
import torch
torch.set_num_threads(1)
from suite_paths import initial, run_sdekit, run_torchsde
y0 = initial(256, 64)
steps = int(sys.argv[2])
run_sdekit("ou", "euler", y0, 4, 0, keyed=True)  # warm up both routes: first-call costs stay out
run_torchsde("ou", "euler", y0, 4, 0, True)
what = sys.argv[1]
if what == "sdekit":
    run_sdekit("ou", "euler", y0, steps, 0, keyed=True)
elif what == "bi":
    run_torchsde("ou", "euler", y0, steps, 0, True)
"""


def callgrind(steps: int) -> dict | None:
    """Instructions of one solve per route (batch 256 × 64), or None without valgrind (``{"error": ...}``)."""
    script = _CG_SCRIPT.replace("int(sys.argv[2])", str(steps))
    counts = instruction_counts(script, ("none", "sdekit", "bi"), CHECKOUT_ENV)
    if counts is None or "error" in counts:
        return counts
    return {k: v - counts["none"] for k, v in counts.items() if k != "none"}


def _torch_code(y0, steps):
    available = native_tree.available
    native_tree.available = lambda sample_index: None
    try:
        run_sdekit("ou", "euler", y0, steps, 0, keyed=True)
    finally:
        native_tree.available = available


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--repeats", type=int, default=9)
    p.add_argument("--callgrind", action="store_true", help="also count instructions (valgrind)")
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "keyed_paths.md")
    a = p.parse_args()
    y0 = initial(4096, 64)
    routes = {"sdekit seed=": lambda: run_sdekit("ou", "euler", y0, a.steps, 0, keyed=True),
              "sdekit seed=, torch code": lambda: _torch_code(y0, a.steps),
              "torchsde tuned BI": lambda: run_torchsde("ou", "euler", y0, a.steps, 0, True)}
    stats = interleaved(routes, a.repeats)
    ours = stats["sdekit seed="]
    lines = [
        "# Keyed Brownian paths: sdeint(seed=) vs torchsde's tuned BrownianInterval",
        "",
        (f"OU, Euler–Maruyama, batch 4096 × 64, {a.steps} steps, float32; {a.repeats} interleaved rounds, torch "
         f"threads {torch.get_num_threads()}; torch {torch.__version__}, Python {platform.python_version()}, "
         f"{platform.machine()}.  Ratio: time(route) / time(sdekit seed=), of the minima and of the percentiles."),
        "",
        "| route | min (s) | p20 (s) | p80 (s) | ratio (min) | (p20) | (p80) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for k, st in stats.items():
        ratio = " | ".join(f"{x / y:.2f}" for x, y in zip(st, ours))
        lines.append(f"| {k} | {st[0]:.3f} | {st[1]:.3f} | {st[2]:.3f} | {ratio} |")
    cg = callgrind(a.steps) if a.callgrind else None
    if cg is not None and "error" in cg:
        lines += ["", f"Instruction counts: callgrind failed: `{cg['error'][-300:]}`"]
    elif cg is not None:
        lines += ["", (f"Instructions of one solve (callgrind Ir, batch 256 × 64, one thread, {a.steps} steps, minus "
                       "a process that only warms up):"), "", "| route | Ir | tuned BI / sdekit |", "|---|---:|---:|",
                  f"| sdekit seed= | {cg['sdekit']:,} | {cg['bi'] / cg['sdekit']:.2f} |",
                  f"| torchsde tuned BI | {cg['bi']:,} | – |"]
    flags = " --callgrind" if a.callgrind else ""
    lines += ["", f"Command: `python benchmarks/keyed_paths.py --steps {a.steps} --repeats {a.repeats}{flags}`", ""]
    write_report("\n".join(lines), a.out)


if __name__ == "__main__":
    main()
