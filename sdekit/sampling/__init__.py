"""Reverse-time samplers: predictors, correctors, probability-flow ODE, NCSN's annealed Langevin, ULA/MALA."""

from .correctors import AnnealedLangevin, Langevin
from .denoise import posterior_mean, tweedie_denoise
from .grid import GRIDS, sampling_grid, time_grid
from .grid_optimizer import GridOptimizationInfo, karras_sigmas, optimize_sigmas
from .langevin_mcmc import LangevinResult, langevin_mcmc
from .ncsn import ncsn_levels, sample_ncsn
from .predictors import (
    DDIM,
    Ancestral,
    AncestralSamplingPredictor,
    DDIMPredictor,
    EulerMaruyama,
    EulerMaruyamaPredictor,
    ReverseDiffusion,
    ReverseDiffusionPredictor,
)
from .sample import SampleResult, sample

__all__ = [
    "DDIM",
    "GRIDS",
    "Ancestral",
    "AncestralSamplingPredictor",
    "AnnealedLangevin",
    "DDIMPredictor",
    "EulerMaruyama",
    "EulerMaruyamaPredictor",
    "GridOptimizationInfo",
    "Langevin",
    "LangevinResult",
    "ReverseDiffusion",
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
