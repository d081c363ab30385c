"""The job engine shared by the sampling and likelihood jobs: manifest, shards, resume, merge.

Output directory layout::

    manifest.json              {"job", "config", "config_hash", "shards": [[start, stop], ...]}
    shards/shard-000000.pt     tensors of one shard (``torch.save``), keyed by global "sample_index"
    shards/shard-000000.json   {"shard", "start", "stop", "config_hash", "sha256", "faults"}
    <output>.pt                the merged tensors of all shards, in sample-index order (rank 0)
    result.json                {"config_hash", "output", "shards", "faults", "summary"} (rank 0)

Every file is written atomically (:mod:`sdekit.jobs.shard_io`), the shard's
record after the shard, so a shard counts as done only if its record exists,
matches this configuration and index range, and the sha256 of the shard's
bytes equals the recorded one.  Anything else (missing, truncated, corrupt,
killed between the two writes) is computed again.  Results are a
deterministic function of the configuration, so a resumed job ends with the
same bytes as an uninterrupted one.

A directory whose ``manifest.json`` holds another configuration is refused
(:class:`~sdekit.jobs.config.ConfigMismatchError`, naming the differing keys).

Test hook: with ``SDEKIT_JOBS_KILL_AFTER_SHARDS=k`` in the environment a
process sends itself SIGKILL right after writing its ``k``-th shard (to
test resumption at a known point; never set it otherwise).
"""

from __future__ import annotations

import glob
import os
import signal
from dataclasses import dataclass, field
from typing import Callable

import torch

from .config import ConfigMismatchError, config_hash, differing_keys
from .distributed import DistContext
from .shard_io import load_tensors, read_json, save_tensors, sha256_file, write_json
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
    """

    job: str
    config: dict
    num_samples: int
    shard_size: int
    output: str
    compute: Callable
    summarize: Callable


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


def _prepare(directory: str, spec: JobSpec, ranges) -> str:
    """Create the directory and manifest, or check the existing manifest; returns the config hash."""
    os.makedirs(os.path.join(directory, "shards"), exist_ok=True)
    manifest = {"job": spec.job, "config": spec.config, "config_hash": config_hash(spec.config),
                "shards": [list(r) for r in ranges]}
    path = os.path.join(directory, "manifest.json")
    if os.path.exists(path):
        old = read_json(path)
        if not isinstance(old, dict) or "config" not in old:
            raise ValueError(f"{path} exists but is not a job manifest; refusing to write into {directory!r}")
        ours, theirs = dict(spec.config, job=spec.job), dict(old["config"], job=old.get("job"))
        keys = differing_keys(ours, theirs)
        if keys:
            raise ConfigMismatchError(directory, keys, ours, theirs)
    else:  # every rank writes the same bytes; os.replace makes concurrent writers harmless
        write_json(path, manifest)
    return str(manifest["config_hash"])


def _shard_done(directory: str, k: int, start: int, stop: int, chash: str) -> dict | None:
    """The shard's record if the shard is complete and intact, else ``None``."""
    pt, meta = _shard_paths(directory, k)
    record = read_json(meta)
    if not isinstance(record, dict) or record.get("config_hash") != chash:
        return None
    if (record.get("start"), record.get("stop")) != (start, stop):
        return None
    return record if sha256_file(pt) == record.get("sha256") else None


def _compute_shard(directory: str, spec: JobSpec, k: int, start: int, stop: int, chash: str) -> dict:
    pt, meta = _shard_paths(directory, k)
    for stale in glob.glob(os.path.join(directory, "shards", f".shard-{k:06d}.*.tmp")):
        os.unlink(stale)  # left by a writer killed mid-write; only this shard's owner writes these
    tensors, faults = spec.compute(start, stop)
    expect = torch.arange(start, stop, dtype=torch.int64)
    if not torch.equal(tensors["sample_index"].cpu(), expect):
        raise RuntimeError(f"shard {k}: computed sample_index does not cover [{start}, {stop}) in order")
    record = {"shard": k, "start": start, "stop": stop, "config_hash": chash,
              "sha256": save_tensors(pt, tensors), "faults": faults}
    write_json(meta, record)
    return record


def run_job(directory: str, spec: JobSpec, ctx: DistContext) -> JobResult:
    """Run (or resume) ``spec`` in ``directory`` on this rank, then merge on rank 0.

    Raises:
        ConfigMismatchError: if ``directory`` holds a job with another configuration.
        NonFiniteError: from ``spec.compute`` under ``on_nonfinite="raise"``.
    """
    directory = os.fspath(directory)
    ranges = shard_ranges(spec.num_samples, spec.shard_size)
    chash = _prepare(directory, spec, ranges)
    result = JobResult(directory)
    kill_after = int(os.environ.get(KILL_ENV, "0"))
    for k in shards_of_rank(len(ranges), ctx.rank, ctx.world_size):
        start, stop = ranges[k]
        if _shard_done(directory, k, start, stop, chash) is not None:
            result.reused.append(k)
            continue
        _compute_shard(directory, spec, k, start, stop, chash)
        result.computed.append(k)
        if kill_after and len(result.computed) >= kill_after:
            os.kill(os.getpid(), signal.SIGKILL)
    ctx.barrier()  # the only collective: after all of this rank's work
    if ctx.rank == 0:
        _merge(directory, spec, ranges, chash, result)
    return result


def _merge(directory: str, spec: JobSpec, ranges, chash: str, result: JobResult) -> None:
    """Rank 0: verify every shard (recomputing any that went bad), write the merged file and result.json."""
    records, parts = [], []
    for k, (start, stop) in enumerate(ranges):
        found = _shard_done(directory, k, start, stop, chash)
        tensors = None if found is None else load_tensors(_shard_paths(directory, k)[0], found["sha256"])
        if found is None or tensors is None:  # changed on disk since it was verified, or another rank's shard went bad
            found = _compute_shard(directory, spec, k, start, stop, chash)
            tensors = load_tensors(_shard_paths(directory, k)[0], found["sha256"])
            if tensors is None:
                raise RuntimeError(f"shard {k} of {directory!r} changed on disk right after it was written")
        records.append(found)
        parts.append(tensors)
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
