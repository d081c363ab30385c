"""NCSN's annealed Langevin dynamics (Song & Ermon 2019, Algorithm 1), with an optional final denoising step.

For noise levels ``σ_1 > σ_2 > … > σ_L`` (geometric) and ``T`` steps per level,

    α_i = ε σ_i² / σ_L²,    x ← x + (α_i / 2) s(x, σ_i) + √α_i z,   z ~ N(0, I),

run level after level, each level's chain started where the previous one
ended; no predictor.  The optional last step ``x ← x + σ_L² s(x, σ_L)`` is
Tweedie's ``E[x_0 | x]`` at ``σ_L`` (Song & Ermon 2020, "Improved techniques
for training score-based generative models", Appendix; Jolicoeur-Martineau
et al. 2021, "Adversarial score matching and improved sampling", §3: the
denoised samples score much better FID).

Two ways to give the noise levels:

* ``sde`` a linear SDE (a :class:`~sdekit.VESDE` for NCSN proper): the levels
  are ``σ_i = σ(t_i)`` on the uniform grid ``t_i = T − (i − 1)(T − eps)/(L − 1)``
  (geometric for the VE SDE, from ``σ_max`` down to ``σ(eps) ≈ σ_min``), the
  score model is called as ``score(x, t_i)`` in SDE time, the chain starts from
  the SDE's prior and the denoising step is Tweedie's formula of the SDE;
* ``sde=None``: a noise-conditional model ``score(x, σ)`` (NCSN's
  ``s_θ(x, σ)``, ``σ`` a ``(B,)`` tensor), levels ``sigmas`` or geometric from
  ``sigma_max`` to ``sigma_min``, start ``N(0, σ_1² I)``.

Noise: keyed Philox normals (:mod:`sdekit.noise`) on ``(seed, sample_index[b],
stream)``: the start uses stream 0, step ``j`` of level ``i`` (both from 0)
stream ``1 + i T + j``, so a sample does not depend on the batch it is drawn in.
"""

from __future__ import annotations

import math

import torch

from .._checks import check_device, check_positive, check_positive_int, check_sde, check_tensor
from ..conditioning import bind_model_kwargs, unbind_conditioning
from ..kernels import affine_update, normal, resolve_backend
from ..score_models import checked_score
from ..sdes.base import AbstractLinearSDE
from .denoise import tweedie_coefficients


def ncsn_levels(sde=None, n_levels: int = 10, *, eps: float | None = None, sigmas=None,
                sigma_max: float | None = None, sigma_min: float | None = None):
    """The noise levels of :func:`sample_ncsn`: ``(times, sigmas)``, float64 CPU tensors ``(L,)``.

    With a linear ``sde``: ``times = linspace(T, eps, L)`` (``eps`` default
    ``sde.sampling_eps``; ``[T]`` for ``L = 1``) and ``sigmas = sde.std(times)``.
    Without: ``times`` is ``sigmas`` (the model's argument), which are the given
    ``sigmas`` (strictly decreasing, positive) or the geometric sequence
    ``σ_max (σ_min/σ_max)^{(i−1)/(L−1)}`` (Song & Ermon 2019, §4.2).

    Raises:
        ValueError / TypeError: a bad ``n_levels``, ``eps``, ``sigmas``,
            ``sigma_max``/``sigma_min`` (named), ``sigmas`` together with an
            ``sde``, or ``sde`` not linear.
    """
    if sde is not None:
        check_sde("sde", sde)
        if not isinstance(sde, AbstractLinearSDE):
            raise TypeError(f"sde must be a linear SDE with std(t) (e.g. sdekit.VESDE()) for NCSN's levels, "
                            f"got {type(sde).__name__}")
        if sigmas is not None or sigma_max is not None or sigma_min is not None:
            raise ValueError("sigmas, sigma_max and sigma_min must be None with an sde (the levels come from sde.std)")
        from .._checks import check_eps

        L = check_positive_int("n_levels", n_levels)
        e = check_eps(sde, sde.sampling_eps if eps is None else eps)
        times = torch.linspace(float(sde.T), e, L, dtype=torch.float64) if L > 1 else \
            torch.tensor([float(sde.T)], dtype=torch.float64)
        return times, sde.std(times)
    if eps is not None:
        raise ValueError("eps needs an sde (without one the levels are sigmas)")
    if sigmas is not None:
        if sigma_max is not None or sigma_min is not None:
            raise ValueError("pass either sigmas or sigma_max/sigma_min, not both")
        s = torch.as_tensor(sigmas, dtype=torch.float64).flatten().cpu()
        if s.numel() < 1 or not bool(torch.isfinite(s).all()) or bool((s <= 0).any()) \
                or bool((s[1:] >= s[:-1]).any()):
            raise ValueError(f"sigmas must be finite, > 0 and strictly decreasing, got {s.tolist()}")
        return s, s
    if sigma_max is None or sigma_min is None:
        raise ValueError("without an sde, give sigmas or both sigma_max and sigma_min")
    hi, lo = check_positive("sigma_max", sigma_max), check_positive("sigma_min", sigma_min)
    if not hi > lo:
        raise ValueError(f"sigma_max must be > sigma_min, got {sigma_max} <= {sigma_min}")
    L = check_positive_int("n_levels", n_levels)
    if L == 1:
        s = torch.tensor([hi], dtype=torch.float64)
    else:
        s = torch.exp(torch.linspace(math.log(hi), math.log(lo), L, dtype=torch.float64))
    return s, s


def sample_ncsn(
    score,
    sde,
    shape,
    *,
    n_levels: int = 10,
    steps_per_level: int = 100,
    step_lr: float = 2e-5,
    eps: float | None = None,
    sigmas=None,
    sigma_max: float | None = None,
    sigma_min: float | None = None,
    denoise: bool = True,
    x_init: torch.Tensor | None = None,
    seed: int | None = None,
    generator: torch.Generator | None = None,
    sample_index: torch.Tensor | None = None,
    model_kwargs: dict | None = None,
    device=None,
    dtype: torch.dtype = torch.float32,
    backend: str | None = None,
):
    """Annealed Langevin dynamics (Song & Ermon 2019, Algorithm 1), optionally denoised at the end.

    Args:
        score: ``score(x, t, **model_kwargs)`` with ``x`` ``(B, *D)`` and
            ``t`` ``(B,)`` the SDE time ``t_i ∈ [eps, T]`` (with an ``sde``) or
            the noise level ``σ_i`` (``sde=None``); returns ``(B, *D)``.
        sde: a linear SDE (``VESDE`` for NCSN) or ``None`` (see the module docstring).
        shape: ``(B, *D)``.
        n_levels: ``L``, number of noise levels (Song & Ermon: 10).
        steps_per_level: ``T``, Langevin steps per level (Song & Ermon: 100).
        step_lr: ``ε`` in ``α_i = ε σ_i²/σ_L²`` (Song & Ermon: 2e-5 with ``σ_L = 0.01``).
        eps: last time of the level grid (with an ``sde``; default ``sde.sampling_eps``).
        sigmas, sigma_max, sigma_min: the levels without an ``sde`` (:func:`ncsn_levels`).
        denoise: finish with ``x ← E[x_0 | x]`` at the last level (one more evaluation).
        x_init: optional ``shape`` start instead of the prior (``N(0, σ_1² I)``).
        seed, generator, sample_index: the noise key, as in :func:`sdekit.sample`.
        model_kwargs: per-sample conditioning (tensors with leading dimension ``B``),
            passed to every score call (:mod:`sdekit.conditioning`).
        device, dtype: of the samples when ``x_init`` is not given.
        backend: ``"auto"`` | ``"triton"`` | ``"torch"`` | ``None``, as in :func:`sdekit.sample`.
    Returns:
        :class:`~sdekit.sampling.SampleResult`: ``x`` ``shape``, ``nfe`` = ``L T (+1)``
        and ``steps`` = ``L T`` per sample.
    Raises:
        ValueError / TypeError: a bad argument, named (``shape``, ``n_levels``,
            ``steps_per_level``, ``step_lr``, the levels, ``x_init``, ``seed``,
            ``sample_index``, ``model_kwargs``, ``device``), or a non-linear ``sde``.
    """
    from .sample import PRIOR_STREAM, SampleResult, _check_shape, _initial_state, _resolve_seed, _sample_index

    shape = _check_shape(shape)
    times, levels = ncsn_levels(sde, n_levels, eps=eps, sigmas=sigmas, sigma_max=sigma_max, sigma_min=sigma_min)
    T = check_positive_int("steps_per_level", steps_per_level)
    step_lr = check_positive("step_lr", step_lr)
    L = times.numel()
    if L * T + 1 >= 2**32:
        raise ValueError(f"n_levels × steps_per_level must be below 2**32 - 1 (one noise stream each), got {L * T}")
    B = shape[0]
    dev = check_device("device", device)
    if x_init is not None:
        check_tensor("x_init", x_init)
        dev, dtype = x_init.device, x_init.dtype
    score, model_kwargs = unbind_conditioning(checked_score(score), model_kwargs, B)
    score = bind_model_kwargs(score, model_kwargs)
    backend = resolve_backend(backend, dev, dtype)
    idx = _sample_index(sample_index, B, dev, False)
    seed = _resolve_seed(seed, generator, False)
    if sde is not None:
        x = _initial_state(sde, shape, x_init, seed, idx, dev, dtype, backend, False)
    elif x_init is not None:
        x = _initial_state(None, shape, x_init, seed, idx, dev, dtype, backend, False)
    else:
        x = float(levels[0]) * normal(seed, idx, PRIOR_STREAM, shape[1:], dtype=dtype, backend=backend)
    alphas = (step_lr * levels**2 / levels[-1] ** 2).tolist()
    key = {"seed": seed, "sample_index": idx, "backend": backend}
    for i, (t_i, a_i) in enumerate(zip(times.tolist(), alphas)):
        t = torch.full((B,), t_i, dtype=x.dtype, device=x.device)
        half, root = a_i / 2, math.sqrt(a_i)
        for j in range(T):
            x = affine_update(x, score(x, t), 1.0, half, root, stream=1 + i * T + j, **key)
    nfe = L * T
    if denoise:
        t = torch.full((B,), float(times[-1]), dtype=x.dtype, device=x.device)
        if sde is not None:
            a, b, d = (float(v) for v in tweedie_coefficients(sde, times[-1:]))
        else:
            a, b, d = 1.0, float(levels[-1]) ** 2, 0.0
        x = affine_update(x, score(x, t), a, b, 0.0, d, backend=backend)
        nfe += 1
    full = lambda v: torch.full((B,), v, dtype=torch.int64, device=x.device)
    return SampleResult(x=x, nfe=full(nfe), steps=full(L * T))
