"""Shared timers: ``triton.testing.do_bench`` medians (GPU), wall clock in smoke mode, callgrind instruction counts."""

from __future__ import annotations

import statistics
import time


def make_timer(smoke: bool, rep: int = 100):
    """Return ``timer(fn) -> milliseconds``.

    On a GPU: the median of ``triton.testing.do_bench`` (25 ms warm-up, ``rep`` ms of repetitions).
    In smoke mode (CPU, Triton interpreter): the wall-clock median of 3 calls after one warm-up call.
    """
    if not smoke:
        import triton.testing

        return lambda fn: triton.testing.do_bench(fn, warmup=25, rep=rep, return_mode="median")

    def wall(fn):
        fn()
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
        return statistics.median(times)

    return wall


def cuda_or_smoke(smoke: bool, script: str) -> bool:
    """Set up a GPU-only script: Triton's interpreter for ``--smoke``; False (after saying why) without CUDA."""
    import os
    import sys

    if smoke:
        os.environ.setdefault("TRITON_INTERPRET", "1")
    import torch

    if not smoke and not torch.cuda.is_available():
        print(f"benchmarks/{script} needs a CUDA GPU (torch.cuda.is_available() is False); "
              "use --smoke to check the script on the CPU.", file=sys.stderr)
        return False
    return True


def quick_or_full(argv, doc: str, quick_help: str, name: str, here):
    """The ``--quick`` / ``--out`` command line of a quality benchmark: ``(quick, out path)``.

    The default output is ``benchmarks/results/<name>.md`` (``<name>_quick.md`` under ``--quick``).
    """
    import argparse
    from pathlib import Path

    p = argparse.ArgumentParser(description=doc.splitlines()[0])
    p.add_argument("--quick", action="store_true", help=quick_help)
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    return args.quick, args.out or Path(here) / "results" / (name + ("_quick" if args.quick else "") + ".md")


def instruction_counts(script: str, variants, env: dict, timeout: float = 1800) -> dict | None:
    """callgrind's instruction totals (Ir) of ``python script <variant>`` for each variant.

    Repeatable on a noisy machine, unlike wall time: run a variant that does the work and one that
    only imports and warms up ("none"), and the work's count is the difference.  Returns
    ``{variant: Ir}``, ``None`` without valgrind on the PATH, or ``{"error": stderr}`` if a run failed.
    """
    import re
    import shutil
    import subprocess
    import sys
    import tempfile
    from pathlib import Path

    if shutil.which("valgrind") is None:
        return None
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "work.py"
        path.write_text(script)
        for what in variants:
            log = Path(tmp) / f"{what}.out"
            proc = subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={log}", sys.executable,
                                   str(path), what], env=dict(env, OMP_NUM_THREADS="1"), capture_output=True,
                                  text=True, timeout=timeout, check=False)
            m = re.search(r"Collected\s*:\s*(\d+)", proc.stderr)
            if proc.returncode != 0 or m is None:
                return {"error": proc.stderr[-1500:]}
            out[what] = int(m.group(1))
    return out


def interleaved(routes: dict, repeats: int) -> dict:
    """Time each ``routes[name]()`` once (warm-up), then alternately for ``repeats`` rounds, so that load on a
    shared machine hits every route alike: ``{name: (min, p20, p80)}`` in seconds."""
    import numpy as np

    for fn in routes.values():
        fn()
    times: dict = {k: [] for k in routes}
    for _ in range(repeats):
        for k, fn in routes.items():
            start = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - start)
    return {k: (min(v), *np.percentile(v, [20, 80])) for k, v in times.items()}


def write_report(text: str, out) -> None:
    """Print a benchmark's markdown report and write it to ``out`` (a path; nothing when falsy)."""
    print(text)
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)
