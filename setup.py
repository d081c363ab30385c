"""Package layout that pyproject.toml cannot express: the top-level ``kernels/`` folder is ``sdekit.kernels``.

Everything else (metadata, dependencies, extras) is in pyproject.toml.  The
mapping installs ``kernels/`` only under the ``sdekit`` package, never as a
top-level ``kernels`` module (that name belongs to another PyPI project).
"""

from setuptools import find_packages, setup

PACKAGES = find_packages(include=["sdekit", "sdekit.*"]) + ["sdekit.kernels"]
PACKAGE_DIR = {"sdekit.kernels": "kernels"}

if __name__ == "__main__":
    setup(packages=PACKAGES, package_dir=PACKAGE_DIR)
