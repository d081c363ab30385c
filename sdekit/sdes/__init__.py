"""SDEs: abstract interfaces, VP / sub-VP / VE diffusion SDEs, Ornstein–Uhlenbeck."""

from .base import AbstractLinearSDE, AbstractSDE
from .ou import OrnsteinUhlenbeck
from .reverse import ProbabilityFlowODE, ReverseSDE
from .subvp import SubVPSDE
from .ve import VESDE
from .vp import VPSDE

__all__ = [
    "AbstractSDE",
    "AbstractLinearSDE",
    "VPSDE",
    "SubVPSDE",
    "VESDE",
    "OrnsteinUhlenbeck",
    "ReverseSDE",
    "ProbabilityFlowODE",
]
