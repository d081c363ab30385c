"""Sampler overhead on the CPU: ``sdekit.sample`` with a trivial score model vs a bare loop.

    python benchmarks/sampler_overhead.py [--steps 200] [--repeats 7] [--quick] [--out benchmarks/results]

The bare loop is the reverse-time VP SDE Euler–Maruyama step written by hand, in place,
drawing ``torch.randn`` (Song et al. 2021, eq. (6) discretised):
``x ← x + (½β x + β s(x)) Δt + √(β Δt) z`` going from ``T = 1`` to ``eps = 1e-3``, with the
score ``s(x) = −x`` (the exact score of the VP SDE started at N(0, I)) and β(t) linear.
The bare predictor–corrector loop puts one Langevin step before each predictor step
(Song et al. 2021, Algorithms 4 and 6; score_sde's ``LangevinCorrector``): score call,
``z = torch.randn``, ``x ← x + ε s + √(2ε) z``, with sdekit's ``α = (m(t)/m(t − Δt))²``
(:meth:`sdekit.sampling.Langevin.alpha`) and ``ε`` by the rule the sdekit route uses:
``2α (snr σ(t))²`` (``corrector_norm="sigma"``, sdekit's default on the VP SDE: a Python
number per step) or ``2α (snr ‖z‖/‖s‖)²`` with the norms per sample (``"per_sample"``,
score_sde's ratio without its batch mean; ``(B,)`` tensors).
Against them, per predictor (every entry of ``sdekit.sampling.predictors.PREDICTORS``: ``euler_maruyama``, ``reverse_diffusion``, ``ancestral``, ``ddim``), with
and without the Langevin corrector (one step, snr 0.16, either rule): ``sdekit.sample(score,
sde, shape, method, steps, denoise=False, seed=0)`` — keyed Philox noise, sdekit's default —
at batch 1 × 64 and 1024 × 64.  Each route's ratio is to the bare loop doing the same math
(the predictor loop for the predictors, the loop with the same corrector rule for the
corrector rows).  Reported: ms per step (min and 20th/80th percentiles over the repeats, the
routes interleaved) and the ratio of minima to that bare loop in the same run; also the keyed
noise alone (``sdekit.noise.counter_normal`` for one step's draw) against ``torch.randn``.
One intra-op thread.  Writes ``sampler_overhead.md``.
"""

from __future__ import annotations

import argparse
import datetime
import math
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from checkout import use_checkout  # noqa: E402

use_checkout()  # the checkout's sdekit

import sdekit  # noqa: E402
from sdekit.noise import counter_normal  # noqa: E402
from sdekit.sampling.predictors import PREDICTORS  # noqa: E402


def score(x, t):
    return -x


SNR = 0.16
#: Bare loops: the predictor alone, or with one Langevin step of either rule (see the module docstring).
BARE = {None: "bare loop (torch.randn)", "sigma": "bare loop + langevin σ rule",
        "per_sample": "bare loop + langevin ‖z‖/‖s‖ per sample"}


def bare_loop(sde, shape, steps, corrector=None, eps=1e-3):
    """Reverse-time VP Euler–Maruyama in place from T = 1 to ``eps``, each step after one Langevin step
    with the rule ``corrector`` (``None``: no corrector, ``"sigma"`` or ``"per_sample"``)."""
    x = torch.randn(shape)
    dt = (1.0 - eps) / steps
    z = torch.empty(shape)
    b0, b1 = sde.beta_min, sde.beta_max

    def log_m(t):  # log m(t) of the VP SDE
        return -0.25 * t**2 * (b1 - b0) - 0.5 * t * b0

    for i in range(steps):
        t = 1.0 - i * dt
        if corrector is not None:
            alpha = math.exp(2 * (log_m(t) - log_m(t - dt)))
            s = score(x, t)
            torch.randn(shape, out=z)
            if corrector == "sigma":
                step = 2 * alpha * SNR**2 * -math.expm1(2 * log_m(t))  # σ(t)² = 1 − m(t)²
                x.add_(s, alpha=step).add_(z, alpha=math.sqrt(2 * step))
            else:
                s_norm = torch.linalg.vector_norm(s.reshape(shape[0], -1), dim=-1)
                z_norm = torch.linalg.vector_norm(z.reshape(shape[0], -1), dim=-1)
                step = (SNR * z_norm / s_norm) ** 2 * 2 * alpha
                x.addcmul_(step[:, None], s).addcmul_((2 * step).sqrt_()[:, None], z)
        beta = b0 + t * (b1 - b0)
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
    routes = [(m, c) for m in tuple(PREDICTORS) for c in (None, "sigma", "per_sample")]
    label = {None: "", "sigma": ", langevin", "per_sample": ", langevin per_sample"}
    lines = [
        "# Sampler overhead (CPU): sdekit.sample vs a bare reverse-SDE loop", "",
        f"{datetime.date.today()}; this machine's CPU ({platform.machine()}, shared with other jobs while measuring), "
        f"torch {torch.__version__}, 1 intra-op thread.  `python benchmarks/sampler_overhead.py"
        + (" --quick` (numbers mean nothing)." if args.quick else f" --steps {steps} --repeats {repeats}`."), "",
        ("Trivial score s(x) = −x, VP SDE (β 0.1 → 20), denoise=False, keyed noise (seed=0, sdekit's default; "
         "ddim at η = 1, so that it draws noise as the others do); "
         "the bare loops draw torch.randn in place.  Langevin: one step per time step, snr 0.16; `langevin` is "
         "sdekit's default rule on the VP SDE (corrector_norm='sigma', ε = 2α(snr σ(t))²), `langevin per_sample` "
         "score_sde's ratio ε = 2α(snr ‖z‖/‖s‖)² per sample.  ms per step: min, p20, p80; ratio = min / the min "
         "of the bare loop with the same corrector (the predictor-only loop for the predictor rows)."), "",
    ]
    for shape in ((1, 64), (1024, 64)):
        fns = {name: lambda c=c, shape=shape: bare_loop(sde, shape, steps, c) for c, name in BARE.items()}
        baseline = {name: name for name in BARE.values()}
        for m, c in routes:
            name = f"sample({m}{label[c]})"
            baseline[name] = BARE[c]
            fns[name] = (lambda m=m, c=c, shape=shape: sdekit.sample(
                score, sde, shape, method=m, steps=steps, corrector=c and "langevin", snr=SNR, corrector_norm=c,
                denoise=False, seed=0, method_options={"eta": 1.0} if m == "ddim" else None))
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
        randn = per_step["torch.randn alone (one step's draw)"].min()
        lines += [f"## batch {shape[0]} × {shape[1]}", "",
                  "| route | ms / step: min | p20 | p80 | ratio |", "|---|---|---|---|---|"]
        for k, v in per_step.items():
            ref = randn if "alone" in k else per_step[baseline[k]].min()
            lines.append(f"| {k} | {v.min():.4f} | {np.percentile(v, 20):.4f} | {np.percentile(v, 80):.4f} | "
                         f"{v.min() / ref:.2f} |")
        lines.append("")
    lines.append("Ratios of the 'alone' rows are to torch.randn alone; of the sample rows to the bare loop with "
                 "the same corrector (none, σ rule, per-sample ratio); of the bare loops to themselves.")
    text = "\n".join(lines) + "\n"
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "sampler_overhead.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
