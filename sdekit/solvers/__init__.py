"""Numerical integrators: Butcher tableaus, the generic RK stepper, adaptive and fixed-step ODE solvers, sdeint."""

from .adaptive import AdaptiveSolution, StepOptions, ToleranceNotMetError, solve_adaptive
from .adjoint import odeint_adjoint
from .controller import I_CONTROLLER, PI_CONTROLLER, StepController
from .implicit import IMPLICIT_METHODS
from .odeint import ODESolution, odeint
from .tableaus import (
    ADAPTIVE_HEUN,
    BOSH3,
    DOPRI5,
    DOPRI8,
    EULER,
    FEHLBERG2,
    HEUN,
    HEUN3,
    MIDPOINT,
    RK4,
    TABLEAUS,
    TSIT5,
    ButcherTableau,
)

__all__ = [
    "ADAPTIVE_HEUN",
    "BOSH3",
    "DOPRI5",
    "DOPRI8",
    "EULER",
    "FEHLBERG2",
    "HEUN",
    "HEUN3",
    "IMPLICIT_METHODS",
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
    "StepOptions",
    "ToleranceNotMetError",
    "odeint",
    "odeint_adjoint",
    "solve_adaptive",
]
from .sde_adjoint import sdeint_adjoint
from .sdeint import sdeint

__all__ += ["sdeint", "sdeint_adjoint"]
