"""Latent-SDE style training step with the adjoint: ``sdekit.sdeint_adjoint`` vs torchsde's.

    python benchmarks/latent_sde_adjoint.py [--iters 12] [--quick] [--out benchmarks/results]

The step of a latent SDE (Li et al. 2020, §9.6; torchsde's ``examples/latent_sde.py``
shape, re-implemented): a posterior SDE ``dy = f_θ(t, y) dt + g_θ(y) ∘ dW`` in 4
dimensions with diagonal noise (``f_θ``: MLP 5 → 64 → softplus → 64 → 4 on ``(y, sin t)``;
``g_θ``: one 1 → 16 → 1 sigmoid network per dimension, so ``g_i`` depends on ``y_i`` only),
a prior drift ``h_θ(t, y)`` (MLP 4 → 64 → 4), batch 256, 20 output times on [0, 1],
``dt = 0.01``, ``logqp=True``; loss = mean squared distance of ``ys`` to fixed targets +
mean KL (the summed log-ratio).  One iteration = forward solve + adjoint backward + Adam
step.  Both libraries start from the same weights and, at each iteration, use the same
``torchsde.BrownianInterval`` (same entropy), for two method pairs: midpoint forward with the
midpoint stochastic adjoint (Li et al. 2020), and reversible Heun with its exact adjoint
(Kidger et al. 2021).

Reported per configuration: ms per iteration (min and 20th/80th percentiles over the
iterations after the first), and the relative difference of the first iteration's parameter
gradient against backprop through ``sdeint`` on the same path (the reference both adjoints
approximate; reversible Heun's should be round-off).  Writes ``latent_sde_adjoint.md`` to
``--out`` and prints it.  ``--quick`` runs 2 iterations at batch 32 (checks the script runs).
"""

from __future__ import annotations

import argparse
import copy
import datetime
import importlib.metadata
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from checkout import use_checkout  # noqa: E402

use_checkout()  # the checkout's sdekit

import sdekit  # noqa: E402

D, HIDDEN, N_TIMES, DT = 4, 64, 20, 0.01


class LatentSDE(nn.Module):
    noise_type, sde_type = "diagonal", "stratonovich"

    def __init__(self):
        super().__init__()
        self.drift_net = nn.Sequential(nn.Linear(D + 1, HIDDEN), nn.Softplus(), nn.Linear(HIDDEN, HIDDEN),
                                       nn.Softplus(), nn.Linear(HIDDEN, D))
        self.prior_net = nn.Sequential(nn.Linear(D, HIDDEN), nn.Softplus(), nn.Linear(HIDDEN, D))
        self.diff_nets = nn.ModuleList(nn.Sequential(nn.Linear(1, 16), nn.Softplus(), nn.Linear(16, 1),
                                                     nn.Sigmoid()) for _ in range(D))

    def f(self, t, y):
        return self.drift_net(torch.cat([y, torch.sin(t).expand(y.shape[0], 1)], dim=1))

    def h(self, t, y):
        return self.prior_net(y)

    def g(self, t, y):
        return torch.cat([net(y[:, i:i + 1]) for i, net in enumerate(self.diff_nets)], dim=1)


def _loss(sdeint_fn, sde, y0, ts, targets, bm, method, **kw):
    ys, log_ratio = sdeint_fn(sde, y0, ts, bm, method=method, dt=DT, logqp=True, **kw)
    return ((ys - targets) ** 2).mean() + log_ratio.sum(0).mean()


def _flat_grad(sde):
    return torch.cat([p.grad.flatten() for p in sde.parameters()])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--iters", type=int, default=12)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--out", default=str(HERE / "results"))
    args = p.parse_args(argv)
    import torchsde

    iters, batch = (2, 32) if args.quick else (args.iters, 256)
    torch.manual_seed(0)
    base = LatentSDE().double()
    ts = torch.linspace(0.0, 1.0, N_TIMES, dtype=torch.float64)
    y0 = torch.randn(batch, D, dtype=torch.float64)
    targets = torch.sin(3 * ts)[:, None, None] * torch.ones(1, batch, D, dtype=torch.float64)
    configs = [(lib, method) for method in ("midpoint", "reversible_heun") for lib in ("sdekit", "torchsde")]
    fns = {"sdekit": (sdekit.sdeint_adjoint, sdekit.sdeint), "torchsde": (torchsde.sdeint_adjoint, torchsde.sdeint)}
    models = {c: copy.deepcopy(base) for c in configs}
    opts = {c: torch.optim.Adam(models[c].parameters(), lr=1e-3) for c in configs}
    times: dict = {c: [] for c in configs}
    grad_err: dict = {}

    def bm_for(it):
        return torchsde.BrownianInterval(0.0, 1.0, (batch, D + 1), dtype=torch.float64, entropy=1000 + it)

    for it in range(iters):
        for c in configs:  # one iteration each in turn, so machine noise hits all alike
            lib, method = c
            sde, opt = models[c], opts[c]
            if it == 0:  # the reference: backprop through the forward solve on the same path
                sde.zero_grad()
                _loss(fns[lib][1], sde, y0, ts, targets, bm_for(it), method).backward()
                ref = _flat_grad(sde)
            opt.zero_grad()
            start = time.perf_counter()
            _loss(fns[lib][0], sde, y0, ts, targets, bm_for(it), method).backward()
            opt.step()
            times[c].append(time.perf_counter() - start)
            if it == 0:
                got = torch.cat([q.grad.flatten() for q in sde.parameters()])
                grad_err[c] = float((got - ref).norm() / ref.norm())
    rows = []
    for c in configs:
        t = np.array(times[c][1:] or times[c]) * 1e3
        rows.append((c, t.min(), np.percentile(t, 20), np.percentile(t, 80)))
    ratio = {m: rows[2 * k][1] / rows[2 * k + 1][1] for k, m in enumerate(("midpoint", "reversible_heun"))}
    lines = [
        "# Latent-SDE training step with the adjoint: sdekit vs torchsde", "",
        f"{datetime.date.today()}; this machine's CPU ({platform.machine()}, shared with other jobs while "
        f"measuring), torch {torch.__version__} with {torch.get_num_threads()} intra-op thread(s); torchsde "
        f"{importlib.metadata.version('torchsde')}.  `python benchmarks/latent_sde_adjoint.py"
        + (" --quick` (numbers mean nothing)." if args.quick else f" --iters {iters}`."), "",
        f"Batch {batch}, state 4 (+1 log-ratio coordinate), diagonal Stratonovich noise, {N_TIMES} times on "
        f"[0, 1], dt {DT}, logqp, float64; forward + adjoint backward + Adam step; same weights and the same "
        "BrownianInterval (entropy per iteration) for every row.", "",
        "| library | method → adjoint | ms / iteration: min | p20 | p80 | grad rel. diff vs backprop (iter 1) |",
        "|---|---|---|---|---|---|",
    ]
    for (lib, method), mn, p20, p80 in rows:
        adj = "adjoint_reversible_heun" if method == "reversible_heun" else "midpoint"
        lines.append(f"| {lib} | {method} → {adj} | {mn:.1f} | {p20:.1f} | {p80:.1f} | {grad_err[(lib, method)]:.1e} |")
    lines += ["", *(f"- {m}: sdekit / torchsde min time per iteration = {r:.2f}." for m, r in ratio.items()), ""]
    text = "\n".join(lines) + "\n"
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "latent_sde_adjoint.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
