"""One job per output directory (lock + exclusive manifest), and shard records that are checksummed and validated.

Two jobs racing on one directory: exactly one runs, the other is refused, nothing is mixed.  A shard
whose record or tensor file was edited, shortened, truncated, stripped of a key, or replaced by a
malicious pickle is computed again (never merged, never a crash), and the result equals a clean run's.
"""

import hashlib
import json
import os
import subprocess
import sys
import threading
import time

import pytest
import torch
from jobs_helpers import EM_SAMPLE, RACE_JOB, ROOT, env, file_bytes

from sdekit.jobs import NonFiniteError, OutputDirectoryBusyError, run_sample_job
from sdekit.jobs.config import canonical_json
from sdekit.jobs.lock import DirectoryLock
from sdekit.jobs.shard_io import create_exclusive

# --- two jobs, one directory ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def race_references(tmp_path_factory):
    """Clean single-job runs of the two racing seeds: seed -> (samples.pt bytes, config_hash)."""
    base = tmp_path_factory.mktemp("race_ref")
    refs = {}
    for seed in (11, 12):
        r = run_sample_job(base / str(seed), **dict(RACE_JOB, seed=seed))
        refs[seed] = (file_bytes(r.output), json.loads((base / str(seed) / "manifest.json").read_text())["config_hash"])
    return refs


def _race_once(out, tmp):
    """Start two job processes (seeds 11, 12) on ``out`` at the same moment; returns [(seed, rc, stdout+stderr)]."""
    go = tmp / "go"
    procs = []
    for seed in (11, 12):
        code = "import sys; from jobs_helpers import race_main; race_main(*sys.argv[1:])"
        procs.append(subprocess.Popen(
            [sys.executable, "-c", code, str(out), str(seed), str(tmp / f"ready-{seed}"), str(go)],
            env=env(), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    deadline = time.monotonic() + 120
    while not all((tmp / f"ready-{s}").exists() for s in (11, 12)):
        assert time.monotonic() < deadline, "racers did not start"
        time.sleep(0.01)
    go.write_text("go")
    return [(seed, p.wait(timeout=150), p.stdout.read()) for seed, p in zip((11, 12), procs)]


def _check_race(out, outcomes, refs):
    """Exactly one job won; the loser was refused; every file in ``out`` belongs to the winner.  Returns the loser's error type."""
    won = [(s, text) for s, rc, text in outcomes if rc == 0]
    lost = [(s, rc, text) for s, rc, text in outcomes if rc != 0]
    assert len(won) == 1 and len(lost) == 1, outcomes
    (seed, text), (_, rc, loser) = won[0], lost[0]
    assert f"OK {seed}" in text
    assert rc == 3, loser  # refused cleanly, not a crash
    kind = loser.split("REFUSED ", 1)[1].split(":", 1)[0]
    assert kind in ("OutputDirectoryBusyError", "ConfigMismatchError"), loser
    if kind == "OutputDirectoryBusyError":
        assert str(out) in loser and "pid " in loser and "host " in loser, loser
    ref_bytes, ref_hash = refs[seed]
    manifest = json.loads((out / "manifest.json").read_text())
    result = json.loads((out / "result.json").read_text())
    assert manifest["config"]["seed"] == seed and manifest["config_hash"] == ref_hash
    assert result["config_hash"] == ref_hash
    records = [json.loads(p.read_text()) for p in sorted((out / "shards").glob("shard-*.json"))]
    assert len(records) == 6 and {r["config_hash"] for r in records} == {ref_hash}
    assert file_bytes(out / "samples.pt") == ref_bytes
    assert result["output"]["sha256"] == hashlib.sha256(ref_bytes).hexdigest()
    assert not (out / "job.lock").read_text()  # the winner released the lock and cleared its record
    return f"seed {seed} won, loser: {kind}"


def _race_trials(tmp_path, refs, trials):
    kinds = []
    for trial in range(trials):
        tmp = tmp_path / f"trial{trial}"
        tmp.mkdir()
        kinds.append(_check_race(tmp / "out", _race_once(tmp / "out", tmp), refs))
    print(f"race outcomes over {trials} trials: {kinds}")
    return kinds


def test_two_jobs_racing_on_one_directory(tmp_path, race_references):
    _race_trials(tmp_path, race_references, 3)


@pytest.mark.slow
def test_two_jobs_racing_on_one_directory_many_trials(tmp_path, race_references):
    _race_trials(tmp_path, race_references, 20)


def test_a_held_lock_refuses_a_job_naming_directory_and_holder(tmp_path):
    holder = DirectoryLock(str(tmp_path))
    holder.acquire()
    try:
        with pytest.raises(OutputDirectoryBusyError, match=f"pid {os.getpid()} on host") as err:
            run_sample_job(tmp_path, **dict(EM_SAMPLE, num_samples=8, shard_size=4))
        assert repr(str(tmp_path)) in str(err.value)
        assert not (tmp_path / "manifest.json").exists()  # refused before touching the manifest
    finally:
        holder.release()
    done = run_sample_job(tmp_path, **dict(EM_SAMPLE, num_samples=8, shard_size=4))
    assert done.computed == [0, 1]


def test_the_lock_is_released_when_the_job_raises(tmp_path):
    with pytest.raises(NonFiniteError):
        run_sample_job(tmp_path, model_kwargs={"fault_t": 0.5}, on_nonfinite="raise",
                       **dict(EM_SAMPLE, num_samples=24, shard_size=8))
    lock = DirectoryLock(str(tmp_path))
    lock.acquire()  # would raise OutputDirectoryBusyError if the failed job still held it
    lock.release()


def test_manifest_creation_is_exclusive_under_a_race(tmp_path):
    path = str(tmp_path / "manifest.json")
    start, wins = threading.Barrier(8), []

    def racer(i):
        start.wait()
        if create_exclusive(path, f"writer {i}\n".encode() * 1000):
            wins.append(i)

    threads = [threading.Thread(target=racer, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(wins) == 1
    assert file_bytes(path) == f"writer {wins[0]}\n".encode() * 1000
    assert os.listdir(tmp_path) == ["manifest.json"]  # no temporary file left behind


# --- damaged shards -------------------------------------------------------------------------------------

DAMAGE_JOB = dict(EM_SAMPLE, num_samples=30, shard_size=10, model_kwargs={"fault_t": 0.5}, on_nonfinite="mark")


def _reseal(record):
    """Recompute the record's checksum, as a careful hand edit would (so only validation can catch it)."""
    body = {k: v for k, v in record.items() if k != "record_sha256"}
    record["record_sha256"] = hashlib.sha256(canonical_json(body).encode()).hexdigest()
    return record


def _save_resealed(shards, record, tensors):
    """Write ``tensors`` as shard 1's file and a record whose checksums both match the new file."""
    torch.save(tensors, shards / "shard-000001.pt")
    record["sha256"] = hashlib.sha256(file_bytes(shards / "shard-000001.pt")).hexdigest()
    (shards / "shard-000001.json").write_text(json.dumps(_reseal(record)))


class _Bomb:
    """Unpickling this runs ``os.system(cmd)``."""

    def __init__(self, cmd):
        self.cmd = cmd

    def __reduce__(self):
        return os.system, (self.cmd,)


def _damage(kind, shards, tmp_path):
    record = json.loads((shards / "shard-000001.json").read_text())
    tensors = torch.load(shards / "shard-000001.pt", weights_only=True)
    if kind == "faults_edited":  # a hand edit of the faults, checksum left alone
        record["faults"] = [] if record["faults"] else [{"sample_index": 10, "step": 3, "t": 0.4}]
        (shards / "shard-000001.json").write_text(json.dumps(record))
    elif kind == "fault_out_of_range":
        record["faults"] = record["faults"] + [{"sample_index": 25, "step": 3, "t": 0.4}]
        (shards / "shard-000001.json").write_text(json.dumps(_reseal(record)))
    elif kind == "duplicate_fault":
        record["faults"] = record["faults"] + [{"sample_index": 12, "step": 3, "t": 0.4}] * 2
        (shards / "shard-000001.json").write_text(json.dumps(_reseal(record)))
    elif kind == "short_x":  # 5 rows of x for 10 indices, both checksums updated
        _save_resealed(shards, record, dict(tensors, x=tensors["x"][:5]))
    elif kind == "short_x_meta_too":  # ... and the record's tensor metadata edited to match
        record["tensors"]["x"]["shape"] = [5, 2]
        _save_resealed(shards, record, dict(tensors, x=tensors["x"][:5]))
    elif kind == "x_float64":
        _save_resealed(shards, record, dict(tensors, x=tensors["x"].double()))
    elif kind == "missing_nfe":
        _save_resealed(shards, record, {k: v for k, v in tensors.items() if k != "nfe"})
    elif kind == "shifted_sample_index":
        _save_resealed(shards, record, dict(tensors, sample_index=tensors["sample_index"] + 1))
    elif kind == "missing_record_key":
        del record["faults"]
        (shards / "shard-000001.json").write_text(json.dumps(_reseal(record)))
    elif kind == "faults_not_a_list":
        record["faults"] = {"sample_index": 12}
        (shards / "shard-000001.json").write_text(json.dumps(_reseal(record)))
    elif kind == "malformed_json":
        (shards / "shard-000001.json").write_text('{"shard": 1, "start": 10, "stop"')
    elif kind == "record_not_an_object":
        (shards / "shard-000001.json").write_text("[1, 10, 20]")
    elif kind == "other_shards_record":  # shard 2's files copied over shard 1's
        for ext in ("pt", "json"):
            (shards / f"shard-000001.{ext}").write_bytes(file_bytes(shards / f"shard-000002.{ext}"))
    elif kind == "truncated_resealed":
        data = file_bytes(shards / "shard-000001.pt")[:200]
        (shards / "shard-000001.pt").write_bytes(data)
        record["sha256"] = hashlib.sha256(data).hexdigest()
        (shards / "shard-000001.json").write_text(json.dumps(_reseal(record)))
    elif kind == "not_a_torch_file":
        (shards / "shard-000001.pt").write_bytes(b"\x80\x04K\x01.")  # pickle of the int 1
        record["sha256"] = hashlib.sha256(b"\x80\x04K\x01.").hexdigest()
        (shards / "shard-000001.json").write_text(json.dumps(_reseal(record)))
    elif kind == "pickle_bomb":
        marker = tmp_path / "BOMB_WENT_OFF"
        _save_resealed(shards, record, {"sample_index": _Bomb(f"touch '{marker}'")})
        return marker
    else:
        raise ValueError(kind)
    return None


KINDS = ["faults_edited", "fault_out_of_range", "duplicate_fault", "short_x", "short_x_meta_too", "x_float64",
         "missing_nfe", "shifted_sample_index", "missing_record_key", "faults_not_a_list", "malformed_json",
         "record_not_an_object", "other_shards_record", "truncated_resealed", "not_a_torch_file", "pickle_bomb"]


@pytest.fixture(scope="module")
def clean_damage_run(tmp_path_factory):
    base = tmp_path_factory.mktemp("clean")
    r = run_sample_job(base, **DAMAGE_JOB)
    assert r.faults and any(10 <= f["sample_index"] < 20 for f in r.faults)  # shard 1 has faults to edit
    return file_bytes(r.output), r.summary, json.loads((base / "result.json").read_text())


@pytest.mark.parametrize("kind", KINDS)
def test_a_damaged_shard_is_recomputed_never_merged(tmp_path, kind, clean_damage_run):
    clean_bytes, clean_summary, clean_result = clean_damage_run
    out = tmp_path / "job"
    first = run_sample_job(out, **DAMAGE_JOB)
    assert first.computed == [0, 1, 2]
    shards = out / "shards"
    marker = _damage(kind, shards, tmp_path)
    (out / "samples.pt").unlink()
    (out / "result.json").unlink()

    again = run_sample_job(out, batch_size=3, **DAMAGE_JOB)
    assert again.computed == [1] and again.reused == [0, 2]
    assert file_bytes(again.output) == clean_bytes
    assert again.summary == clean_summary
    assert json.loads((out / "result.json").read_text()) == clean_result
    record = json.loads((shards / "shard-000001.json").read_text())
    assert record["record_sha256"] == _reseal(dict(record))["record_sha256"]
    assert [f["sample_index"] for f in record["faults"]] == [
        f["sample_index"] for f in clean_result["faults"] if 10 <= f["sample_index"] < 20]
    if marker is not None:
        assert not marker.exists(), "the job executed code from a shard file"
        # the bomb is real: loading it without weights_only runs the command (so the check above can fail)
        torch.save({"sample_index": _Bomb(f"touch '{marker}'")}, tmp_path / "bomb.pt")
        torch.load(tmp_path / "bomb.pt", weights_only=False)
        assert marker.exists()


def test_a_damaged_shard_of_a_finished_job_is_recomputed_at_merge_time(tmp_path, clean_damage_run, monkeypatch):
    """A shard that goes bad after its rank checked it (between the rank loop and the merge) is recomputed by the merge."""
    from sdekit.jobs import runner

    clean_bytes, clean_summary, _ = clean_damage_run
    run_sample_job(tmp_path, **DAMAGE_JOB)
    real_barrier = runner.DistContext.barrier

    def barrier_then_damage(self):
        real_barrier(self)
        (tmp_path / "shards" / "shard-000002.json").write_text("{")

    monkeypatch.setattr(runner.DistContext, "barrier", barrier_then_damage)
    again = run_sample_job(tmp_path, **DAMAGE_JOB)
    assert again.reused == [0, 1, 2]
    assert file_bytes(again.output) == clean_bytes and again.summary == clean_summary
    assert json.loads((tmp_path / "shards" / "shard-000002.json").read_text())["shard"] == 2


def test_every_rank_of_a_torchrun_job_is_refused_when_the_directory_is_busy(tmp_path):
    """Rank 0 takes the lock for its job; when it is refused, the other rank raises too (no hang, no shards)."""
    from jobs_helpers import run

    (tmp_path / "sample").mkdir()
    holder = DirectoryLock(str(tmp_path / "sample"))
    holder.acquire()
    try:
        two = run(["-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                   "tests/jobs_two_jobs.py", str(tmp_path)])
    finally:
        holder.release()
    text = two.stdout + two.stderr
    assert two.returncode != 0
    assert text.count("OutputDirectoryBusyError: output directory") >= 2, text  # rank 0 and rank 1
    assert f"pid {os.getpid()}" in text
    assert not (tmp_path / "sample" / "manifest.json").exists()
    assert not list((tmp_path / "sample").glob("shards/*"))
