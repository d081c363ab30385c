"""Run under torchrun by tests/test_jobs_distributed.py: both jobs, in the directory given, on every rank."""

import sys

from jobs_helpers import LOGLIK, ODE_SAMPLE
from sdekit.jobs import run_likelihood_job, run_sample_job

out = sys.argv[1]
a = run_sample_job(out + "/sample", num_samples=40, shard_size=8, batch_size=64, **ODE_SAMPLE)
b = run_likelihood_job(out + "/loglik", shard_size=5, batch_size=64, **LOGLIK)
print(f"rank computed sample shards {a.computed} loglik shards {b.computed}", flush=True)
