"""Langevin MCMC on a score or a log-density: unadjusted Langevin (ULA) and MALA, batched with keyed noise.

Both discretise the Langevin diffusion ``dX = ∇log p(X) dt + √2 dW``, whose
stationary law is ``p``, by Euler–Maruyama with step ``h``:

    y = x + h ∇log p(x) + √(2h) z,    z ~ N(0, I).

* ULA takes ``x ← y`` always (Roberts & Tweedie 1996, "Exponential convergence
  of Langevin distributions and their discrete approximations", Bernoulli 2(4),
  eq. 1.3 with ``h = σ²/2``): only a score is needed, and its stationary law
  is ``p`` up to an ``O(h)`` bias (for ``N(μ, v)`` in 1-D: variance
  ``v / (1 − h/(2v))``).
* MALA (ibid., §1.4.2; Besag 1994) accepts ``y`` with probability
  ``min(1, p(y) q(x | y) / (p(x) q(y | x)))``, ``q(y | x) = N(y; x + h ∇log p(x), 2h I)``,
  else keeps ``x``: a Metropolis–Hastings chain, so ``p`` is exactly
  invariant at every step size.  Needs ``log p`` (up to a constant).

Every chain is one sample of the batch: chain ``b``'s noise is keyed Philox
noise (:mod:`sdekit.noise`) on ``(seed, sample_index[b], stream)`` (step ``k``
uses stream ``2k + 1`` for ``z`` and ``2k + 2`` for MALA's uniform), so a
chain does not depend on the batch it runs in.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .._checks import check_callable, check_choice, check_finite, check_positive_int, check_tensor, expand_as_batch
from ..conditioning import check_model_kwargs
from ..kernels import normal

MCMC_METHODS = ("ula", "mala")

#: The former name, kept so that programs importing it keep working.
METHODS = MCMC_METHODS


@dataclass
class LangevinResult:
    """Output of :func:`langevin_mcmc`.

    Attributes:
        x: ``(B, *D)`` final states.
        accepted: ``(B,)`` int64, accepted proposals per chain (``n_steps`` for ULA).
        acceptance_rate: ``(B,)`` float64, ``accepted / n_steps`` (1 for ULA).
        nfe: ``(B,)`` int64, evaluations of the score (MALA: of ``log p`` and its gradient together).
    """

    x: torch.Tensor
    accepted: torch.Tensor
    acceptance_rate: torch.Tensor
    nfe: torch.Tensor


def _step_size(step_size, B: int, x: torch.Tensor) -> torch.Tensor:
    """``h`` as a float64 ``(B,)`` tensor on ``x``'s device: a number or a ``(B,)`` tensor, finite and > 0."""
    if isinstance(step_size, torch.Tensor):
        h = step_size.detach().to(device=x.device, dtype=torch.float64)
        if h.dim() == 0:
            h = h.expand(B)
        if h.shape != (B,):
            raise ValueError(f"step_size must be a number or a (B,) = ({B},) tensor, got shape {tuple(h.shape)}")
    else:
        if isinstance(step_size, (bool, str, bytes)) or step_size is None:
            raise TypeError(f"step_size must be a real number > 0 or a (B,) tensor, got {step_size!r}")
        try:
            v = float(step_size)
        except (TypeError, ValueError):
            raise TypeError(f"step_size must be a real number > 0 or a (B,) tensor, got {step_size!r}") from None
        h = torch.full((B,), v, dtype=torch.float64, device=x.device)
    if not bool((torch.isfinite(h) & (h > 0)).all()):
        raise ValueError(f"step_size must be finite and > 0, got {h.tolist() if h.numel() <= 8 else 'some not'}")
    return h


def _uniform(seed: int, sample_index: torch.Tensor, stream: int, backend) -> torch.Tensor:
    """Keyed ``U(0, 1)`` ``(B,)`` float64: ``Φ(z)`` of one keyed normal per chain."""
    z = normal(seed, sample_index, stream, (1,), dtype=torch.float32, backend=backend)[:, 0].double()
    return 0.5 * torch.erfc(-z / math.sqrt(2.0))


def langevin_mcmc(
    x_init: torch.Tensor,
    *,
    score=None,
    log_prob=None,
    step_size,
    n_steps: int,
    method: str = "ula",
    seed: int | None = None,
    generator: torch.Generator | None = None,
    sample_index: torch.Tensor | None = None,
    model_kwargs: dict | None = None,
    backend: str | None = None,
) -> LangevinResult:
    """Run ``B`` independent Langevin chains (ULA or MALA) targeting ``p`` for ``n_steps`` steps.

    Source: Roberts & Tweedie 1996 (Bernoulli 2(4)), eq. 1.3 (ULA) and §1.4.2
    (MALA, the Metropolis-adjusted Langevin algorithm); the diffusion
    ``dX = ∇log p dt + √2 dW`` as in the lecture notes (Langevin diffusion).

    Args:
        x_init: ``(B, *D)`` starting states (floating dtype; the chains run in it).
        score: ``score(x, **model_kwargs)`` → ``∇ₓ log p(x)``, ``(B, *D)``.  Optional
            when ``log_prob`` is given (then taken by autograd).
        log_prob: ``log_prob(x, **model_kwargs)`` → ``log p(x)`` ``(B,)`` (nats, up to
            a constant).  Required for ``"mala"``.
        step_size: ``h > 0`` (time units of the diffusion), a number or a ``(B,)``
            tensor of per-chain steps.
        n_steps: number of steps ``K >= 1``.
        method: ``"ula"`` or ``"mala"``.
        seed, generator, sample_index: the noise key, as in :func:`sdekit.sample`
            (``seed`` an int in [0, 2⁶⁴); else one draw from ``generator``;
            ``sample_index`` int64 ``(B,)``, default ``arange(B)``).
        model_kwargs: per-sample conditioning passed to ``score``/``log_prob``.
        backend: noise backend, as in :func:`sdekit.sample`.
    Returns:
        :class:`LangevinResult` with per-chain acceptance counts and rates.
    Raises:
        ValueError / TypeError: a bad argument, named: ``x_init`` not a finite
            floating tensor with a batch, neither ``score`` nor ``log_prob``,
            ``method="mala"`` without ``log_prob``, ``step_size`` not > 0,
            ``n_steps`` not an integer >= 1, a bad ``seed``/``sample_index``/``model_kwargs``,
            or a model returning the wrong shape.
    """
    from ..kernels import resolve_backend
    from .sample import _resolve_seed, _sample_index

    check_tensor("x_init", x_init, min_dim=1)
    if x_init.shape[0] == 0 or x_init.dim() < 2:
        raise ValueError(f"x_init must have shape (B, *D) with B >= 1, got {tuple(x_init.shape)}")
    check_finite("x_init", x_init)
    check_choice("method", method, MCMC_METHODS)
    if score is None and log_prob is None:
        raise ValueError("give score or log_prob (or both)")
    if score is not None:
        check_callable("score", score)
    if log_prob is not None:
        check_callable("log_prob", log_prob)
    if method == "mala" and log_prob is None:
        raise ValueError("method='mala' needs log_prob (the Metropolis–Hastings ratio uses log p)")
    K = check_positive_int("n_steps", n_steps)
    if 2 * K + 2 >= 2**32:
        raise ValueError(f"n_steps must be below 2**31 - 1 (two noise streams per step), got {K}")
    B = x_init.shape[0]
    h = _step_size(step_size, B, x_init)
    kwargs = check_model_kwargs(model_kwargs, B)
    backend = resolve_backend(backend, x_init.device, x_init.dtype)
    idx = _sample_index(sample_index, B, x_init.device, False)
    seed = _resolve_seed(seed, generator, False)

    def lp(x):
        out = log_prob(x, **kwargs)
        if not isinstance(out, torch.Tensor) or out.shape != (B,):
            raise ValueError(f"log_prob must return a (B,) = ({B},) tensor, got "
                             f"{tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__}")
        return out

    def grad(x):
        if score is not None:
            s = score(x, **kwargs)
            if not isinstance(s, torch.Tensor) or s.shape != x.shape:
                raise ValueError(f"score must return a tensor of x's shape {tuple(x.shape)}")
            return s, (lp(x).detach() if method == "mala" else None)
        with torch.enable_grad():
            xr = x.detach().requires_grad_(True)
            v = lp(xr)
            (g,) = torch.autograd.grad(v.sum(), xr)
        return g, v.detach()

    col = lambda v: expand_as_batch(v.to(x_init.dtype), x_init)
    h_col, noise_col = col(h), col((2 * h).sqrt())
    x = x_init.detach().clone()
    s, logp = grad(x)
    accepted = torch.zeros(B, dtype=torch.int64, device=x.device)
    for k in range(K):
        z = normal(seed, idx, 2 * k + 1, x.shape[1:], dtype=x.dtype, backend=backend)
        mean_x = x + h_col * s
        y = mean_x + noise_col * z
        s_y, logp_y = grad(y)
        if method == "ula":
            x, s = y, s_y
            accepted += 1
            continue
        # log q(x | y) − log q(y | x), q(b | a) = N(b; a + h s(a), 2h I); the forward residual is √(2h) z.
        back = (x - y - h_col * s_y).double().flatten(1).pow(2).sum(1)
        fwd = (2 * h) * z.double().flatten(1).pow(2).sum(1)
        log_ratio = (logp_y - logp).double() + (fwd - back) / (4 * h)
        u = _uniform(seed, idx, 2 * k + 2, backend)
        ok = torch.log(u) < log_ratio  # NaN log_ratio (e.g. y outside the support, log p = −inf) rejects
        okc = expand_as_batch(ok, x)
        x, s = torch.where(okc, y, x), torch.where(okc, s_y, s)
        logp = torch.where(ok, logp_y, logp)
        accepted += ok.to(torch.int64)
    n_eval = torch.full((B,), K + 1, dtype=torch.int64, device=x.device)
    return LangevinResult(x=x, accepted=accepted, acceptance_rate=accepted.double() / K, nfe=n_eval)
