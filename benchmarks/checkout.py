"""Run the checkout's sdekit without installing it: the installed layout, made of symbolic links.

An install (wheel or editable) maps ``sdekit.kernels`` to the repository's top-level ``kernels/``
(``package-dir`` in pyproject.toml, the one place the layout is defined).  A bare checkout on ``sys.path``
has no ``sdekit/kernels``, so the scripts that must run from one (``gpu_check.py`` on a lent GPU machine,
where nothing is installed; ``run.py`` and ``keyed_noise.py``, which measure the checkout whatever is
installed) call :func:`use_checkout` first: it builds, in a temporary folder, a ``sdekit`` package whose
entries are links to the checkout's files plus ``sdekit/kernels`` → ``kernels/``, and puts that folder first
on ``sys.path`` and in ``PYTHONPATH`` for subprocesses.  Nothing is copied or written in the checkout; the
folder is removed at exit.
"""

from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
_SITE: Path | None = None


def checkout_site() -> Path:
    """The folder holding the installed layout of this checkout (built on the first call)."""
    global _SITE
    if _SITE is None:
        site = Path(tempfile.mkdtemp(prefix="sdekit-checkout-"))
        atexit.register(shutil.rmtree, site, ignore_errors=True)
        package = site / "sdekit"
        package.mkdir()
        for entry in (ROOT / "sdekit").iterdir():
            if entry.name != "__pycache__":
                (package / entry.name).symlink_to(entry)
        (package / "kernels").symlink_to(ROOT / "kernels")
        _SITE = site
    return _SITE


def use_checkout(env: dict | None = None) -> dict:
    """Make ``import sdekit`` load this checkout, here and in subprocesses started with the returned env.

    Raises ``RuntimeError`` if another sdekit was imported already (it cannot be swapped in one process).
    Returns ``env`` (default ``os.environ``) copied, with the layout first in ``PYTHONPATH``.
    """
    site = str(checkout_site())
    loaded = sys.modules.get("sdekit")
    if loaded is not None and not str(getattr(loaded, "__file__", "")).startswith(site):
        raise RuntimeError(f"sdekit was imported from {loaded.__file__} before use_checkout()")
    if site not in sys.path:
        sys.path.insert(0, site)
    out = dict(os.environ if env is None else env)
    out["PYTHONPATH"] = os.pathsep.join([site] + [p for p in [out.get("PYTHONPATH")] if p])
    return out
