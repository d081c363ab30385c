"""Log-likelihood through the probability-flow ODE, and bits/dim."""

from .bits import bits_per_dim, dequantize
from .divergence import exact_divergence, hutchinson_divergence, probe_noise
from .log_likelihood import LikelihoodResult, log_likelihood

__all__ = [
    "log_likelihood",
    "LikelihoodResult",
    "bits_per_dim",
    "dequantize",
    "hutchinson_divergence",
    "exact_divergence",
    "probe_noise",
]
