"""What a job does with a sample whose state became NaN or infinite: ``on_nonfinite``.

* ``"raise"`` (default): stop the job with :class:`sdekit.faults.NonFiniteError`
  naming the sample index, step and ``t``.  Shards already written stay
  valid; the shard in progress is not written.
* ``"mark"``: keep going.  The sample's outputs are NaN in its shard and in
  the merged file, the fault (sample index, step, ``t``) is listed in the
  shard's record and in ``result.json``, and summaries leave it out and
  report how many samples they excluded.  A fault is never averaged in.
"""

from __future__ import annotations

from .._checks import check_choice
from ..faults import NonFiniteMonitor

POLICIES = ("raise", "mark")


def check_policy(on_nonfinite: str) -> str:
    """Return ``on_nonfinite`` if it is one of :data:`POLICIES` (else ValueError naming it)."""
    return check_choice("on_nonfinite", on_nonfinite, POLICIES)


def apply_policy(monitor: NonFiniteMonitor, on_nonfinite: str, where: str) -> list[dict]:
    """The batch's faults as dicts (``"mark"``), or raise :class:`~sdekit.faults.NonFiniteError` (``"raise"``)."""
    if on_nonfinite == "raise":
        monitor.raise_if_any(where)
        return []
    return [f.as_dict() for f in monitor.faults()]
