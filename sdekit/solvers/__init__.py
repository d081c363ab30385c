"""Numerical integrators: Butcher tableaus and the adaptive embedded RK solver."""

from .adaptive import AdaptiveSolution, ToleranceNotMetError, solve_adaptive
from .tableaus import DOPRI5, ButcherTableau

__all__ = ["solve_adaptive", "AdaptiveSolution", "ToleranceNotMetError", "ButcherTableau", "DOPRI5"]
from .sdeint import sdeint  # noqa: E402

__all__ += ["sdeint"]
