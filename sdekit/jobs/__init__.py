"""Sharded, resumable sampling and likelihood jobs on torch.distributed.

* :func:`run_sample_job`, :func:`run_likelihood_job` (Python API);
  ``python -m sdekit.jobs sample|loglik ...`` (CLI, also under ``torchrun``).
* Results depend only on the configuration, not on the batch size, the
  number of ranks or interruptions (noise keyed by sample index; see
  :mod:`sdekit.jobs.sample_job` for the batch-invariance requirement on the model).
* Per-sample conditioning by global sample index (``cond=``, ``--cond``):
  :mod:`sdekit.jobs.conditioning`.
* The model's weights are part of the configuration (``"model_fingerprint"``:
  sha256 of the state dict of the ``nn.Module`` the model is or wraps, or the
  user's ``model_version`` / ``--model-version``, or ``"unfingerprinted"`` for a
  plain callable): a retrained checkpoint behind the same factory is refused in
  an old directory with :class:`ConfigMismatchError` (:mod:`sdekit.jobs.fingerprint`).
* Layout, resume, checksums: :mod:`sdekit.jobs.runner`; one job per
  directory at a time: :mod:`sdekit.jobs.lock`; faults: :mod:`sdekit.jobs.fault_policy`.

Trust model:

* **Factories are code you run.**  ``--model``, ``--data`` and ``--cond`` name
  Python callables that are imported and called with your privileges, on every
  rank and every resume; a job configuration (or a manifest) from someone else
  is code from someone else.  Only run factories you would run by hand.
* **The output directory is data.**  Shards and merged files are read with
  ``torch.load(weights_only=True)`` (no pickled code runs; a file it refuses is
  recomputed), and every record is checked against the manifest.
* **Checksums detect corruption, not tampering.**  The sha256 of shard files,
  records and the configuration catch bit rot, truncation, partial writes,
  stale files and edits that forget a checksum; anyone who can write the
  directory can recompute them, so a well-formed hostile shard with valid
  checksums would be merged.  Likewise the model fingerprint detects *other*
  weights behind the same factory (a retrained checkpoint), not an attacker
  who also edits the manifest; a ``model_version`` string is only as good as
  the discipline of whoever bumps it; ``"unfingerprinted"`` models are trusted
  to be what their factory and kwargs say.
* Protect a directory you rely on as you would its inputs (file permissions).
"""

from ..faults import Fault, NonFiniteError
from .config import ConfigMismatchError
from .fingerprint import model_fingerprint
from .likelihood_job import run_likelihood_job
from .lock import OutputDirectoryBusyError
from .runner import JobResult
from .sample_job import run_sample_job

__all__ = ["ConfigMismatchError", "Fault", "JobResult", "NonFiniteError", "OutputDirectoryBusyError",
           "model_fingerprint", "run_likelihood_job", "run_sample_job"]
