"""Log-likelihood through the probability-flow ODE, variational bounds (ELBO), and bits/dim."""

from .bits import bits_per_dim, dequantize
from .divergence import exact_divergence, hutchinson_divergence, probe_noise
from .elbo import ELBOResult, ddpm_elbo, discretized_gaussian_log_prob, sde_elbo
from .log_likelihood import LikelihoodResult, log_likelihood

__all__ = [
    "ELBOResult",
    "LikelihoodResult",
    "bits_per_dim",
    "ddpm_elbo",
    "dequantize",
    "discretized_gaussian_log_prob",
    "exact_divergence",
    "hutchinson_divergence",
    "log_likelihood",
    "probe_noise",
    "sde_elbo",
]
