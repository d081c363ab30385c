"""Step-size controllers for embedded Runge–Kutta pairs, per sample.

The proportional–integral (PI) controller (Gustafsson 1991, "Control-
theoretic techniques for stepsize selection in explicit Runge–Kutta methods",
ACM TOMS 17(4); Hairer & Wanner, "Solving ODEs II", §IV.2, eq. 2.43c): after
an accepted step

    h_next = h · safety · err_n^(−β₁/k) · err_{n−1}^(β₂/k),   k = q + 1,

with ``q`` the embedded order.  Default ``β₁ = 0.85, β₂ = 0.2``: for
DOPRI5 (k = 5) these are the exponents 0.17 and 0.04 of Hairer's DOPRI5 code
("stabilized step size control", Hairer, Nørsett & Wanner, "Solving ODEs I",
§II.4 and its appendix code).  Gustafsson's ``β₁ = 0.7, β₂ = 0.4`` cost 26–33 %
more evaluations on our likelihood benchmark, so they are not the default.
The pure integral (I) controller is ``β₁ = 1, β₂ = 0`` (Hairer, Nørsett &
Wanner, §II.4, eq. 4.13; scipy's RK45, torchdiffeq, score_sde).  The factor is
clamped to ``[min_factor, max_factor]`` and may not grow right after a
rejection.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


def batch_invariant_pow(x: torch.Tensor, p: float) -> torch.Tensor:
    """``x ** p`` for ``x > 0`` as ``exp(p · log x)``, with the same bits whatever the batch around ``x``.

    On the CPU, ``torch.pow`` by a scalar runs vectorised code on the body of
    a tensor and a scalar ``std::pow`` on its tail, which round differently,
    so a sample's step size would depend on its position in the batch.
    ``exp`` and ``log`` run the same vectorised code on every element (the
    tail through a partial load), which keeps per-sample results
    independent of the batch composition (see :mod:`sdekit.jobs`).
    """
    return torch.exp(p * torch.log(x))


@dataclass(frozen=True)
class StepController:
    """Per-sample step-size controller.

    Attributes:
        beta1: exponent on the current error (times ``1/k``).
        beta2: exponent on the previous accepted error (times ``1/k``); 0 gives an I controller.
        safety: safety factor (< 1).
        min_factor, max_factor: bounds on ``h_next / h``.
    """

    beta1: float = 0.85
    beta2: float = 0.2
    safety: float = 0.9
    min_factor: float = 0.2
    max_factor: float = 10.0

    def __post_init__(self):
        if not (0 < self.safety <= 1 and 0 < self.min_factor < 1 < self.max_factor and self.beta1 > 0 and self.beta2 >= 0):
            raise ValueError(f"invalid step controller settings: {self}")

    def factor(self, err, err_prev, error_order: int, last_rejected, finite=None):
        """Step-size ratio ``h_next / h`` for per-sample error norms.

        Args:
            err: ``(b,)`` error norm of the attempted step (1 = exactly on tolerance; NaN/inf allowed).
            err_prev: ``(b,)`` error norm of the last accepted step (1 initially).
            error_order: the embedded order ``q``.
            last_rejected: ``(b,)`` bool, whether the previous attempt was rejected.
            finite: ``torch.isfinite(err)`` if the caller has it already, else ``None``.
        Returns:
            ``(b,)`` factor; ``min_factor`` where ``err`` is not finite.
        """
        k = error_order + 1
        if finite is None:
            finite = torch.isfinite(err)
        e = err.clamp_min(1e-10)
        accepted = finite & (err <= 1.0)
        pi = batch_invariant_pow(e, -self.beta1 / k) * batch_invariant_pow(err_prev.clamp_min(1e-10), self.beta2 / k)
        fac = torch.where(accepted, pi, batch_invariant_pow(e, -1.0 / k))  # after a rejection: plain I control
        fac = (self.safety * fac).clamp(self.min_factor, self.max_factor)
        fac = torch.where(last_rejected, fac.clamp(max=1.0), fac)
        return torch.where(finite, fac, torch.full_like(err, self.min_factor))

    def host_factor(self, err: float, err_prev: float, error_order: int, last_rejected: bool) -> float:
        """:meth:`factor` for one system, on host floats (the whole-state loop of :mod:`.adaptive_whole`).

        The same rule in float64 arithmetic: ``min_factor`` for a non-finite ``err``.
        """
        if not math.isfinite(err):
            return self.min_factor
        k = error_order + 1
        e = max(err, 1e-10)
        if err <= 1.0:
            fac = math.exp(-self.beta1 / k * math.log(e)) * math.exp(self.beta2 / k * math.log(max(err_prev, 1e-10)))
        else:  # after a rejection: plain I control
            fac = math.exp(-1.0 / k * math.log(e))
        fac = min(max(self.safety * fac, self.min_factor), self.max_factor)
        return min(fac, 1.0) if last_rejected else fac


#: Defaults: the PI controller above.
PI_CONTROLLER = StepController()
#: The classical integral controller (score_sde / scipy RK45 / torchdiffeq behaviour).
I_CONTROLLER = StepController(beta1=1.0, beta2=0.0)
