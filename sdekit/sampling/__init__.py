"""Reverse-time samplers: predictors, correctors, probability-flow ODE, NCSN's annealed Langevin, ULA/MALA."""

from .correctors import AnnealedLangevin, Langevin
from .denoise import posterior_mean, tweedie_denoise
from .grid import GRIDS, sampling_grid, time_grid
from .grid_optimizer import GridOptimizationInfo, karras_sigmas, optimize_sigmas
from .langevin_mcmc import LangevinResult, langevin_mcmc
from .ncsn import ncsn_levels, sample_ncsn
from .predictors import (
    DEPRECATED_NAMES,
    AncestralSamplingPredictor,
    DDIMPredictor,
    EulerMaruyamaPredictor,
    ReverseDiffusionPredictor,
    deprecated_name,
)
from .sample import SampleResult, sample

__all__ = [
    "GRIDS",
    "AncestralSamplingPredictor",
    "AnnealedLangevin",
    "DDIMPredictor",
    "EulerMaruyamaPredictor",
    "GridOptimizationInfo",
    "Langevin",
    "LangevinResult",
    "ReverseDiffusionPredictor",
    "SampleResult",
    "karras_sigmas",
    "langevin_mcmc",
    "ncsn_levels",
    "optimize_sigmas",
    "posterior_mean",
    "sample",
    "sample_ncsn",
    "sampling_grid",
    "time_grid",
    "tweedie_denoise",
]


def __getattr__(name: str):
    """The predictors' former short names (``EulerMaruyama``, …), with a DeprecationWarning."""
    if name in DEPRECATED_NAMES:
        return deprecated_name(__name__, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
