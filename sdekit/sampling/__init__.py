"""Reverse-time samplers: predictors, correctors, probability-flow ODE."""

from .correctors import AnnealedLangevin, Langevin
from .denoise import tweedie_denoise
from .grid import time_grid
from .predictors import Ancestral, EulerMaruyama, ReverseDiffusion
from .sample import SampleResult, sample

__all__ = [
    "sample",
    "SampleResult",
    "time_grid",
    "tweedie_denoise",
    "EulerMaruyama",
    "ReverseDiffusion",
    "Ancestral",
    "Langevin",
    "AnnealedLangevin",
]
