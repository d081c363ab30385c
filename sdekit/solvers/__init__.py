"""Numerical integrators: Butcher tableaus, the generic RK stepper, adaptive and fixed-step ODE solvers, sdeint."""

from .adaptive import AdaptiveSolution, ToleranceNotMetError, solve_adaptive
from .controller import I_CONTROLLER, PI_CONTROLLER, StepController
from .odeint import ODESolution, odeint
from .tableaus import BOSH3, DOPRI5, EULER, HEUN, MIDPOINT, RK4, TABLEAUS, TSIT5, ButcherTableau

__all__ = [
    "BOSH3",
    "DOPRI5",
    "EULER",
    "HEUN",
    "I_CONTROLLER",
    "MIDPOINT",
    "PI_CONTROLLER",
    "RK4",
    "TABLEAUS",
    "TSIT5",
    "AdaptiveSolution",
    "ButcherTableau",
    "ODESolution",
    "StepController",
    "ToleranceNotMetError",
    "odeint",
    "solve_adaptive",
]
from .sdeint import sdeint

__all__ += ["sdeint"]
