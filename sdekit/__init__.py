"""sdekit: SDE and ODE solvers for score-based diffusion models.

Public API:
    SDEs:        VPSDE, SubVPSDE, VESDE, OrnsteinUhlenbeck, DiscreteVPSDE (DDPM), EDMSDE (sdekit.sdes)
    Sampling:    sample (Euler–Maruyama / reverse diffusion / ancestral predictors,
                 Langevin correctors, adaptive RK45 probability flow)
    Likelihood:  log_likelihood (Hutchinson or exact trace), bits_per_dim, dequantize
    Score models: score_from_epsilon, score_from_x0, score_from_v, score_from_denoiser
    Solvers:     solve_adaptive (per-sample embedded RK), sdeint (forward Euler–Maruyama)
    Guidance:    classifier_guidance, classifier_free_guidance
    Reference:   sdekit.testing.GaussianMixture (exact scores and densities)
    Plug-ins:    sdekit.integrations.diffusers_scheduler.SDEScheduler (diffusers),
                 sdekit.integrations.k_diffusion (k-diffusion samplers)
"""

from .guidance import classifier_free_guidance, classifier_guidance
from .likelihood import LikelihoodResult, bits_per_dim, dequantize, log_likelihood
from .sampling import SampleResult, sample
from .score_models import score_from_denoiser, score_from_epsilon, score_from_v, score_from_x0
from .sdes import (
    AbstractLinearSDE,
    AbstractSDE,
    DiscreteVPSDE,
    EDMSDE,
    OrnsteinUhlenbeck,
    ProbabilityFlowODE,
    ReverseSDE,
    SubVPSDE,
    VESDE,
    VPSDE,
)
from .solvers import ToleranceNotMetError, sdeint, solve_adaptive

__version__ = "0.1.0"

__all__ = [
    "AbstractSDE",
    "AbstractLinearSDE",
    "VPSDE",
    "SubVPSDE",
    "VESDE",
    "OrnsteinUhlenbeck",
    "DiscreteVPSDE",
    "EDMSDE",
    "ReverseSDE",
    "ProbabilityFlowODE",
    "sample",
    "SampleResult",
    "log_likelihood",
    "LikelihoodResult",
    "bits_per_dim",
    "dequantize",
    "score_from_epsilon",
    "score_from_x0",
    "score_from_v",
    "score_from_denoiser",
    "solve_adaptive",
    "sdeint",
    "ToleranceNotMetError",
    "classifier_guidance",
    "classifier_free_guidance",
]
