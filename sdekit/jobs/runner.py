"""The job engine shared by the sampling and likelihood jobs: manifest, shards, resume, merge.

Output directory layout::

    job.lock                   the lock of the running job (pid, host), :mod:`sdekit.jobs.lock`
    manifest.json              {"job", "config", "config_hash", "shards": [[start, stop], ...], "tensors"}
    shards/shard-000000.pt     tensors of one shard (``torch.save``), keyed by global "sample_index"
    shards/shard-000000.json   the shard's record: {"shard", "start", "stop", "config_hash", "sha256",
                               "tensors", "faults", "record_sha256"}
    <output>.pt                the merged tensors of all shards, in sample-index order (rank 0)
    result.json                {"config_hash", "output", "shards", "faults", "summary"} (rank 0)

One job at a time: a job holds the directory's lock for its life (rank 0 for
all ranks of a ``torchrun`` job), and the manifest is created exclusively;
a second job is refused with :class:`~sdekit.jobs.lock.OutputDirectoryBusyError`
naming the directory and the holder.  A directory whose ``manifest.json``
holds another configuration is refused
(:class:`~sdekit.jobs.config.ConfigMismatchError`, naming the differing keys;
the configuration includes the model's fingerprint, :mod:`sdekit.jobs.fingerprint`,
so shards of other weights behind the same factory are never reused, and a
manifest without one, written before fingerprints existed, is refused too).

Every file is written atomically (:mod:`sdekit.jobs.shard_io`), the shard's
record after the shard.  A shard counts as done only if

* its record is a JSON object with exactly the keys above, whose
  ``record_sha256`` is the sha256 of the canonical JSON of the other fields
  (so the faults, the range and the tensor metadata are covered too);
* the record matches the manifest: shard number, ``[start, stop)``,
  configuration hash, tensor keys, dtypes and shapes (``stop − start`` rows),
  faults a list of ``{"sample_index", "step", "t", ...}`` with distinct
  indices inside ``[start, stop)`` (none under ``on_nonfinite="raise"``);
* the tensor file's sha256 is ``sha256``, it loads with
  ``torch.load(weights_only=True)``, and the loaded tensors have exactly
  those keys, dtypes and shapes, with ``sample_index`` equal to ``start, …, stop − 1``.

Anything else (missing, truncated, corrupt, malformed, killed between the
two writes, a file that is not a tensor file at all) is computed again:
never merged, never a crash.  Results are a deterministic function of the
configuration, so a resumed job ends with the same bytes as an
uninterrupted one.

Trust model: the model, data and conditioning factories named in the
configuration are code you run, with your privileges; the output directory
is data.  The checksums detect corruption (bit rot, truncation, partial
writes, stale files, hand edits that forget a checksum), not tampering:
anyone who can write the directory can also recompute the checksums.
What keeps a hostile shard file from running code is ``weights_only=True``
(a refused file is recomputed); a well-formed hostile shard with valid
checksums and plausible numbers would be merged.  The model fingerprint is
the same kind of check: it tells other weights from the recorded ones, and
anyone who can edit the manifest can change it (see :mod:`sdekit.jobs`).

Test hook: with ``SDEKIT_JOBS_KILL_AFTER_SHARDS=k`` in the environment a
process sends itself SIGKILL right after writing its ``k``-th shard (to
test resumption at a known point; never set it otherwise).
"""

from __future__ import annotations

import glob
import math
import os
import signal
from dataclasses import dataclass, field
from typing import Callable

import torch

from .config import ConfigMismatchError, canonical_json, config_hash, differing_keys
from .distributed import DistContext
from .lock import DirectoryLock, OutputDirectoryBusyError
from .shard_io import create_exclusive, load_tensors, read_json, save_tensors, sha256_bytes, write_json
from .split import shard_ranges, shards_of_rank

KILL_ENV = "SDEKIT_JOBS_KILL_AFTER_SHARDS"


@dataclass
class JobSpec:
    """What a job computes.

    Attributes:
        job: ``"sample"`` or ``"loglik"``.
        config: the configuration (JSON data), see :mod:`sdekit.jobs.config`.
        num_samples, shard_size: the index range ``[0, num_samples)`` and its cut.
        output: file name of the merged tensors (e.g. ``"samples.pt"``).
        compute: ``compute(start, stop) -> (tensors, faults)``: tensors with
            leading dimension ``stop − start`` (``"sample_index"`` among them),
            fault dicts (:class:`sdekit.faults.Fault` fields).
        summarize: ``summarize(merged_tensors, faults) -> dict`` (JSON data).
        tensors: what every shard holds: ``{key: (dtype, trailing_shape)}``,
            e.g. ``{"x": ("float32", [2]), "nfe": ("int64", [])}`` (with
            ``"sample_index": ("int64", [])``); each tensor has ``stop − start`` rows.
    """

    job: str
    config: dict
    num_samples: int
    shard_size: int
    output: str
    compute: Callable
    summarize: Callable
    tensors: dict = field(default_factory=dict)


@dataclass
class JobResult:
    """What :func:`run_job` did.

    Attributes:
        directory: the output directory.
        computed, reused: shard numbers this rank computed / found complete and skipped.
        summary: the summary (rank 0; ``None`` on other ranks).
        faults: every fault of the job (rank 0), as dicts.
        output: path of the merged file (rank 0).
    """

    directory: str
    computed: list = field(default_factory=list)
    reused: list = field(default_factory=list)
    summary: dict | None = None
    faults: list | None = None
    output: str | None = None


def _shard_paths(directory: str, k: int) -> tuple[str, str]:
    base = os.path.join(directory, "shards", f"shard-{k:06d}")
    return base + ".pt", base + ".json"


RECORD_KEYS = frozenset({"shard", "start", "stop", "config_hash", "sha256", "tensors", "faults", "record_sha256"})


def _tensor_meta(spec: JobSpec, start: int, stop: int) -> dict:
    """The ``"tensors"`` field a record of shard ``[start, stop)`` must hold."""
    return {key: {"dtype": dtype, "shape": [stop - start] + list(trailing)}
            for key, (dtype, trailing) in spec.tensors.items()}


def _record_sha256(record: dict) -> str:
    return sha256_bytes(canonical_json({k: v for k, v in record.items() if k != "record_sha256"}).encode())


def _prepare(directory: str, spec: JobSpec, ranges) -> str:
    """Create the manifest (exclusively) or check the existing one; returns the config hash.

    Called by rank 0 with the directory's lock held.
    """
    chash = config_hash(spec.config)
    manifest = {"job": spec.job, "config": spec.config, "config_hash": chash,
                "shards": [list(r) for r in ranges],
                "tensors": {k: [d, list(t)] for k, (d, t) in spec.tensors.items()}}
    path = os.path.join(directory, "manifest.json")
    if not create_exclusive(path, (canonical_json(manifest) + "\n").encode()):
        old = read_json(path)
        if not isinstance(old, dict) or not isinstance(old.get("config"), dict):
            raise ValueError(f"{path} exists but is not a job manifest; refusing to write into {directory!r}")
        ours, theirs = dict(spec.config, job=spec.job), dict(old["config"], job=old.get("job"))
        keys = differing_keys(ours, theirs)
        if keys:
            raise ConfigMismatchError(directory, keys, ours, theirs)
    return chash


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _faults_ok(faults, start: int, stop: int, spec: JobSpec) -> bool:
    if not isinstance(faults, list):
        return False
    if faults and spec.config.get("on_nonfinite") == "raise":
        return False
    seen = set()
    for f in faults:
        if not isinstance(f, dict) or not {"sample_index", "step", "t"} <= set(f):
            return False
        i, step, t = f["sample_index"], f["step"], f["t"]
        if not (_is_int(i) and start <= i < stop and i not in seen and _is_int(step) and step >= 0):
            return False
        if not (isinstance(t, (int, float)) and not isinstance(t, bool) and math.isfinite(t)):
            return False
        seen.add(i)
    return True


def _record_ok(record, spec: JobSpec, k: int, start: int, stop: int, chash: str) -> bool:
    """Whether the shard record is well formed, intact, and belongs to shard ``k`` of this job."""
    if not isinstance(record, dict) or set(record) != RECORD_KEYS:
        return False
    if record["record_sha256"] != _record_sha256(record):
        return False
    if (record["shard"], record["start"], record["stop"], record["config_hash"]) != (k, start, stop, chash):
        return False
    if not isinstance(record["sha256"], str) or record["tensors"] != _tensor_meta(spec, start, stop):
        return False
    return _faults_ok(record["faults"], start, stop, spec)


def _tensors_ok(tensors, spec: JobSpec, start: int, stop: int) -> bool:
    """Whether ``tensors`` are exactly the shard's: keys, dtypes, shapes, ``sample_index``."""
    if not isinstance(tensors, dict) or set(tensors) != set(spec.tensors):
        return False
    for key, meta in _tensor_meta(spec, start, stop).items():
        v = tensors[key]
        if not isinstance(v, torch.Tensor) or str(v.dtype) != "torch." + meta["dtype"]:
            return False
        if list(v.shape) != meta["shape"]:
            return False
    return torch.equal(tensors["sample_index"].cpu(), torch.arange(start, stop, dtype=torch.int64))


def _load_shard(directory: str, spec: JobSpec, k: int, start: int, stop: int, chash: str):
    """``(record, tensors)`` if shard ``k`` is complete and valid (module docstring), else ``None``."""
    pt, meta = _shard_paths(directory, k)
    record = read_json(meta)
    if not _record_ok(record, spec, k, start, stop, chash):
        return None
    tensors = load_tensors(pt, record["sha256"])
    if tensors is None or not _tensors_ok(tensors, spec, start, stop):
        return None
    return record, tensors


def _compute_shard(directory: str, spec: JobSpec, k: int, start: int, stop: int, chash: str):
    """Compute and write shard ``k``; returns ``(record, tensors)``."""
    pt, meta = _shard_paths(directory, k)
    for stale in glob.glob(os.path.join(directory, "shards", f".shard-{k:06d}.*.tmp")):
        os.unlink(stale)  # left by a writer killed mid-write; only this shard's owner writes these
    tensors, faults = spec.compute(start, stop)
    tensors = {key: v.detach().cpu() for key, v in tensors.items()}
    if not _tensors_ok(tensors, spec, start, stop):
        got = {key: (str(v.dtype), list(v.shape)) for key, v in tensors.items()}
        raise RuntimeError(f"shard {k}: computed tensors {got} do not match {_tensor_meta(spec, start, stop)} "
                           f"with sample_index = [{start}, {stop}) in order")
    if not _faults_ok(faults, start, stop, spec):
        raise RuntimeError(f"shard {k}: computed faults {faults!r} are not faults of samples in [{start}, {stop})")
    record = {"shard": k, "start": start, "stop": stop, "config_hash": chash,
              "sha256": save_tensors(pt, tensors), "tensors": _tensor_meta(spec, start, stop), "faults": faults}
    record["record_sha256"] = _record_sha256(record)
    write_json(meta, record)
    return record, tensors


def _take_directory(directory: str, spec: JobSpec, ranges, ctx: DistContext, lock: DirectoryLock) -> str:
    """Rank 0 locks the directory and checks the manifest; every rank learns the outcome.

    Returns the config hash; raises on every rank if rank 0 was refused.
    """
    refusal = None
    if ctx.rank == 0:
        try:
            os.makedirs(os.path.join(directory, "shards"), exist_ok=True)
            lock.acquire()
            _prepare(directory, spec, ranges)
        except Exception as err:  # tell the other ranks (waiting in the broadcast) before raising here
            lock.release()
            if ctx.world_size > 1:
                ctx.broadcast((type(err).__name__, str(err)))
            raise
    refusal = ctx.broadcast(refusal)
    if refusal is not None:
        name, message = refusal
        if name == OutputDirectoryBusyError.__name__:
            raise OutputDirectoryBusyError(message)
        raise ValueError(f"rank 0 refused the job: {message}")
    return config_hash(spec.config)


def run_job(directory: str, spec: JobSpec, ctx: DistContext) -> JobResult:
    """Run (or resume) ``spec`` in ``directory`` on this rank, then merge on rank 0.

    Raises:
        OutputDirectoryBusyError: if another job holds ``directory`` (on every rank).
        ConfigMismatchError: if ``directory`` holds a job with another configuration
            (a ValueError with the same message on the other ranks).
        NonFiniteError: from ``spec.compute`` under ``on_nonfinite="raise"``.
    """
    directory = os.fspath(directory)
    ranges = shard_ranges(spec.num_samples, spec.shard_size)
    lock = DirectoryLock(directory)
    chash = _take_directory(directory, spec, ranges, ctx, lock)
    try:
        result = JobResult(directory)
        kill_after = int(os.environ.get(KILL_ENV, "0"))
        for k in shards_of_rank(len(ranges), ctx.rank, ctx.world_size):
            start, stop = ranges[k]
            if _load_shard(directory, spec, k, start, stop, chash) is not None:
                result.reused.append(k)
                continue
            _compute_shard(directory, spec, k, start, stop, chash)
            result.computed.append(k)
            if kill_after and len(result.computed) >= kill_after:
                os.kill(os.getpid(), signal.SIGKILL)
        ctx.barrier()  # after all of this rank's work; the lock (rank 0's) is held until the merge is written
        if ctx.rank == 0:
            _merge(directory, spec, ranges, chash, result)
        return result
    finally:
        lock.release()


def _merge(directory: str, spec: JobSpec, ranges, chash: str, result: JobResult) -> None:
    """Rank 0: verify every shard (recomputing any that went bad), write the merged file and result.json."""
    records, parts = [], []
    for k, (start, stop) in enumerate(ranges):
        found = _load_shard(directory, spec, k, start, stop, chash)
        if found is None:  # another rank's shard went bad, or this one changed on disk since it was verified
            found = _compute_shard(directory, spec, k, start, stop, chash)
        records.append(found[0])
        parts.append(found[1])
    merged = {key: torch.cat([p[key] for p in parts]) for key in parts[0]}
    faults = [f for r in records for f in r["faults"]]
    out = os.path.join(directory, spec.output)
    sha = save_tensors(out, merged)
    summary = spec.summarize(merged, faults)
    write_json(os.path.join(directory, "result.json"), {
        "job": spec.job, "config_hash": chash, "output": {"file": spec.output, "sha256": sha},
        "shards": [{k: r[k] for k in ("shard", "start", "stop", "sha256")} for r in records],
        "faults": faults, "summary": summary})
    result.summary, result.faults, result.output = summary, faults, out
