"""Reverse-time SDE and probability-flow ODE built from a score model."""

from __future__ import annotations

import torch

from .._checks import expand_as_batch
from ..score_models import checked_score


def _g2(g: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """g² broadcast against ``x`` whether ``g`` is ``(B,)`` or ``(B, *D)``."""
    return expand_as_batch(g, x) ** 2 if g.dim() == 1 else g**2


class _ScoreDriven:
    """An SDE's drift corrected by a score model; holds the SDE, the checked score and ``T``."""

    def __init__(self, sde, score):
        self.sde = sde
        self.score = checked_score(score)
        self.T = sde.T


class ReverseSDE(_ScoreDriven):
    """Reverse-time SDE ``dx = [f(x,t) − g(t)² s(x,t)] dt + g(t) dW̄``, run from ``T`` to 0.

    Source: Anderson 1982; Song et al. 2021, eq. 6.  The formula assumes a
    diffusion that does not depend on ``x`` (true of VP, sub-VP, VE and OU);
    for ``g(x, t)`` the general drift has an extra ``−∇·(g gᵀ)`` term (eq. 16).

    Args:
        sde: the forward :class:`~sdekit.sdes.base.AbstractSDE`.
        score: callable ``score(x, t, **model_kwargs)``, ``x`` ``(B, *D)``, ``t`` ``(B,)`` → ``(B, *D)``.
    Raises (when called):
        ValueError: if ``score`` returns a tensor of the wrong shape.
    """

    def drift(self, x: torch.Tensor, t: torch.Tensor, **model_kwargs) -> torch.Tensor:
        """Reverse drift ``f − g² s`` (per unit of forward time), ``(B, *D)``; ``model_kwargs`` go to the score."""
        return self.sde.drift(x, t) - _g2(self.sde.diffusion(x, t), x) * self.score(x, t, **model_kwargs)

    def diffusion(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Diffusion ``g(t)``, the forward SDE's."""
        return self.sde.diffusion(x, t)


class ProbabilityFlowODE(_ScoreDriven):
    """Probability-flow ODE ``dx/dt = f(x,t) − ½ g(t)² s(x,t)``.

    Source: Song et al. 2021, eq. 13; its solutions share the forward SDE's
    marginals ``p_t``.  Same assumption on ``g`` as :class:`ReverseSDE`.

    Args:
        sde: the forward SDE.
        score: callable ``score(x, t)`` → ``(B, *D)``.
    Raises (when called):
        ValueError: if ``score`` returns a tensor of the wrong shape.
    """

    def drift(self, x: torch.Tensor, t: torch.Tensor, **model_kwargs) -> torch.Tensor:
        """Velocity ``dx/dt``, ``(B, *D)``, for ``x`` ``(B, *D)`` and ``t`` ``(B,)``.

        ``model_kwargs``: per-sample conditioning for the score model, rows aligned with ``x``.
        """
        return self.sde.drift(x, t) - 0.5 * _g2(self.sde.diffusion(x, t), x) * self.score(x, t, **model_kwargs)

    __call__ = drift
