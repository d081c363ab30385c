"""Shared timer for the GPU benchmarks: ``triton.testing.do_bench`` medians, or wall clock in smoke mode."""

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
