"""Training objectives for score-based diffusion models: denoising and sliced score matching, DDPM's L_simple.

Conventions shared by every loss here:

* **Per-sample losses.**  Each loss returns a ``(B,)`` tensor, one unbiased
  single-draw estimate per data point; the minibatch objective is its
  ``.mean()`` (take it yourself; weights per sample are then easy).
* **Dimensions.**  ``dim_reduction="sum"`` (default) is the squared norm
  ``‖·‖²`` of the papers; ``"mean"`` divides by ``D`` (score_sde's
  ``reduce_mean=True``, Ho et al.'s ``mean_flat``).
* **Time.**  SDE time ``t ∈ [eps, T]`` (score_sde: ``t ~ U[eps, T]``);
  ``eps`` defaults to ``sde.sampling_eps``.  Pass ``t`` ``(B,)`` to use your
  own times (no time weight is applied then).
* **Randomness.**  Every draw (times, noise, projections) comes from
  ``generator``; the same generator state gives the same loss.
* **Conditioning.**  ``model_kwargs`` (tensors ``(B, …)``, :mod:`sdekit.conditioning`)
  is passed to the model as keyword arguments: ``model(x_t, t_in, **model_kwargs)``.

Denoising score matching (Vincent 2011; Song et al. 2021, "Score-Based
Generative Modeling through SDEs", eq. 7): for a linear SDE with marginal
``x_t = m(t) x_0 + c(t) + σ(t) z``,

    J(θ) = E_{t ~ U[eps, T]} λ(t) E_{x_0, z} ‖s_θ(x_t, t) − ∇ log p_{0t}(x_t | x_0)‖²,
    ∇ log p_{0t}(x_t | x_0) = −z/σ(t),

evaluated in the network's own parameterisation (the squared error is
converted exactly, so no division by a tiny ``σ`` is done for you):

=============  ===============================  ===============================================
``param``      network output                   ``‖s − s*‖²`` in terms of the output error
=============  ===============================  ===============================================
``score``      ``s ≈ ∇ log p_t``                ``‖ŝ − s*‖²``
``epsilon``    ``ε̂ = −σ s`` (Ho et al. 2020)     ``‖ε̂ − z‖² / σ²``
``x0``         ``x̂_0 = (x + σ² s − c)/m``        ``m² ‖x̂_0 − x_0‖² / σ⁴``
``v``          ``v̂ = m ε̂ − σ x̂_0`` (Salimans &  ``m² ‖v̂ − v‖² / (σ² (m² + σ²)²)``
               Ho 2022, §4)
=============  ===============================  ===============================================

(the conversions of :mod:`sdekit.score_models`; ``x0`` and ``v`` need an
offset-free SDE, ``c = 0``: VP, sub-VP, VE, EDM, DDPM).  Weightings λ(t):

* ``"sigma2"``: ``λ = σ(t)²`` (score_sde's default; in ε-form it is Ho et
  al.'s unweighted ``‖ε̂ − z‖²``);
* ``"likelihood"``: ``λ = g(t)²`` (Song et al. 2021b, "Maximum likelihood
  training of score-based diffusion models", Thm. 1: the weighted loss bounds
  the KL divergence, hence the negative log-likelihood);
* ``"edm"``: EDM's ``λ(σ̃) = (σ̃² + σ_d²)/(σ̃ σ_d)²`` on the denoiser error
  ``‖D − x_0‖²`` in VE coordinates ``σ̃ = σ/m`` (Karras et al. 2022, eq. 8 and
  Table 1), i.e. ``λ(t) = λ_EDM(σ̃) σ̃⁴ m²`` in score units.

Time sampling: ``"uniform"`` (``t ~ U[eps, T]``); ``"importance"`` draws
``t ~ q(t) ∝ λ(t)/σ(t)²`` on ``[eps, T]`` and multiplies by ``1/((T − eps) q(t))``
(the same objective ``J``, lower variance; Song et al. 2021b §5 / App. for the
likelihood weighting); ``"edm"``: EDM's log-normal ``ln σ ~ N(P_mean, P_std²)``
(Karras et al. 2022, Table 1), truncated to ``[eps, T]``, for :class:`~sdekit.EDMSDE`
whose time is σ (then ``J`` is EDM's ``E_{σ ~ log-normal}``, not the uniform mean).
"""

from __future__ import annotations

import math
from typing import Callable

import torch

from ._checks import (
    check_batch,
    check_callable,
    check_choice,
    check_eps,
    check_finite,
    check_positive,
    check_positive_int,
    check_tensor,
    expand_as_batch,
)
from .conditioning import check_model_kwargs
from .sdes.base import AbstractLinearSDE
from .sdes.discrete_vp import DiscreteVPSDE
from .sdes.edm import EDMSDE
from .sdes.subvp import SubVPSDE
from .sdes.ve import VESDE
from .sdes.vp import VPSDE, BetaScheduleSDE

__all__ = [
    "PARAMETERIZATIONS",
    "TIME_SAMPLINGS",
    "WEIGHTINGS",
    "ddpm_simple_loss",
    "dsm_loss",
    "loss_weight",
    "model_to_epsilon",
    "sample_time",
    "sliced_score_matching_loss",
]

PARAMETERIZATIONS = ("score", "epsilon", "x0", "v")
WEIGHTINGS = ("sigma2", "likelihood", "edm")
TIME_SAMPLINGS = ("uniform", "importance", "edm")


# ----------------------------------------------------------------------------- checks


def _check_linear_sde(sde) -> AbstractLinearSDE:
    if not isinstance(sde, AbstractLinearSDE):
        raise TypeError(f"sde must be a linear SDE with a closed-form marginal (sdekit.AbstractLinearSDE: VP, "
                        f"sub-VP, VE, EDM, DDPM), got {type(sde).__name__} {sde!r}")
    return sde


def _has_offset(sde) -> bool:
    return type(sde).mean_offset is not AbstractLinearSDE.mean_offset


def _check_x0(x0) -> torch.Tensor:
    check_tensor("x0", x0, min_dim=2)
    check_batch("x0", x0)
    return check_finite("x0", x0)


def _check_times(t, x0: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
    check_tensor("t", t, min_dim=1)
    if t.shape != (x0.shape[0],):
        raise ValueError(f"t must have shape (B,) = ({x0.shape[0]},), got {tuple(t.shape)}")
    check_finite("t", t)
    if bool(((t < lo) | (t > hi)).any()):
        raise ValueError(f"t must lie in [eps, T] = [{lo}, {hi}] (SDE time, σ(t) > 0)")
    return t.to(device=x0.device, dtype=x0.dtype)


def _reduce(sq: torch.Tensor, dim_reduction: str) -> torch.Tensor:
    flat = sq.flatten(1)
    return flat.sum(1) if dim_reduction == "sum" else flat.mean(1)


def _eps_or_default(sde, eps) -> float:
    return check_eps(sde, sde.sampling_eps if eps is None else eps)


# ----------------------------------------------------------------------------- weights and parameterisations


def _g2(sde, t: torch.Tensor) -> torch.Tensor:
    g = sde.diffusion(torch.zeros(t.shape + (1,), dtype=t.dtype, device=t.device), t)
    if g.shape != t.shape:
        raise ValueError(f"the likelihood weighting needs a scalar diffusion g(t) of shape (B,), got {tuple(g.shape)}")
    return g * g


def loss_weight(sde, t: torch.Tensor, weighting: str, parameterization: str = "score",
                sigma_data: float = 0.5) -> torch.Tensor:
    """The factor ``w(t)`` with ``λ(t) ‖s − s*‖² = w(t) ‖out − target‖²`` for a network output ``out``.

    Args:
        sde: linear SDE (``mean_coeff``, ``std``; ``diffusion`` for the likelihood weighting).
        t: ``(B,)`` SDE times.
        weighting: ``"sigma2"`` (σ²), ``"likelihood"`` (g²) or ``"edm"`` (Karras et al. 2022, eq. 8).
        parameterization: ``"score"``, ``"epsilon"``, ``"x0"`` or ``"v"`` (table in the module docstring).
        sigma_data: EDM's data standard deviation σ_d (``"edm"`` only; EDM's 0.5).
    Returns:
        ``(B,)`` weights, ``t``'s dtype.  ``sigma2`` with ``epsilon`` gives exactly 1 (Ho et al.'s
        unweighted loss) and ``edm`` with ``x0`` exactly ``λ_EDM(σ̃)`` (no conversion round trip).
    Raises:
        ValueError: on an unknown ``weighting`` / ``parameterization``.
    Source: Song et al. 2021 eq. 7 (σ²), Song et al. 2021b Thm. 1 (g²), Karras et al. 2022 eq. 8 / Table 1.
    """
    check_choice("weighting", weighting, WEIGHTINGS)
    check_choice("parameterization", parameterization, PARAMETERIZATIONS)
    m, s = sde.mean_coeff(t), sde.std(t)
    # score-space → output-space factor: ‖s − s*‖² = conv · ‖out − target‖²
    if parameterization == "score":
        conv = torch.ones_like(t)
    elif parameterization == "epsilon":
        conv = 1.0 / s**2
    elif parameterization == "x0":
        conv = m**2 / s**4
    else:
        conv = m**2 / (s**2 * (m**2 + s**2) ** 2)
    if weighting == "sigma2":
        if parameterization == "epsilon":
            return torch.ones_like(t)  # exactly 1: Ho et al.'s ‖ε̂ − z‖²
        return s**2 * conv
    if weighting == "likelihood":
        return _g2(sde, t) * conv
    sd2 = check_positive("sigma_data", sigma_data) ** 2
    st2 = (s / m) ** 2  # σ̃²
    lam_edm = (st2 + sd2) / (st2 * sd2)
    if parameterization == "x0":  # λ_EDM σ̃⁴ m² · m²/σ⁴ = λ_EDM
        return lam_edm
    return lam_edm * st2**2 * m**2 * conv


def model_to_epsilon(out: torch.Tensor, x_t: torch.Tensor, m: torch.Tensor, s: torch.Tensor,
                     parameterization: str) -> torch.Tensor:
    """Convert a network output to the ε-prediction ``ε̂`` of ``x_t = m x_0 + σ ε`` (offset-free SDEs).

    Args:
        out: ``(B, *D)`` network output in ``parameterization``.
        x_t: ``(B, *D)`` its input.
        m, s: ``(B,)`` the SDE's ``m(t)`` and ``σ(t)``.
        parameterization: ``"score"`` (``ε̂ = −σ s``), ``"epsilon"``, ``"x0"`` (``ε̂ = (x − m x̂_0)/σ``)
            or ``"v"`` (``ε̂ = (σ x + m v̂)/(m² + σ²)``, Salimans & Ho 2022).
    Returns:
        ``(B, *D)``.
    Raises:
        ValueError: on an unknown ``parameterization``.
    """
    check_choice("parameterization", parameterization, PARAMETERIZATIONS)
    m, s = expand_as_batch(m, x_t), expand_as_batch(s, x_t)
    if parameterization == "epsilon":
        return out
    if parameterization == "score":
        return -s * out
    if parameterization == "x0":
        return (x_t - m * out) / s
    return (s * x_t + m * out) / (m**2 + s**2)


def _target(parameterization: str, x0, z, m, s) -> torch.Tensor:
    """The regression target of each parameterisation (score target ``−z/σ``)."""
    if parameterization == "epsilon":
        return z
    if parameterization == "x0":
        return x0
    m, s = expand_as_batch(m, x0), expand_as_batch(s, x0)
    if parameterization == "score":
        return -z / s
    return m * z - s * x0


# ----------------------------------------------------------------------------- time sampling


def _vp_t_from_B(sde, big_b: torch.Tensor, eps: float, T: float) -> torch.Tensor:
    """Solve ``B(t) = big_b`` for ``t`` (float64): closed form for a linear β, bisection otherwise."""
    if isinstance(sde, VPSDE):
        b0, db = sde.beta_min, sde.beta_max - sde.beta_min
        # Stable root of ½ db t² + b0 t − B = 0 (T = 1 scaling folded into db/T): t = 2B / (b0 + √(b0² + 2 db' B)).
        db = db / sde.T
        t = 2.0 * big_b / (b0 + torch.sqrt(b0 * b0 + 2.0 * db * big_b))
        return t.clamp(eps, T)
    lo = torch.full_like(big_b, eps)
    hi = torch.full_like(big_b, T)
    for _ in range(64):  # B is increasing; 64 halvings reach float64 resolution on [eps, T]
        mid = 0.5 * (lo + hi)
        below = sde.integrated_beta(mid) < big_b
        lo, hi = torch.where(below, mid, lo), torch.where(below, hi, mid)
    return 0.5 * (lo + hi)


def _likelihood_proposal(sde, u: torch.Tensor, eps: float, T: float):
    """``t ~ q ∝ g²/σ²`` on ``[eps, T]`` by inverse CDF from ``u ~ U[0, 1)`` (float64); returns ``(t, log Z)``.

    ``q(t) = (g²/σ²)(t) / Z``.  VP: ``F = log(e^B − 1)``; sub-VP: ``F = 2 log(2 sinh(B/2))``;
    VE: ``g²/σ²`` is constant; EDM: ``F = 2 log t``.
    """
    ends = torch.tensor([eps, T], dtype=torch.float64, device=u.device)
    if isinstance(sde, SubVPSDE):
        b_lo, b_hi = sde.integrated_beta(ends)
        F = lambda b: 2.0 * torch.log(2.0 * torch.sinh(0.5 * b))
        lo, hi = F(b_lo), F(b_hi)
        big_b = 2.0 * torch.asinh(0.5 * torch.exp(0.5 * (lo + (hi - lo) * u)))
        return _vp_t_from_B(sde, big_b, eps, T), torch.log(hi - lo)
    if isinstance(sde, BetaScheduleSDE):
        lo, hi = torch.log(torch.expm1(sde.integrated_beta(ends)))  # type: ignore[attr-defined]
        big_b = torch.nn.functional.softplus(lo + (hi - lo) * u)
        return _vp_t_from_B(sde, big_b, eps, T), torch.log(hi - lo)
    if isinstance(sde, VESDE):
        rate = 2.0 * math.log(sde.sigma_max / sde.sigma_min) / sde.T
        return eps + (T - eps) * u, torch.log(torch.tensor(rate * (T - eps), dtype=torch.float64))
    if isinstance(sde, EDMSDE):
        return eps * (T / eps) ** u, torch.log(torch.tensor(2.0 * math.log(T / eps), dtype=torch.float64))
    raise ValueError(f"time_sampling='importance' with the likelihood weighting is available for VP, sub-VP, VE, "
                     f"EDM and DDPM SDEs, got {type(sde).__name__}")


def sample_time(n: int, sde, eps: float | None = None, distribution: str = "uniform", *, generator=None,
                device=None, dtype: torch.dtype = torch.float32, p_mean: float = -1.2,
                p_std: float = 1.2) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw ``n`` training times in ``[eps, T]`` (SDE time) and their weights ``π(t)/q(t)``.

    Args:
        n: number of times.
        sde: linear SDE.
        eps: smallest time (default ``sde.sampling_eps``).
        distribution:
            ``"uniform"``: ``q = π = U[eps, T]``, weight 1;
            ``"likelihood"``: ``q ∝ g(t)²/σ(t)²`` (the importance distribution of the likelihood
            weighting in ε/score form; Song et al. 2021b §5), weight ``1/((T − eps) q(t))``, so that
            ``E_q[weight · h(t)] = E_{U[eps, T]} h(t)``;
            ``"edm"``: EDM's log-normal ``ln t ~ N(p_mean, p_std²)`` truncated to ``[eps, T]`` (Karras et
            al. 2022, Table 1; :class:`~sdekit.EDMSDE`, whose time is σ), weight 1 (it defines the objective).
        generator: ``torch.Generator`` for the one uniform draw per time.
        device, dtype: of the outputs (computed in float64, then cast).
        p_mean, p_std: EDM's log-normal parameters (EDM's −1.2, 1.2).
    Returns:
        ``(t, weight)``, both ``(n,)``.
    Raises:
        ValueError: on a bad ``n``, ``eps`` (must lie in ``(0, T)`` with ``σ(eps) > 0``) or
            ``distribution``; ``"likelihood"`` for an SDE without a closed-form proposal,
            ``"edm"`` for an SDE other than EDMSDE.
        TypeError: if ``sde`` is not a linear SDE.
    """
    n = check_positive_int("n", n)
    sde = _check_linear_sde(sde)
    eps = _eps_or_default(sde, eps)
    check_choice("distribution", distribution, ("uniform", "likelihood", "edm"))
    T = float(sde.T)
    u = torch.rand(n, generator=generator, device=device, dtype=torch.float64)
    if distribution == "uniform":
        t = eps + (T - eps) * u
        w = torch.ones_like(t)
    elif distribution == "likelihood":
        t, log_z = _likelihood_proposal(sde, u, eps, T)
        # weight = Z / ((T − eps) · g²/σ²)
        ratio = _g2(sde, t) / sde.std(t) ** 2
        w = torch.exp(log_z) / ((T - eps) * ratio)
    else:
        if not isinstance(sde, EDMSDE):
            raise ValueError(f"distribution='edm' (log-normal σ) needs an EDMSDE, whose time is σ; got {sde!r}")
        p_std = check_positive("p_std", p_std)
        normal = torch.distributions.Normal(torch.tensor(float(p_mean), dtype=torch.float64, device=u.device),
                                            torch.tensor(p_std, dtype=torch.float64, device=u.device))
        ends = torch.tensor([math.log(eps), math.log(T)], dtype=torch.float64, device=u.device)
        c_lo, c_hi = normal.cdf(ends)
        t = torch.exp(normal.icdf(c_lo + (c_hi - c_lo) * u)).clamp(eps, T)
        w = torch.ones_like(t)
    return t.to(dtype), w.to(dtype)


# ----------------------------------------------------------------------------- losses


def _call(model, x_t, t, time_input, model_kwargs, name):
    t_in = t if time_input is None else time_input(t)
    out = model(x_t, t_in, **model_kwargs)
    if not isinstance(out, torch.Tensor) or out.shape != x_t.shape:
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(f"{name} must return a tensor of the shape of x_t {tuple(x_t.shape)}, got {got}")
    return out


def dsm_loss(
    model: Callable,
    sde,
    x0: torch.Tensor,
    *,
    parameterization: str = "score",
    weighting: str = "sigma2",
    time_sampling: str = "uniform",
    eps: float | None = None,
    t: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    model_kwargs: dict | None = None,
    dim_reduction: str = "sum",
    time_input: Callable | None = None,
    sigma_data: float = 0.5,
    p_mean: float = -1.2,
    p_std: float = 1.2,
) -> torch.Tensor:
    """Per-sample denoising score-matching loss ``(B,)`` for a linear SDE (see the module docstring).

    Draws ``t`` (unless given), then ``z ~ N(0, I)`` of ``x0``'s shape, forms
    ``x_t = m(t) x_0 + c(t) + σ(t) z`` and returns
    ``weight(t) · w(t) · ‖model(x_t, t) − target‖²`` with ``w`` from :func:`loss_weight`
    and ``weight`` the time-sampling weight of :func:`sample_time`.

    Args:
        model: ``model(x_t, t_in, **model_kwargs)`` → ``(B, *D)`` in ``parameterization``.
        sde: linear SDE (:class:`sdekit.AbstractLinearSDE`).
        x0: ``(B, *D)`` clean data.
        parameterization: ``"score"``, ``"epsilon"``, ``"x0"`` or ``"v"``.
        weighting: ``"sigma2"``, ``"likelihood"`` or ``"edm"``.
        time_sampling: ``"uniform"``, ``"importance"`` (``q ∝ λ/σ²``; for ``"sigma2"`` that is
            uniform, for ``"likelihood"`` :func:`sample_time`'s ``"likelihood"``; not for ``"edm"``)
            or ``"edm"`` (log-normal, EDMSDE).  Ignored when ``t`` is given.
        eps: smallest time (default ``sde.sampling_eps``).
        t: ``(B,)`` times in ``[eps, T]`` to use instead of drawing them (no time weight).
        generator: ``torch.Generator`` for the times and the noise (drawn in that order).
        model_kwargs: per-sample conditioning passed to ``model``.
        dim_reduction: ``"sum"`` (``‖·‖²``) or ``"mean"`` (``‖·‖²/D``).
        time_input: optional map of SDE time ``(B,)`` to the network's time input.
        sigma_data, p_mean, p_std: EDM's σ_d and log-normal parameters.
    Returns:
        ``(B,)`` losses (score units ``λ ‖s − s*‖²`` whatever the parameterisation); ``.mean()`` is the
        minibatch estimate of ``J(θ)``, differentiable in the model's parameters.
    Raises:
        TypeError: ``sde`` not linear, ``model`` not callable, ``x0`` not a floating tensor.
        ValueError: bad ``x0`` (fewer than 2 dims, empty, non-finite), ``t`` (shape, range),
            ``eps``, a choice argument, ``model_kwargs`` rows, a wrong model output shape,
            ``x0``/``v`` with an SDE that has a mean offset, ``"importance"`` with ``"edm"``.
    Source: Song et al. 2021 eq. 7; Song et al. 2021b Thm. 1 and §5; Karras et al. 2022 eq. 8, Table 1;
    Ho et al. 2020 eq. 14 (ε form).
    """
    check_callable("model", model)
    sde = _check_linear_sde(sde)
    x0 = _check_x0(x0)
    check_choice("parameterization", parameterization, PARAMETERIZATIONS)
    check_choice("weighting", weighting, WEIGHTINGS)
    check_choice("time_sampling", time_sampling, TIME_SAMPLINGS)
    check_choice("dim_reduction", dim_reduction, ("sum", "mean"))
    if parameterization in ("x0", "v") and _has_offset(sde):
        raise ValueError(f"parameterization={parameterization!r} needs an offset-free SDE (c(t) = 0), "
                         f"got {type(sde).__name__}")
    eps = _eps_or_default(sde, eps)
    B = x0.shape[0]
    model_kwargs = check_model_kwargs(model_kwargs, B)
    if t is not None:
        t = _check_times(t, x0, eps, float(sde.T))
        time_w = None
    else:
        if time_sampling == "importance" and weighting == "edm":
            raise ValueError("time_sampling='importance' is not available for weighting='edm' "
                             "(use 'uniform', or 'edm' for EDM's log-normal)")
        dist = {"uniform": "uniform", "edm": "edm",
                "importance": "likelihood" if weighting == "likelihood" else "uniform"}[time_sampling]
        t, time_w = sample_time(B, sde, eps, dist, generator=generator, device=x0.device, dtype=x0.dtype,
                                p_mean=p_mean, p_std=p_std)
        if dist == "uniform" or dist == "edm":
            time_w = None
    z = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
    m, s = sde.mean_coeff(t), sde.std(t)
    x_t = expand_as_batch(m, x0) * x0 + expand_as_batch(s, x0) * z
    if _has_offset(sde):
        x_t = x_t + expand_as_batch(sde.mean_offset(t), x0)
    out = _call(model, x_t, t, time_input, model_kwargs, f"{parameterization} model")
    loss = _reduce((out - _target(parameterization, x0, z, m, s)).pow(2), dim_reduction)
    if not (weighting == "sigma2" and parameterization == "epsilon"):  # that weight is exactly 1
        loss = loss * loss_weight(sde, t, weighting, parameterization, sigma_data)
    if time_w is not None:
        loss = loss * time_w
    return loss


def ddpm_simple_loss(
    model: Callable,
    sde: DiscreteVPSDE,
    x0: torch.Tensor,
    *,
    generator: torch.Generator | None = None,
    model_kwargs: dict | None = None,
    time_input: Callable | None = None,
    dim_reduction: str = "mean",
) -> torch.Tensor:
    """DDPM's ``L_simple``: ``‖ε − ε_θ(√ᾱ_k x_0 + √(1 − ᾱ_k) ε, t_k)‖²`` per sample, ``k`` uniform (Ho et al. 2020, eq. 14).

    The timestep ``k ~ U{0, …, N−1}`` (Ho et al.'s ``t = k + 1 ∈ {1, …, N}``) and its SDE time
    ``t_k = (k + 1) T/N`` (:meth:`DiscreteVPSDE.timestep_to_time`); the marginal is the exact
    DDPM one, from ``alphas_cumprod``.

    Args:
        model: ε-network ``model(x_t, t_in, **model_kwargs)`` → ``(B, *D)``; ``t_in`` is the SDE time
            ``t_k`` ``(B,)`` or ``time_input(t_k)`` (e.g. ``sde.time_to_timestep`` for the index ``k``).
        sde: the :class:`~sdekit.DiscreteVPSDE` of the schedule.
        x0: ``(B, *D)`` data (Ho et al.: scaled to ``[−1, 1]``).
        generator: for ``k`` (one ``randint``) then ``ε``.
        model_kwargs: per-sample conditioning.
        time_input: optional map of SDE time to the network's time input.
        dim_reduction: ``"mean"`` (Ho et al.'s ``mean_flat``, default) or ``"sum"``.
    Returns:
        ``(B,)`` losses (dimensionless); their mean is the minibatch ``L_simple``.
    Raises:
        TypeError: if ``sde`` is not a DiscreteVPSDE, ``model`` not callable.
        ValueError: bad ``x0``, ``model_kwargs`` or model output shape.
    """
    check_callable("model", model)
    if not isinstance(sde, DiscreteVPSDE):
        raise TypeError(f"sde must be a sdekit.DiscreteVPSDE (DDPM schedule), got {type(sde).__name__}")
    x0 = _check_x0(x0)
    check_choice("dim_reduction", dim_reduction, ("sum", "mean"))
    B = x0.shape[0]
    model_kwargs = check_model_kwargs(model_kwargs, B)
    k = torch.randint(sde.num_timesteps, (B,), generator=generator, device=x0.device)
    z = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
    ac = sde.alphas_cumprod.to(x0.device)[k]
    m, s = ac.sqrt().to(x0.dtype), (1.0 - ac).sqrt().to(x0.dtype)
    x_t = expand_as_batch(m, x0) * x0 + expand_as_batch(s, x0) * z
    t = sde.timestep_to_time(k).to(x0.dtype)
    out = _call(model, x_t, t, time_input, model_kwargs, "epsilon model")
    return _reduce((out - z).pow(2), dim_reduction)


def sliced_score_matching_loss(
    score: Callable,
    sde,
    x0: torch.Tensor,
    *,
    weighting: str = "sigma2",
    eps: float | None = None,
    t: torch.Tensor | None = None,
    n_projections: int = 1,
    projection: str = "gaussian",
    variance_reduction: bool = False,
    generator: torch.Generator | None = None,
    model_kwargs: dict | None = None,
    create_graph: bool = True,
) -> torch.Tensor:
    """Per-sample sliced score matching on perturbed data ``x_t ~ p_t`` (Song et al. 2019, eqs. 7-8), ``(B,)``.

    For each sample: ``t ~ U[eps, T]`` (unless given), ``x_t = m x_0 + c + σ z``, ``P`` projections
    ``v`` (``E[v vᵀ] = I``), and

        ℓ = λ(t) · mean_p [ vₚᵀ ∇ₓ s(x_t, t) vₚ + ½ (vₚᵀ s)² ]        (SSM, eq. 7)
        ℓ = λ(t) · mean_p [ vₚᵀ ∇ₓ s(x_t, t) vₚ ] + ½ λ(t) ‖s‖²      (SSM-VR, eq. 8; Gaussian ``v``)

    whose expectation is ``λ(t) (½ E‖s − ∇ log p_t‖² − ½ E‖∇ log p_t‖²)`` (Hyvärinen 2005):
    minimised by the true score, no conditional target needed.  ``vᵀ ∇s v`` is one
    vector–Jacobian product per projection.

    Args:
        score: score model ``score(x, t, **model_kwargs)`` → ``(B, *D)``, differentiable in ``x``.
        sde: linear SDE.
        x0: ``(B, *D)`` data.
        weighting: ``"sigma2"`` or ``"likelihood"`` (λ(t) as :func:`dsm_loss`).
        eps, t, generator, model_kwargs: as :func:`dsm_loss` (draw order: t, z, projections).
        n_projections: ``P``.
        projection: ``"gaussian"`` or ``"rademacher"``.
        variance_reduction: use the ``½‖s‖²`` form (SSM-VR).
        create_graph: keep the graph of the VJP (``True`` to train; ``False`` to evaluate).
    Returns:
        ``(B,)`` losses in score units.
    Raises:
        TypeError / ValueError: as :func:`dsm_loss`; bad ``n_projections`` or ``projection``.
    """
    check_callable("score", score)
    sde = _check_linear_sde(sde)
    x0 = _check_x0(x0)
    check_choice("weighting", weighting, ("sigma2", "likelihood"))
    check_choice("projection", projection, ("gaussian", "rademacher"))
    P = check_positive_int("n_projections", n_projections)
    eps = _eps_or_default(sde, eps)
    B = x0.shape[0]
    model_kwargs = check_model_kwargs(model_kwargs, B)
    if t is None:
        t, _ = sample_time(B, sde, eps, "uniform", generator=generator, device=x0.device, dtype=x0.dtype)
    else:
        t = _check_times(t, x0, eps, float(sde.T))
    z = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
    from .likelihood.divergence import probe_noise

    v = probe_noise((B, P) + tuple(x0.shape[1:]), projection, generator=generator, device=x0.device, dtype=x0.dtype)
    m, s = sde.mean_coeff(t), sde.std(t)
    x_t = expand_as_batch(m, x0) * x0 + expand_as_batch(s, x0) * z + expand_as_batch(sde.mean_offset(t), x0)
    with torch.enable_grad():
        x_t = x_t.detach().requires_grad_(True)
        out = _call(score, x_t, t, None, model_kwargs, "score model")
        jvp_terms, sq_terms = [], []
        for p in range(P):
            vp = v[:, p]
            (vjp,) = torch.autograd.grad(out, x_t, vp, create_graph=create_graph, retain_graph=True)
            jvp_terms.append((vjp * vp).flatten(1).sum(1))
            if not variance_reduction:
                sq_terms.append(0.5 * (out * vp).flatten(1).sum(1) ** 2)
        loss = torch.stack(jvp_terms, 1).mean(1)
        if variance_reduction:
            loss = loss + 0.5 * out.pow(2).flatten(1).sum(1)
        else:
            loss = loss + torch.stack(sq_terms, 1).mean(1)
    lam = sde.std(t) ** 2 if weighting == "sigma2" else _g2(sde, t)
    return lam * loss
