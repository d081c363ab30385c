"""Statistical assertions with tolerances derived from standard errors."""

from __future__ import annotations

import torch

#: Number of standard errors allowed (false-alarm rate ~6e-7 per z-score).
Z = 5.0


def assert_mean_close(samples: torch.Tensor, expected, *, bias: float | torch.Tensor = 0.0, what: str = "mean"):
    """Assert ``|mean(samples) − expected| <= Z · SE + bias`` elementwise along dim 0.

    ``bias`` is a known deterministic bound (e.g. a discretisation bias computed
    from theory), never a number read off the code's output.
    """
    samples = samples.double()
    n = samples.shape[0]
    mean = samples.mean(0)
    se = samples.std(0) / n**0.5
    expected = torch.as_tensor(expected, dtype=torch.float64)
    err = (mean - expected).abs()
    tol = Z * se + torch.as_tensor(bias, dtype=torch.float64)
    assert bool((err <= tol).all()), (
        f"{what}: |{mean.tolist()} - {expected.tolist()}| = {err.tolist()} exceeds "
        f"{Z}·SE + bias = {tol.tolist()} (SE {se.tolist()})"
    )
