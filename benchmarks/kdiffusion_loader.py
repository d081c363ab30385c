"""k-diffusion's ``sampling`` module alone (its package ``__init__`` needs torchvision, absent beside a CPU torch).

The loader lives with the tests (``tests/k_diffusion_reference.py``, which documents how it works);
the suites share it through :func:`load_k_sampling`.
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path


@functools.lru_cache(maxsize=1)
def load_k_sampling():
    """k-diffusion's ``sampling`` module, or a string saying why it cannot be loaded."""
    tests = str(Path(__file__).resolve().parents[1] / "tests")
    sys.path.insert(0, tests)
    try:
        from k_diffusion_reference import load_sampling
    finally:
        sys.path.remove(tests)
    return load_sampling()
