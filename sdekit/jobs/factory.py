"""Build a job's score model or data from an import path ``"package.module:factory"`` and JSON kwargs.

Every rank (and every resumed run) builds the same object from what the
manifest records, so the model (and the data, and the conditioning of
:mod:`sdekit.jobs.conditioning`) is identified by its factory, not by a
pickled object.
"""

from __future__ import annotations

import importlib

from .config import check_json_value


def check_spec(name: str, path: str, kwargs) -> dict:
    """Validate a factory spec and return it as ``{"factory": path, "kwargs": kwargs}``.

    Args:
        name: the spec's name in messages (``"model"``, ``"data"``, ``"cond"``).
        path: import path ``"package.module:factory"``.
        kwargs: JSON object of keyword arguments for the factory, or ``None`` (none).
    Raises:
        ValueError: if ``path`` is not ``"package.module:attribute"`` or ``kwargs`` is not JSON data.
        TypeError: if ``kwargs`` is not a dict.
    """
    if not isinstance(path, str) or path.count(":") != 1 or not all(path.split(":")):
        raise ValueError(f"{name} must be an import path 'package.module:factory', got {path!r}")
    kwargs = {} if kwargs is None else kwargs
    if not isinstance(kwargs, dict):
        raise TypeError(f"{name}_kwargs must be a JSON object (dict), got {kwargs!r}")
    return {"factory": path, "kwargs": check_json_value(f"{name}_kwargs", kwargs)}


def build(name: str, spec: dict):
    """Import ``spec["factory"]`` and call it with ``**spec["kwargs"]``.

    Raises:
        ImportError / AttributeError: naming ``name`` and the path, if the factory cannot be found.
    """
    module_name, attr = spec["factory"].split(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise ImportError(f"{name} factory {spec['factory']!r}: cannot import {module_name!r} ({err})") from err
    try:
        factory = getattr(module, attr)
    except AttributeError:
        raise AttributeError(f"{name} factory {spec['factory']!r}: module {module_name!r} has no {attr!r}") from None
    return factory(**spec["kwargs"])


#: SDEs a job can name (classes of :mod:`sdekit.sdes`).
SDE_NAMES = ("VPSDE", "SubVPSDE", "VESDE", "OrnsteinUhlenbeck", "DiscreteVPSDE", "EDMSDE")


def check_sde_spec(name: str, kwargs) -> dict:
    """Validate an SDE spec ``{"name": one of SDE_NAMES, "kwargs": JSON object}``.

    Raises:
        ValueError: if ``name`` is not one of :data:`SDE_NAMES` or ``kwargs`` is not JSON data.
        TypeError: if ``kwargs`` is not a dict.
    """
    from .._checks import check_choice

    check_choice("sde", name, SDE_NAMES)
    kwargs = {} if kwargs is None else kwargs
    if not isinstance(kwargs, dict):
        raise TypeError(f"sde_kwargs must be a JSON object (dict), got {kwargs!r}")
    return {"name": name, "kwargs": check_json_value("sde_kwargs", kwargs)}


def build_sde(spec: dict):
    """The SDE ``sdekit.<name>(**kwargs)`` of a spec from :func:`check_sde_spec`."""
    from .. import sdes

    return getattr(sdes, spec["name"])(**spec["kwargs"])
