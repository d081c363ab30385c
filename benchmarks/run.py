"""Run every benchmark suite in one process tree and write the report.

    python benchmarks/run.py [--quick] [--out DIR] [--suites paths,ode,likelihood,quality,kernels] [-- PYTEST ARGS]

Runs the pytest-benchmark suites ``benchmarks/suite_<name>.py`` (each times
sdekit and the libraries users switch from, side by side in the same run),
then writes to ``DIR`` (default ``benchmarks/results/``; a temporary folder
under ``--quick``):

* ``benchmarks.json`` — the machine (CPU model, core count, GPU if any), the
  library versions, the date, and one row per measurement (median/min wall
  time in seconds plus the suite's metrics);
* ``benchmarks.md`` — the same as tables with ratios against the baselines
  measured in the same run, and the goals met or missed;
* ``*.png`` — the suites' plots.

``--quick`` uses tiny sizes so CI can check that the suites still run; its
numbers mean nothing.  The kernels suite runs only on a CUDA GPU.
``--render DIR/benchmarks.json`` re-writes the report and plots from saved
measurements without measuring again.
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import importlib.metadata
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
os.environ.setdefault("MPLBACKEND", "Agg")  # suites plot without a display
sys.path.insert(0, str(HERE))
from checkout import use_checkout  # noqa: E402

use_checkout()  # the checkout's sdekit, for the suites' summaries (and, through PYTHONPATH, for the suites)
SUITES = ("paths", "ode", "likelihood", "quality", "kernels")
LIBRARIES = (
    "sdekit", "torch", "numpy", "scipy", "torchsde", "torchdiffeq", "torchode", "diffusers", "k-diffusion",
    "triton", "pytest-benchmark",
)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny sizes (CI): checks the suites run")
    p.add_argument("--out", type=Path, default=None, help="output folder (default benchmarks/results/)")
    p.add_argument("--suites", default=",".join(SUITES), help=f"comma-separated subset of {','.join(SUITES)}")
    p.add_argument("--render", type=Path, default=None,
                   help="re-write benchmarks.md and the plots from an existing benchmarks.json (no measuring)")
    p.add_argument("pytest_args", nargs="*", help="extra arguments for pytest (after --)")
    args = p.parse_args(argv)
    args.suites = [s.strip() for s in args.suites.split(",") if s.strip()]
    unknown = sorted(set(args.suites) - set(SUITES))
    if unknown:
        p.error(f"--suites: unknown suite(s) {unknown}; expected a subset of {list(SUITES)}")
    return args


def versions() -> dict:
    out = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def machine(raw_machine: dict) -> dict:
    import torch

    cpu = raw_machine.get("cpu", {}) or {}
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {
        "cpu": cpu.get("brand_raw") or platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "gpu": gpu,
        "system": f"{platform.system()} {platform.release()}",
    }


def run_pytest(suites, quick: bool, raw_json: Path, extra) -> int:
    files = [str(HERE / f"suite_{s}.py") for s in suites]
    cmd = [
        sys.executable, "-m", "pytest", *files, "-q", "-p", "no:cacheprovider", "-o", "python_files=suite_*.py",
        "-o", "addopts=", f"--rootdir={HERE}", f"--benchmark-json={raw_json}", "--benchmark-disable-gc",
        "--benchmark-sort=name", *(["--quick"] if quick else []), *extra,
    ]
    print("+", " ".join(cmd), flush=True)
    env = use_checkout()  # the checkout's sdekit first, installed or not
    return subprocess.call(cmd, cwd=HERE, env=env)


def rows_from(raw: dict) -> list[dict]:
    rows = []
    for b in raw.get("benchmarks", []):
        s = b["stats"]
        rows.append({"name": b["name"], "median_s": s["median"], "min_s": s["min"], "rounds": s["rounds"], **b["extra_info"]})
    return rows


def load_suite(name: str):
    sys.path.insert(0, str(HERE))
    try:
        return importlib.import_module(f"suite_{name}")
    finally:
        sys.path.remove(str(HERE))


def render(meta: dict, sections: list[str]) -> str:
    m, v = meta["machine"], meta["versions"]
    libs = ", ".join(f"{k} {val}" for k, val in v.items() if val)
    head = [
        f"# sdekit benchmarks ({meta['date']}{', QUICK: sizes too small to mean anything' if meta['quick'] else ''})",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores (torch threads {m['torch_threads']}), "
        f"GPU: {m['gpu'] or 'none'}; {m['system']}.",
        f"Versions: {libs}.",
        "",
        "Times are medians of repeated runs after a warm-up, in the same run for every implementation; "
        "a ratio > 1 means sdekit is faster.  Command: `python benchmarks/run.py"
        + (" --quick" if meta["quick"] else "") + "`.",
        "",
    ]
    return "\n".join(head + sections) + "\n"


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.render is not None:
        data = json.loads(args.render.read_text())
        write_report(data["meta"], data["rows"], args.suites, args.render.parent)
        return 0
    out = args.out or (Path(tempfile.mkdtemp(prefix="sdekit-bench-")) if args.quick else HERE / "results")
    out.mkdir(parents=True, exist_ok=True)
    raw_json = out / "pytest-benchmark.json"
    code = run_pytest(args.suites, args.quick, raw_json, args.pytest_args)
    if code not in (0, 5) or not raw_json.exists():  # 5: nothing collected (e.g. kernels without a GPU)
        print(f"benchmark suites failed (pytest exit {code})", file=sys.stderr)
        return code or 1
    raw = json.loads(raw_json.read_text())
    raw_json.unlink()
    rows = rows_from(raw)
    meta = {
        "date": datetime.date.today().isoformat(),
        "quick": args.quick,
        "machine": machine(raw.get("machine_info", {})),
        "versions": versions(),
        "command": " ".join(["python", "benchmarks/run.py", *(argv if argv is not None else sys.argv[1:])]),
    }
    (out / "benchmarks.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1, default=str))
    write_report(meta, rows, args.suites, out)
    return 0


def write_report(meta: dict, rows: list[dict], suites, out: Path) -> None:
    """``benchmarks.md`` and the suites' plots in ``out`` from the measured rows."""
    sections = []
    for name in suites:
        suite_rows = [r for r in rows if r.get("suite") == name]
        if not suite_rows:
            sections.append(f"## {name}\n\nNot run on this machine (see the suite's docstring).\n")
            continue
        sections.append(load_suite(name).summarize(suite_rows, out))
    (out / "benchmarks.md").write_text(render(meta, sections))
    print(f"wrote {out / 'benchmarks.md'} (data: {out / 'benchmarks.json'})")


if __name__ == "__main__":
    sys.exit(main())
