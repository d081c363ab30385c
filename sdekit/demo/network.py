"""The ε-prediction network: a Gaussian-preconditioned MLP on flattened images.

The network is ``ε̂(x, t) = ε̂_G(x, t) + residual``, where ``ε̂_G`` is the exact
noise predictor for Gaussian data ``N(μ, C)`` and the residual is a learned
MLP of the whitened input.  This is the preconditioning idea of Karras et al.
2022 (EDM, §5 and Appendix B.6: scale inputs to unit variance, add a skip
connection that is optimal for the data's second moments, scale the output
to the target's remaining variance), with EDM's scalar data variance
replaced by the data covariance ``C``.  With the last layer initialised to
zero, training starts from the probability flow of the Gaussian ``N(μ, C)``
and learns the non-Gaussian rest by denoising score matching.

Derivation (VP marginal ``x_t = m x_0 + σ ε``, ``C = U diag(λ) Uᵀ``): for
Gaussian data, in the coordinates ``y = Uᵀ (x − m μ)`` each direction has
variance ``a = m² λ + σ²`` and ``E[ε | x] = U (σ y / a)`` with conditional
variance ``m² λ / a`` per direction.  We feed the MLP ``y/√a`` (unit variance)
and return ``ε̂ = U (σ y / a + √(m² λ / a) ⊙ F(y/√a, t))``.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class SinusoidalEmbedding(nn.Module):
    """Fixed sinusoidal features of a scalar per sample (Vaswani et al. 2017; Ho et al. 2020).

    Features are ``sin(ω_j u), cos(ω_j u)`` for ``dim/2`` angular frequencies
    spaced geometrically from ``min_freq`` to ``max_freq``.

    Shapes:
        ``u`` ``(B,)`` → ``(B, dim)``.
    Raises:
        ValueError: if ``dim`` is odd or not positive, or the frequencies are
            not ``0 < min_freq <= max_freq``.
    """

    freqs: torch.Tensor  # registered buffer (dim // 2,)

    def __init__(self, dim: int = 64, min_freq: float = 0.1, max_freq: float = 20.0):
        super().__init__()
        if dim <= 0 or dim % 2:
            raise ValueError(f"dim must be a positive even integer, got {dim}")
        if not 0.0 < min_freq <= max_freq:
            raise ValueError(f"need 0 < min_freq <= max_freq, got {min_freq}, {max_freq}")
        freqs = torch.exp(torch.linspace(math.log(min_freq), math.log(max_freq), dim // 2))
        self.register_buffer("freqs", freqs)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        angles = u.to(self.freqs.dtype)[:, None] * self.freqs
        return torch.cat([angles.sin(), angles.cos()], dim=1)


class EpsilonMLP(nn.Module):
    """Gaussian-preconditioned MLP predicting ε of ``x_t = m(t) x_0 + σ(t) ε``.

    Trained with the ε-loss of Ho et al. 2020 (eq. 14); use it as a score
    model with ``sdekit.score_from_epsilon(net, sde)``.  See the module
    docstring for the parameterisation.  The MLP body has ``depth`` residual
    blocks ``h ← h + Linear(SiLU(Linear(h) + time))``; the time input is
    ``log(σ(t)/m(t))`` (EDM's noise level in VE units), embedded sinusoidally.

    Args:
        sde: linear SDE with ``mean_coeff(t)`` and ``std(t)`` (the VP SDE).
        data_mean: ``(D,)`` mean ``μ`` of the (dequantised) training data.
        data_cov: ``(D, D)`` symmetric positive definite covariance ``C``.
        width: hidden width.
        depth: number of residual blocks (>= 1).
        time_dim: size of the sinusoidal time embedding (even).
        dropout: dropout probability inside each residual block (training
            only; a regulariser against memorising the 1,437 training images).
    Shapes:
        ``forward(x, t)``: ``x`` ``(B, D)``, ``t`` ``(B,)`` in SDE time
        ``(0, T]`` → ``ε̂`` ``(B, D)``.
    Raises:
        ValueError: on bad sizes or a non-positive-definite ``data_cov``; on
            call, if ``x`` is not ``(B, D)`` or ``t`` not ``(B,)``.
    """

    def __init__(self, sde, data_mean: torch.Tensor, data_cov: torch.Tensor, *,
                 width: int = 256, depth: int = 3, time_dim: int = 64, dropout: float = 0.0):
        super().__init__()
        for name, value in (("width", width), ("depth", depth), ("time_dim", time_dim)):
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must lie in [0, 1), got {dropout}")
        dim = data_mean.shape[-1]
        if data_mean.shape != (dim,) or data_cov.shape != (dim, dim):
            raise ValueError(
                f"data_mean must be (D,) and data_cov (D, D), got {tuple(data_mean.shape)}, {tuple(data_cov.shape)}"
            )
        evals, evecs = torch.linalg.eigh(data_cov.to(torch.float64))
        if not bool(evals.min() > 0):
            raise ValueError(f"data_cov must be positive definite, smallest eigenvalue {evals.min().item():.3g}")
        self.sde = sde
        self.dim = dim
        self.register_buffer("mean", data_mean.to(torch.float32).clone())
        self.register_buffer("evals", evals.to(torch.float32))
        self.register_buffer("evecs", evecs.to(torch.float32))
        self.time_embed = nn.Sequential(
            SinusoidalEmbedding(time_dim), nn.Linear(time_dim, width), nn.SiLU(), nn.Linear(width, width)
        )
        self.inp = nn.Linear(dim, width)
        self.blocks_in = nn.ModuleList(nn.Linear(width, width) for _ in range(depth))
        self.blocks_time = nn.ModuleList(nn.Linear(width, width) for _ in range(depth))
        self.blocks_out = nn.ModuleList(nn.Linear(width, width) for _ in range(depth))
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(width, dim)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def _check_inputs(self, x: torch.Tensor, t: torch.Tensor) -> None:
        if x.dim() != 2 or x.shape[1] != self.dim:
            raise ValueError(f"x must have shape (B, {self.dim}), got {tuple(x.shape)}")
        if t.shape != (x.shape[0],):
            raise ValueError(f"t must have shape (B,) = ({x.shape[0]},), got {tuple(t.shape)}")

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        self._check_inputs(x, t)
        return self._epsilon(x, t, None)

    def _epsilon(self, x: torch.Tensor, t: torch.Tensor, extra_embedding: torch.Tensor | None) -> torch.Tensor:
        """ε̂; ``extra_embedding`` ``(B, width)`` (e.g. a label's) is added to the time embedding."""
        m = self.sde.mean_coeff(t).to(x.dtype)[:, None]
        s = self.sde.std(t).to(x.dtype)[:, None]
        y = (x - m * self.mean) @ self.evecs  # coordinates in C's eigenbasis
        signal = m**2 * self.evals  # (B, D): m² λ
        var = signal + s**2  # marginal variance per direction under N(μ, C)
        h = self.inp(y * var.rsqrt())
        emb = self.time_embed(torch.log(s[:, 0] / m[:, 0]))
        if extra_embedding is not None:
            emb = emb + extra_embedding
        for lin_in, lin_t, lin_out in zip(self.blocks_in, self.blocks_time, self.blocks_out):
            h = h + lin_out(self.dropout(nn.functional.silu(lin_in(nn.functional.silu(h)) + lin_t(emb))))
        residual = self.out(nn.functional.silu(h))
        eps_coords = s * y / var + (signal / var).sqrt() * residual
        return eps_coords @ self.evecs.T


class ConditionalEpsilonMLP(EpsilonMLP):
    """Class-conditional :class:`EpsilonMLP` ``ε̂(x, t, y)`` with a null label for classifier-free guidance.

    A learned embedding of the label ``y ∈ {0, …, K}`` is added to the time
    embedding; label ``K`` is the null label ∅, so the same network is also the
    unconditional model (Ho & Salimans 2022: one network, labels dropped to ∅
    during training).  The Gaussian preconditioning is the whole data set's for
    every label, so everything a class adds is learned.  Use with
    :func:`sdekit.classifier_free_guidance` (``null_label = K``) and
    :func:`sdekit.score_from_epsilon`.

    Args:
        num_classes: K >= 1.
        Others: as :class:`EpsilonMLP`.
    Shapes:
        ``forward(x, t, y)``: ``x`` ``(B, D)``, ``t`` ``(B,)``, ``y`` ``(B,)`` int64 → ``(B, D)``.
    Raises:
        ValueError: as :class:`EpsilonMLP`, if ``num_classes < 1``, and on call for
            labels that are not an int64 ``(B,)`` tensor.
        IndexError (on call): for a label outside ``{0, …, K}`` (checking first would cost a host sync).
    """

    def __init__(self, sde, data_mean, data_cov, num_classes: int, **kwargs):
        super().__init__(sde, data_mean, data_cov, **kwargs)
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes = num_classes
        self.null_label = num_classes
        self.label_embed = nn.Embedding(num_classes + 1, self.inp.out_features)

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        self._check_inputs(x, t)
        if y is None:
            raise ValueError("y (the class labels, or the null label) is required by the conditional network")
        if y.shape != (x.shape[0],) or y.dtype != torch.int64:
            raise ValueError(f"y must be an int64 tensor of shape (B,) = ({x.shape[0]},), "
                             f"got {y.dtype} {tuple(y.shape)}")
        return self._epsilon(x, t, self.label_embed(y))
