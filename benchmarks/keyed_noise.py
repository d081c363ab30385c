"""Keyed noise on the CPU: ``torch.randn`` vs the torch reference keyed draw vs the native (C) keyed draw.

Per-element wall time of float32 standard normals at 2¹², 2¹⁶ and 2²⁰ elements
(B rows × 64 values; B = 64, 1024, 16384) with one thread and with torch's
default thread count: min and 20th/80th percentiles over ``--repeats`` calls
(default 40; fewer for the slow reference at 2²⁰), and the ratio to
``torch.randn`` of the same run (ratio of the minima; of the percentiles).
With ``--callgrind`` (and valgrind on the PATH) also the instruction counts
(callgrind's Ir totals) of a process drawing 2¹⁶ keyed normals natively, with
``torch.randn``, and doing neither, so the draw's own count is the difference.

``python benchmarks/keyed_noise.py [--repeats N] [--callgrind]`` writes
``benchmarks/results/keyed_noise.md``.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from checkout import use_checkout
from timing import instruction_counts

CHECKOUT_ENV = use_checkout()  # the checkout's sdekit, here and in the callgrind subprocesses

from sdekit import _native
from sdekit.noise import counter_normal_unchecked

K0, K1, STREAM = 0x3039, 0x80000000, 7
SIZES = [(64, 64), (1024, 64), (16384, 64)]


def _times(fn, repeats: int) -> list[float]:
    fn()
    fn()
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return sorted(out)


def _pct(ts: list[float], q: float) -> float:
    return ts[min(len(ts) - 1, int(q * (len(ts) - 1) + 0.5))]


def _reference(idx, d):
    os.environ["SDEKIT_NATIVE"] = "0"
    try:
        return counter_normal_unchecked(K0, K1, STREAM, idx, (d,))
    finally:
        del os.environ["SDEKIT_NATIVE"]


def bench(repeats: int) -> list[dict]:
    rows = []
    default_threads = torch.get_num_threads()
    for threads in sorted({1, default_threads}):
        torch.set_num_threads(threads)
        for b, d in SIZES:
            n = b * d
            idx = torch.arange(b, dtype=torch.int64)
            fns = {
                "torch.randn": lambda b=b, d=d: torch.randn(b, d),
                "keyed, torch reference": lambda idx=idx, d=d: _reference(idx, d),
                "keyed, native": lambda idx=idx, d=d: counter_normal_unchecked(K0, K1, STREAM, idx, (d,)),
            }
            res = {}
            for name, fn in fns.items():
                reps = repeats if name != "keyed, torch reference" or n < 2**20 else max(10, repeats // 4)
                ts = _times(fn, reps)
                res[name] = (ts[0] / n, _pct(ts, 0.2) / n, _pct(ts, 0.8) / n, reps)
            base = res["torch.randn"]
            for name, (tmin, p20, p80, reps) in res.items():
                rows.append({"threads": threads, "n": n, "shape": f"{b}×{d}", "what": name, "min": tmin, "p20": p20,
                             "p80": p80, "reps": reps, "ratio_min": tmin / base[0], "ratio_p20": p20 / base[1],
                             "ratio_p80": p80 / base[2]})
    torch.set_num_threads(default_threads)
    return rows


_CG_SCRIPT = """
import sys, torch
torch.set_num_threads(1)
from sdekit.noise import counter_normal_unchecked
from sdekit import _native
idx = torch.arange(1024)
_native.library()
counter_normal_unchecked(1, 2, 3, idx[:1], (4,)); torch.randn(4)  # warm: first-call costs out of the count
what = sys.argv[1]
for _ in range(CALLS):
    if what == "native":
        counter_normal_unchecked(1, 2, 3, idx, (64,))
    elif what == "randn":
        torch.randn(1024, 64)
"""


def callgrind(calls: int = 10) -> dict | None:
    out = instruction_counts(_CG_SCRIPT.replace("CALLS", str(calls)), ("none", "native", "randn"), CHECKOUT_ENV)
    if out is not None and "error" not in out:
        out["calls"] = calls
    return out


def report(rows: list[dict], cg: dict | None, repeats: int) -> str:
    lib = _native.library()
    lines = [
        "# Keyed noise on the CPU: cost per element",
        "",
        "`python benchmarks/keyed_noise.py` (generated; do not edit).  Float32 standard normals, B rows × 64:",
        "`torch.randn(B, 64)`; the keyed draw `sdekit.noise.counter_normal_unchecked` (Philox4x32-10 keyed by",
        "seed, stream, sample index, element) through the torch reference (`SDEKIT_NATIVE=0`: int64-emulated",
        "torch ops) and through the native C path (`sdekit._native`).  Wall time per element in ns: min and",
        f"20th/80th percentiles over {repeats} calls (the reference at 2²⁰: a quarter as many), after two warm-up",
        "calls; ratio = keyed / `torch.randn` from the same run (of the minima; of the 20th and 80th percentiles).",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} logical CPUs (shared), torch {torch.__version__}, "
        f"default threads {torch.get_num_threads()}; native library: "
        + ("unavailable (torch path)" if lib is None else f"built, OpenMP {'yes' if lib.sdekit_has_openmp() else 'no'}")
        + ".",
        "",
        "| threads | elements | B×D | draw | ns/elem min | p20 | p80 | ratio to randn (min) | (p20) | (p80) |",
        "|---:|---:|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(f"| {r['threads']} | 2^{r['n'].bit_length() - 1} | {r['shape']} | {r['what']} | "
                     f"{r['min'] * 1e9:.2f} | {r['p20'] * 1e9:.2f} | {r['p80'] * 1e9:.2f} | {r['ratio_min']:.2f} | "
                     f"{r['ratio_p20']:.2f} | {r['ratio_p80']:.2f} |")
    lines.append("")
    if cg is None:
        lines.append("Instruction counts: valgrind not found (or `--callgrind` not given).")
    elif "error" in cg:
        lines.append(f"Instruction counts: callgrind failed: `{cg['error'][-300:]}`")
    else:
        n = cg["calls"] * 2**16
        nat, rnd = cg["native"] - cg["none"], cg["randn"] - cg["none"]
        lines += [
            "## Instruction counts (callgrind)",
            "",
            f"`valgrind --tool=callgrind` of a Python process (one thread) making {cg['calls']} draws of 1024×64 keyed",
            "normals natively, or of `torch.randn(1024, 64)`, or neither (same imports and warm-up); the draws' own",
            "count is the difference from 'neither'.",
            "",
            "| process | Ir total | Ir of the draws | Ir per element |",
            "|---|---:|---:|---:|",
            f"| neither | {cg['none']:,} | | |",
            f"| native keyed | {cg['native']:,} | {nat:,} | {nat / n:.1f} |",
            f"| torch.randn | {cg['randn']:,} | {rnd:,} | {rnd / n:.1f} |",
            "",
            f"Native / randn instructions per element: {nat / rnd:.2f}.",
        ]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=40)
    ap.add_argument("--callgrind", action="store_true", help="also count instructions with valgrind's callgrind")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "keyed_noise.md"))
    args = ap.parse_args()
    if _native.library() is None:
        print("warning: the native library is unavailable; 'keyed, native' times the torch path", file=sys.stderr)
    rows = bench(args.repeats)
    cg = callgrind() if args.callgrind else None
    text = report(rows, cg, args.repeats)
    Path(args.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
