"""``sdeint`` Euler–Maruyama against the bare in-place loop a user writes, interleaved, with the spread.

OU and GBM of the path suite (batch 4096 × 64, 1000 steps of 1e-3, float32, noise from a
``torch.Generator``): ``sdekit.sdeint(..., method="euler", generator=...)`` and the loop of
``suite_paths.run_loop`` (``torch.randn(out=z)``, in-place ``add_``/``addcmul_``), timed alternately for
``--repeats`` rounds so that load on a shared machine hits both alike.  Reported: min and the 20th/80th
percentiles of each, and the ratio sdekit / loop of the minima and of the percentiles (issue 15's goal:
at most 1.1).  Torch's default thread count.

``python benchmarks/sdeint_overhead.py [--repeats N] [--out benchmarks/results/sdeint_overhead.md]``
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import numpy as np
import torch
from checkout import use_checkout

use_checkout()  # the checkout's sdekit

from suite_paths import initial, run_loop, run_sdekit

STEPS = 1000


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=9)
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
        for fn in routes.values():
            fn()
        times: dict = {k: [] for k in routes}
        for _ in range(a.repeats):
            for k, fn in routes.items():
                s = time.perf_counter()
                fn()
                times[k].append(time.perf_counter() - s)
        stats = {k: (min(v), *np.percentile(v, [20, 80])) for k, v in times.items()}
        ratio = [x / y for x, y in zip(stats["sdekit"], stats["loop"])]
        for k, (lo, p20, p80) in stats.items():
            tail = " | ".join(f"{r:.2f}" for r in ratio) if k == "sdekit" else "– | – | –"
            lines.append(f"| {problem.upper()} | {k} | {lo:.3f} | {p20:.3f} | {p80:.3f} | {tail} |")
    lines += ["", f"Command: `python benchmarks/sdeint_overhead.py --repeats {a.repeats}`", ""]
    text = "\n".join(lines)
    print(text)
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(text)


if __name__ == "__main__":
    main()
