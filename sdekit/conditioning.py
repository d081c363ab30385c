"""Per-sample conditioning: the model's keyword arguments, kept row-aligned with the batch.

A conditional network takes extra inputs besides ``(x, t)``: class labels,
text embeddings, masks, SDXL's ``added_cond_kwargs``.  sdekit passes them as
``model_kwargs`` (the name guided-diffusion and DiT use; k-diffusion calls the
same thing ``extra_args``): a mapping of keyword arguments for the model whose
tensors have the batch as leading dimension, ``(B, …)``.  Values may nest in
dicts, lists and tuples; non-tensor values (ints, strings, ``None``) are passed
through unchanged.

Wherever a solver works on part of the batch (the adaptive RK45's active set,
faulted samples frozen out, a job's shard), every tensor of ``model_kwargs`` is
gathered with the same rows, so row ``b`` of the model's input always sees its
own conditioning.  :func:`check_model_kwargs` validates once; the adaptive
paths hand the tensors to :func:`sdekit.solve_adaptive` as ``args``
(:func:`flatten_model_kwargs`), which gathers them; :func:`select_model_kwargs`
gathers them by hand.

A score model with conditioning is called ``score(x, t, **model_kwargs)``.
Guidance wrappers built with per-sample labels carry them as bound
conditioning (:func:`unbind_conditioning`), so they follow the same gathering.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Callable

import torch

__all__ = [
    "bind_model_kwargs",
    "check_model_kwargs",
    "flatten_model_kwargs",
    "map_model_kwargs",
    "select_model_kwargs",
    "unbind_conditioning",
]


def _tree_map(fn: Callable[[str, torch.Tensor], Any], value, path: str):
    """Apply ``fn(path, tensor)`` to every tensor leaf of nested dicts/lists/tuples; other leaves unchanged."""
    if isinstance(value, torch.Tensor):
        return fn(path, value)
    if isinstance(value, Mapping):
        return {k: _tree_map(fn, v, f"{path}[{k!r}]") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        items = [_tree_map(fn, v, f"{path}[{i}]") for i, v in enumerate(value)]
        return type(value)(items) if isinstance(value, list) or type(value) is tuple else type(value)(*items)
    return value


def map_model_kwargs(fn: Callable[[torch.Tensor], torch.Tensor], model_kwargs: Mapping) -> dict:
    """``model_kwargs`` with ``fn`` applied to every tensor leaf (nested dicts/lists/tuples kept; others unchanged).

    E.g. classifier-free guidance doubles the conditioning for the batch ``[x; x]``:
    ``map_model_kwargs(lambda v: torch.cat([v, v]), kw)``.
    """
    return {k: _tree_map(lambda _, v: fn(v), val, k) for k, val in model_kwargs.items()}


def check_model_kwargs(model_kwargs, batch: int, name: str = "model_kwargs", device=None) -> dict:
    """Validate per-sample conditioning for a batch of ``batch`` samples; return it as a new dict.

    Args:
        model_kwargs: ``None`` (no conditioning) or a mapping from keyword names
            (str) to values; every tensor in it (also inside nested dicts,
            lists and tuples) must have shape ``(batch, …)``.
        batch: ``B``, the number of samples.
        name: the argument's name in error messages (``"extra_args"`` for the
            k-diffusion-signature samplers).
        device: if given, every tensor must be on it (the solvers that gather
            conditioning with their active samples do so on the samples' device).
    Returns:
        a shallow copy as a ``dict`` (``{}`` for ``None``).
    Raises:
        TypeError: if ``model_kwargs`` is not a mapping or a key is not a string.
        ValueError: naming the entry, if a tensor is 0-d, its leading
            dimension is not ``batch``, or it is not on ``device``.
    """
    if model_kwargs is None:
        return {}
    if not isinstance(model_kwargs, Mapping):
        raise TypeError(f"{name} must be a mapping of keyword arguments for the model (or None), "
                        f"got {type(model_kwargs).__name__}")
    for key in model_kwargs:
        if not isinstance(key, str):
            raise TypeError(f"{name} keys must be strings (the model's keyword names), got {key!r}")

    def check(path: str, v: torch.Tensor) -> torch.Tensor:
        if v.dim() == 0 or v.shape[0] != batch:
            raise ValueError(
                f"{path} must have the batch as leading dimension, ({batch}, ...), got shape {tuple(v.shape)}; "
                f"per-sample conditioning is gathered with its rows (pass a Python number for a value "
                f"shared by all samples, or expand it to the batch)")
        if device is not None and v.device != torch.device(device):
            raise ValueError(f"{path} is on {v.device} but the samples are on {torch.device(device)}: the adaptive "
                             f"solver gathers conditioning with its active samples there; move it to that device")
        return v

    for key, value in model_kwargs.items():
        _tree_map(check, value, f"{name}[{key!r}]")
    return dict(model_kwargs)


def select_model_kwargs(model_kwargs: Mapping, index: torch.Tensor) -> dict:
    """The conditioning of rows ``index``: every tensor gathered along its leading dimension.

    Args:
        model_kwargs: checked conditioning (:func:`check_model_kwargs`).
        index: ``(b,)`` int64 row indices (moved to each tensor's device).
    Returns:
        a new dict with tensors of shape ``(b, …)``; other values unchanged.
    """
    return map_model_kwargs(lambda v: v.index_select(0, index.to(v.device)), model_kwargs)


def flatten_model_kwargs(model_kwargs: Mapping) -> tuple[tuple, Callable[[tuple], dict]]:
    """Split conditioning into its tensor leaves and a function that rebuilds it from (gathered) leaves.

    Lets a solver that gathers a tuple of ``(B, …)`` tensors to its active rows
    (``solve_adaptive(args=...)``) carry the conditioning along:
    ``leaves, rebuild = flatten_model_kwargs(kw)``; inside the right-hand side,
    ``model(x, t, **rebuild(gathered_leaves))``.

    Returns:
        ``(leaves, rebuild)``: the tensors in a fixed order, and
        ``rebuild(leaves) -> dict`` with the same structure as ``model_kwargs``.
    """
    leaves: list[torch.Tensor] = []

    def collect(_, v):
        leaves.append(v)
        return v

    for key, value in model_kwargs.items():
        _tree_map(collect, value, key)
    static = dict(model_kwargs)

    def rebuild(new_leaves) -> dict:
        it = iter(new_leaves)
        return {k: _tree_map(lambda _, v: next(it), val, k) for k, val in static.items()}

    return tuple(leaves), rebuild


def bind_model_kwargs(score: Callable, model_kwargs: Mapping) -> Callable:
    """``score`` with the conditioning bound: ``bound(x, t) = score(x, t, **model_kwargs)``.

    For the fixed-step samplers, which evaluate the whole batch at every call.
    Returns ``score`` itself when ``model_kwargs`` is empty.
    """
    if not model_kwargs:
        return score
    kwargs = dict(model_kwargs)

    def bound(x, t):
        return score(x, t, **kwargs)

    bound._sdekit_checked = getattr(score, "_sdekit_checked", False)  # type: ignore[attr-defined]
    return bound


def unbind_conditioning(score: Callable, model_kwargs: Mapping | None, batch: int,
                        name: str = "model_kwargs", device=None) -> tuple[Callable, dict]:
    """Move conditioning bound inside a score model (e.g. per-sample guidance labels) into ``model_kwargs``.

    A callable may carry per-sample tensors of its own (``classifier_free_guidance(model,
    labels_tensor, ...)``); it then defines ``_sdekit_unbind() -> (callable, dict) | None``
    returning an equivalent callable that reads them from its keyword arguments, and
    the tensors.  Samplers call this once, so those tensors are validated and
    gathered like any other conditioning.

    Args:
        score: the score model (or a wrapper around one).
        model_kwargs: the user's conditioning, or ``None``.
        batch: ``B``.
        name: the argument's name in error messages.
        device: as :func:`check_model_kwargs` (bound labels are moved to it).
    Returns:
        ``(score, model_kwargs)``, checked (:func:`check_model_kwargs`).
    Raises:
        ValueError / TypeError: as :func:`check_model_kwargs`; also if a bound
            key collides with one of ``model_kwargs``.
    """
    model_kwargs = check_model_kwargs(model_kwargs, batch, name, device)
    unbind = getattr(score, "_sdekit_unbind", None)
    found = unbind() if callable(unbind) else None
    if found is None:
        return score, model_kwargs
    score, bound = found
    clash = sorted(set(bound) & set(model_kwargs))
    if clash:
        raise ValueError(f"{name} keys {clash} collide with conditioning bound in the score model")
    if device is not None:
        bound = map_model_kwargs(lambda v: v.to(device), bound)
    bound = check_model_kwargs(bound, batch, "bound conditioning (guidance labels)", device)
    return score, {**model_kwargs, **bound}
