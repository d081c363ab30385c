"""Log-likelihood through the probability-flow ODE, and bits/dim."""

from .bits import bits_per_dim, dequantize
from .divergence import exact_divergence, hutchinson_divergence, probe_noise
from .log_likelihood import LikelihoodResult, log_likelihood

__all__ = [
    "LikelihoodResult",
    "bits_per_dim",
    "dequantize",
    "exact_divergence",
    "hutchinson_divergence",
    "log_likelihood",
    "probe_noise",
]
