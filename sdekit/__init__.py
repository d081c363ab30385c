"""sdekit: SDE and ODE solvers for score-based diffusion models.

Public API:
    SDEs:        VPSDE, SubVPSDE, VESDE, OrnsteinUhlenbeck, DiscreteVPSDE (DDPM), EDMSDE (sdekit.sdes)
    Sampling:    sample (Euler–Maruyama / reverse diffusion / ancestral predictors,
                 Langevin correctors, adaptive RK45 probability flow), sample_ncsn (NCSN's
                 annealed Langevin), langevin_mcmc (ULA / MALA on a score or log-density)
    Likelihood:  log_likelihood (Hutchinson or exact trace), sde_elbo / ddpm_elbo (variational bounds),
                 bits_per_dim, dequantize
    Training:    sdekit.losses: dsm_loss (score/ε/x0/v, σ²/g²/EDM weights), ddpm_simple_loss,
                 sliced_score_matching_loss
    Score models: score_from_epsilon, score_from_x0, score_from_v, score_from_denoiser
    Solvers:     odeint (torchdiffeq's contract; per-sample steps opt-in), odeint_adjoint,
                 solve_adaptive, sdeint, sdeint_adjoint
    Brownian:    BrownianTree (counter-based, per-sample, same path at every step size)
    Guidance:    classifier_guidance, classifier_free_guidance
    Conditioning: model_kwargs= of sample / log_likelihood / the adapters, per-sample tensors
                 gathered with the rows wherever a solver compacts the batch (sdekit.conditioning)
    Reference:   sdekit.testing.GaussianMixture (exact scores and densities)
    Plug-ins:    sdekit.integrations.diffusers_scheduler.SDEScheduler (diffusers),
                 sdekit.integrations.diffusers_model.score_from_diffusers (diffusers UNets),
                 sdekit.integrations.k_diffusion (k-diffusion samplers)
    Kernels:     sdekit.kernels (fused Triton update steps beside PyTorch references),
                 sdekit.noise (Philox noise keyed by seed, sample index, element, stream)
"""

from . import losses
from .brownian import BrownianTree
from .guidance import classifier_free_guidance, classifier_guidance
from .likelihood import ELBOResult, LikelihoodResult, bits_per_dim, ddpm_elbo, dequantize, log_likelihood, sde_elbo
from .losses import ddpm_simple_loss, dsm_loss, sliced_score_matching_loss
from .sampling import LangevinResult, SampleResult, langevin_mcmc, sample, sample_ncsn
from .score_models import score_from_denoiser, score_from_epsilon, score_from_v, score_from_x0
from .sdes import (
    EDMSDE,
    VESDE,
    VPSDE,
    AbstractLinearSDE,
    AbstractSDE,
    DiscreteVPSDE,
    OrnsteinUhlenbeck,
    ProbabilityFlowODE,
    ReverseSDE,
    SubVPSDE,
)
from .solvers import ODESolution, ToleranceNotMetError, odeint, odeint_adjoint, sdeint, sdeint_adjoint, solve_adaptive

__version__ = "0.1.0"

__all__ = [
    "EDMSDE",
    "VESDE",
    "VPSDE",
    "AbstractLinearSDE",
    "AbstractSDE",
    "BrownianTree",
    "DiscreteVPSDE",
    "ELBOResult",
    "LangevinResult",
    "LikelihoodResult",
    "ODESolution",
    "OrnsteinUhlenbeck",
    "ProbabilityFlowODE",
    "ReverseSDE",
    "SampleResult",
    "SubVPSDE",
    "ToleranceNotMetError",
    "bits_per_dim",
    "classifier_free_guidance",
    "classifier_guidance",
    "ddpm_elbo",
    "ddpm_simple_loss",
    "dequantize",
    "dsm_loss",
    "langevin_mcmc",
    "log_likelihood",
    "losses",
    "odeint",
    "odeint_adjoint",
    "sample",
    "sample_ncsn",
    "score_from_denoiser",
    "score_from_epsilon",
    "score_from_v",
    "score_from_x0",
    "sde_elbo",
    "sdeint",
    "sdeint_adjoint",
    "sliced_score_matching_loss",
    "solve_adaptive",
]
