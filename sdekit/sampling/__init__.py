"""Reverse-time samplers: predictors, correctors, probability-flow ODE."""

from .correctors import AnnealedLangevin, Langevin
from .denoise import tweedie_denoise
from .grid import time_grid
from .predictors import Ancestral, EulerMaruyama, ReverseDiffusion
from .sample import SampleResult, sample

__all__ = [
    "Ancestral",
    "AnnealedLangevin",
    "EulerMaruyama",
    "Langevin",
    "ReverseDiffusion",
    "SampleResult",
    "sample",
    "time_grid",
    "tweedie_denoise",
]
