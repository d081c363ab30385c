"""Kernels suite (CUDA GPU only): the fused sampling steps against a device copy, eager PyTorch and torch.compile.

The work of ``benchmarks/kernel_bandwidth.py`` (see its docstring for the steps and the
byte counts) at 2^20, 2^24 and 2^26 elements (2^16 and 2^20 under ``--quick``),
float32, batch 16.  Each variant is timed by ``triton.testing.do_bench``
(median over repeats after warm-up) inside the measurement, and the result is
stored as the metric ``ms``; the pytest-benchmark wall time of the row is the
duration of that whole timing loop and means nothing.  Skipped without a GPU
(the kernels are tested on the CPU in Triton's interpreter, in ``tests/``).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from report import goal, table

SUITE = "kernels"
SIZES, QUICK_SIZES = (20, 24, 26), (16, 20)
OPS = ("affine", "langevin", "rk")
VARIANTS = ("copy", "fused", "eager", "compiled")

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="the kernels suite needs a CUDA GPU")


def _kernels_script():
    """``benchmarks/kernel_bandwidth.py`` by path (``benchmarks/`` is not a package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("kernels_benchmark", Path(__file__).with_name("kernel_bandwidth.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("log2", sorted(set(SIZES) | set(QUICK_SIZES)))
@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("op", OPS)
def test_kernel(measure, quick, op, variant, log2):
    if log2 not in (QUICK_SIZES if quick else SIZES):
        pytest.skip("size not in this mode")
    import triton.testing

    import sdekit.kernels as K

    if not K.HAS_TRITON:
        pytest.skip("Triton is not installed")
    script = _kernels_script()
    n = 1 << log2
    steps, (copy_bytes, copy_fn) = script.steps(torch, K, torch.float32, n, 16, compile_=variant == "compiled")
    nbytes, variants = steps[op]
    fn, nbytes = (copy_fn, copy_bytes) if variant == "copy" else (variants[variant], nbytes)

    def run():
        ms = triton.testing.do_bench(fn, warmup=25, rep=100, return_mode="median")
        return {"ms": ms, "gbs": nbytes / ms / 1e6}

    measure(run, suite=SUITE, case=f"{op} 2^{log2}", impl=variant, baseline=variant == "eager", op=op, log2=log2,
            device=torch.cuda.get_device_name(), rounds=1)


def summarize(rows, out_dir: Path) -> str:
    by = {(r["op"], r["log2"], r["impl"]): r for r in rows}
    body, checks = [], []
    for op in OPS:
        for k in sorted({r["log2"] for r in rows}):
            fused, eager, copy = by.get((op, k, "fused")), by.get((op, k, "eager")), by.get((op, k, "copy"))
            comp = by.get((op, k, "compiled"))
            if not fused:
                continue
            pct = 100 * fused["gbs"] / copy["gbs"] if copy else None
            body.append([op, f"2^{k}", fused["ms"], fused["gbs"], pct, eager["ms"] / fused["ms"] if eager else None,
                         comp["ms"] / fused["ms"] if comp else None])
            if k == max(r["log2"] for r in rows) and op == "affine":
                checks += [goal(f"affine 2^{k}: fused ≥ 85 % of copy bandwidth", pct, 85.0),
                           goal(f"affine 2^{k}: fused ≥ 3× eager", eager["ms"] / fused["ms"] if eager else None, 3.0)]
    device = rows[0]["device"]
    return "\n".join([f"## Kernels ({device})", "",
                      table(["step", "elements", "fused ms", "fused GB/s", "% of copy", "× eager", "× compiled"], body),
                      "", *checks, ""])
