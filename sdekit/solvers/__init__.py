"""Numerical integrators: Butcher tableaus, the generic RK stepper, adaptive and fixed-step ODE solvers, sdeint."""

from .adaptive import AdaptiveSolution, ToleranceNotMetError, solve_adaptive
from .controller import I_CONTROLLER, PI_CONTROLLER, StepController
from .odeint import ODESolution, odeint
from .tableaus import BOSH3, DOPRI5, EULER, HEUN, MIDPOINT, RK4, TABLEAUS, TSIT5, ButcherTableau

__all__ = [
    "solve_adaptive", "AdaptiveSolution", "ToleranceNotMetError", "odeint", "ODESolution",
    "StepController", "PI_CONTROLLER", "I_CONTROLLER",
    "ButcherTableau", "TABLEAUS", "EULER", "MIDPOINT", "HEUN", "RK4", "BOSH3", "DOPRI5", "TSIT5",
]
from .sdeint import sdeint  # noqa: E402

__all__ += ["sdeint"]
