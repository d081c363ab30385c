"""Score models and adapters from other network parameterisations.

A *score model* is any callable ``score(x, t)`` with ``x`` of shape ``(B, *D)``
and ``t`` of shape ``(B,)`` in SDE time, returning ``∇ₓ log p_t(x)`` of shape
``(B, *D)``; a conditional one is called ``score(x, t, **model_kwargs)`` with
per-sample conditioning whose tensors are ``(B, …)`` (:mod:`sdekit.conditioning`),
and the adapters pass ``model_kwargs`` on to the network.  The adapters below turn the networks people train into one,
given the linear SDE whose marginal ``x_t = m(t) x_0 + σ(t) ε`` they were
trained on (offset-free SDEs: VP, sub-VP, VE).

Source of the conversions: Tweedie's formula ``E[x_0 | x_t] = (x_t + σ² s)/m``
(Efron 2011; Song et al. 2021, eq. 7 training target); ε-prediction
``s = −ε/σ`` (Ho et al. 2020 / seed notes 003); v-prediction ``v = m ε − σ x_0``
(Salimans & Ho 2022, §4); denoisers ``D(x, σ)`` (Karras et al. 2022, eq. 3).
"""

from __future__ import annotations

import copy
from typing import Callable

import torch

from ._checks import check_callable, check_model_output, expand_as_batch


def checked_score(score: Callable) -> Callable:
    """Wrap ``score`` so that a wrong output shape raises ``ValueError`` at once.

    The check compares shapes only (no host sync).  Already-checked callables
    are returned unchanged.
    """
    if getattr(score, "_sdekit_checked", False):
        return score
    if not callable(score):
        raise TypeError(f"score must be callable as score(x, t), got {type(score).__name__}")

    def wrapped(x: torch.Tensor, t: torch.Tensor, **model_kwargs) -> torch.Tensor:
        return check_model_output("score model", score(x, t, **model_kwargs), x)

    def unbind():
        found = _unbind_inner(score)
        return None if found is None else (checked_score(found[0]), found[1])

    wrapped._sdekit_checked = True  # type: ignore[attr-defined]
    wrapped._sdekit_unbind = unbind  # type: ignore[attr-defined]
    wrapped.__wrapped__ = score  # type: ignore[attr-defined]
    return wrapped


def _unbind_inner(fn):
    """``fn._sdekit_unbind()`` if ``fn`` carries bound conditioning (see :func:`sdekit.conditioning.unbind_conditioning`)."""
    unbind = getattr(fn, "_sdekit_unbind", None)
    return unbind() if callable(unbind) else None


class Frozen:
    """A "network" that returns one precomputed output ``(B, *D)`` whatever its input, so the adapters and
    samplers can take an output the caller already has (a pipeline's model call, a denoiser's last value)."""

    def __init__(self, out: torch.Tensor):
        self.out = out

    def __call__(self, x, t, **model_kwargs):
        return self.out


class _Adapter:
    """Shared plumbing: the SDE, the network and a map from SDE time to network time."""

    def __init__(self, model: Callable, sde, time_input: Callable | None = None):
        check_callable("model", model)
        if time_input is not None and not callable(time_input):
            raise TypeError(f"time_input must be None or callable, got {type(time_input).__name__}")
        for name in ("mean_coeff", "std"):
            if isinstance(sde, (str, bytes)) or not callable(getattr(sde, name, None)):
                raise TypeError(f"sde must be a linear SDE with {name}(t) (VP, sub-VP, VE), got {sde!r}")
        self.model = model
        self.sde = sde
        self.time_input = time_input

    def _coeffs(self, x, t):
        m = expand_as_batch(self.sde.mean_coeff(t), x)
        s = expand_as_batch(self.sde.std(t), x)
        return m, s

    def _net(self, name, x, t, model_kwargs):
        t_in = t if self.time_input is None else self.time_input(t)
        return check_model_output(name, self.model(x, t_in, **model_kwargs), x)

    def _sdekit_unbind(self):
        """The same adapter around the network with its bound conditioning moved to keyword arguments."""
        found = _unbind_inner(self.model)
        if found is None:
            return None
        clone = copy.copy(self)
        clone.model = found[0]
        return clone, found[1]


class EpsilonScore(_Adapter):
    """Score from an ε-prediction network: ``s(x, t) = −ε̂(x, t) / σ(t)``.

    Args:
        model: ``model(x, t_in, **model_kwargs)`` → ``ε̂`` of shape ``(B, *D)``
            (``model_kwargs``: the conditioning the sampler passes, often none).
        sde: linear SDE the network was trained on.
        time_input: optional map from SDE time ``(B,)`` to the network's time
            input (e.g. ``lambda t: 999 * t`` for a DDPM timestep index).
    Raises:
        TypeError: if ``model`` (or a given ``time_input``) is not callable, or
            ``sde`` has no closed-form marginal.
        ValueError (on call): if the network's output has the wrong shape.

    At a time with ``σ(t) = 0`` (``t = 0`` for VP / sub-VP / EDM) the score is
    undefined and the result is ``±inf``/NaN: checking ``t`` would need a
    host sync on every call, so it is not checked here.  The samplers and
    :func:`sdekit.log_likelihood` never evaluate there (they require
    ``eps > 0`` with ``σ(eps) > 0``).
    """

    def __call__(self, x, t, **model_kwargs):
        _, s = self._coeffs(x, t)
        return -self._net("epsilon model", x, t, model_kwargs) / s


class X0Score(_Adapter):
    """Score from an x0-prediction network: ``s = (m(t) x̂_0 − x) / σ(t)²`` (Tweedie).

    Arguments, errors: as :class:`EpsilonScore`.
    """

    def __call__(self, x, t, **model_kwargs):
        m, s = self._coeffs(x, t)
        return (m * self._net("x0 model", x, t, model_kwargs) - x) / s**2


class VScore(_Adapter):
    """Score from a v-prediction network, ``v = m ε − σ x_0`` (Salimans & Ho 2022).

    Inverting ``x = m x_0 + σ ε`` gives ``ε = (σ x + m v)/(m² + σ²)``, so
    ``s = −(σ x + m v) / (σ (m² + σ²))``; for VP, ``m² + σ² = 1``.
    Arguments, errors: as :class:`EpsilonScore`.
    """

    def __call__(self, x, t, **model_kwargs):
        m, s = self._coeffs(x, t)
        v = self._net("v model", x, t, model_kwargs)
        return -(s * x + m * v) / (s * (m**2 + s**2))


class DenoiserScore(_Adapter):
    """Score from an EDM / k-diffusion denoiser ``D(x̃, σ̃) ≈ E[x_0 | x̃]``.

    The denoiser works in VE coordinates ``x̃ = x/m(t)``, ``σ̃ = σ(t)/m(t)``
    (Karras et al. 2022, §4 "scaling"), and ``s = (m D(x̃, σ̃) − x)/σ²``.  For the
    VE SDE ``m = 1`` and ``σ̃ = σ(t)``.

    Args:
        model: ``model(x̃, sigma, **model_kwargs)`` with ``sigma`` of shape ``(B,)`` → ``(B, *D)``.
        sde: linear SDE giving ``m(t)`` and ``σ(t)``.
    Raises:
        TypeError: if ``model`` is not callable or ``sde`` has no closed-form marginal.
        ValueError (on call): if the denoiser's output has the wrong shape.

    As for :class:`EpsilonScore`, ``σ(t) = 0`` is not checked (no host sync)
    and gives a non-finite score.
    """

    def __init__(self, model: Callable, sde):
        super().__init__(model, sde)

    def __call__(self, x, t, **model_kwargs):
        m, s = self._coeffs(x, t)
        sigma = self.sde.std(t) / self.sde.mean_coeff(t)
        x0 = check_model_output("denoiser", self.model(x / m, sigma, **model_kwargs), x)
        return (m * x0 - x) / s**2


def score_from_epsilon(model, sde, time_input=None) -> EpsilonScore:
    """Build a score model from an ε-prediction network (see :class:`EpsilonScore`)."""
    return EpsilonScore(model, sde, time_input)


def score_from_x0(model, sde, time_input=None) -> X0Score:
    """Build a score model from an x0-prediction network (see :class:`X0Score`)."""
    return X0Score(model, sde, time_input)


def score_from_v(model, sde, time_input=None) -> VScore:
    """Build a score model from a v-prediction network (see :class:`VScore`)."""
    return VScore(model, sde, time_input)


def score_from_denoiser(model, sde) -> DenoiserScore:
    """Build a score model from a k-diffusion / EDM denoiser (see :class:`DenoiserScore`)."""
    return DenoiserScore(model, sde)
