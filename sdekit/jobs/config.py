"""A job's configuration: canonical JSON, its hash, and the check that refuses mixing configurations.

The configuration is everything that determines the results bit for bit
(model and data factories with their arguments, the model's fingerprint
(:mod:`sdekit.jobs.fingerprint`: its weights' sha256, a ``model_version``, or
``"unfingerprinted"``), SDE, seed, solver settings, number of samples, shard
size, dtype, device type, library versions); it leaves out what does not
(batch size, number of ranks).
"""

from __future__ import annotations

import hashlib
import json

import torch


class ConfigMismatchError(ValueError):
    """An output directory holds a job with a different configuration.

    The message names the differing keys with both values; when the model
    fingerprint differs it says so first (other weights behind the same
    factory, or another ``model_version``), and a directory written before
    fingerprints existed (its configuration has no ``"model_fingerprint"``) is
    named as such.

    Attributes:
        keys: the differing top-level keys.
    """

    def __init__(self, directory, keys, ours: dict, theirs: dict):
        self.keys = list(keys)
        detail = "; ".join(f"{k}: directory has {theirs.get(k)!r}, this run has {ours.get(k)!r}" for k in self.keys)
        hint = ""
        if "model_fingerprint" in self.keys:
            if "model_fingerprint" not in theirs:
                hint = ("it was written by an sdekit without model fingerprints, so nothing records which model "
                        "weights its shards came from; ")
            else:
                hint = ("the model fingerprint differs: the model factory now gives other weights (a retrained "
                        "checkpoint?) or another model_version; ")
        super().__init__(f"output directory {str(directory)!r} holds a job with a different configuration "
                         f"({hint}differing keys: {', '.join(self.keys)}; {detail}); use a new directory "
                         f"or the same configuration")


def canonical_json(obj) -> str:
    """JSON with sorted keys and no whitespace variation (the hashed form)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False)


def config_hash(config: dict) -> str:
    """sha256 hex digest of :func:`canonical_json` of ``config``."""
    return hashlib.sha256(canonical_json(config).encode()).hexdigest()


def differing_keys(a: dict, b: dict) -> list[str]:
    """Top-level keys whose values differ (or that only one side has), sorted."""
    return sorted(k for k in set(a) | set(b) if canonical_json(a.get(k)) != canonical_json(b.get(k)))


def environment() -> dict:
    """The library versions the results depend on (part of the configuration)."""
    from .. import __version__

    return {"sdekit_version": __version__, "torch_version": torch.__version__.split("+")[0]}


def check_json_value(name: str, value):
    """Return ``value`` if it survives a JSON round trip unchanged, else raise naming ``name``."""
    try:
        if json.loads(canonical_json(value)) != value:
            raise ValueError
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be JSON data (dicts with string keys, lists, numbers, strings, "
                         f"booleans, None; no NaN), got {value!r}") from None
    return value
