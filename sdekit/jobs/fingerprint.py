"""Model fingerprints: which weights a job's shards were computed with.

The factory spec (``"package.module:factory"`` plus its kwargs) names the
*code* that builds the model, not the *weights* it loads: retrain the
checkpoint behind the same factory and the configuration would look the same.
So the configuration also holds ``"model_fingerprint"``, one of

* ``"sha256:<hex>"``: :func:`model_fingerprint` of the built model, the sha256
  over the state dicts of the :class:`torch.nn.Module` objects it is or wraps;
* ``"version:<text>"``: the user's ``model_version`` (``--model-version``), used
  *instead* (nothing is hashed: for models too large to hash at every start,
  or whose state is not in a state dict);
* ``"unfingerprinted"``: the model is a plain callable with no module and no
  ``model_version`` (e.g. an analytic score such as
  :func:`sdekit.testing.job_models.mixture_score`): it is identified by its
  factory and kwargs only, as before fingerprints existed.

Which modules are found: the model itself if it is a module (or any object with
a ``state_dict()`` method returning a mapping), else the modules reachable from
it through instance attributes (a score adapter's ``.model``, e.g.
:func:`sdekit.score_from_epsilon`), ``functools.partial`` arguments, bound
methods, closures, default arguments, ``__wrapped__`` and lists / tuples /
dicts, up to :data:`MAX_DEPTH` levels deep, in a deterministic order.  Module
globals are not searched (a ``lambda x, t: NET(x, t)`` over a global ``NET`` is
unfingerprinted: give ``model_version`` or close over the network).

What is hashed (on the CPU, whatever the model's device, one tensor at a time):
for every module, for every state-dict entry in sorted name order, the entry's
name, dtype, shape and number of bytes (canonical JSON), then its raw bytes
(C-contiguous).  So the fingerprint changes with any weight or buffer bit, and
not with the device or the order the module registers its parameters.  State
the module keeps outside its state dict (plain attributes) is not seen.

Cost: one pass over the weights per process start (a copy to the CPU and
sha256 at roughly 1 GB/s); ``model_version`` skips it.

A manifest written before fingerprints existed has no ``"model_fingerprint"``
key: such a directory is refused (:class:`~sdekit.jobs.config.ConfigMismatchError`
saying so), since nothing records which weights its shards came from.
"""

from __future__ import annotations

import functools
import hashlib
import json
import types
from collections.abc import Mapping

import torch

#: How many attribute / closure / container levels below the model are searched for modules.
MAX_DEPTH = 6
#: At most this many objects are visited (bounds the search on large object graphs).
MAX_OBJECTS = 10_000

UNFINGERPRINTED = "unfingerprinted"

_LEAVES = (str, bytes, bytearray, int, float, complex, bool, type(None), torch.Tensor, torch.dtype, torch.device,
           type, types.ModuleType)


def check_model_version(model_version) -> str | None:
    """Return ``model_version`` if it is ``None`` or a non-empty string.

    Raises:
        TypeError: if ``model_version`` is neither ``None`` nor a string.
        ValueError: if it is an empty (or all-blank) string.
    """
    if model_version is None:
        return None
    if not isinstance(model_version, str):
        raise TypeError(f"model_version must be None or a string, got {type(model_version).__name__}")
    if not model_version.strip():
        raise ValueError(f"model_version must be a non-empty string, got {model_version!r}")
    return model_version


def _has_state_dict(obj) -> bool:
    return isinstance(obj, torch.nn.Module) or (not isinstance(obj, type) and callable(getattr(obj, "state_dict", None)))


def _children(obj) -> list:
    """The objects directly reachable from ``obj`` that may hold a module, in a deterministic order."""
    if isinstance(obj, functools.partial):
        return [obj.func, *obj.args, *obj.keywords.values()]
    if isinstance(obj, (list, tuple, set, frozenset)):
        return list(obj) if not isinstance(obj, (set, frozenset)) else []  # sets have no stable order
    if isinstance(obj, Mapping):
        return list(obj.values())
    if isinstance(obj, types.MethodType):
        return [obj.__self__, obj.__func__]
    if isinstance(obj, types.FunctionType):
        out = [c.cell_contents for c in (obj.__closure__ or ()) if _cell_filled(c)]
        out += list(obj.__defaults__ or ()) + list((obj.__kwdefaults__ or {}).values())
        return out + list(vars(obj).values())
    d = getattr(obj, "__dict__", None)
    out = list(d.values()) if isinstance(d, dict) else []
    for name in getattr(type(obj), "__slots__", ()):
        if isinstance(name, str) and hasattr(obj, name):
            out.append(getattr(obj, name))
    return out


def _cell_filled(cell) -> bool:
    try:
        cell.cell_contents  # noqa: B018 (an empty cell raises)
    except ValueError:
        return False
    return True


def find_modules(model) -> list:
    """The modules (objects with a state dict) that ``model`` is or wraps, in search order, without repeats.

    Args:
        model: the object a model factory returned.
    Returns:
        list of :class:`torch.nn.Module` (or ``state_dict()``-bearing) objects; empty for a plain callable.
    """
    found: list = []
    seen: set[int] = set()
    level = [model]
    for _ in range(MAX_DEPTH + 1):
        nxt = []
        for obj in level:
            if id(obj) in seen or len(seen) >= MAX_OBJECTS:
                continue
            seen.add(id(obj))
            if _has_state_dict(obj):
                found.append(obj)  # its state dict covers its submodules
            elif not isinstance(obj, _LEAVES):
                nxt += _children(obj)
        level = nxt
        if not level:
            break
    return found


def _entry_bytes(name: str, value, owner: str):
    """``(header, tensor_or_None)`` of one state-dict entry."""
    if isinstance(value, torch.Tensor):
        t = value.detach()
        if t.device.type == "meta":
            raise ValueError(f"model state dict entry {name!r} of {owner} is on the meta device (no values to "
                             f"hash); pass model_version= (--model-version) to identify the model")
        if t.is_quantized:
            t = t.dequantize()
        if t.layout != torch.strided:
            t = t.to_dense()
        t = t.to("cpu").contiguous()
        header = json.dumps([name, str(t.dtype), list(t.shape), t.numel() * t.element_size()])
        return header, t
    try:
        header = json.dumps([name, "json", json.loads(json.dumps(value, sort_keys=True, allow_nan=False))],
                            sort_keys=True)
    except (TypeError, ValueError):
        raise TypeError(f"model state dict entry {name!r} of {owner} is a {type(value).__name__}, neither a "
                        f"tensor nor JSON data, so it cannot be hashed; pass model_version= (--model-version) "
                        f"to identify the model") from None
    return header, None


def model_fingerprint(model) -> str | None:
    """sha256 hex digest of the state dicts of the modules ``model`` is or wraps; ``None`` if there are none.

    Deterministic: the same weights (names, dtypes, shapes, bytes) give the same
    digest on any device and in any process (see the module docstring for what
    is hashed and which modules are found).

    Args:
        model: the score model (e.g. what a model factory returned).
    Returns:
        64 hex characters, or ``None`` if no module is found.
    Raises:
        TypeError: if ``state_dict()`` returns no mapping, or an entry is neither a tensor nor JSON data.
        ValueError: if a tensor is on the meta device.
    """
    modules = find_modules(model)
    if not modules:
        return None
    h = hashlib.sha256()
    for m, module in enumerate(modules):
        owner = f"module {m} ({type(module).__name__})"
        state = module.state_dict()
        if not isinstance(state, Mapping):
            raise TypeError(f"{owner}.state_dict() returned a {type(state).__name__}, not a mapping")
        h.update(f"module {m} {len(state)}\n".encode())
        for name in sorted(state, key=str):
            header, t = _entry_bytes(str(name), state[name], owner)
            h.update(header.encode() + b"\n")
            if t is not None and t.numel():
                h.update(t.reshape(-1).view(torch.uint8).numpy())
    return h.hexdigest()


def fingerprint_entry(model, model_version: str | None) -> str:
    """The configuration's ``"model_fingerprint"``: ``"version:…"``, ``"sha256:…"`` or ``"unfingerprinted"``.

    Args:
        model: the built score model.
        model_version: the user's version string (checked by :func:`check_model_version`), or ``None``.
    Raises:
        as :func:`model_fingerprint` (only when ``model_version`` is ``None``).
    """
    if model_version is not None:
        return "version:" + model_version
    digest = model_fingerprint(model)
    return UNFINGERPRINTED if digest is None else "sha256:" + digest
