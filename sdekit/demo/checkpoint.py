"""A checkpoint cache for the trained network, keyed by what determines its weights.

``out_dir/checkpoint-<key>.pt`` holds the EMA weights (a ``state_dict``) and
the training config; ``checkpoint-<key>.pt.sha256`` beside it holds the sha256
of the ``.pt`` file's bytes (``sha256sum`` format: ``<hex>  <file name>``).

* **Written atomically**: each file is written to a temporary file in the same
  folder (``.checkpoint-<key>.pt.<random>.tmp``), flushed and ``fsync``-ed, then
  ``os.replace``-d onto its name, and the folder is ``fsync``-ed; the checkpoint
  first, its checksum second.  An interrupted write leaves the previous files
  (or none) and no partial file under the real name; the temporary file is
  removed on an exception (one left by a hard kill is ignored, and removed by a
  later save once it is an hour old).
* **Verified on load**: a cached checkpoint is used only if its checksum file
  exists and matches the file's bytes, it loads with ``weights_only=True``, its
  config equals the requested one and its state dict fits the network exactly.
  Anything else (truncated, corrupt, flipped byte, no or wrong checksum — e.g.
  a checkpoint of an older sdekit, which wrote none —, another config, keys or
  shapes that do not fit) is reported (a :class:`CheckpointWarning` naming the
  file and the reason; :attr:`TrainedModel.rejected`) and the network is
  retrained and written again: never a crash.

The checksum detects corruption, not tampering (anyone who can write the
folder can rewrite both files); ``weights_only=True`` keeps a hostile file from
running code.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import tempfile
import time
import warnings
from pathlib import Path

import torch

from .train import TrainConfig, build_network, train_epsilon_net

#: Bump when the network or training code changes in a way the config cannot see.
CODE_VERSION = 2


def cache_key(config: TrainConfig, split_seed: int, sde) -> str:
    """Hex digest (16 chars) of the hyperparameters, data split, SDE, code version and torch version."""
    payload = {
        "config": dataclasses.asdict(config),
        "split_seed": split_seed,
        "sde": repr(sde),
        "code_version": CODE_VERSION,
        "torch": torch.__version__,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


@dataclasses.dataclass
class TrainedModel:
    """A network ready for sampling, and where it came from.

    Attributes:
        net: the (EMA) ε-network in eval mode, on the requested device.
        loaded: ``True`` if read from the cache, ``False`` if trained now.
        path: the checkpoint file.
        seconds: wall time spent training (or loading), in seconds.
        final_loss: mean ε-loss of the last 10% of training steps (NaN if loaded).
        rejected: why a cached checkpoint at ``path`` was not used (and the
            network retrained), or ``None`` (loaded, or no file was there).
    """

    net: torch.nn.Module
    loaded: bool
    path: Path
    seconds: float
    final_loss: float
    rejected: str | None = None


class CheckpointWarning(UserWarning):
    """A cached checkpoint was unusable (corrupt, truncated, no/wrong checksum, other config) and is retrained."""


#: Bytes per ``os.write`` call when writing a checkpoint.
CHUNK = 1 << 20
#: A temporary checkpoint file older than this (seconds) is abandoned and removed by the next save.
STALE_TMP_S = 3600.0


def checksum_path(path: Path) -> Path:
    """The checksum file of checkpoint ``path``: ``<path>.sha256``."""
    return path.with_name(path.name + ".sha256")


def _write_chunks(fd: int, data: bytes) -> None:
    """Write all of ``data`` to file descriptor ``fd``, :data:`CHUNK` bytes per call."""
    view = memoryview(data)
    while view:
        n = os.write(fd, view[:CHUNK])
        view = view[n:]


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # e.g. platforms that cannot open directories
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically: temp file in the same folder, fsync, ``os.replace``, folder fsync.

    On any exception the temporary file is removed and ``path`` is untouched
    (the previous file, or none).

    Raises:
        OSError: from the file system (after cleaning up).
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix="." + path.name + ".", suffix=".tmp")
    try:
        try:
            _write_chunks(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    _fsync_dir(path.parent)


def _remove_stale_tmp(path: Path) -> None:
    now = time.time()
    for tmp in path.parent.glob("." + path.name + ".*.tmp"):
        try:
            if now - tmp.stat().st_mtime > STALE_TMP_S:
                tmp.unlink()
        except OSError:
            pass


def save_checkpoint(path: Path, net: torch.nn.Module, config: TrainConfig) -> str:
    """Write ``net``'s state dict and ``config`` to ``path`` and its sha256 to :func:`checksum_path` (atomically).

    Returns:
        the sha256 hex digest of the written file.
    Raises:
        OSError: if a write fails (no partial file is left under either name).
    """
    path = Path(path)
    _remove_stale_tmp(path)
    buf = io.BytesIO()
    torch.save({"state_dict": net.state_dict(), "config": dataclasses.asdict(config)}, buf)
    data = buf.getvalue()
    digest = hashlib.sha256(data).hexdigest()
    atomic_write(path, data)
    atomic_write(checksum_path(path), f"{digest}  {path.name}\n".encode())
    return digest


def _one_line(err: BaseException, limit: int = 400) -> str:
    text = " ".join(f"{type(err).__name__}: {err}".split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _read_checksum(path: Path) -> str | None:
    try:
        text = checksum_path(path).read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError):
        return None
    parts = text.split()
    if len(parts) != 2 or parts[1] != path.name or len(parts[0]) != 64:
        return None
    return parts[0].lower()


def load_checkpoint(path: Path, net: torch.nn.Module, config: TrainConfig, device="cpu") -> str | None:
    """Verify checkpoint ``path`` and load it into ``net``; returns ``None`` on success, else the reason.

    Checks, in order: the checksum file exists and is well formed, the sha256
    of the file's bytes matches it, the file loads with ``weights_only=True``
    as a dict whose ``config`` equals ``config``, and ``net.load_state_dict``
    (strict) accepts its ``state_dict``.  Never raises for a bad or unreadable file.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as err:
        return f"cannot be read ({_one_line(err)})"
    expected = _read_checksum(path)
    if expected is None:
        return f"no valid checksum file {checksum_path(path).name}"
    actual = hashlib.sha256(data).hexdigest()
    if actual != expected:
        return f"sha256 of the file is {actual}, its checksum file says {expected} (corrupt or truncated)"
    try:
        state = torch.load(io.BytesIO(data), map_location=device, weights_only=True)
    except Exception as err:  # noqa: BLE001 (any unreadable file is retrained, never a crash)
        return f"cannot be loaded ({_one_line(err)})"
    if not isinstance(state, dict) or not isinstance(state.get("state_dict"), dict):
        return "is not a checkpoint (no state_dict)"
    if state.get("config") != json.loads(json.dumps(dataclasses.asdict(config))):
        return f"holds another training config ({state.get('config')!r})"
    try:
        net.load_state_dict(state["state_dict"])
    except Exception as err:  # noqa: BLE001 (keys or shapes that do not fit the network)
        return f"does not fit the network ({_one_line(err)})"
    return None


def load_or_train(train_levels: torch.Tensor, sde, config: TrainConfig, out_dir: str | Path, *,
                  split_seed: int, device="cpu", use_cache: bool = True, progress: bool = True,
                  train_labels: torch.Tensor | None = None) -> TrainedModel:
    """Return the network for ``config``, from ``out_dir`` if cached, else train and cache it.

    The file is ``out_dir/checkpoint-<cache_key>.pt`` holding the EMA weights
    (a ``state_dict``) and the config, with its sha256 in
    ``checkpoint-<cache_key>.pt.sha256``; any change of hyperparameters, split
    seed, SDE or torch version gives another key and so retrains.  Writes are
    atomic and loads verified (module docstring): a cached file that fails
    verification is retrained with a :class:`CheckpointWarning`.

    Args:
        train_levels: ``(N, D)`` int64 training pixel levels.
        sde: the SDE to train under.
        config: training hyperparameters.
        out_dir: cache folder (created if missing).
        split_seed: seed of the train/test split (part of the key).
        device: where the returned network lives.
        use_cache: ``False`` ignores an existing checkpoint (and overwrites it).
        progress: tqdm bar while training.
        train_labels: ``(N,)`` int64 labels (class-conditional configs).
    Returns:
        :class:`TrainedModel` (``rejected`` says why a cached file was retrained).
    Warns:
        CheckpointWarning: naming the file and the reason, when a cached checkpoint fails verification.
    Raises:
        OSError: if the new checkpoint cannot be written (no partial file is left under its name).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"checkpoint-{cache_key(config, split_seed, sde)}.pt"
    start = time.perf_counter()
    rejected = None
    if use_cache and path.exists():
        net = build_network(config, sde, train_levels).to(device)
        rejected = load_checkpoint(path, net, config, device)
        if rejected is None:
            net.eval().requires_grad_(False)
            return TrainedModel(net, True, path, time.perf_counter() - start, float("nan"))
        warnings.warn(f"checkpoint {str(path)!r} not used: {rejected}; retraining", CheckpointWarning,
                      stacklevel=2)
        start = time.perf_counter()
    net, losses = train_epsilon_net(train_levels, sde, config, train_labels=train_labels, device=device,
                                    progress=progress)
    seconds = time.perf_counter() - start
    tail = losses[-max(1, len(losses) // 10):]
    save_checkpoint(path, net, config)
    return TrainedModel(net, False, path, seconds, sum(tail) / len(tail), rejected)
