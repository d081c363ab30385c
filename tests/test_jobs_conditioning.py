"""Jobs with per-sample conditioning by global sample index (``cond=`` / ``--cond``, sdekit.jobs.conditioning).

The model is the exact score of x | y ~ N(mean(y), 0.25 I) (elementwise, so
batch-invariant); the labels come from ``class_labels`` (y = i mod 10) or from
rows of a tensor file.
"""

import json
import signal

import pytest
import torch
from jobs_helpers import (
    COND_DATA,
    COND_MODEL,
    LABELS,
    file_bytes,
    label_gaussian_data,
    label_gaussian_log_prob,
    label_gaussian_score,
    load,
    run,
)

import sdekit
from sdekit.jobs import ConfigMismatchError, run_likelihood_job, run_sample_job
from sdekit.jobs.conditioning import class_labels, tensor_rows

SDE = sdekit.VPSDE()
SCORE = label_gaussian_score()
TEN = {"num_classes": 10}
EM = dict(model=COND_MODEL, shape=[2], seed=5, method="euler_maruyama", steps=20, cond=LABELS, cond_kwargs=TEN)
ODE = dict(model=COND_MODEL, shape=[2], seed=3, method="ode", rtol=1e-4, atol=1e-4, cond=LABELS, cond_kwargs=TEN)
LL = dict(model=COND_MODEL, data=COND_DATA, data_kwargs={"n": 12}, seed=7, probes=1, rtol=1e-4, atol=1e-4,
          cond=LABELS, cond_kwargs=TEN)


def _uncond(cfg):
    return {k: v for k, v in cfg.items() if k not in ("cond", "cond_kwargs")}


@pytest.mark.parametrize("cfg", [EM, ODE], ids=["euler_maruyama", "ode"])
def test_each_sample_is_sdekit_sample_with_its_index_and_its_conditioning(tmp_path, cfg):
    """(a) sample i of the job == sdekit.sample(sample_index=[i], model_kwargs={"y": [i mod 10]}), bit for bit."""
    job = run_sample_job(tmp_path / "c", num_samples=12, shard_size=5, batch_size=4, **cfg)
    out = load(job.output)
    solver = {k: cfg[k] for k in ("method", "seed", "steps", "rtol", "atol") if k in cfg}
    for i in range(12):
        one = sdekit.sample(SCORE, SDE, (1, 2), sample_index=torch.tensor([i]),
                            model_kwargs={"y": torch.tensor([i % 10])}, **solver)
        assert torch.equal(out["x"][i:i + 1], one.x), i
        assert torch.equal(out["nfe"][i:i + 1], one.nfe), i
    # the conditioning really reaches the model: without it every sample differs, and the class means show
    plain = load(run_sample_job(tmp_path / "u", num_samples=12, shard_size=12, **_uncond(cfg)).output)
    assert not torch.isclose(plain["x"], out["x"]).all(dim=1).any()
    assert torch.equal(out["sample_index"], torch.arange(12))
    assert float(out["x"][:5, 0].mean()) < -0.5 < 0.5 < float(out["x"][5:10, 0].mean())


def test_conditional_output_does_not_depend_on_batch_or_shard_size(tmp_path):
    """(b) same bytes for batch/shard sizes (1, 5), (4, 12), (12, 12), (7, 3) with cond (adaptive ODE)."""
    outs = [run_sample_job(tmp_path / f"b{b}s{s}", num_samples=12, shard_size=s, batch_size=b, **ODE).output
            for b, s in ((1, 5), (4, 12), (12, 12), (7, 3))]
    assert len({file_bytes(o) for o in outs}) == 1
    assert len(set(load(outs[0])["nfe"].tolist())) > 1  # the samples take different steps


def test_labels_from_a_tensor_file_match_class_labels(tmp_path):
    """tensor_rows (labels stored in a file, with sha256 and offset) gives the same bytes as class_labels."""
    from sdekit.jobs.shard_io import sha256_file

    path = str(tmp_path / "labels.pt")
    torch.save({"y": torch.remainder(torch.arange(-3, 20), 10)}, path)  # row r holds label (r - 3) mod 10
    files = dict(cond="sdekit.jobs.conditioning:tensor_rows",
                 cond_kwargs={"path": path, "sha256": sha256_file(path), "offset": 3})
    common = dict(_uncond(EM), num_samples=12, shard_size=5, batch_size=4)
    a = run_sample_job(tmp_path / "labels", **common, cond=LABELS, cond_kwargs=TEN)
    b = run_sample_job(tmp_path / "file", **common, **files)
    assert file_bytes(a.output) == file_bytes(b.output)

    with pytest.raises(ValueError, match=r"sample index 20 needs row 23 of .*labels\.pt.*which has 23 rows"):
        run_sample_job(tmp_path / "too_many", **dict(common, num_samples=21), **files)
    torch.save({"y": torch.zeros(23, dtype=torch.int64)}, path)
    with pytest.raises(ValueError, match="tensor_rows: .* has sha256 .*the file changed"):
        run_sample_job(tmp_path / "file", **common, **files)


def test_killed_conditional_job_resumes_and_other_conditioning_is_refused(tmp_path):
    """(c) CLI run with --cond killed after 2 of 3 shards; resume reuses them and ends with the same bytes."""
    out = tmp_path / "resumed"
    args = ["-m", "sdekit.jobs", "sample", str(out), "--model", COND_MODEL, "--shape", "2", "--num-samples", "15",
            "--shard-size", "5", "--batch-size", "3", "--seed", "3", "--method", "ode", "--rtol", "1e-4",
            "--atol", "1e-4", "--cond", LABELS, "--cond-kwargs", json.dumps(TEN)]
    killed = run(args, extra_env={"SDEKIT_JOBS_KILL_AFTER_SHARDS": "2"})
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["config"]["cond"] == {"factory": LABELS, "kwargs": TEN}

    resumed = run_sample_job(out, num_samples=15, shard_size=5, batch_size=15, **ODE)
    assert resumed.reused == [0, 1] and resumed.computed == [2]
    whole = run_sample_job(tmp_path / "whole", num_samples=15, shard_size=5, batch_size=4, **ODE)
    assert file_bytes(resumed.output) == file_bytes(whole.output)
    again = run_sample_job(out, num_samples=15, shard_size=5, batch_size=2, **ODE)
    assert again.computed == [] and again.reused == [0, 1, 2]

    for changed in (dict(ODE, cond_kwargs={"num_classes": 9}), dict(ODE, cond_kwargs=dict(TEN, key="label")),
                    _uncond(ODE)):
        with pytest.raises(ConfigMismatchError, match="differing keys: cond;") as err:
            run_sample_job(out, num_samples=15, shard_size=5, **changed)
        assert err.value.keys == ["cond"]
    plain = tmp_path / "plain"
    run_sample_job(plain, num_samples=5, shard_size=5, **_uncond(EM))
    assert "cond" not in json.loads((plain / "manifest.json").read_text())["config"]  # unconditional hash unchanged
    with pytest.raises(ConfigMismatchError, match="cond"):
        run_sample_job(plain, num_samples=5, shard_size=5, **EM)


def test_likelihood_job_scores_each_row_with_the_condition_of_its_index(tmp_path):
    """(d) per row == log_likelihood(sample_index=[i], model_kwargs={"y": [i mod 10]}); close to the exact density."""
    job = run_likelihood_job(tmp_path / "c", shard_size=5, batch_size=4, **LL)
    out = load(job.output)
    x = label_gaussian_data(12)
    solver = {k: LL[k] for k in ("seed", "probes", "rtol", "atol")}
    for i in range(12):
        one = sdekit.log_likelihood(SCORE, SDE, x[i:i + 1], sample_index=torch.tensor([i]),
                                    model_kwargs={"y": torch.tensor([i % 10])}, **solver)
        assert torch.equal(out["log_prob"][i:i + 1], one.log_prob), i
        assert torch.equal(out["nfe"][i:i + 1], one.nfe), i
    y = torch.remainder(torch.arange(12), 10)
    exact = label_gaussian_log_prob(x, y)
    assert torch.allclose(out["log_prob"].double(), exact, atol=1e-3, rtol=0)
    wrong = label_gaussian_log_prob(x, torch.remainder(y + 1, 10))
    assert ((out["log_prob"].double() - wrong) > 0.1).all()  # the right label, not a neighbour's

    plain = run_likelihood_job(tmp_path / "u", shard_size=12, **_uncond(LL))
    lp_plain = load(plain.output)["log_prob"].double()
    assert torch.allclose(lp_plain, label_gaussian_log_prob(x, None), atol=1e-3, rtol=0)
    assert ((out["log_prob"].double() - lp_plain).abs() > 1e-3).all()  # every row sees its label
    assert job.summary["log_prob_mean"] > plain.summary["log_prob_mean"] + 1.0
    with pytest.raises(ConfigMismatchError, match="differing keys: cond;"):
        run_likelihood_job(tmp_path / "c", shard_size=5, **dict(LL, cond_kwargs={"num_classes": 5}))


@pytest.mark.parametrize("kind, err, match", [
    ("short", ValueError, (r"conditioning factory 'jobs_helpers:bad_cond', called with sample indices "
                           r"\[0, 1\) \(b=1\): model_kwargs\['y'\] must have the batch as leading dimension, "
                           r"\(1, \.\.\.\), got shape \(0,\)")),
    ("not_mapping", TypeError, "conditioning factory 'jobs_helpers:bad_cond'.*must return a mapping .* got Tensor"),
    ("not_callable", TypeError, "conditioning factory 'jobs_helpers:bad_cond' must return a callable .* got int"),
])
def test_a_conditioner_with_the_wrong_output_fails_before_writing(tmp_path, kind, err, match):
    """(e) the trial call on index 0 names the factory; nothing is written."""
    for job, cfg in ((run_sample_job, dict(_uncond(EM), num_samples=8)), (run_likelihood_job, _uncond(LL))):
        with pytest.raises(err, match=match):
            job(tmp_path, shard_size=4, cond="jobs_helpers:bad_cond", cond_kwargs={"kind": kind}, **cfg)
        assert not (tmp_path / "manifest.json").exists()


def test_a_conditioner_going_wrong_later_names_the_batch(tmp_path):
    """(e) wrong leading dim from index 4 on: shard 0 is written, the error names the indices [4, 8)."""
    with pytest.raises(ValueError, match=r"'jobs_helpers:bad_cond', called with sample indices \[4, 8\) \(b=4\): "
                                         r"model_kwargs\['y'\] must have .*\(4, \.\.\.\), got shape \(3,\)"):
        run_sample_job(tmp_path, num_samples=8, shard_size=4, batch_size=4, cond="jobs_helpers:bad_cond",
                       cond_kwargs={"kind": "late_short"}, **_uncond(EM))
    assert sorted(p.name for p in (tmp_path / "shards").glob("*.json")) == ["shard-000000.json"]


@pytest.mark.parametrize("kwargs, err, match", [
    (dict(cond="no_colon"), ValueError, "cond must be an import path"),
    (dict(cond=None, cond_kwargs={"num_classes": 3}), ValueError, "cond_kwargs given without cond"),
    (dict(cond_kwargs=[3]), TypeError, "cond_kwargs must be a JSON object"),
    (dict(cond_kwargs={"num_classes": float("inf")}), ValueError, "cond_kwargs must be JSON data"),
    (dict(cond="sdekit.jobs.conditioning:nope"), AttributeError, "cond factory .* has no 'nope'"),
    (dict(cond_kwargs={"num_classes": 0}), ValueError, "num_classes"),
])
def test_bad_conditioning_arguments_are_named(tmp_path, kwargs, err, match):
    with pytest.raises(err, match=match):
        run_sample_job(tmp_path, **dict(EM, num_samples=4, shard_size=4, **kwargs))
    assert not (tmp_path / "manifest.json").exists()


def test_builtin_factories_and_the_cli_flags(tmp_path):
    labels = class_labels(4, key="class_labels")
    assert torch.equal(labels(torch.tensor([0, 5, 11]))["class_labels"], torch.tensor([0, 1, 3]))
    torch.save(torch.arange(6.0).reshape(3, 2), tmp_path / "one.pt")
    rows = tensor_rows(str(tmp_path / "one.pt"), key="emb")(torch.tensor([2, 0]))
    assert torch.equal(rows["emb"], torch.tensor([[4.0, 5.0], [0.0, 1.0]]))
    with pytest.raises(ValueError, match="holds one tensor; key must name"):
        tensor_rows(str(tmp_path / "one.pt"))
    torch.save({"a": torch.zeros(3), "b": torch.zeros(4)}, tmp_path / "two.pt")
    with pytest.raises(ValueError, match="must share a leading dimension N"):
        tensor_rows(str(tmp_path / "two.pt"))

    from sdekit.jobs.cli import parser

    args = parser().parse_args(["loglik", "o", "--model", "m:f", "--data", "d:g", "--shard-size", "2", "--seed", "1",
                                "--cond", "c:h", "--cond-kwargs", '{"num_classes": 10}'])
    assert (args.cond, args.cond_kwargs) == ("c:h", {"num_classes": 10})
    assert parser().parse_args(["sample", "o", "--model", "m:f", "--shape", "2", "--num-samples", "3",
                                "--shard-size", "2", "--seed", "1"]).cond is None
