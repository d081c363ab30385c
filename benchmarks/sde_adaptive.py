"""Adaptive SDE solves: ``sdekit.sdeint(adaptive=True)`` vs torchsde's, same Brownian path.

    python benchmarks/sde_adaptive.py [--repeats 5] [--quick] [--out benchmarks/results]

Problem: geometric Brownian motion ``dy = μ y dt + σ y dW`` (Itô, diagonal noise, μ = 0.5,
σ = 0.8, d = 8, batch 256, y0 = 1) on [0, 1], whose exact solution
``y(1) = y0 exp(μ − σ²/2 + σ W(1))`` is known on the path.  For each method (``euler``,
``milstein``, ``srk``) and tolerance (rtol = atol = 1e-2, 1e-3, 1e-4), both libraries solve
from ``dt = 0.1`` with step doubling on a ``torchsde.BrownianInterval`` with the same
entropy (so the same path): reported are the wall time (min and 20th/80th percentiles of
``--repeats`` runs, interleaved), the drift evaluations (``f`` calls: proportional to the
steps tried), and the mean pathwise error ``|y(1) − exact|``.  Writes ``sde_adaptive.md``
to ``--out`` and prints it.  ``--quick``: one method, one tolerance, one repeat.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import platform
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from checkout import use_checkout  # noqa: E402

use_checkout()  # the checkout's sdekit

import sdekit  # noqa: E402

MU, SIGMA, D, BATCH = 0.5, 0.8, 8, 256


class GBM:
    noise_type, sde_type = "diagonal", "ito"

    def __init__(self):
        self.calls = 0

    def f(self, t, y):
        self.calls += 1
        return MU * y

    def g(self, t, y):
        return SIGMA * y


def _solve(lib, method, tol, entropy):
    import torchsde

    bm = torchsde.BrownianInterval(0.0, 1.0, (BATCH, D), dtype=torch.float64, entropy=entropy,
                                   levy_area_approximation="space-time")
    sde = GBM()
    y0 = torch.ones(BATCH, D, dtype=torch.float64)
    fn = sdekit.sdeint if lib == "sdekit" else torchsde.sdeint
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the adaptive-Euler caveat, from both
        ys = fn(sde, y0, torch.tensor([0.0, 1.0], dtype=torch.float64), bm, method=method, dt=0.1,
                adaptive=True, rtol=tol, atol=tol)
    elapsed = time.perf_counter() - start
    exact = torch.exp(torch.tensor(MU - 0.5 * SIGMA**2) + SIGMA * bm(0.0, 1.0))
    return elapsed, sde.calls, float((ys[-1] - exact).abs().mean())


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--out", default=str(HERE / "results"))
    args = p.parse_args(argv)
    methods, tols, repeats = (["srk"], [1e-2], 1) if args.quick else (["euler", "milstein", "srk"],
                                                                       [1e-2, 1e-3, 1e-4], args.repeats)
    rows = []
    for method in methods:
        for tol in tols:
            res: dict = {"sdekit": [], "torchsde": []}
            for r in range(repeats):
                for lib in ("sdekit", "torchsde"):
                    res[lib].append(_solve(lib, method, tol, entropy=100 + r))
            rows.append((method, tol, res))
    lines = [
        "# Adaptive SDE solves: sdekit vs torchsde", "",
        f"{datetime.date.today()}; this machine's CPU ({platform.machine()}, shared with other jobs while measuring), "
        f"torch {torch.__version__} with {torch.get_num_threads()} intra-op thread(s); torchsde "
        f"{importlib.metadata.version('torchsde')}.  `python benchmarks/sde_adaptive.py"
        + (" --quick` (numbers mean nothing)." if args.quick else f" --repeats {repeats}`."), "",
        f"GBM (Itô, diagonal, μ={MU}, σ={SIGMA}), batch {BATCH} × {D}, [0, 1], dt₀ = 0.1, rtol = atol = tol, "
        "float64, the same BrownianInterval (entropy per repeat) for both libraries.", "",
        "| method | tol | sdekit ms: min | p20 | p80 | torchsde ms: min | p20 | p80 | sdekit/torchsde (min) "
        "| f calls sdekit / torchsde | mean error sdekit / torchsde |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for method, tol, res in rows:
        ts = {lib: np.array([r[0] for r in res[lib]]) * 1e3 for lib in res}
        calls = {lib: np.mean([r[1] for r in res[lib]]) for lib in res}
        err = {lib: np.mean([r[2] for r in res[lib]]) for lib in res}
        a, b = ts["sdekit"], ts["torchsde"]
        lines.append(
            f"| {method} | {tol:g} | {a.min():.1f} | {np.percentile(a, 20):.1f} | {np.percentile(a, 80):.1f} | "
            f"{b.min():.1f} | {np.percentile(b, 20):.1f} | {np.percentile(b, 80):.1f} | {a.min() / b.min():.2f} | "
            f"{calls['sdekit']:.0f} / {calls['torchsde']:.0f} | {err['sdekit']:.2e} / {err['torchsde']:.2e} |")
    lines += ["", "Both take the same steps up to rounding: `euler` is bitwise torchsde's on a two-point `ts` "
              "(tests/test_sdeint_adaptive.py); for the others the two libraries' step arithmetic rounds differently "
              "and accept/reject decisions near the threshold can then differ, so errors may differ slightly. `f calls` "
              "counts every drift call, so it also reflects how many drift evaluations each library's scheme makes per "
              "step. Errors are means over the batch of one path per repeat (no standard error is claimed).", ""]
    text = "\n".join(lines) + "\n"
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "sde_adaptive.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
