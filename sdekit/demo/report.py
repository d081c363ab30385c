"""The results table: one row per method, printed as text and written as markdown."""

from __future__ import annotations

import math
from dataclasses import dataclass

HEADER = ("method", "NFE / sample", "wall time (s)", "bits/dim")


@dataclass
class Row:
    """One line of the results table.

    Attributes:
        method: what was run.
        nfe: mean function (score) evaluations per sample; ``None`` for "-".
        seconds: wall time in seconds.
        bpd: mean held-out bits/dim; ``None`` for "-" (sampling rows).
        bpd_stderr: standard error of ``bpd`` over test points (optional).
    """

    method: str
    nfe: float | None
    seconds: float
    bpd: float | None = None
    bpd_stderr: float | None = None

    def cells(self) -> tuple[str, str, str, str]:
        nfe = "-" if self.nfe is None else f"{self.nfe:.0f}" if float(self.nfe).is_integer() else f"{self.nfe:.1f}"
        if self.bpd is None:
            bpd = "-"
        elif self.bpd_stderr is None or not math.isfinite(self.bpd_stderr):
            bpd = f"{self.bpd:.3f}"
        else:
            bpd = f"{self.bpd:.3f} ± {self.bpd_stderr:.3f}"
        return (self.method, nfe, f"{self.seconds:.1f}", bpd)


def format_text(rows: list[Row]) -> str:
    """Fixed-width plain-text table of ``rows`` (for the terminal)."""
    table = [HEADER] + [r.cells() for r in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(HEADER))]
    fmt = lambda line: "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(line, widths)))  # noqa: E731
    rule = "  ".join("-" * w for w in widths)
    return "\n".join([fmt(HEADER), rule] + [fmt(r.cells()) for r in rows])


def format_markdown(rows: list[Row]) -> str:
    """GitHub-flavoured markdown table of ``rows``."""
    lines = ["| " + " | ".join(HEADER) + " |", "| --- | ---: | ---: | ---: |"]
    lines += ["| " + " | ".join(r.cells()) + " |" for r in rows]
    return "\n".join(lines)
