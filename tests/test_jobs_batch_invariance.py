"""Per-sample results do not depend on the batch a sample is solved in (the premise of sharded jobs).

Adaptive RK45 (``method="ode"``) controls each sample's steps on its own, so
with a batch-invariant score model a sample's trajectory must be bitwise the
same in a batch of 1, 7 or 64.  The score model here is the exact score of a
Gaussian mixture (row-wise arithmetic only); a ``torch.nn.Linear`` on the CPU
is *not* batch-invariant (a batch of 1 takes a matrix–vector kernel).
"""

import torch

import sdekit
from sdekit.solvers.controller import batch_invariant_pow
from sdekit.testing import example_mixture

SDE = sdekit.VPSDE()
SCORE = example_mixture(torch.float32).score_model(SDE)


def test_pow_does_not_depend_on_the_position_in_the_batch():
    """torch.pow by a scalar rounds the tail of a CPU loop differently; exp(p log x) does not."""
    v = (torch.rand(2048, generator=torch.Generator().manual_seed(0)) * 10) ** 3 + 1e-10
    for p in (0.2, -0.17, 0.04):
        full = batch_invariant_pow(v, p)
        assert torch.allclose(full, v.double().pow(p).float(), rtol=1e-6, atol=0)
        for start in range(0, 2000, 61):
            assert torch.equal(batch_invariant_pow(v[start:start + 7], p), full[start:start + 7])


def _ode(idx, **kw):
    return sdekit.sample(SCORE, SDE, (len(idx), 2), method="ode", seed=11, sample_index=idx,
                         rtol=1e-4, atol=1e-4, **kw)


def test_ode_samples_are_bitwise_batch_invariant():
    full = _ode(torch.arange(64))
    assert bool(torch.isfinite(full.x).all())
    assert len(set(full.nfe.tolist())) > 1  # the samples really take different steps
    for lo, hi in ((37, 38), (20, 27), (0, 16)):
        part = _ode(torch.arange(lo, hi))
        assert torch.equal(part.x, full.x[lo:hi])
        assert torch.equal(part.nfe, full.nfe[lo:hi])


def test_sample_job_output_does_not_depend_on_batch_or_shard_size(tmp_path):
    from jobs_helpers import ODE_SAMPLE, file_bytes
    from sdekit.jobs import run_sample_job

    outs = [run_sample_job(tmp_path / f"b{b}", num_samples=64, shard_size=s, batch_size=b, **ODE_SAMPLE).output
            for b, s in ((1, 16), (7, 16), (64, 64))]
    assert file_bytes(outs[0]) == file_bytes(outs[1]) == file_bytes(outs[2])


def test_likelihood_job_output_does_not_depend_on_batch_size(tmp_path):
    from jobs_helpers import LOGLIK, file_bytes
    from sdekit.jobs import run_likelihood_job

    outs = [run_likelihood_job(tmp_path / f"b{b}", shard_size=24, batch_size=b, **LOGLIK).output for b in (1, 7, 64)]
    assert file_bytes(outs[0]) == file_bytes(outs[1]) == file_bytes(outs[2])


def test_keyed_probes_and_their_argument_errors():
    import pytest

    from sdekit.noise import counter_rademacher

    r = counter_rademacher(3, 5, torch.arange(4000), (5,))
    assert set(r.unique().tolist()) == {-1.0, 1.0}
    assert abs(float(r.mean())) < 5 / (20000 ** 0.5)  # 5 standard errors of a fair ±1 mean
    assert torch.equal(counter_rademacher(3, 5, torch.arange(10, 13), (5,)), r[10:13])
    x = torch.zeros(3, 2)
    with pytest.raises(ValueError, match="either seed or generator"):
        sdekit.log_likelihood(SCORE, SDE, x, seed=1, generator=torch.Generator())
    with pytest.raises(ValueError, match="sample_index needs seed"):
        sdekit.log_likelihood(SCORE, SDE, x, sample_index=torch.arange(3))
    with pytest.raises(ValueError, match=r"sample_index must have shape \(3,\)"):
        sdekit.log_likelihood(SCORE, SDE, x, seed=1, sample_index=torch.arange(4))
