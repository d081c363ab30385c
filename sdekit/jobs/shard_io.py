"""Atomic, checksummed files: a crash leaves either the old file or the complete new one, never half.

Write: temporary file in the same directory, flush + fsync, ``os.replace``,
fsync of the directory (POSIX rename atomicity; the directory fsync makes
the rename itself durable).  Tensors are stored with ``torch.save`` (its
bytes are a deterministic function of the tensors) and read back with
``torch.load(weights_only=True)``; the sha256 of the file bytes is the
checksum recorded in the shard's record.  :func:`load_tensors` never
raises on a bad file (wrong checksum, truncated, not a ``torch.save`` file,
a pickle that ``weights_only=True`` refuses to run): it returns ``None``, so
the job computes the shard again.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile

import torch

from .config import canonical_json


def atomic_write_bytes(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically and durably (see module docstring)."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix="." + os.path.basename(path) + ".", suffix=".tmp")
    try:
        os.fchmod(fd, 0o644)  # mkstemp's 0600 would make results unreadable to others
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def create_exclusive(path: str, data: bytes) -> bool:
    """Create ``path`` holding ``data`` unless it exists: ``True`` if this call created it.

    The bytes go to a temporary file first, which is then hard-linked to
    ``path`` (``os.link`` fails if ``path`` exists), so of several racing
    callers exactly one creates the file and nobody ever sees it half written.
    """
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix="." + os.path.basename(path) + ".", suffix=".tmp")
    try:
        os.fchmod(fd, 0o644)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
    finally:
        os.unlink(tmp)
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return True


def sha256_bytes(data: bytes) -> str:
    """Hex SHA-256 digest (64 characters) of ``data``: the checksum recorded for each shard file."""
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str) -> str | None:
    """sha256 hex digest of the file's bytes, or ``None`` if it cannot be read."""
    try:
        with open(path, "rb") as f:
            return sha256_bytes(f.read())
    except OSError:
        return None


def tensors_to_bytes(tensors: dict) -> bytes:
    """``torch.save`` of a dict of CPU tensors, as bytes."""
    buf = io.BytesIO()
    torch.save({k: v.detach().cpu() for k, v in tensors.items()}, buf)
    return buf.getvalue()


def save_tensors(path: str, tensors: dict) -> str:
    """Atomically write ``tensors`` (dict of tensors) to ``path``; returns the file's sha256."""
    data = tensors_to_bytes(tensors)
    atomic_write_bytes(path, data)
    return sha256_bytes(data)


def load_tensors(path: str, sha256: str) -> dict | None:
    """The tensors in ``path`` if its bytes have checksum ``sha256`` and load, else ``None`` (never raises).

    ``None`` for a missing, truncated or corrupt file, and for one that
    ``torch.load(weights_only=True)`` refuses (e.g. a pickle that would run code).
    """
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        return None
    if sha256_bytes(data) != sha256:
        return None
    try:
        tensors = torch.load(io.BytesIO(data), weights_only=True)
    except Exception:  # noqa: BLE001 -- UnpicklingError, RuntimeError, EOFError, ...: not our file, recompute
        return None
    return tensors if isinstance(tensors, dict) else None


def write_json(path: str, obj) -> None:
    """Atomically write ``obj`` as canonical JSON (plus a newline)."""
    atomic_write_bytes(path, (canonical_json(obj) + "\n").encode())


def read_json(path: str):
    """The JSON in ``path``, or ``None`` if it is missing or not valid JSON."""
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None
