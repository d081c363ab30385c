"""Fixed-step SDE solvers: one module per method, a registry, and the SDE protocol adapter."""

from .base import AbstractSDESolver
from .euler import EulerMaruyama
from .euler_heun import EulerHeun
from .heun import Heun
from .log_ode import LogODEMidpoint
from .midpoint import Midpoint
from .milstein import DerivativeFreeMilstein, Milstein
from .problem import NOISE_TYPES, SDE_TYPES, SDEProblem, as_problem
from .registry import METHODS, SDEINT_METHODS, default_method, method_names, resolve
from .reversible_heun import ReversibleHeun
from .srk import SRA1Solver, SRA3Solver, SRI2Solver

__all__ = [
    "METHODS",
    "NOISE_TYPES",
    "SDEINT_METHODS",
    "SDE_TYPES",
    "AbstractSDESolver",
    "DerivativeFreeMilstein",
    "EulerHeun",
    "EulerMaruyama",
    "Heun",
    "LogODEMidpoint",
    "Midpoint",
    "Milstein",
    "ReversibleHeun",
    "SDEProblem",
    "SRA1Solver",
    "SRA3Solver",
    "SRI2Solver",
    "as_problem",
    "default_method",
    "method_names",
    "resolve",
]
