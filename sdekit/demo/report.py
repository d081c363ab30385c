"""The results table: one row per method, printed as text and written as markdown."""

from __future__ import annotations

import math
from dataclasses import dataclass

HEADER = ("method", "NFE / sample", "wall time (s)", "bits/dim", "ELBO bits/dim")


@dataclass
class Row:
    """One line of the results table.

    Attributes:
        method: what was run.
        nfe: mean function (score) evaluations per sample; ``None`` for "-".
        seconds: wall time in seconds.
        bpd: mean held-out bits/dim; ``None`` for "-" (sampling rows).
        bpd_stderr: standard error of ``bpd`` over test points (optional).
        elbo_bpd: mean held-out bits/dim of the continuous-time ELBO (:func:`sdekit.sde_elbo`, an upper
            bound on the model's bits/dim) for the same model and test points; ``None`` for "-".
        elbo_stderr: standard error of ``elbo_bpd`` over test points (Monte-Carlo noise included).
        elbo_nfe: network evaluations per test point of the ELBO (optional, reported in the text).
    """

    method: str
    nfe: float | None
    seconds: float
    bpd: float | None = None
    bpd_stderr: float | None = None
    elbo_bpd: float | None = None
    elbo_stderr: float | None = None
    elbo_nfe: float | None = None

    def cells(self) -> tuple[str, str, str, str, str]:
        nfe = "-" if self.nfe is None else f"{self.nfe:.0f}" if float(self.nfe).is_integer() else f"{self.nfe:.1f}"
        return (self.method, nfe, f"{self.seconds:.1f}", _bpd_cell(self.bpd, self.bpd_stderr),
                _bpd_cell(self.elbo_bpd, self.elbo_stderr))


def _bpd_cell(value: float | None, stderr: float | None) -> str:
    """``"-"``, ``"x.xxx"`` or ``"x.xxx ± y.yyy"``."""
    if value is None:
        return "-"
    if stderr is None or not math.isfinite(stderr):
        return f"{value:.3f}"
    return f"{value:.3f} ± {stderr:.3f}"


def format_text(rows: list[Row]) -> str:
    """Fixed-width plain-text table of ``rows`` (for the terminal)."""
    table = [HEADER] + [r.cells() for r in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(HEADER))]
    fmt = lambda line: "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(line, widths)))
    rule = "  ".join("-" * w for w in widths)
    return "\n".join([fmt(HEADER), rule] + [fmt(r.cells()) for r in rows])


def format_markdown(rows: list[Row]) -> str:
    """GitHub-flavoured markdown table of ``rows``."""
    lines = ["| " + " | ".join(HEADER) + " |", "| --- |" + " ---: |" * (len(HEADER) - 1)]
    lines += ["| " + " | ".join(r.cells()) + " |" for r in rows]
    return "\n".join(lines)


def _accuracy_table(result) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the per-class accuracy table of a :class:`.guided.GuidanceResult`."""
    header = ["class"] + [f"γ = {s:g}" for s in result.scales] + ["real test digits"]
    rows = [[str(c)] + [f"{100 * a:.1f}%" for a in result.accuracy[:, c]] + [f"{100 * result.reference[c]:.1f}%"]
            for c in range(result.accuracy.shape[1])]
    mean = [f"{100 * a:.1f}%" for a in result.accuracy.mean(1)]
    rows.append(["mean"] + mean + [f"{100 * result.reference.mean():.1f}%"])
    rows.append(["NFE / sample"] + [f"{v:.1f}" for v in result.nfe] + ["-"])
    rows.append(["wall time (s)"] + [f"{v:.1f}" for v in result.seconds] + ["-"])
    return header, rows


def format_accuracy_text(result) -> str:
    """Fixed-width table: per-class accuracy of guided samples at each scale (and of real test digits)."""
    header, rows = _accuracy_table(result)
    table = [header] + rows
    widths = [max(len(line[i]) for line in table) for i in range(len(header))]
    def fmt(line):
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(line, widths)))

    return "\n".join([fmt(header), "  ".join("-" * w for w in widths)] + [fmt(r) for r in rows])


def format_accuracy_markdown(result) -> str:
    """The same table in GitHub-flavoured markdown."""
    header, rows = _accuracy_table(result)
    lines = ["| " + " | ".join(header) + " |", "| --- |" + " ---: |" * (len(header) - 1)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])
