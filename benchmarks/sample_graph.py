"""A 100-step sample of a tiny model at batch 1 in one CUDA graph, against the bare model forwards (same run).

    python benchmarks/sample_graph.py [--steps 100] [--dim 64] [--width 256]

Each timing is the median (``triton.testing.do_bench``) of one whole call:

* ``forwards eager``  — ``steps`` forwards of the model in a Python loop;
* ``forwards graph``  — the same forwards captured in one CUDA graph (the floor);
* ``sample eager (B)`` — ``sdekit.sample(..., capturable=True, backend=B)``, not captured;
* ``sample graph (B)`` — the same call captured in one CUDA graph and replayed;
* ``sample reduce-overhead (B)`` — ``torch.compile(mode="reduce-overhead")`` of the call.

``B`` is ``triton`` (fused update, noise in the kernel) or ``torch`` (reference
path: the keyed noise costs ~250 small kernels per step).  Method:
Euler–Maruyama on the VP SDE, no corrector, no final denoising, so the sample
costs exactly ``steps`` forwards.  Target (issue 4): sample graph (triton)
<= 1.5 × forwards.  Writes a markdown table named after the device and date
to ``benchmarks/results/``.  Needs a CUDA GPU; ``--smoke`` runs the eager
variants on the CPU (Triton interpreter) only to check the script.
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


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--dim", type=int, default=64, help="data dimension D (batch 1, shape (1, D))")
    p.add_argument("--width", type=int, default=256, help="hidden width of the 3-layer MLP")
    p.add_argument("--out", type=Path, default=None, help=f"output folder (default {RESULTS})")
    p.add_argument("--smoke", action="store_true", help="CPU + Triton interpreter, eager variants only")
    args = p.parse_args(argv)
    if args.steps < 1 or args.dim < 1 or args.width < 1:
        p.error("--steps, --dim and --width must be >= 1")
    return args


def tiny_model(torch, dim: int, width: int, device):
    """A time-conditioned MLP ``(x, t) → (B, D)``: Linear–SiLU–Linear–SiLU–Linear, seeded weights."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Linear(dim + 1, width), torch.nn.SiLU(), torch.nn.Linear(width, width), torch.nn.SiLU(),
        torch.nn.Linear(width, dim),
    ).to(device)

    def score(x, t):
        return net(torch.cat([x, t[:, None].to(x.dtype)], dim=1))

    return score


def capture(torch, fn):
    """Warm ``fn`` up on a side stream, capture it in a CUDA graph; return (graph, static output)."""
    fn()
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        fn()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = fn()
    return graph, out


def main(argv=None) -> int:
    args = parse_args(argv)
    if not cuda_or_smoke(args.smoke, "sample_graph.py"):
        return 2
    import torch

    import sdekit
    from sdekit import kernels as K

    device = "cpu" if args.smoke else "cuda"
    score = tiny_model(torch, args.dim, args.width, device)
    sde = sdekit.VPSDE()
    x0 = torch.randn(1, args.dim, device=device)
    t_fixed = torch.full((1,), 0.5, device=device)
    timer = make_timer(args.smoke, rep=200)
    rows, notes = [], []

    def forwards():
        x = x0
        for _ in range(args.steps):
            x = score(x, t_fixed)
        return x

    def sampler(backend):
        idx = torch.zeros(1, dtype=torch.int64, device=device)
        return lambda: sdekit.sample(score, sde, (1, args.dim), steps=args.steps, denoise=False, seed=0,
                                     sample_index=idx, capturable=True, backend=backend, device=device).x

    backends = ["triton", "torch"] if K.HAS_TRITON else ["torch"]
    with torch.no_grad():
        rows.append(("forwards eager", timer(forwards)))
        if not args.smoke:
            graph, _ = capture(torch, forwards)
            rows.append(("forwards graph", timer(graph.replay)))
        for backend in backends:
            run = sampler(backend)
            rows.append((f"sample eager ({backend})", timer(run)))
            if args.smoke:
                continue
            expected = run()
            graph, static = capture(torch, run)
            graph.replay()
            torch.cuda.synchronize()
            same = torch.equal(static, expected)
            notes.append(f"graph replay of the {backend} sample equals the eager sample: {same}")
            rows.append((f"sample graph ({backend})", timer(graph.replay)))
            try:
                compiled = torch.compile(run, mode="reduce-overhead")
                for _ in range(3):
                    compiled()
                rows.append((f"sample reduce-overhead ({backend})", timer(compiled)))
            except Exception as e:  # noqa: BLE001 - report, do not hide, a compile failure
                notes.append(f"torch.compile(mode='reduce-overhead') of the {backend} sample failed: "
                             f"{type(e).__name__}: {str(e).splitlines()[0][:200]}")

    ms = dict(rows)
    floor = ms.get("forwards graph", ms["forwards eager"])
    dev = torch.cuda.get_device_name() if not args.smoke else "CPU (Triton interpreter, smoke test)"
    today = datetime.date.today().isoformat()
    lines = [
        f"# {args.steps}-step sample of a tiny model at batch 1: {dev}, {today}",
        "",
        f"`python benchmarks/sample_graph.py --steps {args.steps} --dim {args.dim} --width {args.width}`"
        + (" (smoke test: numbers meaningless)" if args.smoke else ""),
        f"torch {torch.__version__}; MLP {args.dim}+1→{args.width}→{args.width}→{args.dim}; "
        "Euler–Maruyama, VP SDE, "
        "no corrector, no denoising; median of do_bench per whole call.",
        "",
        "| variant | median (ms) | × forwards graph | × forwards eager |",
        "| --- | ---: | ---: | ---: |",
    ] + [f"| {name} | {t:.4f} | {t / floor:.2f} | {t / ms['forwards eager']:.2f} |" for name, t in rows]
    if "sample graph (triton)" in ms:
        r = ms["sample graph (triton)"] / floor
        verdict = "PASS" if r <= 1.5 else "FAIL"
        lines += ["", f"Target: sample graph (triton) <= 1.5 × forwards graph: {r:.2f} {verdict}"]
    lines += [""] + [f"- {n}" for n in notes]
    out_dir = args.out or (Path(tempfile.mkdtemp(prefix="sdekit_graph_smoke_")) if args.smoke else RESULTS)
    out_dir.mkdir(parents=True, exist_ok=True)
    slug = re.sub(r"[^a-z0-9]+", "-", dev.lower()).strip("-")
    md = out_dir / f"sample_graph_{slug}_{today}.md"
    md.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"wrote {md}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
