"""Order table and convergence plots for every ODE and SDE solver in sdekit.

    python benchmarks/order_table.py [--out benchmarks/results]

Writes ``orders.md`` (declared vs measured orders) and ``orders.png``
(error against step size for the ODE tableaus, error against NFE for the
adaptive ODE methods, strong error against step size for the SDE methods) with
the machine and date.  The SDE part comes from ``benchmarks/orders_sde.py``
(about 3 minutes on a 2-core CPU).  The README's order tables are copied from ``orders.md``.
"""

from __future__ import annotations

import argparse
import datetime
import platform
import sys
from pathlib import Path

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import orders_ode  # noqa: E402

from sdekit.solvers.tableaus import TABLEAUS  # noqa: E402
from sdekit.testing.ode_problems import LOGISTIC, ode_order  # noqa: E402


def _sde_part():
    """The SDE rows and curves from ``orders_sde`` when it is present (None otherwise)."""
    try:
        import orders_sde  # noqa: F401
    except ImportError:
        return None
    return orders_sde


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stamp = f"{datetime.date.today().isoformat()}, {platform.processor() or platform.machine()}, torch {torch.__version__}"

    lines = [f"# Convergence orders ({stamp})", "", "## ODE methods (fixed steps, global error)", "",
             orders_ode.markdown(orders_ode.ode_order_rows()), ""]
    sde = _sde_part()
    n_panels = 3 if sde is not None else 2
    fig, axes = plt.subplots(1, n_panels, figsize=(5 * n_panels, 4))

    for name, tab in TABLEAUS.items():
        steps = orders_ode.STEPS[tab.order]
        _, errs = ode_order(tab, LOGISTIC, steps)
        axes[0].loglog([LOGISTIC.t1 / n for n in steps], errs, "o-", label=f"{name} ({tab.order})")
    axes[0].set(xlabel="step size h", ylabel="|error| at t = 10", title="ODE: logistic (DETEST A3)")
    axes[0].legend(fontsize=7)
    for name, pts in orders_ode.work_precision().items():
        axes[1].loglog([n for n, _ in pts], [e for _, e in pts], "o-", label=name)
    axes[1].set(xlabel="NFE per sample", ylabel="max |error|", title="ODE work–precision: y' = y cos t")
    axes[1].legend(fontsize=7)

    if sde is not None:
        rows = sde.measure_orders()
        lines += ["## SDE methods (strong: 1000 paths, weak: 8000 paths)", "", sde.markdown_table(rows), "",
                  "### SDE error vs work", "", sde.work_table(rows), ""]
        for r in (row for row in rows if row.work):
            axes[2].loglog([w[0] for w in r.work], [w[1] for w in r.work], "o-", ms=3,
                           label=f"{r.method} / {r.problem}")
        axes[2].set(xlabel="step size h", ylabel="strong error E|Y_N − Y(T)|", title="SDE strong convergence")
        axes[2].legend(fontsize=5)

    for ax in axes:
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    fig.suptitle(stamp, fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "orders.png", dpi=110)
    (out / "orders.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"wrote {out / 'orders.md'} and {out / 'orders.png'}")


if __name__ == "__main__":
    main()
