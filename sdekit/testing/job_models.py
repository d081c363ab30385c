"""Factories for sharded jobs (``"sdekit.testing.job_models:mixture_score"``): exact, batch-invariant models.

The score of :func:`~sdekit.testing.example_mixture` is computed row by row
(no matrix multiply across the batch), so a sample's result is bitwise the
same in any batch, the property :mod:`sdekit.jobs` relies on.
"""

from __future__ import annotations

import torch

from .. import sdes
from .mixture import example_mixture


def mixture_score(sde: str = "VPSDE", fault_t: float | None = None, fault_x0: float = 1.5):
    """Exact score ``score(x, t)`` of the 2-D example mixture under ``sdekit.<sde>()``, ``x`` ``(B, 2)``.

    Args:
        sde: SDE class name in :mod:`sdekit.sdes` (default arguments).
        fault_t, fault_x0: fault injection for tests: if ``fault_t`` is given the
            score is NaN for rows with ``t < fault_t`` and ``x[:, 0] > fault_x0``.
    """
    sde_obj = getattr(sdes, sde)()
    mix = example_mixture(torch.float32)

    def score(x, t):
        s = mix.score(x, sde_obj, t)
        if fault_t is None:
            return s
        bad = (t < fault_t)[:, None] & (x[:, :1] > fault_x0)
        return torch.where(bad, torch.full_like(s, float("nan")), s)

    return score


def mixture_data(n: int = 64, seed: int = 0):
    """``(n, 2)`` float32 exact samples of the example mixture (seeded: the same on every call)."""
    g = torch.Generator().manual_seed(seed)
    return example_mixture(torch.float64).sample(n, generator=g)[0].float()
