"""Resumable jobs: killed mid-run and restarted, damaged shards recomputed, foreign configurations refused."""

import hashlib
import json
import os
import signal

import pytest

from jobs_helpers import EM_SAMPLE, LOGLIK, ODE_SAMPLE, file_bytes, run
from sdekit.jobs import ConfigMismatchError, run_likelihood_job, run_sample_job


def _cli_args(job, cfg, out, shard_size, batch_size):
    args = ["-m", "sdekit.jobs", job, str(out), "--model", cfg["model"], "--seed", str(cfg["seed"]),
            "--shard-size", str(shard_size), "--batch-size", str(batch_size),
            "--rtol", str(cfg["rtol"]), "--atol", str(cfg["atol"])]
    if job == "sample":
        return args + ["--shape", "2", "--num-samples", "40", "--method", cfg["method"]]
    return args + ["--data", cfg["data"], "--data-kwargs", json.dumps(cfg["data_kwargs"]), "--probes",
                   str(cfg["probes"]), "--levels", str(cfg["levels"]), "--data-range", "-4", "4"]


@pytest.mark.parametrize("job", ["sample", "loglik"])
def test_killed_job_resumes_to_the_same_bytes_as_an_uninterrupted_run(tmp_path, job):
    """SIGKILL after 2 of 5 shards (test hook), restart: the 2 shards are reused, the result is bitwise identical."""
    cfg, output = (ODE_SAMPLE, "samples.pt") if job == "sample" else (LOGLIK, "log_likelihood.pt")
    shard_size = 8 if job == "sample" else 5
    killed = run(_cli_args(job, cfg, tmp_path / "resumed", shard_size, 3),
                 extra_env={"SDEKIT_JOBS_KILL_AFTER_SHARDS": "2"})
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    shards = tmp_path / "resumed" / "shards"
    assert sorted(p.name for p in shards.glob("*.json")) == ["shard-000000.json", "shard-000001.json"]
    assert not (tmp_path / "resumed" / "result.json").exists()
    before = {p.name: p.stat().st_mtime_ns for p in shards.glob("*.pt")}

    api = run_sample_job if job == "sample" else run_likelihood_job
    kw = dict(num_samples=40) if job == "sample" else {}
    resumed = api(tmp_path / "resumed", shard_size=shard_size, batch_size=3, **cfg, **kw)
    assert resumed.reused == [0, 1] and resumed.computed == [2, 3, 4]
    assert {p: (shards / p).stat().st_mtime_ns for p in before} == before  # not rewritten
    whole = api(tmp_path / "whole", shard_size=shard_size, batch_size=64, **cfg, **kw)
    assert whole.computed == [0, 1, 2, 3, 4]
    assert file_bytes(resumed.output) == file_bytes(whole.output)
    assert resumed.summary == whole.summary and resumed.summary["excluded"] == 0
    assert os.path.basename(whole.output) == output


def test_corrupt_truncated_and_missing_shards_are_recomputed(tmp_path):
    cfg = dict(EM_SAMPLE, num_samples=40, shard_size=8)
    first = run_sample_job(tmp_path, **cfg)
    reference = file_bytes(first.output)
    shards = tmp_path / "shards"
    data = bytearray(file_bytes(shards / "shard-000001.pt"))
    data[len(data) // 2] ^= 0x01  # one flipped bit
    (shards / "shard-000001.pt").write_bytes(bytes(data))
    (shards / "shard-000002.pt").write_bytes(file_bytes(shards / "shard-000002.pt")[:100])  # truncated
    (shards / "shard-000003.pt").unlink()
    (shards / "shard-000004.json").unlink()  # killed between the shard and its record
    (shards / ".shard-000001.pt.abc.tmp").write_bytes(b"partial write")
    (tmp_path / "samples.pt").write_bytes(b"stale")

    again = run_sample_job(tmp_path, batch_size=5, **cfg)
    assert again.reused == [0] and again.computed == [1, 2, 3, 4]
    assert file_bytes(again.output) == reference
    assert not list(shards.glob("*.tmp"))
    result = json.loads((tmp_path / "result.json").read_text())
    assert [s["start"] for s in result["shards"]] == [0, 8, 16, 24, 32]
    assert result["output"]["sha256"] == hashlib.sha256(reference).hexdigest()
    assert [s["sha256"] for s in result["shards"]] == [
        hashlib.sha256(file_bytes(shards / f"shard-00000{k}.pt")).hexdigest() for k in range(5)]


def test_a_different_configuration_is_refused_naming_the_keys(tmp_path):
    cfg = dict(EM_SAMPLE, num_samples=16, shard_size=8)
    run_sample_job(tmp_path, **cfg)
    with pytest.raises(ConfigMismatchError, match="differing keys: seed;") as err:
        run_sample_job(tmp_path, **dict(cfg, seed=6))
    assert err.value.keys == ["seed"]
    with pytest.raises(ConfigMismatchError) as err:
        run_sample_job(tmp_path, **dict(cfg, steps=21, shard_size=4))
    assert err.value.keys == ["shard_size", "steps"]
    with pytest.raises(ConfigMismatchError, match="job"):
        run_likelihood_job(tmp_path, **dict(LOGLIK, shard_size=8))
    same = run_sample_job(tmp_path, batch_size=3, **cfg)  # the batch size is not part of the configuration
    assert same.computed == [] and same.reused == [0, 1]


@pytest.mark.parametrize("kwargs, match", [
    (dict(model="no_colon"), "model must be an import path"),
    (dict(model_kwargs=[1]), "model_kwargs must be a JSON object"),
    (dict(model_kwargs={"x": float("nan")}), "model_kwargs must be JSON data"),
    (dict(on_nonfinite="ignore"), "on_nonfinite"),
    (dict(shard_size=0), "shard_size"),
    (dict(sde="FooSDE"), "sde must be one of"),
    (dict(seed=-1), "seed"),
])
def test_bad_job_arguments_are_named(tmp_path, kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        run_sample_job(tmp_path, **dict(EM_SAMPLE, num_samples=8, shard_size=8, **kwargs))
    assert not (tmp_path / "manifest.json").exists()
