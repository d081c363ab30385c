"""``import sdekit`` stays cheap: it imports no Dynamo, no Triton, no optional dependency, and few modules.

Counted, not timed (timings on a shared machine are noise): a fresh interpreter
imports torch, then sdekit, and reports what ``import sdekit`` added to
``sys.modules``; then what eager CPU use added, and what the first look at
``sdekit.kernels.HAS_TRITON`` added.

Why it matters: ``torch.compiler.disable`` imports ``torch._dynamo`` (which
imports Triton and sympy) when it decorates, and the kernels imported Triton
eagerly; that made ``import sdekit`` cost 2.6–3.3 s on top of ``import torch``
(954 new modules).  Now the disable is applied lazily
(:func:`sdekit._checks.compiler_disable`) and Triton is imported at the first
kernel launch (:mod:`sdekit.kernels._triton`).
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import sdekit
from sdekit._checks import compiler_disable

#: Never imported by ``import sdekit`` (nor by eager CPU sampling): imported where they are used.
HEAVY = ("torch._dynamo", "torch._inductor", "triton", "sympy", "scipy", "diffusers", "k_diffusion", "matplotlib",
         "sklearn")

#: Bound on the modules ``import sdekit`` adds after ``import torch``.  Measured: 67 (64 of sdekit's
#: own, plus fractions, decimal and _decimal for the exact Butcher tableaus); 954 when Dynamo and
#: Triton came along.  The bound leaves room for sdekit to grow by half again in modules; a heavy
#: dependency brings tens to hundreds of modules and fails it.
MAX_NEW_MODULES = 150
#: Bound on the modules outside sdekit among them (measured 3: fractions, decimal, _decimal).
MAX_NEW_FOREIGN_MODULES = 10

_PROBE = r"""
import json, sys
import torch
before = set(sys.modules)
import sdekit
report = {"file": sdekit.__file__, "import": sorted(set(sys.modules) - before)}

before = set(sys.modules)
x = sdekit.sample(lambda x, t: -x, sdekit.VPSDE(), (2, 3), steps=2, seed=0).x  # check_eps, the kernels' dispatch
sdekit.log_likelihood(lambda x, t: -x, sdekit.VPSDE(), x.double(), trace="exact", rtol=1e-3, atol=1e-3)  # check_eps
report["eager"] = sorted(set(sys.modules) - before)

before = set(sys.modules)
report["has_triton"] = bool(sdekit.kernels.HAS_TRITON)
report["kernels_first_use"] = sorted(set(sys.modules) - before)
print(json.dumps(report))
"""


def _heavy(modules):
    return sorted(m for m in modules if any(m == h or m.startswith(h + ".") for h in HEAVY))


@pytest.fixture(scope="module")
def report():
    """Run the probe in a fresh interpreter that imports this test's sdekit (repository or installed)."""
    root = str(Path(sdekit.__file__).resolve().parents[1])
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([root] + [p for p in [os.environ.get("PYTHONPATH")] if p]))
    env.pop("SDEKIT_BACKEND", None)  # "auto": CPU data never needs Triton
    out = subprocess.run([sys.executable, "-c", _PROBE], cwd=root, env=env, capture_output=True, text=True, check=False,
                         timeout=600)
    assert out.returncode == 0, out.stderr[-4000:]
    rep = json.loads(out.stdout.strip().splitlines()[-1])
    assert Path(rep["file"]).resolve() == Path(sdekit.__file__).resolve()
    return rep


def test_import_sdekit_imports_no_heavy_module(report):
    heavy = _heavy(report["import"])
    assert not heavy, (f"import sdekit imports {heavy[:12]} ({len(heavy)} modules); a module-level "
                       "@torch.compiler.disable imports torch._dynamo (and Triton, sympy): use "
                       "sdekit._checks.compiler_disable")


def test_import_sdekit_imports_few_modules(report):
    new = report["import"]
    foreign = [m for m in new if m != "sdekit" and not m.startswith("sdekit.")]
    assert len(foreign) <= MAX_NEW_FOREIGN_MODULES, foreign
    assert len(new) <= MAX_NEW_MODULES, f"import sdekit added {len(new)} modules: {new}"


def test_eager_cpu_use_imports_no_heavy_module(report):
    """The lazy disable does not import Dynamo on an eager call, nor does the CPU dispatch import Triton."""
    assert _heavy(report["eager"]) == []


def test_triton_is_imported_when_first_asked_for(report):
    triton_loaded = any(m == "triton" for m in report["kernels_first_use"])
    assert triton_loaded == report["has_triton"]


@pytest.mark.parametrize("disable", [torch.compiler.disable, compiler_disable], ids=["torch", "lazy"])
def test_compiler_disable_keeps_the_function_out_of_the_graph(disable):
    """Like torch.compiler.disable, the lazy one runs the function eagerly, untraced, in both calls."""
    seen = []

    @disable
    def host(x):
        seen.append(torch.compiler.is_compiling())  # a traced append would record True
        return float(x.sum())  # a host sync: a graph break of its own were it traced

    def f(x):
        return x.sin() * host(x) + 1

    graphs = []

    def backend(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    torch._dynamo.reset()
    compiled = torch.compile(f, backend=backend)
    x = torch.randn(3, generator=torch.Generator().manual_seed(0))
    assert torch.equal(compiled(x), f(x)) and torch.equal(compiled(x), f(x))
    assert seen == [False] * 4  # two compiled calls, two eager ones
    assert len(graphs) == 2  # x.sin() before the break, the rest after it (compiled once, then reused)
    assert not any("sum" in str(gm.graph) for gm in graphs)
