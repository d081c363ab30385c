"""Per-sample conditioning of a job, by global sample index: ``cond="package.module:factory"``.

A job with conditioning names a *conditioning factory* (``cond``, with JSON
keyword arguments ``cond_kwargs``; ``--cond`` / ``--cond-kwargs`` on the command
line), built like the model factory (:mod:`sdekit.jobs.factory`):
``factory(**cond_kwargs)`` is called once per process and returns a
*conditioner*::

    conditioner(sample_index) -> model_kwargs

``sample_index`` is a ``(b,)`` int64 CPU tensor of *global* sample indices
(of one batch of one shard), and ``model_kwargs`` is a mapping of keyword
arguments for the score model whose tensors have ``b`` rows, row ``j``
belonging to sample ``sample_index[j]`` (:mod:`sdekit.conditioning`).  Every
batch calls it with its own indices and passes the result to
:func:`sdekit.sample` / :func:`sdekit.log_likelihood` as ``model_kwargs=``;
its tensors are moved to the job's device (their dtypes are kept).  The
conditioner must be a deterministic function of the indices (row ``j`` of its
output depends on ``sample_index[j]`` only, never on the batch), so sharded,
resumed and multi-rank runs stay bit-identical.

The factory spec and its kwargs are part of the configuration (and its hash),
under the key ``"cond"``; a job without conditioning has no such key, so its
hash is the same as before conditioning existed.  What the factory *reads*
(e.g. an embedding file) is not hashed: :func:`tensor_rows` takes the file's
sha256 so that the configuration pins the content too.

Two factories for the common cases:

* :func:`class_labels`: ``{"y": sample_index mod num_classes}`` (class-conditional models);
* :func:`tensor_rows`: rows of tensors saved with ``torch.save`` (e.g. prompt embeddings).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Callable

import torch

from .._checks import check_positive_int
from ..conditioning import check_model_kwargs
from .factory import build, check_spec

__all__ = ["Conditioning", "build_conditioning", "check_cond_spec", "class_labels", "tensor_rows"]


def check_cond_spec(cond, cond_kwargs) -> dict | None:
    """Validate a conditioning factory spec: ``None`` (no conditioning) or ``{"factory", "kwargs"}``.

    Raises:
        ValueError: if ``cond`` is not ``"package.module:factory"``, if ``cond_kwargs``
            is given without ``cond``, or ``cond_kwargs`` is not JSON data.
        TypeError: if ``cond_kwargs`` is not a dict.
    """
    if cond is None:
        if cond_kwargs:
            raise ValueError(f"cond_kwargs given without cond (a conditioning factory), got {cond_kwargs!r}")
        return None
    return check_spec("cond", cond, cond_kwargs)


class Conditioning:
    """A built conditioner with the checks a job needs: ``cond(sample_index) -> dict`` on the job's device.

    Args:
        conditioner: ``conditioner(sample_index)``, see the module docstring.
        factory: the factory's import path (named in error messages).
        device: the job's device; tensors of the output are moved there.
    Raises:
        TypeError: naming the factory, if ``conditioner`` is not callable.
    """

    def __init__(self, conditioner: Callable, factory: str, device: torch.device | str = "cpu"):
        if not callable(conditioner):
            raise TypeError(f"conditioning factory {factory!r} must return a callable "
                            f"conditioner(sample_index) -> model_kwargs, got {type(conditioner).__name__}")
        self.conditioner, self.factory, self.device = conditioner, factory, torch.device(device)

    def __call__(self, sample_index: torch.Tensor) -> dict:
        """The model kwargs of the samples ``sample_index``.

        Args:
            sample_index: ``(b,)`` int64 global sample indices (any device; the
                conditioner gets them on the CPU).
        Returns:
            a new dict whose tensors have leading dimension ``b``, on the job's device.
        Raises:
            TypeError / ValueError: naming the factory and the indices, if the
                output is not a mapping with string keys or a tensor in it does
                not have ``b`` rows (:func:`sdekit.conditioning.check_model_kwargs`).
        """
        idx = sample_index.detach().to("cpu", torch.int64)
        b = idx.shape[0]
        out = self.conditioner(idx.clone())  # a copy: the conditioner may not change the job's indices
        where = f"conditioning factory {self.factory!r}, called with sample indices {_describe(idx)} (b={b})"
        if out is None or not isinstance(out, Mapping):
            raise TypeError(f"{where}: must return a mapping of keyword arguments for the model, "
                            f"got {type(out).__name__}")
        try:
            out = check_model_kwargs(out, b, "model_kwargs")
        except (TypeError, ValueError) as err:
            raise type(err)(f"{where}: {err}") from None
        return {k: _to_device(v, self.device) for k, v in out.items()}


def build_conditioning(spec: dict | None, device: torch.device | str = "cpu") -> Conditioning | None:
    """Build the conditioner of a spec from :func:`check_cond_spec` (``None`` for ``None``).

    The conditioner is tried once on sample index 0, so that a conditioner
    whose output has the wrong form fails before the job writes anything.

    Raises:
        ImportError / AttributeError: if the factory cannot be found (named).
        TypeError: if the factory does not return a callable (named).
        TypeError / ValueError: as :meth:`Conditioning.__call__`, from the trial call.
    """
    if spec is None:
        return None
    cond = Conditioning(build("cond", spec), spec["factory"], device)
    cond(torch.zeros(1, dtype=torch.int64))
    return cond


def _describe(idx: torch.Tensor) -> str:
    if idx.numel() == 0:
        return "[]"
    lo, hi = int(idx[0]), int(idx[-1])
    if torch.equal(idx, torch.arange(lo, lo + idx.numel())):
        return f"[{lo}, {hi + 1})"
    return str(idx.tolist()) if idx.numel() <= 8 else str(idx[:8].tolist())[:-1] + ", ...]"


def _to_device(value, device: torch.device):
    """``value`` with every tensor (also in nested dicts, lists and tuples) moved to ``device``."""
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, Mapping):
        return {k: _to_device(v, device) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        items = [_to_device(v, device) for v in value]
        if isinstance(value, list) or type(value) is tuple:
            return type(value)(items)
        return type(value)(*items)  # a named tuple
    return value


def class_labels(num_classes: int, key: str = "y"):
    """Conditioning factory: sample ``i`` gets class label ``i mod num_classes``.

    ``cond="sdekit.jobs.conditioning:class_labels"``, ``cond_kwargs={"num_classes": 10}``.

    Args:
        num_classes: number of classes (int >= 1).
        key: the model's keyword name for the labels (``"y"`` in guided-diffusion
            and DiT, ``"class_labels"`` in diffusers).
    Returns:
        ``conditioner(sample_index) -> {key: labels}``, labels ``(b,)`` int64.
    Raises:
        ValueError: if ``num_classes`` is not an integer >= 1 or ``key`` is not a non-empty string.
    """
    num_classes = check_positive_int("num_classes", num_classes)
    if not isinstance(key, str) or not key:
        raise ValueError(f"key must be the model's keyword name (a non-empty string), got {key!r}")

    def conditioner(sample_index: torch.Tensor) -> dict:
        return {key: torch.remainder(sample_index, num_classes)}

    return conditioner


def tensor_rows(path: str, key: str | None = None, sha256: str | None = None, offset: int = 0):
    """Conditioning factory: sample ``i`` gets row ``i + offset`` of tensors in a ``torch.save`` file.

    ``cond="sdekit.jobs.conditioning:tensor_rows"``, ``cond_kwargs={"path":
    "prompts.pt", "key": "encoder_hidden_states", "sha256": "..."}``.  The file
    holds either one tensor ``(N, …)`` (then ``key`` names the model's keyword)
    or a dict ``{keyword: tensor (N, …)}`` (then ``key`` must be ``None``); it is
    loaded once, with ``weights_only=True``, onto the CPU.

    Args:
        path: the file.
        key: the keyword name for a file holding one tensor.
        sha256: hex digest of the file's bytes; if given, a file with other
            contents is refused (the configuration then identifies the data,
            not only its path).
        offset: row of sample 0 (int >= 0).
    Returns:
        ``conditioner(sample_index) -> {keyword: rows}``, rows ``(b, …)`` with the file's dtype.
    Raises:
        FileNotFoundError: if ``sha256`` is given and the file cannot be read
            (without it, ``torch.load``'s error).
        ValueError: if the sha256 differs, the file holds neither a tensor nor a
            dict of tensors with ``N`` rows each, ``key`` does not fit what the
            file holds, or (when called) an index is beyond the file's rows.
    """
    from .shard_io import sha256_file

    if sha256 is not None:
        found = sha256_file(path)
        if found is None:
            raise FileNotFoundError(f"tensor_rows: cannot read {path!r}")
        if found != sha256:
            raise ValueError(f"tensor_rows: {path!r} has sha256 {found}, not {sha256} (the file changed?)")
    if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
        raise ValueError(f"tensor_rows: offset must be an integer >= 0, got {offset!r}")
    loaded = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(loaded, torch.Tensor):
        if not isinstance(key, str) or not key:
            raise ValueError(f"tensor_rows: {path!r} holds one tensor; key must name the model's keyword")
        tensors = {key: loaded}
    elif isinstance(loaded, dict) and loaded and all(isinstance(v, torch.Tensor) for v in loaded.values()):
        if key is not None:
            raise ValueError(f"tensor_rows: {path!r} holds a dict of tensors (keywords {sorted(loaded)}); "
                             f"key must be None")
        tensors = dict(loaded)
    else:
        raise ValueError(f"tensor_rows: {path!r} must hold a tensor (N, ...) or a dict of such tensors, "
                         f"got {type(loaded).__name__}")
    rows = {v.shape[0] if v.dim() else -1 for v in tensors.values()}
    if len(rows) != 1 or -1 in rows:
        shapes = {k: tuple(v.shape) for k, v in tensors.items()}
        raise ValueError(f"tensor_rows: the tensors of {path!r} must share a leading dimension N, got shapes {shapes}")
    n = rows.pop()

    def conditioner(sample_index: torch.Tensor) -> dict:
        rows_ = sample_index + offset
        if rows_.numel() and int(rows_.max()) >= n:
            raise ValueError(f"tensor_rows: sample index {int(sample_index.max())} needs row "
                             f"{int(rows_.max())} of {path!r}, which has {n} rows")
        return {k: v.index_select(0, rows_) for k, v in tensors.items()}

    return conditioner
