"""Markdown and plot helpers shared by the suites' ``summarize`` functions."""

from __future__ import annotations

import math


def fmt(value, digits: int = 3) -> str:
    """A number for a table: ``–`` for None/NaN, ints as is, floats to ``digits`` significant figures."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if value != 0 and (abs(value) < 1e-2 or abs(value) >= 1e5):
            return f"{value:.{digits - 1}e}"
        return f"{value:.{digits}g}"
    return str(value)


def table(headers: list[str], rows: list[list]) -> str:
    """A markdown table; numbers right-aligned."""
    numeric = [all(isinstance(r[i], (int, float)) or r[i] is None for r in rows) for i in range(len(headers))]
    lines = [
        "| " + " | ".join(headers) + " |",
        "|" + "|".join("---:" if n else "---" for n in numeric) + "|",
    ]
    lines += ["| " + " | ".join(fmt(v) for v in r) + " |" for r in rows]
    return "\n".join(lines)


def baseline_time(rows: list[dict], case: str, impl: str) -> float | None:
    """Median seconds of ``impl`` on ``case`` in this run, or None if it was not measured."""
    for r in rows:
        if r["case"] == case and r["impl"] == impl:
            return r["median_s"]
    return None


def goal(text: str, measured: float | None, target: float, higher_is_better: bool = True) -> str:
    """One bullet: the goal, the measured value, met or missed."""
    if measured is None or (isinstance(measured, float) and math.isnan(measured)):
        return f"- {text}: not measured"
    met = measured >= target if higher_is_better else measured <= target
    return f"- {text}: measured {fmt(float(measured))} — **{'met' if met else 'missed'}**"


def savefig(fig, out_dir, name: str) -> str:
    """Save ``fig`` as ``out_dir/name`` (PNG, 120 dpi), close it, and return a markdown image link."""
    import matplotlib.pyplot as plt

    fig.savefig(out_dir / name, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return f"![{name}]({name})"
