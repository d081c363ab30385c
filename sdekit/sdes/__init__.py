"""SDEs: abstract interfaces, VP / sub-VP / VE diffusion SDEs, Ornstein–Uhlenbeck, DDPM and EDM schedules."""

from .base import AbstractLinearSDE, AbstractSDE
from .discrete_vp import DiscreteVPSDE
from .edm import EDMSDE
from .ou import OrnsteinUhlenbeck
from .reverse import ProbabilityFlowODE, ReverseSDE
from .subvp import SubVPSDE
from .ve import VESDE
from .vp import VPSDE

__all__ = [
    "EDMSDE",
    "VESDE",
    "VPSDE",
    "AbstractLinearSDE",
    "AbstractSDE",
    "DiscreteVPSDE",
    "OrnsteinUhlenbeck",
    "ProbabilityFlowODE",
    "ReverseSDE",
    "SubVPSDE",
]
