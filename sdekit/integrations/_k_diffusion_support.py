"""Plumbing shared by the k-diffusion-signature samplers of :mod:`sdekit.integrations.k_diffusion`.

The denoiser wrapper (conditioning passed through, last output remembered
for ``callback``), argument checks, the per-step noise sources (generator /
global RNG as in k-diffusion, keyed on ``(seed, sample_index, step)``, or
k-diffusion's ``noise_sampler``), EDM's churn step and the ancestral
``σ_down``/``σ_up`` split.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Callable

import torch

from .._checks import check_model_output, check_tensor, expand_as_batch
from ..conditioning import check_model_kwargs, flatten_model_kwargs
from ..kernels import normal
from ..noise import check_sample_index, noise_kind
from ..score_models import Frozen, score_from_denoiser
from ..sdes.edm import EDMSDE

#: The SDE of every sampler: only ``σ(t) = t`` enters the steps, its σ_min/σ_max are not used.
SDE = EDMSDE()

#: Keyed noise of step ``i`` uses stream ``STEP_STREAM + i``; stream 0 is left for the
#: caller's own draw of the start ``x`` (``sdekit.kernels.normal(seed, sample_index, 0, …)``),
#: as :func:`sdekit.sample` draws its prior there.
STEP_STREAM = 1


class Denoiser:
    """``model(x, sigma, **extra_args)``, remembering its last output for ``callback``.

    ``bound``: conditioning fixed at construction (:func:`~sdekit.integrations.k_diffusion.denoiser_score`),
    checked against the batch at every call and handed to sdekit's samplers
    through ``_sdekit_unbind`` (:func:`sdekit.conditioning.unbind_conditioning`),
    so that they gather it with the rows they evaluate.
    """

    def __init__(self, model: Callable, bound: Mapping | None = None):
        if not callable(model):
            raise TypeError(f"model must be callable as model(x, sigma, **extra_args), got {type(model).__name__}")
        self.model, self.bound, self.last = model, dict(bound or {}), None

    def __call__(self, x, sigma, **extra_args):
        if self.bound:
            check_model_kwargs(self.bound, x.shape[0], "extra_args")
            clash = sorted(set(self.bound) & set(extra_args))
            if clash:
                raise TypeError(f"extra_args keys {clash} are bound in denoiser_score and passed again")
            extra_args = {**self.bound, **extra_args}
        self.last = self.model(x, sigma, **extra_args)
        return self.last

    def _sdekit_unbind(self):
        """``(the denoiser without bound conditioning, the bound conditioning)``, or ``None`` if none is bound."""
        return (Denoiser(self.model), dict(self.bound)) if self.bound else None


def check_bound_extra_args(extra_args) -> dict:
    """Validate conditioning bound before the batch is known: a mapping whose tensors share one leading dimension.

    Raises:
        TypeError / ValueError: as :func:`~sdekit.conditioning.check_model_kwargs`, naming ``extra_args``.
    """
    if extra_args is None:
        return {}
    if not isinstance(extra_args, Mapping):
        raise TypeError(f"extra_args must be a mapping of keyword arguments for the model (or None), "
                        f"got {type(extra_args).__name__}")
    leaves = flatten_model_kwargs(extra_args)[0]
    batch = leaves[0].shape[0] if leaves and leaves[0].dim() else 0
    return check_model_kwargs(extra_args, batch, "extra_args")


def setup(model, x, sigmas, extra_args):
    """Check a sampler's arguments; return ``(denoiser, score, flow, values, extra_args)``.

    ``values``: ``sigmas`` on the host (its one read per call); ``extra_args``:
    checked against the batch ``B = x.shape[0]`` (:func:`~sdekit.conditioning.check_model_kwargs`).
    """
    check_tensor("x", x, min_dim=1)
    check_tensor("sigmas", sigmas, min_dim=1)
    if sigmas.dim() != 1 or sigmas.numel() < 2:
        raise ValueError(f"sigmas must be 1-D with at least 2 entries, got shape {tuple(sigmas.shape)}")
    extra_args = check_model_kwargs(extra_args, x.shape[0], "extra_args")
    values = sigmas.tolist()  # the one host read of the call
    if not all(math.isfinite(v) for v in values) or min(values) < 0:
        raise ValueError("sigmas must be finite and >= 0")
    if any(b >= a for a, b in zip(values, values[1:])):
        raise ValueError("sigmas must be strictly decreasing (from sigma_max towards 0)")
    denoiser = Denoiser(model)
    score = score_from_denoiser(denoiser, SDE)
    return denoiser, score, SDE.probability_flow(score), values, extra_args


def flow_slope(x: torch.Tensor, denoised: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """The probability-flow slope ``dx/dσ = (x − D)/σ`` (Karras et al. 2022, eq. 3) for a known ``D``:
    the same arithmetic as the samplers' ``flow.drift(x, sigma)`` (:func:`setup`), without a model call.
    ``x``, ``denoised`` ``(B, *D)``; ``sigma`` ``(B,)``."""
    return SDE.probability_flow(score_from_denoiser(Frozen(denoised), SDE)).drift(x, sigma)


def noise_source(x, seed, sample_index, generator) -> Callable[[int], torch.Tensor]:
    """``draw(i)`` → ``(B, *D)`` standard normals of ``x``'s dtype and device for step ``i``.

    With ``seed``: :func:`sdekit.kernels.normal` keyed on ``(seed, sample_index[b],
    STEP_STREAM + i)``, so row ``b``'s draw does not depend on the batch
    (``sample_index`` defaults to ``arange(B)``).  Without: ``torch.randn`` from
    ``generator`` (the global RNG when ``None``, k-diffusion's ``randn_like``).

    Raises:
        ValueError: on ``seed`` together with ``generator``, ``sample_index``
            without ``seed``, a bad ``seed`` or ``sample_index``.
        TypeError: if ``generator`` is not a ``torch.Generator``.
    """
    if noise_kind(seed, sample_index, generator) == "generator":
        return lambda i: torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    B = x.shape[0]
    if sample_index is None:
        index = torch.arange(B, dtype=torch.int64, device=x.device)
    else:
        index = check_sample_index(sample_index, B).to(device=x.device, dtype=torch.int64)
    return lambda i: normal(seed, index, STEP_STREAM + i, x.shape[1:], dtype=x.dtype)


def step_noise(x, sigmas, noise_sampler, seed, sample_index, generator) -> Callable[[int], torch.Tensor]:
    """``draw(i)`` → ``(B, *D)`` standard normals for step ``i`` (from ``sigmas[i]`` to ``sigmas[i + 1]``).

    k-diffusion's ``noise_sampler(sigmas[i], sigmas[i + 1])`` if given (its
    output checked to have ``x``'s shape), else :func:`noise_source`.

    Raises:
        ValueError: on ``noise_sampler`` with ``seed``/``sample_index``/``generator``,
            or as :func:`noise_source`; on a draw, naming ``noise_sampler``, if its
            output does not have ``x``'s shape.
        TypeError: if ``noise_sampler`` is not callable, or as :func:`noise_source`.
    """
    if noise_sampler is None:
        return noise_source(x, seed, sample_index, generator)
    if seed is not None or sample_index is not None:
        raise ValueError("pass either noise_sampler or seed=/sample_index= (keyed noise), not both")
    if generator is not None:
        raise ValueError("pass either noise_sampler or generator= (the default noise's generator), not both")
    if not callable(noise_sampler):
        raise TypeError(f"noise_sampler must be callable as noise_sampler(sigma, sigma_next), "
                        f"got {type(noise_sampler).__name__}")

    def draw(i):
        return check_model_output("noise_sampler", noise_sampler(sigmas[i], sigmas[i + 1]), x)

    return draw


def ancestral_split(sigma, sigma_next, eta):
    """``(σ_down, σ_up)`` of an ancestral step from ``σ`` to ``σ'``, element-wise (tensors of one shape).

    ``σ_up = min(σ', η σ' √(σ² − σ'²)/σ)``, ``σ_down = √(σ'² − σ_up²)``: a
    deterministic step to ``σ_down`` plus fresh noise of size ``σ_up`` reaches
    the variance ``σ'²`` again.  At ``η = 1`` this is the VE posterior
    ``q(x_{σ'} | x_σ, x_0)`` (Song et al. 2021, eq. 47; Ho et al. 2020's
    ancestral step), ``η = 0`` the deterministic step to ``σ'``
    (k-diffusion's ``get_ancestral_step``; the η of DDIM, Song, Meng & Ermon
    2021, eq. 16).  Computed in the tensors' dtype.
    """
    var_up = sigma_next**2 * (sigma**2 - sigma_next**2) / sigma**2
    sigma_up = torch.minimum(sigma_next, eta * var_up.sqrt())
    sigma_down = (sigma_next**2 - sigma_up**2).sqrt()
    return sigma_down, sigma_up


def churn(x, sigma, values, i, s_churn, s_tmin, s_tmax, s_noise, draw):
    """EDM's stochastic churn (Karras et al. 2022, Alg. 2 lines 5–6): raise ``σ_i`` to ``σ̂ = σ_i (1 + γ)``
    with the VE SDE's exact forward transition; returns ``(x, σ̂)`` (``σ̂`` ``(B,)``).  Noise is drawn only
    when ``γ > 0``."""
    n = len(values) - 1
    gamma = min(s_churn / n, math.sqrt(2.0) - 1.0) if s_tmin <= values[i] <= s_tmax else 0.0
    sigma_hat = sigma * (gamma + 1.0)
    if gamma > 0:
        g = SDE.transition(sigma, sigma_hat)[2]  # √(σ̂² − σ²)
        x = x + expand_as_batch(g, x) * draw(i) * s_noise
    return x, sigma_hat


def report(callback, x, i, sigma, sigma_hat, denoised):
    """k-diffusion's callback dictionary, if there is a callback."""
    if callback is not None:
        callback({"x": x, "i": i, "sigma": sigma, "sigma_hat": sigma_hat, "denoised": denoised})
