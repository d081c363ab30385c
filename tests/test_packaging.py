"""The top-level kernels/ folder is importable and installed only as sdekit.kernels."""

import runpy
import sys
from pathlib import Path

import pytest

import sdekit.kernels

ROOT = Path(__file__).resolve().parents[1]


def test_setup_maps_kernels_under_sdekit_only(monkeypatch):
    pytest.importorskip("setuptools")
    monkeypatch.chdir(ROOT)  # find_packages scans the working directory
    cfg = runpy.run_path(str(ROOT / "setup.py"), run_name="setup_config_check")  # does not call setup()
    assert "sdekit.kernels" in cfg["PACKAGES"] and "sdekit.sampling" in cfg["PACKAGES"]
    assert all(p == "sdekit" or p.startswith("sdekit.") for p in cfg["PACKAGES"]), cfg["PACKAGES"]
    assert cfg["PACKAGE_DIR"] == {"sdekit.kernels": "kernels"}


def test_sdekit_kernels_is_the_kernels_folder_and_no_top_level_module_is_created():
    assert Path(sdekit.kernels.__file__).parent.name == "kernels"
    assert sdekit.kernels.__name__ == "sdekit.kernels"
    assert "kernels" not in sys.modules
