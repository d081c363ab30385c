"""benchmarks/gpu_check.py: the CPU self-test runs every part; without CUDA the real mode refuses, writes nothing.

The GPU figures themselves can only be checked on a GPU (``python benchmarks/gpu_check.py --out DIR``,
see benchmarks/GPU.md); here only the plumbing: parts, deadline, report, targets.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_check.py"


def _script():
    spec = importlib.util.spec_from_file_location("_gpu_check_under_test", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _env(**extra):
    env = dict(os.environ)
    env.pop("TRITON_INTERPRET", None)
    env.update(PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1", **extra)
    return env


def test_self_test_runs_every_part_and_marks_itself():
    proc = subprocess.run([sys.executable, str(SCRIPT), "--self-test"], cwd=ROOT, env=_env(), capture_output=True,
                          text=True, timeout=170, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    found = re.search(r"wrote (\S+)gpu\.md and (\S+gpu\.json)", proc.stdout)
    assert found, proc.stdout[-2000:]
    out = Path(found.group(2)).parent
    try:
        assert out.name.startswith("sdekit_gpu_check_selftest_")  # a temporary folder, never benchmarks/results
        doc = json.loads((out / "gpu.json").read_text())
        md = (out / "gpu.md").read_text()
        assert (out / "gpu_tests.log").exists()
    finally:
        shutil.rmtree(out, ignore_errors=True)
    assert doc["meta"]["mode"] == "self-test" and "CPU self-test, not a GPU measurement" in md
    for key in ("date", "device", "torch", "triton", "driver", "cuda_runtime"):
        assert key in doc["meta"]
    assert set(doc["parts"]) == {"tests", "bandwidth", "graph", "syncs"}
    for name, part in doc["parts"].items():
        assert part["status"] == "ok", (name, part)

    tests = doc["parts"]["tests"]["data"]
    assert tests["ok"] and tests["counts"].get("passed", 0) >= 1 and tests["counts"].get("failed", 0) == 0

    rows = doc["parts"]["bandwidth"]["data"]["rows"]
    variants = {r["variant"] for r in rows if "median_ms" in r}
    assert {"copy", "fused", "eager", "compiled", "ref"} <= variants, rows
    fused = [r for r in rows if r["variant"] == "fused"]
    assert all({"min_ms", "median_ms", "gbs_median", "pct_copy", "vs_eager", "vs_compiled"} <= set(r) for r in fused)

    graph = doc["parts"]["graph"]["data"]["rows"]
    assert {"forwards eager", "sample eager (torch)"} <= set(graph)

    syncs = {r["case"]: r for r in doc["parts"]["syncs"]["data"]["rows"]}
    for case in ("euler_maruyama", "euler_maruyama + langevin", "reverse_diffusion", "reverse_diffusion + langevin",
                 "ancestral", "ancestral + langevin", "dpmpp_2m", "ode"):
        assert case in syncs and "per_step" in syncs[case], syncs.get(case)

    assert doc["targets"] and all(t["verdict"] == "SELF-TEST (no verdict)" for t in doc["targets"])
    names = " ".join(t["target"] for t in doc["targets"])
    for word in ("copy bandwidth", "eager", "torch.compile", "graph-captured", "host syncs"):
        assert word in names


def test_without_cuda_it_refuses_and_writes_nothing(tmp_path):
    out = tmp_path / "results"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--out", str(out)], cwd=ROOT,
                          env=_env(CUDA_VISIBLE_DEVICES=""), capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "needs a CUDA GPU" in proc.stderr
    assert not out.exists()


def test_self_test_takes_no_out_folder():
    proc = subprocess.run([sys.executable, str(SCRIPT), "--self-test", "--out", "benchmarks/results"], cwd=ROOT,
                          env=_env(), capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 2 and "temporary folder" in proc.stderr


def test_parts_stop_at_the_deadline_and_failures_are_recorded(tmp_path):
    gc = _script()
    report = gc.Report(tmp_path, {"mode": "self-test", "device": "test"})
    gc.run_part(report, "late", lambda dl, notes, data: {}, 100, gc.Deadline(gc.RESERVE_S + 1))
    assert report.doc["parts"]["late"]["status"] == "skipped"

    def boom(dl, notes, data):
        raise RuntimeError("planted")

    gc.run_part(report, "boom", boom, 100, gc.Deadline(100))
    assert report.doc["parts"]["boom"]["status"] == "error" and "planted" in report.doc["parts"]["boom"]["error"]

    def stuck(dl, notes, data):
        data["rows"] = ["kept"]
        time.sleep(60)

    t0 = time.monotonic()
    gc.run_part(report, "stuck", stuck, 0.5, gc.Deadline(100))
    assert report.doc["parts"]["stuck"]["status"] == "timeout" and time.monotonic() - t0 < 20
    assert report.doc["parts"]["stuck"]["data"]["rows"] == ["kept"]  # what a part measured before its stop stays
    assert json.loads((tmp_path / "gpu.json").read_text())["parts"]["stuck"]["status"] == "timeout"
    assert "| boom | error |" in (tmp_path / "gpu.md").read_text()


def test_pytest_counts_from_summary_or_progress():
    gc = _script()
    assert gc.parse_pytest("..F.s\n=== 3 passed, 1 failed, 1 skipped in 4.20s ===\n") == {
        "passed": 3, "failed": 1, "skipped": 1}
    partial = gc.parse_pytest("....F.s. [ 40%]\n..E\n")
    assert partial == {"passed": 8, "failed": 1, "error": 1, "skipped": 1, "partial": True}


@pytest.mark.parametrize("pct, eager, compiled, ratio, syncs, verdicts", [
    (90.0, 4.0, 1.1, 1.2, 0.0, {"PASS"}),
    (80.0, 2.0, 0.9, 1.6, 1.0, {"FAIL"}),
])
def test_targets_pass_and_fail(pct, eager, compiled, ratio, syncs, verdicts):
    gc = _script()
    parts = {
        "bandwidth": {"data": {"rows": [{"log2": 26, "variant": "fused", "pct_copy": pct, "vs_eager": eager,
                                         "vs_compiled": compiled}]}},
        "graph": {"data": {"ratio": ratio}},
        "syncs": {"data": {"rows": [{"case": "euler_maruyama", "fixed_step": True,
                                     "per_step": {"warnings": syncs, "stream_syncs": 0.0, "dtoh_copies": 0.0}}]}},
    }
    targets = gc.evaluate_targets(parts)
    assert len(targets) == 5 and {t["verdict"] for t in targets} == verdicts
    assert {t["verdict"] for t in gc.evaluate_targets({})} == {"NOT MEASURED"}
