"""Measured convergence orders and work–precision of sdekit's ODE methods.

    python benchmarks/orders_ode.py

Prints a markdown table: for every Butcher tableau, the declared order and the
order measured by a log–log fit of the global error with fixed steps on two
DETEST problems (y' = y cos t and the logistic equation, both on [0, 10]),
plus the embedded order and the local order of the dense output for the
adaptive pairs.  :func:`work_precision` gives achieved error against function
evaluations for the adaptive methods through ``sdekit.odeint``.  The combined
table with the SDE methods is written by ``benchmarks/order_table.py``.
"""

from __future__ import annotations

import torch

import sdekit
from sdekit.solvers.rk import rk_interpolate, rk_stages
from sdekit.solvers.tableaus import TABLEAUS
from sdekit.testing import fit_order
from sdekit.testing.ode_problems import LOGISTIC, YCOS, ode_order

f64 = dict(dtype=torch.float64)
STEPS = {1: [64, 128, 256, 512], 2: [32, 64, 128, 256], 3: [32, 64, 128, 256], 4: [32, 64, 128, 256],
         5: [16, 32, 64, 128]}


def _dense_order(tab, theta=0.5, t0=2.0):
    problem = YCOS if tab.dense_order >= 4 else LOGISTIC
    func = lambda t, y: problem.func(t[:, None], y)  # noqa: E731
    hs, errs = [0.1, 0.05, 0.025, 0.0125], []
    for h in hs:
        y = torch.full((1, 1), problem.exact(t0), **f64)
        tv, hv = torch.full((1,), t0, **f64), torch.full((1,), h, **f64)
        ks = rk_stages(func, tab, tv, y, hv)
        y_theta = rk_interpolate(tab, y, ks, hv, torch.full((1,), theta, **f64))
        errs.append(abs(y_theta.item() - problem.exact(t0 + theta * h)))
    return fit_order(hs, errs)


def ode_order_rows():
    """One dict per tableau: declared and measured orders (measured ± standard error of the fit)."""
    rows = []
    for name, tab in TABLEAUS.items():
        row = {"kind": "ODE", "method": name, "declared": str(tab.order)}
        fits = [ode_order(tab, p, STEPS[tab.order])[0] for p in (YCOS, LOGISTIC)]
        row["measured"] = " / ".join(f"{f.order:.2f}±{f.stderr:.2f}" for f in fits)
        if tab.adaptive:
            b_hat = tuple(b - e for b, e in zip(tab.b, tab.b_error))
            emb = ode_order(tab, LOGISTIC, STEPS[tab.error_order + 1], b_hat)[0]
            row["embedded"] = f"{tab.error_order} → {emb.order:.2f}"
            dense = _dense_order(tab)
            row["dense"] = f"{tab.dense_order} → local {dense.order:.2f} (expect {tab.dense_order + 1})"
        rows.append(row)
    return rows


def work_precision(tols=(1e-3, 1e-4, 1e-5, 1e-6, 1e-7, 1e-8, 1e-9, 1e-10)):
    """Achieved max error vs mean NFE per sample for the adaptive methods on y' = y cos t, 21 outputs on [0, 10]."""
    t = torch.linspace(0, 10, 21, **f64)
    y0 = torch.ones(8, 1, **f64)
    exact = torch.exp(torch.sin(t))[:, None, None]
    out = {}
    for name, tab in TABLEAUS.items():
        if not tab.adaptive:
            continue
        pts = []
        for tol in tols:
            sol = sdekit.odeint(lambda t, y: y * torch.cos(t), y0, t, method=name, rtol=tol, atol=tol,
                                per_sample=True, return_solution=True)
            pts.append((float(sol.nfe.double().mean()), float((sol.ys - exact).abs().max())))
        out[name] = pts
    return out


def markdown(rows) -> str:
    lines = ["| method | declared order | measured (y cos t / logistic) | embedded | dense output |",
             "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['method']} | {r['declared']} | {r['measured']} | {r.get('embedded', '–')} | "
                     f"{r.get('dense', '–')} |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(markdown(ode_order_rows()))
    for name, pts in work_precision().items():
        print(name, " ".join(f"{n:.0f}:{e:.1e}" for n, e in pts))
