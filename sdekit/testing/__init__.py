"""Reference problems with closed forms, for tests, benchmarks and users' own checks."""

from .convergence import OrderFit, fit_order
from .mixture import GaussianMixture, example_mixture
from .sde_problems import GBM, AdditiveProblem, ArctanProblem, NonlinearAdditiveProblem, ScalarNoiseGBM

__all__ = ["GaussianMixture", "OrderFit", "example_mixture", "fit_order"]
__all__ += ["GBM", "AdditiveProblem", "ArctanProblem", "NonlinearAdditiveProblem", "ScalarNoiseGBM"]
