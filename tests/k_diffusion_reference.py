"""Load k-diffusion's ``sampling`` module alone, as the reference for our k-diffusion samplers.

``import k_diffusion`` imports its training utilities, which need torchvision,
scikit-image, PIL… (broken or absent with the CPU torch wheel).  The sampling
module needs only ``k_diffusion.utils.append_dims`` from its package, so we
execute ``sampling.py`` from the installed file under a stand-in parent package
whose ``utils`` holds that one function, then remove the stand-ins from
``sys.modules`` again.  (k-diffusion is installed with ``pip install --no-deps
k-diffusion==0.1.1.post1``; its sampling module imports scipy, torchsde,
torchdiffeq and tqdm.)
"""

from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path


def _append_dims(x, target_dims):
    """Stand-in for ``k_diffusion.utils.append_dims``: add trailing singleton dims up to ``target_dims``."""
    return x[(...,) + (None,) * (target_dims - x.ndim)]


def load_sampling():
    """Return k-diffusion's ``sampling`` module, or a string saying why it cannot be loaded."""
    try:
        spec = importlib.util.find_spec("k_diffusion")  # locates the package without running its __init__
    except (ImportError, ValueError) as err:
        return f"k-diffusion not importable: {err}"
    if spec is None or not spec.submodule_search_locations:
        return "k-diffusion is not installed (pip install --no-deps k-diffusion==0.1.1.post1)"
    path = Path(list(spec.submodule_search_locations)[0]) / "sampling.py"
    if not path.exists():
        return f"k-diffusion has no sampling.py at {path}"
    names = ("k_diffusion", "k_diffusion.utils", "k_diffusion.sampling")
    saved = {name: sys.modules.get(name) for name in names}
    package = types.ModuleType("k_diffusion")
    package.__path__ = [str(path.parent)]
    utils = types.ModuleType("k_diffusion.utils")
    utils.append_dims = _append_dims
    package.utils = utils
    try:
        sys.modules["k_diffusion"], sys.modules["k_diffusion.utils"] = package, utils
        module_spec = importlib.util.spec_from_file_location("k_diffusion.sampling", path)
        module = importlib.util.module_from_spec(module_spec)
        module_spec.loader.exec_module(module)
        return module
    except ImportError as err:
        return f"k-diffusion's sampling module needs a missing package: {err}"
    finally:
        for name, old in saved.items():
            if old is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = old
