"""Sampler overhead on the CPU: ``sdekit.sample`` with a trivial score model vs a bare loop.

    python benchmarks/sampler_overhead.py [--steps 200] [--repeats 7] [--quick] [--out benchmarks/results]

The bare loop is the reverse-time VP SDE Euler–Maruyama step written by hand, in place,
drawing ``torch.randn`` (Song et al. 2021, eq. (6) discretised):
``x ← x + (½β x + β s(x)) Δt + √(β Δt) z`` going from ``T = 1`` to ``eps = 1e-3``, with the
score ``s(x) = −x`` (the exact score of the VP SDE started at N(0, I)) and β(t) linear.
Against it, per predictor (``euler_maruyama``, ``reverse_diffusion``, ``ancestral``), with
and without the Langevin corrector (one step, snr 0.16): ``sdekit.sample(score, sde, shape,
method, steps, denoise=False, seed=0)`` — keyed Philox noise, sdekit's default — at batch
1 × 64 and 1024 × 64.  Reported: ms per step (min and 20th/80th percentiles over the
repeats, the routes interleaved) and the ratio of minima to the bare loop in the same run;
also the keyed noise alone (``sdekit.noise.counter_normal`` for one step's draw) against
``torch.randn``.  One intra-op thread.  Writes ``sampler_overhead.md``.
"""

from __future__ import annotations

import argparse
import datetime
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # the checkout's sdekit

import sdekit  # noqa: E402
from sdekit.noise import counter_normal  # noqa: E402


def score(x, t):
    return -x


def bare_loop(sde, shape, steps, eps=1e-3):
    x = torch.randn(shape)
    dt = (1.0 - eps) / steps
    z = torch.empty(shape)
    for i in range(steps):
        t = 1.0 - i * dt
        beta = sde.beta_min + t * (sde.beta_max - sde.beta_min)
        s = score(x, t)
        x.mul_(1.0 + 0.5 * beta * dt).add_(s, alpha=beta * dt)
        x.add_(torch.randn(shape, out=z), alpha=(beta * dt) ** 0.5)
    return x


def _time(fn, repeats):
    out = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return np.array(out)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--out", default=str(HERE / "results"))
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    steps, repeats = (20, 2) if args.quick else (args.steps, args.repeats)
    sde = sdekit.VPSDE()
    routes = [(m, c) for m in ("euler_maruyama", "reverse_diffusion", "ancestral") for c in (None, "langevin")]
    lines = [
        "# Sampler overhead (CPU): sdekit.sample vs a bare reverse-SDE loop", "",
        f"{datetime.date.today()}; this machine's CPU ({platform.machine()}, shared with other jobs while measuring), "
        f"torch {torch.__version__}, 1 intra-op thread.  `python benchmarks/sampler_overhead.py"
        + (" --quick` (numbers mean nothing)." if args.quick else f" --steps {steps} --repeats {repeats}`."), "",
        "Trivial score s(x) = −x, VP SDE (β 0.1 → 20), denoise=False, keyed noise (seed=0, sdekit's default); "
        "the bare loop draws torch.randn in place.  ms per step: min, p20, p80; ratio = min / bare min.", "",
    ]
    for shape in ((1, 64), (1024, 64)):
        fns = {"bare loop (torch.randn)": lambda shape=shape: bare_loop(sde, shape, steps)}
        for m, c in routes:
            fns[f"sample({m}{', langevin' if c else ''})"] = (
                lambda m=m, c=c, shape=shape: sdekit.sample(score, sde, shape, method=m, steps=steps, corrector=c,
                                                            denoise=False, seed=0))
        idx = torch.arange(shape[0])
        fns["keyed noise alone (one step's draw)"] = lambda idx=idx, shape=shape: counter_normal(0, 7, idx, shape[1:])
        fns["torch.randn alone (one step's draw)"] = lambda shape=shape: torch.randn(shape)
        for fn in fns.values():  # warm-up
            fn()
        times: dict = {k: [] for k in fns}
        for _ in range(repeats):
            for k, fn in fns.items():
                times[k].append(_time(fn, 1)[0])
        per_step = {k: np.array(v) / (1 if "alone" in k else steps) * 1e3 for k, v in times.items()}
        base = per_step["bare loop (torch.randn)"].min()
        randn = per_step["torch.randn alone (one step's draw)"].min()
        lines += [f"## batch {shape[0]} × {shape[1]}", "",
                  "| route | ms / step: min | p20 | p80 | ratio |", "|---|---|---|---|---|"]
        for k, v in per_step.items():
            ref = randn if "alone" in k else base
            lines.append(f"| {k} | {v.min():.4f} | {np.percentile(v, 20):.4f} | {np.percentile(v, 80):.4f} | "
                         f"{v.min() / ref:.2f} |")
        lines.append("")
    lines.append("Ratios of the 'alone' rows are to torch.randn alone; the others to the bare loop.")
    text = "\n".join(lines) + "\n"
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "sampler_overhead.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
