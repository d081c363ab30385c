"""Sharded, resumable sampling and likelihood jobs on torch.distributed.

* :func:`run_sample_job`, :func:`run_likelihood_job` (Python API);
  ``python -m sdekit.jobs sample|loglik ...`` (CLI, also under ``torchrun``).
* Results depend only on the configuration, not on the batch size, the
  number of ranks or interruptions (noise keyed by sample index; see
  :mod:`sdekit.jobs.sample_job` for the batch-invariance requirement on the model).
* Per-sample conditioning by global sample index (``cond=``, ``--cond``):
  :mod:`sdekit.jobs.conditioning`.
* Layout, resume, checksums and the trust model: :mod:`sdekit.jobs.runner`; one job per
  directory at a time: :mod:`sdekit.jobs.lock`; faults: :mod:`sdekit.jobs.fault_policy`.
"""

from ..faults import Fault, NonFiniteError
from .config import ConfigMismatchError
from .likelihood_job import run_likelihood_job
from .lock import OutputDirectoryBusyError
from .runner import JobResult
from .sample_job import run_sample_job

__all__ = ["ConfigMismatchError", "Fault", "JobResult", "NonFiniteError", "OutputDirectoryBusyError",
           "run_likelihood_job", "run_sample_job"]
