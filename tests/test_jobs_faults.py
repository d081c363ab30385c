"""Non-finite values: reported with sample index, step and t; policy "raise" stops, "mark" excludes from summaries."""

import pytest
import torch

from jobs_helpers import EM_SAMPLE, LOGLIK, ODE_SAMPLE, load
from sdekit.jobs import NonFiniteError, run_likelihood_job, run_sample_job

FAULT = {"fault_t": 0.5}  # NaN score where t < 0.5 and x[:, 0] > 1.5 (sdekit.testing.job_models)


@pytest.mark.parametrize("cfg", [EM_SAMPLE, ODE_SAMPLE, dict(EM_SAMPLE, method="dpmpp_2m")],
                         ids=["euler_maruyama", "ode", "dpmpp_2m"])
def test_sampling_faults_under_both_policies(tmp_path, cfg):
    common = dict(cfg, num_samples=24, shard_size=8, batch_size=5)
    clean = run_sample_job(tmp_path / "clean", **common)
    marked = run_sample_job(tmp_path / "mark", model_kwargs=FAULT, on_nonfinite="mark", **common)
    faults = marked.faults
    bad = [f["sample_index"] for f in faults]
    assert 0 < len(bad) < 24 and bad == sorted(set(bad))
    x_clean, x_mark = load(clean.output)["x"], load(marked.output)["x"]
    assert bool(torch.isnan(x_mark[bad]).all())
    good = [i for i in range(24) if i not in bad]
    assert torch.equal(x_mark[good], x_clean[good])  # the other samples are untouched, bit for bit
    for f in faults:
        assert 0 < f["t"] < 0.5 and f["step"] >= 0
        if cfg["method"] == "euler_maruyama":  # t is the grid time t_i of the step that produced the NaN
            assert f["t"] == pytest.approx(1.0 - f["step"] * (1.0 - 1e-3) / 20, rel=1e-12)
    assert marked.summary["excluded"] == len(bad) and marked.summary["included"] == 24 - len(bad)

    with pytest.raises(NonFiniteError) as err:
        run_sample_job(tmp_path / "raise", model_kwargs=FAULT, on_nonfinite="raise", **common)
    first = faults[0]
    assert (err.value.sample_index, err.value.step, err.value.t) == (first["sample_index"], first["step"], first["t"])
    assert f"sample index {first['sample_index']}" in str(err.value)
    assert not (tmp_path / "raise" / "samples.pt").exists()


def test_likelihood_faults_under_both_policies(tmp_path):
    common = dict(LOGLIK, shard_size=5, batch_size=7)
    clean = run_likelihood_job(tmp_path / "clean", **common)
    kw = dict(model_kwargs={"fault_t": 2.0, "fault_x0": 1.5})  # rows with x[0] > 1.5 fail at once
    marked = run_likelihood_job(tmp_path / "mark", on_nonfinite="mark", **common, **kw)
    data = load(clean.output)
    from sdekit.testing.job_models import mixture_data

    x = mixture_data(24)
    expect_bad = torch.nonzero(x[:, 0] > 1.5).squeeze(1).tolist()
    assert 0 < len(expect_bad) < 24
    assert [f["sample_index"] for f in marked.faults] == expect_bad
    assert all(f["step"] == 0 and f["t"] == pytest.approx(1e-5) for f in marked.faults)
    lp = load(marked.output)["log_prob"]
    good = [i for i in range(24) if i not in expect_bad]
    assert bool(torch.isnan(lp[expect_bad]).all()) and torch.equal(lp[good], data["log_prob"][good])
    s = marked.summary
    assert s["excluded"] == len(expect_bad) and s["included"] == len(good)
    assert s["log_prob_mean"] == pytest.approx(float(data["log_prob"][good].double().mean()), rel=1e-12)
    with pytest.raises(NonFiniteError, match=f"in the likelihood ODE at sample index {expect_bad[0]}, step 0"):
        run_likelihood_job(tmp_path / "raise", on_nonfinite="raise", **common, **kw)
