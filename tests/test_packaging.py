"""The top-level kernels/ folder is importable and installed only as sdekit.kernels."""

import sys
from pathlib import Path

import pytest

import sdekit.kernels

ROOT = Path(__file__).resolve().parents[1]


def _setuptools_config() -> dict:
    tomllib = pytest.importorskip("tomllib", reason="tomllib needs Python 3.11")
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]


def test_pyproject_lists_every_package_and_maps_kernels_under_sdekit_only():
    cfg = _setuptools_config()
    assert cfg["package-dir"] == {"sdekit.kernels": "kernels"}
    on_disk = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "sdekit").rglob("__init__.py")}
    assert set(cfg["packages"]) == on_disk | {"sdekit.kernels"}
    assert all(p == "sdekit" or p.startswith("sdekit.") for p in cfg["packages"])
    assert not (ROOT / "setup.py").exists()  # pyproject.toml is the one packaging file


def test_sdekit_kernels_is_the_kernels_folder_and_no_top_level_module_is_created():
    assert Path(sdekit.kernels.__file__).parent.name == "kernels"
    assert sdekit.kernels.__name__ == "sdekit.kernels"
    assert "kernels" not in sys.modules


def test_the_package_has_no_import_time_path_tricks():
    """pyproject.toml alone maps ``sdekit.kernels`` to ``kernels/``: ``sdekit/__init__.py`` neither edits
    ``sys.modules`` nor loads files by path."""
    text = (ROOT / "sdekit" / "__init__.py").read_text()
    assert "sys.modules" not in text and "spec_from_file_location" not in text


def test_a_bare_checkout_runs_through_the_benchmarks_layout(tmp_path):
    """``benchmarks/checkout.py`` (what gpu_check.py uses where nothing is installed) gives ``import sdekit`` the
    checkout, with ``sdekit.kernels`` = ``kernels/``, in the process and in its subprocesses."""
    code = (
        "import sys, subprocess\n"
        f"sys.path.insert(0, {str(ROOT / 'benchmarks')!r})\n"
        "from checkout import checkout_site, use_checkout\n"
        "env = use_checkout()\n"
        "import sdekit, sdekit.kernels as K\n"
        "site = str(checkout_site())\n"
        "assert sdekit.__file__.startswith(site), sdekit.__file__\n"
        "assert K.__file__.startswith(site) and 'kernels' not in sys.modules\n"
        "child = 'import sdekit.kernels as K; print(K.__file__)'\n"
        "out = subprocess.run([sys.executable, '-c', child], env=env, capture_output=True, text=True, check=True)\n"
        "assert out.stdout.startswith(site), out.stdout\n"
        "print('ok')\n"
    )
    import subprocess

    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr[-2000:]


def test_one_exported_name_per_class():
    """The predictors' short names still work but warn, and are not exported (``EulerMaruyama`` is the solver)."""
    import warnings

    import sdekit.sampling
    import sdekit.solvers.sde

    assert "EulerMaruyama" not in sdekit.sampling.__all__ and "EulerMaruyama" in sdekit.solvers.sde.__all__
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cls = sdekit.sampling.EulerMaruyama
    assert cls is sdekit.sampling.EulerMaruyamaPredictor
    assert any(issubclass(w.category, DeprecationWarning) and "EulerMaruyamaPredictor" in str(w.message)
               for w in caught)
