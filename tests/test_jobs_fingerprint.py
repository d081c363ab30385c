"""Model fingerprints in the job configuration: retrained weights refused, same weights resume, model_version."""

import json

import pytest
import torch
from jobs_helpers import DATA, MODEL, DiagonalEpsNet, file_bytes, save_eps_net

import sdekit
from sdekit.jobs import ConfigMismatchError, cli, model_fingerprint, run_likelihood_job, run_sample_job
from sdekit.jobs.fingerprint import fingerprint_entry

NET_MODEL = "jobs_helpers:eps_net_score"
JOB = dict(shape=[2], seed=1, method="euler_maruyama", steps=5, num_samples=8, shard_size=4, batch_size=4)


def _job(ckpt, **kw):
    return dict(JOB, model=NET_MODEL, model_kwargs={"path": str(ckpt)}, **kw)


def _manifest(directory):
    return json.loads((directory / "manifest.json").read_text())


def test_retrained_weights_behind_the_same_factory_are_refused_and_same_weights_resume(tmp_path):
    ckpt, out = tmp_path / "net.pt", tmp_path / "out"
    save_eps_net(ckpt, scale=0.5)
    first = run_sample_job(out, **_job(ckpt))
    assert first.computed == [0, 1]
    fp = _manifest(out)["config"]["model_fingerprint"]
    net = DiagonalEpsNet()
    net.load_state_dict(torch.load(ckpt, weights_only=True))
    assert fp == "sha256:" + model_fingerprint(net)
    reference = file_bytes(first.output)

    save_eps_net(ckpt, scale=0.5 + 2**-20)  # "retrained": same path, same factory and kwargs, one weight moved
    with pytest.raises(ConfigMismatchError, match=r"model fingerprint differs.*differing keys: model_fingerprint;") \
            as info:
        run_sample_job(out, **_job(ckpt))
    assert info.value.keys == ["model_fingerprint"] and fp in str(info.value)
    # the likelihood job checks it the same way
    lik = dict(model=NET_MODEL, model_kwargs={"path": str(ckpt)}, data=DATA, data_kwargs={"n": 4}, seed=0,
               shard_size=4)
    run_likelihood_job(tmp_path / "ll", **lik)
    save_eps_net(ckpt, scale=0.25)
    with pytest.raises(ConfigMismatchError, match="model fingerprint differs"):
        run_likelihood_job(tmp_path / "ll", **lik)

    save_eps_net(ckpt, scale=0.5)  # the original weights again (bytes of a fresh save): resume reuses everything
    again = run_sample_job(out, **_job(ckpt))
    assert again.reused == [0, 1] and again.computed == []
    assert file_bytes(again.output) == reference


def test_model_version_is_used_instead_of_the_weights(tmp_path):
    ckpt, out = tmp_path / "net.pt", tmp_path / "out"
    save_eps_net(ckpt, scale=0.5)
    run_sample_job(out, **_job(ckpt), model_version="run-7")
    assert _manifest(out)["config"]["model_fingerprint"] == "version:run-7"
    save_eps_net(ckpt, scale=0.75)  # other weights, same version string: the user vouches; shards reused
    assert run_sample_job(out, **_job(ckpt), model_version="run-7").reused == [0, 1]
    with pytest.raises(ConfigMismatchError, match=r"'version:run-7'.*'version:run-8'"):
        run_sample_job(out, **_job(ckpt), model_version="run-8")
    with pytest.raises(ConfigMismatchError, match="model_fingerprint"):  # no version: the hash, which differs
        run_sample_job(out, **_job(ckpt))
    # the command line's --model-version is the same argument
    args = ["sample", str(out), "--model", NET_MODEL, "--model-kwargs", json.dumps({"path": str(ckpt)}),
            "--shape", "2", "--num-samples", "8", "--shard-size", "4", "--batch-size", "4", "--seed", "1",
            "--steps", "5", "--model-version", "run-7"]
    assert cli.parser().parse_args(args).model_version == "run-7"
    assert cli.main(args) == 0
    with pytest.raises(TypeError, match="model_version must be None or a string"):
        run_sample_job(tmp_path / "bad", **_job(ckpt), model_version=7)
    with pytest.raises(ValueError, match="model_version must be a non-empty string"):
        run_sample_job(tmp_path / "bad", **_job(ckpt), model_version=" ")


def test_plain_callable_is_unfingerprinted_and_resumes(tmp_path):
    kw = dict(JOB, model=MODEL)
    first = run_sample_job(tmp_path, **kw)
    assert _manifest(tmp_path)["config"]["model_fingerprint"] == "unfingerprinted"
    assert run_sample_job(tmp_path, **kw).reused == [0, 1] and first.computed == [0, 1]
    from sdekit.testing.job_models import mixture_score

    assert model_fingerprint(mixture_score()) is None
    assert fingerprint_entry(mixture_score(), None) == "unfingerprinted"
    assert fingerprint_entry(mixture_score(), "v2") == "version:v2"  # a version fingerprints any callable


def test_manifest_of_a_version_without_fingerprints_is_refused(tmp_path):
    run_sample_job(tmp_path, **dict(JOB, model=MODEL))
    manifest = _manifest(tmp_path)
    del manifest["config"]["model_fingerprint"]
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ConfigMismatchError, match="written by an sdekit without model fingerprints") as info:
        run_sample_job(tmp_path, **dict(JOB, model=MODEL))
    assert info.value.keys == ["model_fingerprint"]


def test_fingerprint_is_the_state_dict_through_adapters_and_wrappers():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.BatchNorm1d(3))
    fp = model_fingerprint(net)
    assert len(fp) == 64 and fp == model_fingerprint(net)
    same = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.BatchNorm1d(3))
    same.load_state_dict(net.state_dict())
    assert model_fingerprint(same) == fp  # a separate object with the same weights
    sde = sdekit.VPSDE()
    assert model_fingerprint(sdekit.score_from_epsilon(net, sde)) == fp
    assert model_fingerprint(sdekit.score_models.checked_score(sdekit.score_from_x0(net, sde))) == fp

    def closure(x, t):
        return net(x)

    assert model_fingerprint(closure) == fp
    assert model_fingerprint(net.double()) != fp  # dtype is part of it
    net.float()
    assert model_fingerprint(net) == fp
    net[1].running_mean[0] += 1.0  # buffers count too
    assert model_fingerprint(net) != fp
