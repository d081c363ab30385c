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
