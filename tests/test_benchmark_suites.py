"""The benchmark suites run end to end in ``--quick`` mode, so they never rot (their numbers are not checked)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CPU_SUITES = ("paths", "ode", "likelihood", "quality")


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    pytest.importorskip("pytest_benchmark")
    out = tmp_path_factory.mktemp("bench")
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "run.py"), "--quick", "--out", str(out)],
                          capture_output=True, text=True, timeout=900)
    return proc, out


def test_runner_succeeds(quick_run):
    proc, _ = quick_run
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]


@pytest.mark.parametrize("suite", CPU_SUITES)
def test_suite_reports_finite_numbers(quick_run, suite):
    proc, out = quick_run
    assert proc.returncode == 0, proc.stderr[-2000:]
    data = json.loads((out / "benchmarks.json").read_text())
    rows = [r for r in data["rows"] if r.get("suite") == suite]
    assert rows, f"suite {suite} produced no measurements"
    for r in rows:
        assert math.isfinite(r["median_s"]) and r["median_s"] > 0, r
    assert {"cpu", "cores", "gpu"} <= set(data["meta"]["machine"])
    assert data["meta"]["versions"]["torch"]


def test_report_has_every_section_and_plot(quick_run):
    proc, out = quick_run
    assert proc.returncode == 0, proc.stderr[-2000:]
    md = (out / "benchmarks.md").read_text()
    assert "QUICK" in md and "Machine:" in md
    assert md.count("\n## ") >= len(CPU_SUITES) + 1  # + kernels (run, or "not run on this machine")
    for link in [line for line in md.splitlines() if line.startswith("![")]:
        name = link.split("(")[-1].rstrip(")")
        assert (out / name).stat().st_size > 0, f"plot {name} missing"
