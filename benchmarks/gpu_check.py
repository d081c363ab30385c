"""One-command GPU validation of sdekit's kernels and samplers (issue 15, item 5).

    python benchmarks/gpu_check.py [--out benchmarks/results] [--quick] [--budget SECONDS]
    python benchmarks/gpu_check.py --self-test      # CPU, tiny sizes: checks this script only

On a CUDA machine, within a global deadline (``--budget``: 480 s by default,
120 s with ``--quick``), it runs four parts, each in its own try/except and
time budget, and writes ``gpu.md`` and ``gpu.json`` (plus ``gpu_tests.log``)
to ``--out`` after every part, so a run cut short still leaves a report:

1. ``tests``: the kernel and keyed-sampling tests, compiled by Triton on the GPU
   (``TRITON_INTERPRET`` unset): ``pytest -q tests/test_kernels.py
   tests/test_sampling_keyed.py tests/test_noise.py`` plus the Triton test of
   ``tests/test_odeint.py`` (only ``tests/test_kernels.py`` under ``--quick``),
   in a subprocess with a timeout; pass/fail/skip counts.
2. ``bandwidth``: the fused affine update ``x ← a x + b s + d + c z`` at 2^16 … 2^26
   float32 elements (2^28 in full mode when memory allows; 2^16, 2^20, 2^24, 2^26
   under ``--quick``): device copy (``dst.copy_(src)``), the Triton kernel, the
   eager PyTorch step and ``torch.compile`` of it (the variants and minimal-byte
   counts of ``benchmarks/kernel_bandwidth.py``), plus, in full mode, the keyed PyTorch
   reference ``affine_update_ref``.  CUDA events around each call, warm-up, the L2
   cache flushed between repeats; min and median of the repeats; GB/s from the
   minimal bytes and the ratios fused / copy, eager / fused, compiled / fused.
3. ``graph``: a 100-step Euler–Maruyama sample of a tiny MLP at batch 1 captured
   in one CUDA graph, against the same 100 bare forwards captured in one graph
   (the model and capture of ``benchmarks/sample_graph.py``).
4. ``syncs``: host syncs per step of every fixed-step sampler of ``sdekit.sample``
   (euler_maruyama, reverse_diffusion, ancestral, each with and without the
   Langevin corrector, and dpmpp_2m) and of the RK45 loop (``method="ode"``):
   ``torch.cuda.set_sync_debug_mode("warn")`` warnings, cross-checked with the
   profiler's ``cudaStreamSynchronize``/``Memcpy DtoH`` events; per step is the
   difference between two step counts, so per-call set-up is not counted.

Targets (issue 4/15), printed beside each figure: fused update >= 85 % of copy
bandwidth at >= 2^26 fp32 elements, >= 3x eager, >= 1x torch.compile; graph-
captured 100-step sample <= 1.5x the graph-captured bare forwards; zero host
syncs per fixed-step sampler step.

Without CUDA it exits with status 2 and writes nothing (it never invents a GPU
figure).  ``--self-test`` runs the same plumbing on the CPU (Triton interpreter,
tiny sizes, ``torch.compile(backend="eager")``, no graph capture, no CUDA sync
counting) and writes to a fresh temporary folder only; its report is marked
"CPU self-test, not a GPU measurement".
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import os
import platform
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import warnings
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
from checkout import checkout_site, use_checkout  # noqa: E402
RESULTS = HERE / "results"
SELF_TEST_BANNER = "CPU self-test, not a GPU measurement"

TEST_FILES = ["tests/test_kernels.py", "tests/test_sampling_keyed.py", "tests/test_noise.py",
              "tests/test_odeint.py::test_fused_stage_combination_matches_pytorch_path",
              "tests/test_sigma_samplers.py::test_cuda_samples_are_the_cpu_samples",
              "tests/test_diffusers_scheduler.py::test_steps_do_not_sync_with_the_host"]
QUICK_TEST_FILES = ["tests/test_kernels.py"]
SELF_TEST_TESTS = ["tests/test_noise.py::test_philox_known_answers",
                   "tests/test_kernels.py::test_in_kernel_philox_known_answers"]

# Part budgets in seconds (full, quick); the global deadline caps them all.
BUDGETS = {"tests": (170, 40), "bandwidth": (150, 35), "graph": (50, 15), "syncs": (60, 20)}
RESERVE_S = 10  # kept back from the deadline for writing the report
TARGETS = {"pct_copy": 85.0, "vs_eager": 3.0, "vs_compiled": 1.0, "graph_ratio": 1.5, "syncs_per_step": 0.0}


class PartTimeout(BaseException):
    """Raised by SIGALRM when a part outruns its budget (a BaseException, so no part's ``except Exception`` eats it)."""


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=None, help=f"output folder (default {RESULTS})")
    p.add_argument("--quick", action="store_true", help="~2-minute version: fewer tests and sizes")
    p.add_argument("--budget", type=float, default=None, help="global deadline in seconds (480; 120 with --quick)")
    p.add_argument("--self-test", action="store_true", help="CPU, tiny sizes, temporary folder: checks the script")
    args = p.parse_args(argv)
    if args.self_test and args.out is not None:
        p.error("--self-test writes to a fresh temporary folder only; drop --out")
    if args.budget is None:
        args.budget = 120.0 if (args.quick or args.self_test) else 480.0
    if args.budget <= RESERVE_S:
        p.error(f"--budget must exceed {RESERVE_S} s")
    return args


# ---------------------------------------------------------------------------------------------- plumbing


class Deadline:
    def __init__(self, seconds: float):
        self.t0 = time.monotonic()
        self.end = self.t0 + seconds

    def left(self) -> float:
        return self.end - time.monotonic()

    def elapsed(self) -> float:
        return time.monotonic() - self.t0


class Report:
    """The JSON document and its markdown rendering, rewritten after every part."""

    def __init__(self, out_dir: Path, meta: dict):
        self.out_dir = out_dir
        self.doc = {"meta": meta, "parts": {}, "targets": [], "deadline": {}}
        self.lock = threading.Lock()

    def write(self):
        with self.lock:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            self.doc["targets"] = evaluate_targets(self.doc["parts"], self.doc["meta"].get("mode") == "self-test")
            text = json.dumps(self.doc, indent=2, default=str)
            (self.out_dir / "gpu.json").write_text(text + "\n")
            (self.out_dir / "gpu.md").write_text(render_markdown(self.doc))


def run_part(report: Report, name: str, fn, budget: float, deadline: Deadline, min_s: float = 5.0):
    """Run ``fn(part_deadline, notes, data)`` under ``min(budget, time left)``; record status, time and errors.

    ``fn`` appends to ``notes`` and fills ``data`` as it goes (so a part stopped by its hard stop keeps what it
    measured) and may return a dict merged into ``data``.
    """
    part = {"status": "running", "budget_s": budget, "notes": [], "data": {}}
    report.doc["parts"][name] = part
    left = deadline.left() - RESERVE_S
    if left < min_s:
        part.update(status="skipped", reason=f"global deadline: {left:.0f} s left, the part needs >= {min_s:.0f} s")
        report.write()
        print(f"[{name}] skipped: global deadline", flush=True)
        return
    allowed = min(budget, left)
    part["allowed_s"] = round(allowed, 1)
    t0 = time.monotonic()
    print(f"[{name}] start (allowed {allowed:.0f} s)", flush=True)
    old = signal.signal(signal.SIGALRM, _on_alarm)
    signal.setitimer(signal.ITIMER_REAL, allowed + 5)  # hard stop; the parts stop themselves at `allowed`
    try:
        result = fn(Deadline(allowed), part["notes"], part["data"])  # rows go into part["data"] as they come
        part["data"].update(result or {})
        part["status"] = "ok"
    except PartTimeout:
        part.update(status="timeout", reason=f"stopped after its {allowed:.0f} s (part budget or global deadline)")
    except Exception as e:  # noqa: BLE001 - record the failure, run the other parts
        part.update(status="error", error=f"{type(e).__name__}: {e}", traceback=traceback.format_exc()[-4000:])
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
        part["elapsed_s"] = round(time.monotonic() - t0, 1)
    print(f"[{name}] {part['status']} in {part['elapsed_s']} s", flush=True)
    report.write()


def _on_alarm(signum, frame):
    raise PartTimeout()


def make_timer(torch, cuda: bool):
    """``timer(fn, rep_ms=100) -> {min_ms, median_ms, reps}``: CUDA events per call, L2 flushed between calls."""
    if not cuda:
        def wall(fn, rep_ms=100.0):
            fn()
            times = []
            for _ in range(3):
                t = time.perf_counter()
                fn()
                times.append((time.perf_counter() - t) * 1e3)
            return {"min_ms": min(times), "median_ms": statistics.median(times), "reps": len(times)}
        return wall

    flush = torch.empty(256 * 1024 * 1024 // 4, dtype=torch.int32, device="cuda")  # > the L2 of H100/H200

    def events(fn, rep_ms=100.0):
        fn()
        torch.cuda.synchronize()
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        for _ in range(3):
            fn()
        e.record()
        torch.cuda.synchronize()
        est = max(s.elapsed_time(e) / 3, 1e-3)
        for _ in range(max(1, min(int(25 / est), 100))):  # ~25 ms of warm-up
            fn()
        n = max(5, min(int(rep_ms / est), 200))
        starts = [torch.cuda.Event(enable_timing=True) for _ in range(n)]
        ends = [torch.cuda.Event(enable_timing=True) for _ in range(n)]
        for i in range(n):
            flush.zero_()
            starts[i].record()
            fn()
            ends[i].record()
        torch.cuda.synchronize()
        times = [a.elapsed_time(b) for a, b in zip(starts, ends)]
        return {"min_ms": min(times), "median_ms": statistics.median(times), "reps": n}

    return events


def load_benchmark(name: str):
    """``benchmarks/<name>.py`` by path, under a private module name."""
    spec = importlib.util.spec_from_file_location(f"_gpu_check_{name}", HERE / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def environment(torch, self_test: bool) -> dict:
    meta = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "mode": "self-test" if self_test else "gpu",
        "torch": torch.__version__,
        "cuda_runtime": torch.version.cuda,
        "python": platform.python_version(),
        "host": platform.node(),
    }
    try:
        import triton

        meta["triton"] = triton.__version__
    except Exception as e:  # noqa: BLE001
        meta["triton"] = f"not importable ({type(e).__name__})"
    if self_test:
        meta.update(device=f"CPU ({platform.processor() or platform.machine()}) - {SELF_TEST_BANNER}",
                    driver=None, banner=SELF_TEST_BANNER)
        return meta
    props = torch.cuda.get_device_properties(0)
    capability = ".".join(map(str, torch.cuda.get_device_capability(0)))
    meta.update(device=torch.cuda.get_device_name(0), capability=capability,
                memory_gib=round(props.total_memory / 2**30, 1), sms=props.multi_processor_count,
                driver=_driver_version())
    return meta


def _driver_version():
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             check=False, capture_output=True, text=True, timeout=20)
        return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else None
    except Exception:  # noqa: BLE001
        return None


# ---------------------------------------------------------------------------------------------- part 1: tests


def part_tests(args, out_dir: Path):
    files = SELF_TEST_TESTS if args.self_test else (QUICK_TEST_FILES if args.quick else TEST_FILES)

    def run(dl: Deadline, notes, data):
        env = use_checkout()  # cwd is the layout's folder, so the checkout's own sdekit/ cannot shadow it
        env.pop("TRITON_INTERPRET", None)  # real compilation on the GPU (tests/conftest.py sets it only without CUDA)
        if args.self_test:  # the CPU and the interpreter, even on a machine with a GPU
            env.update(TRITON_INTERPRET="1", CUDA_VISIBLE_DEVICES="")
        env["PYTHONUNBUFFERED"] = "1"
        cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--rootdir={ROOT}",
               *[str(ROOT / f) for f in files]]
        timeout = max(1.0, dl.left() - 2)
        t0 = time.monotonic()
        proc = subprocess.Popen(cmd, cwd=checkout_site(), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                start_new_session=True)
        timed_out = False
        try:
            output, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            os.killpg(proc.pid, signal.SIGKILL)
            output, _ = proc.communicate()
        finally:
            if proc.poll() is None:  # interrupted some other way (the part's hard stop): leave no pytest behind
                os.killpg(proc.pid, signal.SIGKILL)
        (out_dir / "gpu_tests.log").parent.mkdir(parents=True, exist_ok=True)
        (out_dir / "gpu_tests.log").write_text(output)
        counts = parse_pytest(output)
        if timed_out:
            notes.append(f"pytest stopped after {timeout:.0f} s; counts are from its progress line so far")
        return {"command": " ".join(cmd[2:]), "files": files, "triton_interpret": bool(args.self_test),
                "returncode": proc.returncode,
                "timed_out": timed_out, "seconds": round(time.monotonic() - t0, 1), "counts": counts,
                "ok": (not timed_out and proc.returncode == 0 and counts.get("failed", 0) == 0
                       and counts.get("error", 0) == 0),
                "log": "gpu_tests.log", "tail": output[-3000:]}

    return run


def parse_pytest(output: str) -> dict:
    """Counts from pytest's summary line, else (a killed run) from its progress characters."""
    lines = [ln for ln in output.splitlines() if ln.strip()]
    for ln in reversed(lines):
        found = re.findall(r"(\d+) (passed|failed|skipped|errors?|xfailed|xpassed|deselected)", ln)
        if found and re.search(r"\bin [\d.]+s", ln):
            counts = {}
            for n, kind in found:
                counts["error" if kind.startswith("error") else kind] = int(n)
            return counts
    progress = "".join(re.sub(r"\s*\[\s*\d+%\]$", "", ln) for ln in lines if re.fullmatch(r"[.FEsxX]+(\s*\[\s*\d+%\])?",
                                                                                       ln.strip()))
    return {"passed": progress.count("."), "failed": progress.count("F"), "error": progress.count("E"),
            "skipped": progress.count("s"), "partial": True}


# ---------------------------------------------------------------------------------------------- part 2: bandwidth


def part_bandwidth(args, torch, cuda: bool):
    def run(dl: Deadline, notes, data):
        import sdekit.kernels as K

        kb = load_benchmark("kernel_bandwidth")  # its step definitions, coefficients and byte counts
        data.update({"dtype": "float32", "batch": 16, "coefficients": [kb.A, kb.B_, kb.C, kb.D_],
                     "step": "affine x <- a x + b s + d + c z (noise in the kernel)",
                     "bytes": "minimal: copy 2n*4 (read + write), affine 3n*4 (x, s read once, x_new written once)"})
        timer = make_timer(torch, cuda)
        if args.self_test:
            sizes = [10, 8]
        elif args.quick:
            sizes = [26, 16, 20, 24]  # the target size first, in case the deadline comes
        else:
            sizes = [26, 28] + list(range(16, 26))  # the target sizes first, in case the deadline comes
        compile_backend = "inductor" if cuda else "eager"
        from torch._dynamo import config as dynamo_config

        for knob in ("cache_size_limit", "recompile_limit"):  # one recompile per size must not fall back to eager
            if hasattr(dynamo_config, knob):
                setattr(dynamo_config, knob, max(64, getattr(dynamo_config, knob)))
        if not cuda:
            notes.append(f"{SELF_TEST_BANNER}: Triton interpreter, wall clock, torch.compile(backend='eager')")
        if not K.HAS_TRITON:
            notes.append("Triton is not importable: no fused variant")
        rows, batch = data.setdefault("rows", []), 16
        for k in sizes:
            n = 1 << k
            if dl.left() < 8:
                notes.append(f"stopped before 2^{k}: part deadline")
                break
            if cuda:
                free = torch.cuda.mem_get_info()[0]
                need = 24 * n * 4  # kernel_bandwidth.steps() tensors + the reference's temporaries
                if need > free:
                    notes.append(f"2^{k} skipped: needs ~{need / 2**30:.0f} GiB, {free / 2**30:.0f} GiB free")
                    continue
            try:
                table, (copy_bytes, copy_fn) = kb.steps(torch, K, torch.float32, n, batch, compile_=False)
                nbytes, variants = table["affine"]
                eager = variants["eager"]
                variants["compiled"] = torch.compile(eager, backend=compile_backend)
                if not K.HAS_TRITON:
                    variants.pop("fused")
                if not args.quick:
                    variants["ref"] = _ref_variant(torch, K, kb, n, batch)
                names = [v for v in ("fused", "eager", "compiled", "ref") if v in variants]
                order = [("copy", copy_fn, copy_bytes)] + [(v, variants[v], nbytes) for v in names]
            except Exception as e:  # noqa: BLE001
                rows.append({"log2": k, "variant": "setup", "error": f"{type(e).__name__}: {e}"})
                continue
            got = {}
            for variant, fn, b in order:
                if dl.left() < 3:
                    notes.append(f"2^{k} {variant} skipped: part deadline")
                    break
                try:
                    t = timer(fn, rep_ms=100.0 if variant != "ref" else 40.0)
                    got[variant] = t
                    rows.append({"log2": k, "elements": n, "variant": variant, "bytes": b, **t,
                                 "gbs_median": b / t["median_ms"] / 1e6, "gbs_best": b / t["min_ms"] / 1e6})
                except Exception as e:  # noqa: BLE001 - e.g. a compile failure: record it, time the rest
                    rows.append({"log2": k, "variant": variant, "error": f"{type(e).__name__}: {str(e)[:300]}"})
            _ratios(rows, k, got)
            for r in rows:
                if r["log2"] == k and "median_ms" in r:
                    print(f"  2^{k:<2d} {r['variant']:9s} median {r['median_ms']:9.4f} ms  min {r['min_ms']:9.4f} ms  "
                          f"{r['gbs_median']:8.1f} GB/s", flush=True)
            del table, variants, order, copy_fn
            if cuda:
                torch.cuda.empty_cache()
        rows.sort(key=lambda r: r["log2"])

    return run


def _ref_variant(torch, K, kb, n, batch):
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    x = torch.randn(batch, n // batch, device=dev)
    s, out, idx = torch.randn_like(x), torch.empty_like(x), torch.arange(batch, device=dev)
    return lambda: K.affine_update_ref(x, s, kb.A, kb.B_, kb.C, kb.D_, seed=1, sample_index=idx, stream=7, out=out)


def _ratios(rows, k, got):
    copy, fused = got.get("copy"), got.get("fused")
    for r in rows:
        if r["log2"] != k or "median_ms" not in r or not copy:
            continue
        r["pct_copy"] = 100 * copy["median_ms"] * r["bytes"] / (r["median_ms"] * 2 * r["elements"] * 4)
        if r["variant"] == "fused":
            for other in ("eager", "compiled", "ref"):
                if other in got:
                    r[f"vs_{other}"] = got[other]["median_ms"] / fused["median_ms"]


# ---------------------------------------------------------------------------------------------- part 3: graph


def part_graph(args, torch, cuda: bool):
    def run(dl: Deadline, notes, data):
        import sdekit
        from sdekit import kernels as K

        sg = load_benchmark("sample_graph")  # tiny_model and capture
        steps, dim, width = (100, 64, 256) if not args.self_test else (5, 8, 16)
        device = "cuda" if cuda else "cpu"
        timer = make_timer(torch, cuda)
        score = sg.tiny_model(torch, dim, width, device)
        sde = sdekit.VPSDE()
        x0 = torch.randn(1, dim, device=device)
        t_fixed = torch.full((1,), 0.5, device=device)

        def forwards():
            x = x0
            for _ in range(steps):
                x = score(x, t_fixed)
            return x

        def sampler(backend):
            idx = torch.zeros(1, dtype=torch.int64, device=device)
            return lambda: sdekit.sample(score, sde, (1, dim), steps=steps, denoise=False, seed=0, sample_index=idx,
                                         capturable=True, backend=backend, device=device).x

        backends = ["triton"] if K.HAS_TRITON else []
        if not args.quick:
            backends.append("torch")
        data.update({"steps": steps, "model": f"MLP {dim}+1->{width}->{width}->{dim}, batch 1",
                     "method": "euler_maruyama, VP SDE, no corrector, no denoising, capturable=True"})
        rows = data.setdefault("rows", {})
        with torch.no_grad():
            rows["forwards eager"] = timer(forwards)
            if cuda:
                graph, _ = sg.capture(torch, forwards)
                rows["forwards graph"] = timer(graph.replay)
            else:
                notes.append(f"{SELF_TEST_BANNER}: no CUDA graph capture on the CPU; eager variants only")
            for backend in backends:
                if dl.left() < 5:
                    notes.append(f"{backend}: skipped, part deadline")
                    continue
                try:
                    run_ = sampler(backend)
                    rows[f"sample eager ({backend})"] = timer(run_)
                    if not cuda:
                        continue
                    expected = run_()
                    graph, static = sg.capture(torch, run_)
                    graph.replay()
                    torch.cuda.synchronize()
                    notes.append(f"graph replay of the {backend} sample equals the eager sample: "
                                 f"{bool(torch.equal(static, expected))}")
                    rows[f"sample graph ({backend})"] = timer(graph.replay)
                except Exception as e:  # noqa: BLE001
                    notes.append(f"{backend}: {type(e).__name__}: {str(e)[:300]}")
        if "sample graph (triton)" in rows and "forwards graph" in rows:
            data["ratio"] = rows["sample graph (triton)"]["median_ms"] / rows["forwards graph"]["median_ms"]

    return run


# ---------------------------------------------------------------------------------------------- part 4: syncs


SYNC_CASES = [("euler_maruyama", None), ("euler_maruyama", "langevin"), ("reverse_diffusion", None),
              ("reverse_diffusion", "langevin"), ("ancestral", None), ("ancestral", "langevin"), ("dpmpp_2m", None)]


def part_syncs(args, torch, cuda: bool):
    def run(dl: Deadline, notes, data):
        import sdekit

        sg = load_benchmark("sample_graph")
        device = "cuda" if cuda else "cpu"
        dim, width = (64, 256) if not args.self_test else (8, 16)
        n1, n2 = (4, 12) if not args.self_test else (1, 2)
        score = sg.tiny_model(torch, dim, width, device)
        sde = sdekit.VPSDE()
        backend = "auto"  # the Triton kernels on the GPU
        if not cuda:
            backend = "torch"  # the interpreted kernels are slow, and there is no sync to see anyway
            notes.append(f"{SELF_TEST_BANNER}: no CUDA, so no sync can be seen; the counts only check the plumbing")

        def call(method, corrector, steps, **kw):
            return sdekit.sample(score, sde, (4, dim), method=method, steps=steps, corrector=corrector, seed=0,
                                 device=device, backend=backend, **kw)

        data.update({"method": "torch.cuda.set_sync_debug_mode('warn') warnings (primary) and profiler events "
                               "(cudaStreamSynchronize/cudaDeviceSynchronize/cudaEventSynchronize, Memcpy DtoH); "
                               f"fixed-step: (count at {n2} steps - count at {n1}) / {n2 - n1}; "
                               "ode: total / accepted steps", "batch": 4, "dim": dim, "backend": backend})
        rows = data.setdefault("rows", [])
        cases = [(m, c, False) for m, c in SYNC_CASES] + [(m, c, True) for m, c in SYNC_CASES if m != "dpmpp_2m"]
        with torch.no_grad():
            for method, corrector, capturable in cases + [("ode", None, False)]:
                name = method + (" + langevin" if corrector else "") + (" (capturable)" if capturable else "")
                if dl.left() < 4:
                    notes.append(f"{name}: skipped, part deadline")
                    continue
                try:
                    if method == "ode":
                        tol = 1e-3 if not args.self_test else 1e-2
                        kw = {"rtol": tol, "atol": tol}
                        call(method, None, 1, **kw)  # warm-up (kernel compilation)
                        c, res = count_syncs(torch, cuda, lambda m=method, kw=kw: call(m, None, 1, **kw))
                        nsteps = int(res.steps.max())
                        row = {"case": name, "steps": nsteps, "total": c, "per_step": _per(c, nsteps, 1)}
                    else:
                        kw = {"capturable": capturable}
                        call(method, corrector, n1, **kw)  # warm-up (kernel compilation)
                        c1, _ = count_syncs(torch, cuda, lambda m=method, c=corrector, kw=kw: call(m, c, n1, **kw))
                        c2, _ = count_syncs(torch, cuda, lambda m=method, c=corrector, kw=kw: call(m, c, n2, **kw))
                        row = {"case": name, "steps": [n1, n2], "total": [c1, c2], "per_step": _per(c2, c1, n2 - n1),
                               "fixed_step": True, "capturable": capturable}
                    rows.append(row)
                    print(f"  {name:40s} syncs/step {row['per_step']}", flush=True)
                except Exception as e:  # noqa: BLE001
                    rows.append({"case": name, "error": f"{type(e).__name__}: {str(e)[:300]}"})

    return run


def _per(a, b, steps):
    """Per-step difference of two count dicts (``b`` an int divides ``a`` instead)."""
    if isinstance(b, dict):
        return {k: (a[k] - b[k]) / steps for k in a}
    return {k: a[k] / max(b, 1) for k in a}


def count_syncs(torch, cuda: bool, fn):
    """``({"warnings", "stream_syncs", "dtoh_copies"}, fn())``, counted over one call of ``fn``."""
    counts = {"warnings": 0, "stream_syncs": 0, "dtoh_copies": 0}
    if cuda:
        torch.cuda.synchronize()
        prev = torch.cuda.get_sync_debug_mode()
        torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = fn()
            if cuda:
                torch.cuda.current_stream().query()  # no sync; the result stays on the device
    finally:
        if cuda:
            torch.cuda.set_sync_debug_mode(prev)
    counts["warnings"] = sum(1 for w in caught if "synchroniz" in str(w.message).lower())
    acts = [torch.profiler.ProfilerActivity.CPU] + ([torch.profiler.ProfilerActivity.CUDA] if cuda else [])
    with torch.profiler.profile(activities=acts) as prof:
        fn()
        if cuda:
            torch.cuda.current_stream().query()
    for ev in prof.events():
        if ev.name in ("cudaStreamSynchronize", "cudaDeviceSynchronize", "cudaEventSynchronize"):
            counts["stream_syncs"] += 1
        elif "Memcpy DtoH" in ev.name:
            counts["dtoh_copies"] += 1
    return counts, result


# ---------------------------------------------------------------------------------------------- targets and report


def evaluate_targets(parts: dict, self_test: bool = False) -> list[dict]:
    """Each issue target with its measured figure and PASS / FAIL / NOT MEASURED (never a verdict in a self-test)."""
    out = []

    def add(name, target, measured, ok):
        verdict = "NOT MEASURED" if measured is None else ("PASS" if ok else "FAIL")
        if self_test:
            verdict = "SELF-TEST (no verdict)"
        out.append({"target": name, "goal": target, "measured": measured, "verdict": verdict})

    rows = (parts.get("bandwidth", {}).get("data") or {}).get("rows", [])
    fused = [r for r in rows if r.get("variant") == "fused" and r["log2"] >= 26 and "pct_copy" in r]
    if not fused:
        for name, goal in (("fused update % of copy bandwidth (>= 2^26 fp32)", ">= 85 %"),
                           ("fused update vs eager (>= 2^26)", ">= 3x"),
                           ("fused update vs torch.compile (>= 2^26)", ">= 1x")):
            add(name, goal, None, False)
    for r in fused:
        k = r["log2"]
        add(f"fused update % of copy bandwidth, 2^{k} fp32", ">= 85 %", round(r["pct_copy"], 1),
            r["pct_copy"] >= TARGETS["pct_copy"])
        v = r.get("vs_eager")
        add(f"fused update vs eager, 2^{k}", ">= 3x", None if v is None else round(v, 2),
            v is not None and v >= TARGETS["vs_eager"])
        v = r.get("vs_compiled")
        add(f"fused update vs torch.compile, 2^{k}", ">= 1x", None if v is None else round(v, 2),
            v is not None and v >= TARGETS["vs_compiled"])
    g = (parts.get("graph", {}).get("data") or {}).get("ratio")
    add("graph-captured 100-step sample / graph-captured bare forwards", "<= 1.5x",
        None if g is None else round(g, 3), g is not None and g <= TARGETS["graph_ratio"])
    srows = [r for r in (parts.get("syncs", {}).get("data") or {}).get("rows", []) if r.get("fixed_step")]
    if not srows:
        add("host syncs per fixed-step sampler step", "0", None, False)
    for r in srows:
        worst = max(r["per_step"].values())
        add(f"host syncs per step: {r['case']}", "0", worst, worst <= TARGETS["syncs_per_step"])
    return out


def _fmt(v, spec=".3f"):
    return "-" if v is None else (format(v, spec) if isinstance(v, float) else str(v))


def render_markdown(doc: dict) -> str:
    m, parts = doc["meta"], doc["parts"]
    self_test = m.get("mode") == "self-test"
    lines = [f"# sdekit GPU check: {m.get('device')}, {m.get('date')}", ""]
    if self_test:
        lines += [f"**{SELF_TEST_BANNER}.** Every number below is meaningless: it only shows the script runs.", ""]
    lines += [f"`python benchmarks/gpu_check.py {m.get('args', '')}`", "",
              f"- device: {m.get('device')}" + (f" (sm_{m['capability'].replace('.', '')}, {m.get('memory_gib')} GiB, "
                                                 f"{m.get('sms')} SMs)" if "capability" in m else ""),
              (f"- driver {m.get('driver')}, CUDA runtime {m.get('cuda_runtime')}, torch {m.get('torch')}, "
               f"triton {m.get('triton')}, python {m.get('python')}"),
              f"- global budget {m.get('budget_s')} s; elapsed {doc['deadline'].get('elapsed_s', '-')} s"
              + (f"; {doc['deadline']['note']}" if doc["deadline"].get("note") else ""), "",
              "## Targets", "", "| target | goal | measured | verdict |", "| --- | --- | ---: | --- |"]
    lines += [f"| {t['target']} | {t['goal']} | {_fmt(t['measured'])} | {t['verdict']} |" for t in doc["targets"]]
    lines += ["", "## Parts", "", "| part | status | seconds | budget | note |", "| --- | --- | ---: | ---: | --- |"]
    for name, p in parts.items():
        note = p.get("reason") or p.get("error") or "; ".join(p.get("notes", []))[:300]
        secs, allowed = _fmt(p.get("elapsed_s"), ".1f"), _fmt(p.get("allowed_s"), ".1f")
        lines.append(f"| {name} | {p['status']} | {secs} | {allowed} | {note} |")
    t = (parts.get("tests") or {}).get("data")
    if t and "command" in t:
        how = "Triton interpreter, CPU" if t["triton_interpret"] else "Triton compiled, TRITON_INTERPRET unset"
        lines += ["", f"## 1. Tests ({how})", "",
                  f"`{t['command']}`: return code {t['returncode']}, {t['seconds']} s"
                  + (" (timed out)" if t["timed_out"] else "") + f"; counts {t['counts']}; log `{t['log']}`"]
    b = (parts.get("bandwidth") or {}).get("data")
    if b and "bytes" in b:
        lines += ["", "## 2. Fused update bandwidth (float32, batch 16)", "", (f"Bytes: {b['bytes']}.  CUDA events per "
                   "call, L2 flushed between calls; below 2^24 the data fit in L2 and launches dominate."), "",
                  ("| elements | variant | median ms | min ms | GB/s (median) | GB/s (best) | % of copy | × eager "
                   "| × compiled | × keyed ref |"), "|" + " ---: |" * 10]
        for r in sorted(b.get("rows", []), key=lambda r: r["log2"]):
            if "error" in r:
                lines.append(f"| 2^{r['log2']} | {r['variant']} | error: {r['error'][:150]} | | | | | | | |")
                continue
            lines.append(f"| 2^{r['log2']} | {r['variant']} | {r['median_ms']:.4f} | {r['min_ms']:.4f} | "
                         f"{r['gbs_median']:.1f} | {r['gbs_best']:.1f} | {_fmt(r.get('pct_copy'), '.1f')} | "
                         f"{_fmt(r.get('vs_eager'), '.2f')} | {_fmt(r.get('vs_compiled'), '.2f')} | "
                         f"{_fmt(r.get('vs_ref'), '.2f')} |")
    g = (parts.get("graph") or {}).get("data")
    if g and "steps" in g:
        lines += ["", f"## 3. {g['steps']}-step sample in one CUDA graph vs bare forwards", "",
                  f"{g['model']}; {g['method']}.", "", "| variant | median ms | min ms | × forwards graph |",
                  "| --- | ---: | ---: | ---: |"]
        rows = g.get("rows", {})
        floor = (rows.get("forwards graph") or rows.get("forwards eager") or {}).get("median_ms")
        for k, v in rows.items():
            ratio = v["median_ms"] / floor if floor else None
            lines.append(f"| {k} | {v['median_ms']:.4f} | {v['min_ms']:.4f} | {_fmt(ratio, '.2f')} |")
    s = (parts.get("syncs") or {}).get("data")
    if s and "method" in s:
        lines += ["", "## 4. Host syncs per step", "", s["method"] + f"; batch {s['batch']}, dim {s['dim']}.", "",
                  "| case | steps | warnings/step | stream syncs/step | DtoH copies/step |",
                  "| --- | --- | ---: | ---: | ---: |"]
        for r in s.get("rows", []):
            if "error" in r:
                lines.append(f"| {r['case']} | error: {r['error'][:150]} | | | |")
                continue
            ps = r["per_step"]
            lines.append(f"| {r['case']} | {r['steps']} | {_fmt(ps['warnings'], '.2f')} | "
                         f"{_fmt(ps['stream_syncs'], '.2f')} | {_fmt(ps['dtoh_copies'], '.2f')} |")
        lines += ["", "method='ode' (RK45) decides each step on the host: about one sync per step is expected."]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------- main


def main(argv=None) -> int:
    args = parse_args(argv)
    deadline = Deadline(args.budget)
    if args.self_test:
        os.environ.setdefault("TRITON_INTERPRET", "1")  # before sdekit.kernels is imported
    use_checkout()
    import torch

    cuda = torch.cuda.is_available() and not args.self_test
    if not args.self_test and not cuda:
        print("benchmarks/gpu_check.py needs a CUDA GPU (torch.cuda.is_available() is False); nothing was measured "
              "or written.  Use --self-test to check the script on the CPU.", file=sys.stderr)
        return 2
    if args.self_test:
        torch.set_num_threads(1)
        out_dir = Path(tempfile.mkdtemp(prefix="sdekit_gpu_check_selftest_"))
    else:
        out_dir = args.out or RESULTS
    meta = environment(torch, args.self_test)
    meta.update(args=" ".join(sys.argv[1:] if argv is None else argv), budget_s=args.budget, quick=args.quick)
    report = Report(out_dir, meta)

    def hard_stop():  # a part stuck in C code past every deadline: save what there is, then exit
        report.doc["deadline"].update(note="hard stop: a part overran the global deadline by 60 s; results partial",
                                      elapsed_s=round(deadline.elapsed(), 1))
        try:
            report.write()
        finally:
            print("gpu_check: hard stop past the global deadline", file=sys.stderr, flush=True)
            os._exit(3)

    watchdog = threading.Timer(args.budget + 60, hard_stop)
    watchdog.daemon = True
    watchdog.start()
    col = 1 if args.quick or args.self_test else 0
    parts = [("tests", part_tests(args, out_dir)), ("bandwidth", part_bandwidth(args, torch, cuda)),
             ("graph", part_graph(args, torch, cuda)), ("syncs", part_syncs(args, torch, cuda))]
    for name, fn in parts:
        budget = BUDGETS[name][col] if not args.self_test else args.budget
        run_part(report, name, fn, budget, deadline)
    watchdog.cancel()
    skipped = [n for n, p in report.doc["parts"].items() if p["status"] in ("skipped", "timeout")]
    report.doc["deadline"].update(elapsed_s=round(deadline.elapsed(), 1),
                                  note=f"cut short by the deadline: {', '.join(skipped)}" if skipped else None)
    report.write()
    print(render_markdown(report.doc))
    print(f"wrote {out_dir / 'gpu.md'} and {out_dir / 'gpu.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
