"""The jobs' defaults, read from the functions they run (stated once, in :func:`sdekit.sample` and
:func:`sdekit.log_likelihood`): ``SAMPLE["snr"]``, ``LIKELIHOOD["rtol"]``, … for the job configurations
and the command line."""

from __future__ import annotations

import inspect

from ..likelihood import log_likelihood
from ..sampling import sample


def _defaults(fn) -> dict:
    return {k: p.default for k, p in inspect.signature(fn).parameters.items() if p.default is not p.empty}


#: Keyword defaults of :func:`sdekit.sample`.
SAMPLE = _defaults(sample)
#: Keyword defaults of :func:`sdekit.log_likelihood`.
LIKELIHOOD = _defaults(log_likelihood)
