"""Reference problems with closed forms, for tests, benchmarks and users' own checks."""

from .mixture import GaussianMixture, example_mixture

__all__ = ["GaussianMixture", "example_mixture"]
