"""Two ranks (torchrun, gloo on the CPU) give the same bytes as one rank, for both jobs."""

import json
import re

from jobs_helpers import LOGLIK, ODE_SAMPLE, file_bytes, run
from sdekit.jobs import run_likelihood_job, run_sample_job


def test_two_ranks_match_one_rank(tmp_path):
    two = run(["-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
               "tests/jobs_two_jobs.py", str(tmp_path / "two")])
    assert two.returncode == 0, two.stdout + two.stderr
    # the ranks split the shards round robin: rank 0 takes 0, 2, 4; rank 1 takes 1, 3
    lines = sorted(re.findall(r"rank computed .*", two.stdout))
    assert lines == ["rank computed sample shards [0, 2, 4] loglik shards [0, 2, 4]",
                     "rank computed sample shards [1, 3] loglik shards [1, 3]"], two.stdout

    one_s = run_sample_job(tmp_path / "one" / "sample", num_samples=40, shard_size=8, batch_size=7, **ODE_SAMPLE)
    one_l = run_likelihood_job(tmp_path / "one" / "loglik", shard_size=5, batch_size=7, **LOGLIK)
    for job, one in (("sample", one_s), ("loglik", one_l)):
        assert file_bytes(tmp_path / "two" / job / one.output.split("/")[-1]) == file_bytes(one.output)
        result = json.loads((tmp_path / "two" / job / "result.json").read_text())
        assert result["summary"] == one.summary
    assert one_l.summary["included"] == 24 and one_l.summary["bits_per_dim"] is not None
