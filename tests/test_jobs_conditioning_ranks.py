"""Two ranks (torchrun, gloo on the CPU) with conditioning give the same bytes as one rank.

Run as a script (``__main__``) under torchrun by the test below: both conditional jobs in the directory given.
"""

import sys

from jobs_helpers import COND_DATA, COND_MODEL, LABELS, file_bytes, run

from sdekit.jobs import run_likelihood_job, run_sample_job

SAMPLE = dict(model=COND_MODEL, shape=[2], seed=3, method="ode", rtol=1e-4, atol=1e-4, cond=LABELS,
              cond_kwargs={"num_classes": 10}, num_samples=15, shard_size=5)
LOGLIK = dict(model=COND_MODEL, data=COND_DATA, data_kwargs={"n": 15}, seed=7, rtol=1e-4, atol=1e-4, cond=LABELS,
              cond_kwargs={"num_classes": 10}, shard_size=5)


def test_two_ranks_with_conditioning_match_one_rank(tmp_path):
    two = run(["-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
               "tests/test_jobs_conditioning_ranks.py", str(tmp_path / "two")])
    assert two.returncode == 0, two.stdout + two.stderr
    assert sorted(line for line in two.stdout.splitlines() if line.startswith("rank computed")) == [
        "rank computed [0, 2] [0, 2]", "rank computed [1] [1]"], two.stdout
    one_s = run_sample_job(tmp_path / "one" / "sample", batch_size=4, **SAMPLE)
    one_l = run_likelihood_job(tmp_path / "one" / "loglik", batch_size=4, **LOGLIK)
    assert file_bytes(tmp_path / "two" / "sample" / "samples.pt") == file_bytes(one_s.output)
    assert file_bytes(tmp_path / "two" / "loglik" / "log_likelihood.pt") == file_bytes(one_l.output)


if __name__ == "__main__":
    out = sys.argv[1]
    a = run_sample_job(out + "/sample", batch_size=64, **SAMPLE)
    b = run_likelihood_job(out + "/loglik", batch_size=64, **LOGLIK)
    print(f"rank computed {a.computed} {b.computed}", flush=True)
