"""Abstract SDE interfaces.

An Itô SDE ``dx = f(x, t) dt + g(x, t) dW`` on ``t ∈ [0, T]`` (Song et al. 2021,
"Score-Based Generative Modeling through Stochastic Differential Equations",
eq. 5).  Linear SDEs additionally expose their Gaussian perturbation kernel
``x_t | x_0 ~ N(m(t) x_0 + c(t), σ(t)² I)`` and exact transitions between two
times, which every diffusion sampler in :mod:`sdekit.sampling` builds on.
"""

from __future__ import annotations

import abc
import math

import torch

from .._checks import batch_time, expand_as_batch


class AbstractSDE(abc.ABC):
    """An SDE ``dx = f(x, t) dt + g(x, t) dW`` with a prior at ``t = T``.

    Shapes: ``x`` is ``(B, *D)``, ``t`` is ``(B,)`` in SDE time ``[0, T]``.
    ``drift`` returns ``(B, *D)``; ``diffusion`` returns ``(B,)`` (a scalar
    ``g(t)`` per sample) or ``(B, *D)`` (diagonal noise).

    Attributes:
        T: time horizon (SDE time units).
        sampling_eps: default smallest time a sampler integrates down to
            (score_sde's defaults: 1e-3 for VP / sub-VP, 1e-5 for VE).
        noise_type, sde_type: what :func:`sdekit.sdeint` may assume (torchsde's names):
            "diagonal" (``g_i`` depends on ``x_i`` only) and "ito".
    """

    T: float = 1.0
    sampling_eps: float = 1e-3
    noise_type: str = "diagonal"
    sde_type: str = "ito"

    @abc.abstractmethod
    def drift(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Drift ``f(x, t)``: ``(B, *D)`` for ``x`` ``(B, *D)`` and ``t`` ``(B,)``."""

    @abc.abstractmethod
    def diffusion(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Diffusion ``g(x, t)``: ``(B,)`` or ``(B, *D)``."""

    @abc.abstractmethod
    def prior_sample(self, shape, *, generator=None, device=None, dtype=None) -> torch.Tensor:
        """Draw ``shape = (B, *D)`` samples of the prior ``p_T``."""

    @abc.abstractmethod
    def prior_log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """Log-density of the prior at ``z`` ``(B, *D)``, in nats, shape ``(B,)``."""

    def prior_from_normal(self, z: torch.Tensor) -> torch.Tensor:
        """Prior samples ``(B, *D)`` from standard normal noise ``z`` ``(B, *D)``, element-wise.

        Lets samplers draw the prior from keyed noise (batch-size invariant,
        :mod:`sdekit.noise`).  The base class raises ``NotImplementedError``.
        """
        raise NotImplementedError(f"{type(self).__name__} does not define prior_from_normal(z)")

    def reverse(self, score):
        """The reverse-time SDE driven by ``score(x, t)`` (Song et al. 2021, eq. 6)."""
        from .reverse import ReverseSDE

        return ReverseSDE(self, score)

    def probability_flow(self, score):
        """The probability-flow ODE driven by ``score(x, t)`` (Song et al. 2021, eq. 13)."""
        from .reverse import ProbabilityFlowODE

        return ProbabilityFlowODE(self, score)

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({fields})"


class AbstractLinearSDE(AbstractSDE):
    """A linear SDE ``dx = (a(t) x + b(t)) dt + g(t) dW`` with Gaussian marginals.

    The perturbation kernel is ``x_t | x_0 ~ N(m(t) x_0 + c(t), σ(t)² I)``
    (Song et al. 2021, Appendix B, eq. 29 for VP/sub-VP, eq. 30 for VE) and,
    for ``s < t``, the exact transition is

        x_t = r x_s + (c(t) − r c(s)) + G z,   r = m(t)/m(s),
        G² = σ(t)² − r² σ(s)²,

    which holds for any linear SDE whose diffusion does not depend on ``x``.
    Subclasses give ``mean_coeff`` (m), ``std`` (σ) and optionally
    ``mean_offset`` (c, zero by default) and a numerically stable
    ``transition_var``.  All take and return tensors of ``t``'s shape and dtype.
    The diffusion does not depend on ``x``: ``noise_type = "additive"``.
    """

    noise_type: str = "additive"

    @abc.abstractmethod
    def mean_coeff(self, t: torch.Tensor) -> torch.Tensor:
        """m(t), the coefficient of ``x_0`` in the marginal mean."""

    @abc.abstractmethod
    def std(self, t: torch.Tensor) -> torch.Tensor:
        """σ(t), the marginal standard deviation given ``x_0``."""

    def mean_offset(self, t: torch.Tensor) -> torch.Tensor:
        """c(t), the part of the marginal mean that does not depend on ``x_0``."""
        return torch.zeros_like(t)

    def transition_var(self, s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """G² = Var(x_t | x_s) for ``s <= t``."""
        r = self.mean_coeff(t) / self.mean_coeff(s)
        return self.std(t) ** 2 - (r * self.std(s)) ** 2

    def transition(self, s: torch.Tensor, t: torch.Tensor):
        """Exact transition ``x_t = r x_s + c + G z`` from time ``s`` to ``t >= s``.

        Args:
            s, t: tensors of equal shape (SDE time).
        Returns:
            ``(r, c, G)``, each of that shape.
        """
        r = self.mean_coeff(t) / self.mean_coeff(s)
        c = self.mean_offset(t) - r * self.mean_offset(s)
        return r, c, self.transition_var(s, t).clamp_min(0.0).sqrt()

    def marginal_prob(self, x0: torch.Tensor, t) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean ``(B, *D)`` and std ``(B,)`` of ``x_t | x_0`` (score_sde's name)."""
        t = batch_time(t, x0)
        mean = expand_as_batch(self.mean_coeff(t), x0) * x0 + expand_as_batch(self.mean_offset(t), x0)
        return mean, self.std(t)

    def marginal_sample(self, x0: torch.Tensor, t, *, generator=None) -> torch.Tensor:
        """Draw ``x_t ~ N(m(t) x_0 + c(t), σ(t)² I)``; shape of ``x0``."""
        mean, std = self.marginal_prob(x0, t)
        z = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
        return mean + expand_as_batch(std, x0) * z


def gaussian_log_prob(z: torch.Tensor, mean: float, std: float) -> torch.Tensor:
    """Log-density in nats, shape ``(B,)``, of ``N(mean, std² I)`` at ``z`` ``(B,)`` or ``(B, *D)``."""
    dim = z[0].numel()
    sq = ((z - mean) ** 2).reshape(z.shape[0], -1).sum(1)
    return -0.5 * dim * math.log(2 * math.pi * std**2) - sq / (2 * std**2)
