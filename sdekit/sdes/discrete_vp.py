"""The VP SDE whose marginals are a discrete DDPM schedule at its timesteps."""

from __future__ import annotations

import torch

from .._checks import check_finite, check_positive, check_tensor
from .vp import BetaScheduleSDE


class DiscreteVPSDE(BetaScheduleSDE):
    """VP SDE ``dx = −½ β(t) x dt + √β(t) dW`` whose marginals are a DDPM schedule at its timesteps.

    A DDPM chain (Ho et al. 2020, eq. 2) has ``x_k = √α_k x_{k−1} + √(1 − α_k) z``
    for timesteps ``k = 0 … N−1`` and ``ᾱ_k = ∏_{j≤k} α_j``.  A VP SDE's exact
    transition from ``s`` to ``t`` (Song et al. 2021, Appendix B, eq. 29) depends
    on ``B(t) − B(s)`` only, ``B = ∫ β``: it is ``x_t = e^{−ΔB/2} x_s + √(1 − e^{−ΔB}) z``.
    So any ``B`` with

        B(t_k) = −log ᾱ_k  at  t_k = (k + 1) T/N,   B(0) = 0,

    makes the SDE sampled at the ``t_k`` *exactly* the DDPM chain: marginals
    ``N(√ᾱ_k x_0, (1 − ᾱ_k) I)``, and every sampler in :mod:`sdekit.sampling` that
    uses exact transitions (``ancestral``, ``reverse_diffusion``) reproduces
    DDPM's discrete updates between timesteps.  (The continuous
    :class:`~sdekit.VPSDE` with ``β_min = N β_0``, ``β_max = N β_{N−1}`` only
    approximates the chain: its ``exp(−B(t_k))`` differs from ``ᾱ_k``.)

    Between the knots ``B`` is the monotone piecewise-cubic C¹ Hermite
    interpolant (Fritsch & Carlson 1980; knot slopes: harmonic means of the
    neighbouring secants, one-sided secants at the ends), so ``β = B′`` is
    continuous and ≥ 0 and ODE solvers keep their order across knots (a
    piecewise-constant β would put a jump at every knot).  Near ``t_k``,
    ``β ≈ −(N/T) log α_k ≈ N β_k``.  Evaluation runs in float64 from a table kept
    on the device of ``t`` (one copy per device, made on first use; no host sync).

    Args:
        alphas_cumprod: ``(N,)`` tensor of ``ᾱ_k``, non-increasing, in ``(0, 1]``,
            with ``ᾱ_{N−1} < 1`` (e.g. diffusers' ``scheduler.alphas_cumprod``).
        T: time horizon (default 1); timestep ``k`` sits at ``t_k = (k + 1) T/N``.
    Raises:
        ValueError: if ``alphas_cumprod`` is not 1-D, not finite, leaves
            ``(0, 1]``, increases, or never drops below 1.  (A zero-terminal-SNR
            schedule with ``ᾱ_{N−1} = 0`` has no finite ``B(T)`` and is rejected.)
        ValueError: if ``T`` is not a finite number > 0.
        TypeError: if ``alphas_cumprod`` is not a floating tensor, or ``T`` is not a real number.

    ``sampling_eps`` is ``T/N``, the time of timestep 0; the prior is ``N(0, I)``.
    """

    def __init__(self, alphas_cumprod: torch.Tensor, T: float = 1.0):
        check_tensor("alphas_cumprod", alphas_cumprod, min_dim=1)
        if alphas_cumprod.dim() != 1 or alphas_cumprod.numel() < 1:
            raise ValueError(f"alphas_cumprod must be 1-D with N >= 1 entries, got shape {tuple(alphas_cumprod.shape)}")
        ac = check_finite("alphas_cumprod", alphas_cumprod.detach().to("cpu", torch.float64))
        if bool((ac <= 0).any()) or bool((ac > 1).any()):
            raise ValueError("alphas_cumprod must lie in (0, 1] (zero terminal SNR is not supported)")
        if bool((ac[1:] > ac[:-1]).any()):
            raise ValueError("alphas_cumprod must be non-increasing (betas >= 0)")
        if not float(ac[-1]) < 1.0:
            raise ValueError("alphas_cumprod must drop below 1 (some beta > 0)")
        self.T = check_positive("T", T)
        self.num_timesteps = ac.numel()
        self.sampling_eps = self.T / self.num_timesteps
        self.alphas_cumprod = ac
        # B at the knots u = 0, 1, …, N (u = t N/T): B(0) = 0, B(t_k) = −log ᾱ_k; and slopes dB/du there.
        knots = torch.cat([torch.zeros(1, dtype=torch.float64), -torch.log(ac)])
        secant = knots[1:] - knots[:-1]  # >= 0
        slope = torch.empty_like(knots)
        slope[0], slope[-1] = secant[0], secant[-1]
        a, b = secant[:-1], secant[1:]
        slope[1:-1] = torch.where((a > 0) & (b > 0), 2 * a * b / (a + b).clamp_min(1e-300), torch.zeros_like(a))
        self._knots = torch.stack([knots, slope])  # (2, N + 1)
        self._tables: dict[torch.device, torch.Tensor] = {}  # _knots on each device used

    def __repr__(self) -> str:
        last = float(self.alphas_cumprod[-1])
        return f"DiscreteVPSDE(N={self.num_timesteps}, alphas_cumprod[-1]={last:.4g}, T={self.T})"

    def _table(self, device) -> torch.Tensor:
        key = torch.device(device)
        if key not in self._tables:
            self._tables[key] = self._knots.to(key)
        return self._tables[key]

    def _hermite(self, t: torch.Tensor):
        """Cubic Hermite pieces at ``t``: ``(B_j, d_j, B_{j+1}, d_{j+1}, s)`` with ``u = t N/T = j + s``."""
        table = self._table(t.device)
        u = t.to(torch.float64) * (self.num_timesteps / self.T)
        j = torch.floor(u).clamp(0, self.num_timesteps - 1).long()
        s = u - j
        return table[0, j], table[1, j], table[0, j + 1], table[1, j + 1], s

    def timestep_to_time(self, timestep) -> torch.Tensor:
        """SDE time ``t_k = (k + 1) T/N`` (float64) of DDPM timestep(s) ``k`` (may be fractional)."""
        k = torch.as_tensor(timestep)
        return (k.to(torch.float64) + 1.0) * (self.T / self.num_timesteps)

    def time_to_timestep(self, t: torch.Tensor) -> torch.Tensor:
        """The (fractional) DDPM timestep ``k = t N/T − 1`` at SDE time ``t``, ``t``'s dtype."""
        return t * (self.num_timesteps / self.T) - 1.0

    def integrated_beta(self, t: torch.Tensor) -> torch.Tensor:
        """B(t) = ∫₀ᵗ β, shape and dtype of ``t``."""
        b0, d0, b1, d1, s = self._hermite(t)
        s2, s3 = s * s, s * s * s
        out = (2 * s3 - 3 * s2 + 1) * b0 + (s3 - 2 * s2 + s) * d0 + (3 * s2 - 2 * s3) * b1 + (s3 - s2) * d1
        return out.to(t.dtype)

    def beta(self, t: torch.Tensor) -> torch.Tensor:
        """β(t) = B′(t) (continuous, >= 0), shape and dtype of ``t``."""
        b0, d0, b1, d1, s = self._hermite(t)
        s2 = s * s
        dB_du = 6 * (s2 - s) * (b0 - b1) + (3 * s2 - 4 * s + 1) * d0 + (3 * s2 - 2 * s) * d1
        return (dB_du * (self.num_timesteps / self.T)).to(t.dtype)
