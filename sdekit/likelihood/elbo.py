"""Variational lower bounds on the log-likelihood: DDPM's discrete bound and the continuous-time SDE bound.

Both return an :class:`ELBOResult` (nats per sample, bits/dim, standard errors).

* :func:`ddpm_elbo`: Ho et al. 2020, §3.3 and eq. 5, for a :class:`~sdekit.DiscreteVPSDE`
  with a discretised Gaussian decoder: ``−log P(k) ≤ L_T + Σ_{t>1} L_{t−1} + L_0`` on
  *discrete* data ``k``.  The bins follow :mod:`sdekit.likelihood.bits`: level
  ``k ∈ {0, …, levels−1}`` owns ``[lo + kΔ, lo + (k+1)Δ)``, ``Δ = (hi − lo)/levels``; the
  chain starts at the bin centre ``x_0 = lo + (k + ½)Δ``; the outermost bins extend to
  ``±∞`` (Ho et al., eq. 13), so ``P`` sums to one over the levels.  Bits/dim is
  ``−ELBO/(D ln 2)``: a bound on the discrete model's code length, comparable with
  :func:`sdekit.bits_per_dim` of a dequantised density (itself an upper bound on it).
* :func:`sde_elbo`: the continuous-time bound for a linear SDE (VP, sub-VP, VE, EDM), Song et
  al. 2021b ("Maximum likelihood training of score-based diffusion models"), Thm. 1 and its
  per-point form (Thm. 3 there; Huang et al. 2021; Kingma et al. 2021, VDM, eq. 17 in
  continuous time).  It bounds ``log p^SDE_eps(x)``, the density at time ``eps`` of the
  reverse SDE driven by the score model and started from the prior, with ``x`` read as the
  state at ``eps`` (the convention of :func:`sdekit.log_likelihood`, whose ODE starts at ``eps``).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field

import torch

from .._checks import (
    check_batch,
    check_callable,
    check_choice,
    check_eps,
    check_finite,
    check_positive_int,
    check_tensor,
    expand_as_batch,
)
from ..conditioning import check_model_kwargs, map_model_kwargs, unbind_conditioning
from ..score_models import checked_score
from ..sdes.base import AbstractLinearSDE
from ..sdes.discrete_vp import DiscreteVPSDE
from .bits import _bin_width, bits_per_dim


@dataclass
class ELBOResult:
    """Output of :func:`ddpm_elbo` and :func:`sde_elbo`.

    Attributes:
        elbo: ``(B,)`` lower bound on the log-likelihood of each sample, nats (Monte-Carlo estimate).
        stderr: ``(B,)`` standard error of ``elbo`` over its Monte-Carlo draws (NaN where not estimable).
        bits_per_dim: ``(B,)`` the bound as bits/dim (an upper bound on the model's bits/dim).
        bits_stderr: ``(B,)`` standard error of ``bits_per_dim``.
        terms: ``(B,)`` tensors of the parts, nats, each signed as it enters ``elbo``
            (``elbo = Σ terms``): see each function.
        nfe: model evaluations per sample.
    """

    elbo: torch.Tensor
    stderr: torch.Tensor
    bits_per_dim: torch.Tensor
    bits_stderr: torch.Tensor
    terms: dict = field(default_factory=dict)
    nfe: int = 0


def _result(terms: dict, stderr: torch.Tensor, dim: int, nfe: int, levels, data_range) -> ELBOResult:
    total = sum(terms.values())
    assert isinstance(total, torch.Tensor)
    if levels is None:
        bpd = -total / (dim * math.log(2.0))
    else:
        bpd = bits_per_dim(total, dim, levels, data_range)
    return ELBOResult(total, stderr, bpd, stderr / (dim * math.log(2.0)), terms, nfe)


def _model_kwargs(score, model_kwargs, B, device):
    return unbind_conditioning(checked_score(score), model_kwargs, B, device=device)


# ----------------------------------------------------------------------------- continuous time


def _tile(a: torch.Tensor, k: int) -> torch.Tensor:
    """``k`` copies of ``a`` ``(B, …)`` stacked along the batch, ``(k B, …)`` (row ``j B + b`` is row ``b``)."""
    return a.repeat((k,) + (1,) * (a.dim() - 1))


def _invert_increasing(fn, target: torch.Tensor, lo: float, hi: float, iters: int = 64) -> torch.Tensor:
    """Solve ``fn(t) = target`` for an increasing ``fn`` on ``[lo, hi]`` by bisection (float64)."""
    a = torch.full_like(target, lo)
    b = torch.full_like(target, hi)
    for _ in range(iters):
        mid = 0.5 * (a + b)
        below = fn(mid) < target
        a, b = torch.where(below, mid, a), torch.where(below, b, mid)
    return 0.5 * (a + b)


def _prior_term(sde, x: torch.Tensor, eps: float, generator) -> tuple[torch.Tensor, bool]:
    """``E_{x_T | x_eps = x}[log π(x_T)]``, ``(B,)``: exact for a Gaussian prior ``N(0, s_π² I)``, else one draw."""
    B = x.shape[0]
    e = torch.full((B,), eps, dtype=torch.float64, device=x.device)
    T = torch.full((B,), float(sde.T), dtype=torch.float64, device=x.device)
    r, c, G = (v.to(x.dtype) for v in sde.transition(e, T))
    mean = expand_as_batch(r, x) * x + expand_as_batch(c, x)
    try:
        s_pi = sde.prior_from_normal(torch.ones(1, dtype=x.dtype, device=x.device))
    except NotImplementedError:
        z = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        return sde.prior_log_prob(mean + expand_as_batch(G, x) * z), False
    D = x[0].numel()
    # log N(mean + G z; 0, s²I) averaged over z: log π(mean) − D G² / (2 s²).
    return sde.prior_log_prob(mean) - D * G**2 / (2 * s_pi**2), True


def sde_elbo(
    score,
    sde,
    x: torch.Tensor,
    *,
    eps: float = 1e-5,
    n_samples: int = 16,
    generator: torch.Generator | None = None,
    model_kwargs: dict | None = None,
    levels: int | None = None,
    data_range=(0.0, 1.0),
    max_batch: int = 65536,
) -> ELBOResult:
    """Continuous-time ELBO ``log p^SDE_eps(x) ≥ L(x)`` for a linear SDE, by Monte Carlo over ``(t, z)``.

    With the forward process started at ``x`` at time ``eps``, ``x_t = r x + c + G z`` (the exact
    transition ``(r, c, G)`` from ``eps`` to ``t``), the bound of Song et al. 2021b (Thm. 1, per-point
    form) written with Stein's identity ``E[∇·s] = E[s·z]/G``:

        L(x) = E[log π(x_T)] + D log r(eps, T) − ∫_eps^T E_z[ ½ g² ‖s‖² + g² s·z / G ] dt,

    ``D log r = ∫ ∇·f dt`` for the linear drift.  The time integral is importance-sampled in
    ``v = G²/r²`` (``dv = g²/r² dt``; the transition's variance in data units) with density
    ``q(v) ∝ 1/√(v (1 + v))`` on ``[0, v_T]`` (``v = sinh²(u)``, ``u`` uniform): it follows the
    integrand's ``1/√v`` at ``t → eps`` (finite variance there) and its ``1/v`` decay once the noise
    exceeds data of unit scale (an exact score has magnitude ``~1/√(C + v)`` in data units).
    ``t`` is recovered by bisection.  The proposal changes the variance only, never the
    expectation.  The prior term is exact for a Gaussian prior ``N(0, s_π² I)``
    (``s_π z = sde.prior_from_normal(z)``).  With the exact score the gap ``log p_eps(x) − L(x)`` is ``E[log p_T(x_T) − log π(x_T) | x]`` (zero for
    ``π = p_T``: the forward and reverse path measures then agree); on average over the data
    it is ``KL(p_T ‖ π) + ½ ∫ g² E‖s − ∇ log p_t‖² dt`` (Song et al. 2021b, Thm. 1).

    Args:
        score: score model ``score(x, t, **model_kwargs)`` (SDE time).
        sde: linear SDE (VP, sub-VP, VE, EDM, DDPM) with a scalar diffusion ``g(t)``.
        x: ``(B, *D)`` data (e.g. dequantised, :func:`sdekit.dequantize`), read as the state at ``eps``.
        eps: start time (the ``eps`` of :func:`sdekit.log_likelihood`, default 1e-5).
        n_samples: Monte-Carlo draws ``K`` of ``(t, z)`` per sample (one model call each).
        generator: ``torch.Generator`` (per model call: the uniforms of its draws, then their noise).
        model_kwargs: per-sample conditioning for ``score``.
        levels, data_range: if ``levels`` is given, ``bits_per_dim`` uses :func:`sdekit.bits_per_dim`
            (``x`` dequantised into ``data_range`` from ``levels`` values); otherwise ``−L/(D ln 2)``.
        max_batch: most rows per model call: the ``K`` draws of all ``B`` samples are stacked into calls
            of ``⌊max_batch/B⌋`` draws (``model_kwargs`` repeated with them; at least one draw per call).
    Returns:
        :class:`ELBOResult` with terms ``prior`` (E log π(x_T)), ``drift`` (D log r), ``diffusion``
        (minus the time integral, estimated); ``stderr`` over the ``K`` draws (NaN for ``K = 1``).
    Raises:
        TypeError: ``sde`` not a linear SDE, ``score`` not callable, ``x`` not a floating tensor.
        ValueError: ``x`` with fewer than 2 dims, no rows or non-finite values; ``eps`` outside
            ``(0, T)``; bad ``n_samples``, ``levels``, ``data_range`` or ``model_kwargs``.
    """
    if not isinstance(sde, AbstractLinearSDE):
        raise TypeError(f"sde must be a linear SDE (sdekit.AbstractLinearSDE: VP, sub-VP, VE, EDM), got {sde!r}")
    check_callable("score", score)
    check_tensor("x", x, min_dim=2)
    check_batch("x", x)
    check_finite("x", x)
    eps = check_eps(sde, eps)
    K = check_positive_int("n_samples", n_samples)
    if levels is not None:
        _bin_width(levels, data_range)
    B, D = x.shape[0], x[0].numel()
    score, model_kwargs = _model_kwargs(score, model_kwargs, B, x.device)
    T = float(sde.T)
    f64: dict = {"dtype": torch.float64, "device": x.device}
    e = torch.full((B,), eps, **f64)

    def v_of_k(t, start):  # G²/r² of the transition start → t
        r = sde.mean_coeff(t) / sde.mean_coeff(start)
        return sde.transition_var(start, t) / r**2

    def v_of(t):
        return v_of_k(t, e)

    v_T = v_of(torch.full((B,), T, **f64))
    a = 1.0  # data of unit scale: q follows the integrand's 1/v decay once the noise exceeds it
    prior, _ = _prior_term(sde, x, eps, generator)
    drift = D * torch.log(sde.mean_coeff(torch.full((B,), T, **f64)) / sde.mean_coeff(e)).to(x.dtype)
    per_call = max(1, check_positive_int("max_batch", max_batch) // B)  # draws per model call
    draws = []
    for start in range(0, K, per_call):
        k = min(per_call, K - start)
        ek, vTk = e.repeat(k), v_T.repeat(k)  # row j·B + b: draw j of sample b
        w = torch.rand(k * B, generator=generator, **f64)
        zk = 2.0 * torch.asinh(torch.sqrt(vTk / a))  # normaliser of q(v) ∝ 1/√(v (a + v))
        t = _invert_increasing(lambda u, ek=ek: v_of_k(u, ek), a * torch.sinh(0.5 * zk * w) ** 2, eps, T)
        r, c, G = sde.transition(ek, t)
        v = G**2 / r**2  # consistent with the t found
        xk = x.repeat((k,) + (1,) * (x.dim() - 1))
        z = torch.randn(xk.shape, generator=generator, device=x.device, dtype=x.dtype)
        xt = (expand_as_batch(r.to(x.dtype), xk) * xk + expand_as_batch(c.to(x.dtype), xk)
              + expand_as_batch(G.to(x.dtype), xk) * z)
        kw = model_kwargs if k == 1 else map_model_kwargs(functools.partial(_tile, k=k), model_kwargs)
        s = score(xt, t.to(x.dtype), **kw)
        sq = s.double().pow(2).flatten(1).sum(1)
        sz = (s.double() * z.double()).flatten(1).sum(1)
        # −(½ g² ‖s‖² + g² s·z/G) / q(t),  q(t) = g² / (r² Z √(v (a + v))),  G = r √v:
        h = -zk * torch.sqrt(a + v) * (0.5 * r**2 * torch.sqrt(v) * sq + r * sz)
        draws.append(h.reshape(k, B).T)
    stack = torch.cat(draws, 1)  # (B, K)
    diffusion = stack.mean(1).to(x.dtype)
    stderr = (stack.std(1) / math.sqrt(K)).to(x.dtype) if K > 1 else torch.full((B,), math.nan, dtype=x.dtype,
                                                                                 device=x.device)
    terms = {"prior": prior, "drift": drift, "diffusion": diffusion}
    return _result(terms, stderr, D, K, levels, data_range)


# ----------------------------------------------------------------------------- DDPM


def _log_bin_prob(lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
    """``log(Φ(hi) − Φ(lo))`` for standardised bin edges ``lo < hi`` (±inf allowed), stable in both tails."""
    flip = (lo + hi) > 0  # upper tail: Φ(hi) − Φ(lo) = Φ(−lo) − Φ(−hi)
    a = torch.where(flip, -lo, hi)
    b = torch.where(flip, -hi, lo)
    la, lb = torch.special.log_ndtr(a), torch.special.log_ndtr(b)
    return la + torch.log1p(-torch.exp(lb - la))


def discretized_gaussian_log_prob(k: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, levels: int,
                                  data_range=(0.0, 1.0)) -> torch.Tensor:
    """``log P(k)`` in nats, ``(B,)``, of the discretised Gaussian decoder (Ho et al. 2020, eq. 13).

    ``P(k) = Π_d ∫_{bin k_d} N(x; mean_d, std²) dx`` with the bins of :mod:`sdekit.likelihood.bits`
    (``[lo + kΔ, lo + (k+1)Δ)``) and the outermost bins extended to ``±∞``.

    Args:
        k: ``(B, *D)`` integer levels in ``{0, …, levels−1}``.
        mean: ``(B, *D)`` decoder means (data space).
        std: ``(B,)`` decoder standard deviations.
        levels, data_range: the discretisation.
    Raises:
        ValueError: bad ``levels``/``data_range``, or ``k`` out of range.
    """
    width = _bin_width(levels, data_range)
    lo0 = float(data_range[0])
    kf = k.to(mean.dtype)
    if bool(((kf < 0) | (kf > levels - 1) | (kf != kf.round())).any()):
        raise ValueError(f"k must hold integers in [0, levels-1] = [0, {levels - 1}]")
    sd = expand_as_batch(std, mean)
    lower = torch.where(kf <= 0, torch.full_like(kf, -math.inf), (lo0 + width * kf - mean) / sd)
    upper = torch.where(kf >= levels - 1, torch.full_like(kf, math.inf), (lo0 + width * (kf + 1) - mean) / sd)
    return _log_bin_prob(lower, upper).flatten(1).sum(1)


def ddpm_elbo(
    model,
    sde: DiscreteVPSDE,
    k: torch.Tensor,
    levels: int,
    data_range=(0.0, 1.0),
    *,
    parameterization: str = "epsilon",
    variance: str = "beta",
    n_timesteps: int | None = None,
    generator: torch.Generator | None = None,
    model_kwargs: dict | None = None,
    time_input=None,
    dtype: torch.dtype | None = None,
) -> ELBOResult:
    """DDPM's variational bound ``log P(k) ≥ −(L_T + Σ_{t=2}^{N} L_{t−1} + L_0)`` on discrete data (Ho et al. 2020, eq. 5).

    Ho et al.'s timestep ``t ∈ {1, …, N}`` is sdekit's ``k_t = t − 1`` (SDE time ``t_k = (k+1) T/N``),
    ``ᾱ_t = sde.alphas_cumprod[t − 1]``, ``α_t = ᾱ_t/ᾱ_{t−1}``, ``β_t = 1 − α_t``.  The reverse step is
    ``p_θ(x_{t−1} | x_t) = N(μ_θ, σ_t² I)``, ``μ_θ = (x_t − β_t/√(1−ᾱ_t) ε̂)/√α_t`` (eq. 11), with
    ``σ_t² = β_t`` (``variance="beta"``) or ``β̃_t = (1−ᾱ_{t−1}) β_t/(1−ᾱ_t)`` (``"beta_tilde"``; at
    ``t = 1``, where ``β̃_1 = 0``, Ho et al.'s code uses ``β̃_2``).  Terms, in nats per sample:

    * ``L_T = KL(q(x_N | x_0) ‖ N(0, I))``, closed form;
    * ``L_{t−1} = KL(q(x_{t−1} | x_t, x_0) ‖ p_θ)`` at one draw ``x_t ~ q(x_t | x_0)``:
      ``½ [D (β̃/σ² − 1 − log(β̃/σ²)) + β² ‖ε̂ − ε‖² / (σ² α (1 − ᾱ_t))]`` (eqs. 7, 12);
    * ``L_0 = −log p_θ(x_0 | x_1)``, the discretised Gaussian decoder (eq. 13) at one draw ``x_1``.

    Args:
        model: ``model(x_t, t_in, **model_kwargs)`` → ``(B, *D)`` in ``parameterization``
            (``"epsilon"``, ``"score"``, ``"x0"``, ``"v"``; converted to ``ε̂``).
        sde: the schedule, a :class:`~sdekit.DiscreteVPSDE`.
        k: ``(B, *D)`` integer levels; ``x_0`` is the bin centre ``lo + (k + ½) Δ`` (module docstring).
        levels, data_range: the discretisation (as :func:`sdekit.dequantize`).
        variance: ``"beta"`` or ``"beta_tilde"``.
        n_timesteps: ``None`` sums all ``N − 1`` KL terms (``N`` model calls); an integer ``M`` draws
            ``M`` timesteps ``t ~ U{2, …, N}`` per sample and uses ``(N − 1) ×`` their mean (unbiased).
        generator: ``torch.Generator`` for the timesteps and the noise.
        model_kwargs: per-sample conditioning.
        time_input: optional map of SDE time ``t_k`` ``(B,)`` to the network's time input.
        dtype: floating dtype of the model's inputs and of the results (default: ``k``'s if floating,
            else torch's default dtype); the bound's own arithmetic runs in float64.
    Returns:
        :class:`ELBOResult`: ``elbo`` bounds ``log P(k)`` (nats); ``bits_per_dim = −elbo/(D ln 2)``;
        terms ``prior`` (−L_T), ``diffusion`` (−Σ L_{t−1}), ``decoder`` (−L_0); ``stderr`` over the
        ``M`` subsampled timesteps (NaN for ``n_timesteps=None`` or ``M = 1``: one draw per term).
    Raises:
        TypeError: ``sde`` not a DiscreteVPSDE, ``model`` not callable, ``k`` not a tensor.
        ValueError: ``k`` out of range or not integer, fewer than 2 dims or empty; ``N < 2``; bad
            ``levels``, ``data_range``, ``variance``, ``parameterization``, ``n_timesteps``.
    """
    from ..losses import PARAMETERIZATIONS, model_to_epsilon

    if not isinstance(sde, DiscreteVPSDE):
        raise TypeError(f"sde must be a sdekit.DiscreteVPSDE (DDPM schedule), got {type(sde).__name__}")
    check_callable("model", model)
    if not isinstance(k, torch.Tensor):
        raise TypeError(f"k must be a torch.Tensor of integer levels, got {type(k).__name__}")
    if k.dim() < 2 or k.shape[0] == 0:
        raise ValueError(f"k must have shape (B, *D) with B >= 1, got {tuple(k.shape)}")
    check_choice("variance", variance, ("beta", "beta_tilde"))
    check_choice("parameterization", parameterization, PARAMETERIZATIONS)
    N = sde.num_timesteps
    if N < 2:
        raise ValueError(f"the DDPM bound needs N >= 2 timesteps, got N = {N}")
    M = None if n_timesteps is None else check_positive_int("n_timesteps", n_timesteps)
    width = _bin_width(levels, data_range)
    if dtype is None:
        dtype = k.dtype if k.is_floating_point() else torch.get_default_dtype()
    kf = k.to(dtype)
    if bool(((kf < 0) | (kf > levels - 1) | (kf != kf.round())).any()):
        raise ValueError(f"k must hold integers in [0, levels-1] = [0, {levels - 1}]")
    x0 = float(data_range[0]) + width * (kf + 0.5)
    B, D = x0.shape[0], x0[0].numel()
    model_kwargs = check_model_kwargs(model_kwargs, B)

    ac = sde.alphas_cumprod.to(x0.device)  # float64 (N,)
    ac_prev = torch.cat([ac.new_ones(1), ac[:-1]])
    alpha = ac / ac_prev
    beta = 1.0 - alpha
    beta_tilde = (1.0 - ac_prev) * beta / (1.0 - ac)  # 0 at index 0
    var = beta if variance == "beta" else torch.cat([beta_tilde[1:2], beta_tilde[1:]])

    def eps_hat(idx: torch.Tensor):
        a = ac[idx]
        m, s = a.sqrt().to(dtype), (1.0 - a).sqrt().to(dtype)
        z = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=dtype)
        xt = expand_as_batch(m, x0) * x0 + expand_as_batch(s, x0) * z
        t = sde.timestep_to_time(idx).to(device=x0.device, dtype=dtype)
        out = model(xt, t if time_input is None else time_input(t), **model_kwargs)
        if not isinstance(out, torch.Tensor) or out.shape != x0.shape:
            raise ValueError(f"model must return a tensor of shape {tuple(x0.shape)}")
        return xt, z, model_to_epsilon(out, xt, m, s, parameterization)

    def kl_term(idx: torch.Tensor) -> torch.Tensor:
        _, z, e = eps_hat(idx)
        ratio = beta_tilde[idx] / var[idx]
        const = 0.5 * D * (ratio - 1.0 - torch.log(ratio))
        coef = beta[idx] ** 2 / (var[idx] * alpha[idx] * (1.0 - ac[idx]))
        return const + 0.5 * coef * (e.double() - z.double()).pow(2).flatten(1).sum(1)

    # L_T: KL(N(√ᾱ_N x0, (1 − ᾱ_N) I) ‖ N(0, I)).
    aN = ac[-1]
    sq = x0.double().pow(2).flatten(1).sum(1)
    L_T = 0.5 * (aN * sq + D * ((1.0 - aN) - 1.0 - torch.log1p(-aN)))

    nfe = 1
    if M is None:
        L_mid = torch.zeros(B, dtype=torch.float64, device=x0.device)
        for i in range(1, N):
            L_mid = L_mid + kl_term(torch.full((B,), i, device=x0.device, dtype=torch.long))
        stderr = torch.full((B,), math.nan, dtype=torch.float64, device=x0.device)
        nfe += N - 1
    else:
        draws = torch.stack([kl_term(torch.randint(1, N, (B,), generator=generator, device=x0.device))
                             for _ in range(M)], 1) * (N - 1)
        L_mid = draws.mean(1)
        stderr = draws.std(1) / math.sqrt(M) if M > 1 else torch.full((B,), math.nan, dtype=torch.float64,
                                                                      device=x0.device)
        nfe += M

    idx0 = torch.zeros(B, device=x0.device, dtype=torch.long)
    x1, _, e = eps_hat(idx0)
    mean = (x1.double() - (beta[0] / (1.0 - ac[0]).sqrt()) * e.double()) / alpha[0].sqrt()
    L_0 = -discretized_gaussian_log_prob(kf.double(), mean, var[idx0].sqrt(), levels, data_range)
    terms = {"prior": (-L_T).to(dtype), "diffusion": (-L_mid).to(dtype), "decoder": (-L_0).to(dtype)}
    return _result(terms, stderr.to(dtype), D, nfe, None, data_range)
