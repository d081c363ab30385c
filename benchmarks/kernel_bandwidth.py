"""Fused sampling kernels against the memory-bandwidth limit, eager PyTorch and torch.compile, in one run.

    python benchmarks/kernel_bandwidth.py [--dtype float32] [--min-log2 16] [--max-log2 28] [--batch 16]

For each step and size (2^16 … 2^28 elements, ``--batch`` samples) it times,
with ``triton.testing.do_bench`` (median over repeats, after warm-up):

* ``copy``     — ``dst.copy_(src)``, a device-to-device copy: the bandwidth baseline;
* ``fused``    — the sdekit Triton kernel (noise drawn in the kernel);
* ``eager``    — the same step as unfused PyTorch ops, noise from ``torch.randn_like``;
* ``compiled`` — ``torch.compile`` of the eager step.

Steps: ``affine`` (``x ← a x + b s + d + c z``: every predictor), ``langevin``
(snr-rule corrector step) and ``rk`` (Dormand–Prince stage combination with
the per-sample error norm).  Achieved GB/s is counted from the *minimal*
bytes (each input read once, each output written once), so it is comparable
with the copy's GB/s.  Writes a markdown table and a PNG plot named after the
device and date to ``benchmarks/results/``, and prints the issue's targets
(at >= 2^26 elements: fused affine >= 85 % of copy bandwidth, >= 3× eager,
>= compiled; Langevin >= 70 % of copy bandwidth).

Needs a CUDA GPU and Triton.  ``--smoke`` runs a few tiny sizes on the CPU
under Triton's interpreter with a wall-clock timer, only to check the script
(its numbers mean nothing; it writes to a temporary folder unless ``--out``).
"""

from __future__ import annotations

import argparse
import datetime
import re
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from timing import cuda_or_smoke, make_timer  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
DTYPES = {"float32": "float32", "float16": "float16", "bfloat16": "bfloat16"}
SNR, ALPHA = 0.16, 0.98
A, B_, C, D_ = 0.999, 0.0123, 0.045, 0.001  # affine coefficients of a typical predictor step


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dtype", choices=sorted(DTYPES), default="float32")
    p.add_argument("--min-log2", type=int, default=16)
    p.add_argument("--max-log2", type=int, default=28)
    p.add_argument("--batch", type=int, default=16, help="samples per tensor (per-sample norms use it)")
    p.add_argument("--ops", default="affine,langevin,rk", help="comma-separated subset of affine,langevin,rk")
    p.add_argument("--no-compile", action="store_true", help="skip the torch.compile baseline")
    p.add_argument("--out", type=Path, default=None, help=f"output folder (default {RESULTS})")
    p.add_argument("--smoke", action="store_true", help="CPU + Triton interpreter, tiny sizes: checks the script only")
    args = p.parse_args(argv)
    if args.min_log2 > args.max_log2 or args.min_log2 < 4:
        p.error("--min-log2 must be >= 4 and <= --max-log2")
    if args.batch < 1 or (1 << args.min_log2) % args.batch:
        p.error("--batch must divide 2**min-log2")
    if not set(args.ops.split(",")) <= {"affine", "langevin", "rk"}:
        p.error("--ops takes a comma-separated subset of affine,langevin,rk")
    return args


def steps(torch, K, dtype, n: int, batch: int, compile_: bool):
    """For each step: (minimal bytes, {variant: callable}) on fresh tensors of ``n`` elements."""
    from sdekit.solvers.tableaus import DOPRI5

    dev = "cuda" if torch.cuda.is_available() else "cpu"
    g = torch.Generator(device=dev).manual_seed(0)
    shape = (batch, n // batch)
    rand = lambda: torch.randn(shape, generator=g, device=dev, dtype=torch.float32).to(dtype)  # noqa: E731
    x, s, out = rand(), rand(), torch.empty(shape, device=dev, dtype=dtype)
    elt = x.element_size()
    idx = torch.arange(batch, device=dev)
    maybe_compile = (lambda f: torch.compile(f)) if compile_ else None

    def affine_eager():
        x_mean = A * x + B_ * s + D_
        return x_mean + C * torch.randn_like(x)

    def langevin_eager():
        z = torch.randn_like(x)
        s_norm, z_norm = s.flatten(1).norm(dim=1), z.flatten(1).norm(dim=1)
        eps = 2 * ALPHA * (SNR * z_norm / s_norm) ** 2
        col = eps.reshape(-1, 1)
        return x + col * s + (2 * col).sqrt() * z

    ks = [rand() for _ in range(DOPRI5.stages)]
    h = torch.full((batch,), 0.01, device=dev)

    def rk_eager():
        hb = h.reshape(-1, 1)
        y_new = x + hb * sum(b * k for b, k in zip(DOPRI5.b, ks) if b != 0.0)
        err = hb * sum(e * k for e, k in zip(DOPRI5.b_error, ks) if e != 0.0)
        scale = 1e-5 + 1e-5 * torch.maximum(x.abs(), y_new.abs())
        return y_new, (err / scale).flatten(1).pow(2).mean(1).sqrt()

    used = sum(1 for b, e in zip(DOPRI5.b, DOPRI5.b_error) if b != 0.0 or e != 0.0)
    table = {
        "affine": (3 * n * elt, {
            "fused": lambda: K.affine_update_triton(x, s, A, B_, C, D_, seed=1, sample_index=idx, stream=7, out=out),
            "eager": affine_eager,
        }, affine_eager),
        "langevin": (3 * n * elt, {
            "fused": lambda: K.langevin_step_triton(x, s, SNR, ALPHA, seed=1, sample_index=idx, stream=7, out=out),
            "eager": langevin_eager,
        }, langevin_eager),
        "rk": ((used + 2) * n * elt, {
            "fused": lambda: K.rk_combine_triton(x, ks, DOPRI5.b, DOPRI5.b_error, h, 1e-5, 1e-5, out=out),
            "eager": rk_eager,
        }, rk_eager),
    }
    result = {}
    for name, (nbytes, variants, eager) in table.items():
        if maybe_compile is not None:
            variants["compiled"] = maybe_compile(eager)
        result[name] = (nbytes, variants)
    src, dst = rand(), torch.empty(shape, device=dev, dtype=dtype)
    return result, (2 * n * elt, lambda: dst.copy_(src))


def device_name(torch) -> str:
    return torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU (Triton interpreter, smoke test)"


def write_results(rows, args, torch, out_dir: Path) -> Path:
    """Markdown table + PNG plot; returns the markdown path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dev = device_name(torch)
    today = datetime.date.today().isoformat()
    slug = re.sub(r"[^a-z0-9]+", "-", dev.lower()).strip("-")
    stem = f"kernels_{args.dtype}_{slug}_{today}"
    out_dir.mkdir(parents=True, exist_ok=True)
    lines = [
        f"# sdekit kernels: {dev}, {args.dtype}, {today}",
        "",
        f"`python benchmarks/kernel_bandwidth.py --dtype {args.dtype} --min-log2 {args.min_log2} --max-log2 {args.max_log2} "
        f"--batch {args.batch}`" + (" (smoke test: CPU interpreter, numbers meaningless)" if args.smoke else ""),
        f"torch {torch.__version__}, triton {__import__('triton').__version__}; median of do_bench; "
        "GB/s from minimal bytes (inputs read once, outputs written once).",
        "",
        "| step | elements | variant | median (ms) | GB/s | % of copy GB/s | speed-up vs eager |",
        "| --- | ---: | --- | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        lines.append(f"| {r['op']} | 2^{r['log2']} | {r['variant']} | {r['ms']:.4f} | {r['gbs']:.1f} | "
                     f"{r['pct_copy']:.1f} | {r['vs_eager']:.2f} |")
    lines += ["", "Targets (issue 4; elements >= 2^26):", ""] + [f"- {t}" for t in targets(rows)]
    md = out_dir / f"{stem}.md"
    md.write_text("\n".join(lines) + "\n")

    ops = sorted({r["op"] for r in rows}, key=["affine", "langevin", "rk"].index)
    fig, axes = plt.subplots(1, len(ops), figsize=(5 * len(ops), 4), squeeze=False)
    for ax, op in zip(axes[0], ops):
        for variant in ("copy", "fused", "compiled", "eager"):
            pts = [(r["log2"], r["gbs"]) for r in rows if r["op"] == op and r["variant"] == variant]
            if pts:
                ax.plot(*zip(*pts), marker="o", label=variant, linestyle="--" if variant == "copy" else "-")
        ax.set(title=f"{op} ({args.dtype})", xlabel="log2(elements)", ylabel="GB/s (minimal bytes)")
        ax.set_xticks(sorted({r["log2"] for r in rows}))
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(f"{dev}, {today}")
    fig.tight_layout()
    fig.savefig(out_dir / f"{stem}.png", dpi=120)
    plt.close(fig)
    return md


def targets(rows) -> list[str]:
    """The issue's targets, evaluated at every size >= 2^26 that was measured."""
    out = []
    big = sorted({r["log2"] for r in rows if r["log2"] >= 26})
    def get(op, variant, k):
        return next((r for r in rows if r["op"] == op and r["variant"] == variant and r["log2"] == k), None)

    for k in big:
        f, e, c = get("affine", "fused", k), get("affine", "eager", k), get("affine", "compiled", k)
        if f:
            out.append(f"affine 2^{k}: {f['pct_copy']:.1f} % of copy (>= 85) "
                       f"{'PASS' if f['pct_copy'] >= 85 else 'FAIL'}; {f['vs_eager']:.2f}× eager (>= 3) "
                       f"{'PASS' if f['vs_eager'] >= 3 else 'FAIL'}"
                       + (f"; {c['ms'] / f['ms']:.2f}× compiled (>= 1) {'PASS' if c['ms'] >= f['ms'] else 'FAIL'}"
                          if c else "") + (f" [eager {e['ms']:.3f} ms]" if e else ""))
        lf = get("langevin", "fused", k)
        if lf:
            verdict = "PASS" if lf["pct_copy"] >= 70 else "FAIL"
            out.append(f"langevin 2^{k}: {lf['pct_copy']:.1f} % of copy (>= 70) {verdict}")
    return out or ["(no size >= 2^26 measured)"]


def main(argv=None) -> int:
    args = parse_args(argv)
    if not cuda_or_smoke(args.smoke, "kernel_bandwidth.py"):
        return 2
    import torch

    import sdekit.kernels as K

    if not K.HAS_TRITON or (args.smoke and not K.INTERPRETED):
        print("benchmarks/kernel_bandwidth.py needs Triton (pip install 'sdekit[triton]')"
              + (" and TRITON_INTERPRET=1 before sdekit is imported (--smoke)" if args.smoke else ""), file=sys.stderr)
        return 2
    dtype = getattr(torch, DTYPES[args.dtype])
    lo, hi = (8, 10) if args.smoke else (args.min_log2, args.max_log2)
    batch = min(args.batch, 1 << lo)
    timer = make_timer(args.smoke, rep=100)
    ops = args.ops.split(",")
    rows = []
    for k in range(lo, hi + 1):
        n = 1 << k
        table, (copy_bytes, copy_fn) = steps(torch, K, dtype, n, batch, compile_=not (args.no_compile or args.smoke))
        copy_ms = timer(copy_fn)
        copy_gbs = copy_bytes / copy_ms / 1e6
        for op in ops:
            nbytes, variants = table[op]
            times = {v: timer(fn) for v, fn in variants.items()}
            rows.append(dict(op=op, log2=k, variant="copy", ms=copy_ms, gbs=copy_gbs, pct_copy=100.0,
                             vs_eager=times["eager"] / copy_ms))
            for v, ms in times.items():
                gbs = nbytes / ms / 1e6
                rows.append(dict(op=op, log2=k, variant=v, ms=ms, gbs=gbs, pct_copy=100 * gbs / copy_gbs,
                                 vs_eager=times["eager"] / ms))
                print(f"{op:9s} 2^{k:<2d} {v:9s} {ms:9.4f} ms {gbs:8.1f} GB/s {100 * gbs / copy_gbs:6.1f} % copy",
                      flush=True)
        del table
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    out_dir = args.out or (Path(tempfile.mkdtemp(prefix="sdekit_kernels_smoke_")) if args.smoke else RESULTS)
    md = write_results(rows, args, torch, out_dir)
    print("\n".join(targets(rows)))
    print(f"wrote {md} and {md.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
