"""UniPC: the unified predictor–corrector multistep sampler of the probability flow, in k-diffusion's signature.

Re-exported by :mod:`sdekit.integrations.k_diffusion` (import it from there);
the conventions (denoiser ``model(x, sigma, **extra_args)``, descending
``sigmas`` in units of ``x`` usually ending in 0, per-sample ``extra_args``,
callback keys) are that module's.

Source: Zhao, Bai, Rao, Zhou & Lu 2023 ("UniPC: A Unified Predictor-Corrector
Framework for Fast Sampling of Diffusion Models"), Algorithms 1–2 (UniP-p and
UniC-p with ``B(h)``), data prediction.  On the VE flow ``dx/dσ = (x − D)/σ``
with ``λ = −log σ``, ``h = λ_{i+1} − λ_i`` and the denoiser outputs
``m_j = D(x_j, σ_j)``, the order-``p`` predictor is

    x_{i+1} = (σ_{i+1}/σ_i) x_i − (e^{−h} − 1) m_i − B(h) Σ_{k<p} a_k (m_{i−k} − m_i)/r_k,
    r_k = (λ_{i−k} − λ_i)/h,

and the corrector, once ``m_{i+1} = D(x_{i+1}, σ_{i+1})`` is known, redoes the
step from ``x_i`` with ``m_{i+1}`` as one more node (``r = 1``) and weights
``c`` — it costs no model call, so UniPC-p has order ``p + 1`` at one call per
step.  The weights solve ``R a = g`` on the first ``p − 1`` rows (predictor)
and all ``p`` rows (corrector), ``R_{jk} = r_k^{j−1}``, with the paper's
``g_j = ψ_j j!/B(h)`` from ``ψ_1 = (e^{−h} − 1)/(−h) − 1``, ``ψ_{j+1} = ψ_j/(−h) − 1/(j+1)!``
(the Taylor remainders of ``e^{−h}``); the paper's simplified choices
``a = ½`` for ``p = 2`` and ``c = ½`` for ``p = 1`` are kept.  ``B(h) = −h`` (``"bh1"``) or ``e^{−h} − 1`` (``"bh2"``, the paper's
choice for guided sampling and diffusers' default).

Orders: ``p = min(order, i + 1)`` (warm-up), and with ``lower_order_final``
also ``<= n − i`` (diffusers' rule); no corrector after the last step (no model
call follows it), nor after steps listed in ``disable_corrector``.  A step to
``σ = 0`` (``λ = ∞``) returns ``m_i``, the limit of every order (diffusers
gives NaN there for ``"bh1"`` and for a final order above 1).  All weights are
computed once per call on the host in float64 and each update is one weighted
sum of the stored ``m_j``.
"""

from __future__ import annotations

import math

import torch
from tqdm.auto import trange

from .._checks import check_choice, check_model_output, check_positive_int
from ._k_diffusion_support import report, setup

__all__ = ["UniPCStepper", "sample_unipc", "unipc_weights"]


def _solve(rows: list[list[float]], rhs: list[float]) -> list[float]:
    return torch.linalg.solve(torch.tensor(rows, dtype=torch.float64),
                              torch.tensor(rhs, dtype=torch.float64)).tolist()


def unipc_weights(lam: list[float], i: int, p: int, bh: str):
    """Predictor and corrector weights of step ``i`` (from ``λ_i`` to ``λ_{i+1}``) at order ``p``.

    Args:
        lam: the finite ``λ = −log σ`` of the grid, increasing.
        i: the step; ``p <= i + 1`` past outputs must exist.
        p: the order (number of stored outputs used), ``>= 1``.
        bh: ``"bh1"`` or ``"bh2"``.
    Returns:
        ``(ratio, predictor, corrector)``: ``x_{i+1} = ratio x_i + Σ_j predictor[j] m_{i−j}``
        (``j = 0 … p−1``) and the corrected ``ratio x_i + corrector[0] m_{i+1} + Σ_j corrector[j+1] m_{i−j}``.
    """
    h = lam[i + 1] - lam[i]
    hh = -h
    phi = math.expm1(hh)  # e^{−h} − 1
    B = hh if bh == "bh1" else phi
    r = [(lam[i - k] - lam[i]) / h for k in range(1, p)] + [1.0]
    g, psi, fact = [], phi / hh - 1, 1
    for j in range(1, p + 1):
        g.append(psi * fact / B)
        fact *= j + 1
        psi = psi / hh - 1 / fact
    rows = [[rk ** (j - 1) for rk in r] for j in range(1, p + 1)]
    a = [0.5] if p == 2 else (_solve([row[:-1] for row in rows[:-1]], g[:-1]) if p > 2 else [])
    c = [0.5] if p == 1 else _solve(rows, g)
    ratio = math.exp(-h)  # σ_{i+1}/σ_i
    predictor = [-phi + B * sum(ak / rk for ak, rk in zip(a, r))] + [-B * ak / rk for ak, rk in zip(a, r)]
    corrector = ([-B * c[-1], -phi + B * sum(ck / rk for ck, rk in zip(c[:-1], r)) + B * c[-1]]
                 + [-B * ck / rk for ck, rk in zip(c[:-1], r)])
    return ratio, predictor, corrector


class UniPCStepper:
    """The state of one UniPC run: the stored outputs ``m_i`` and the corrector awaiting ``m_{i+1}``.

    The one implementation behind :func:`sample_unipc` and the diffusers scheduler's ``method="unipc"``
    (:class:`~sdekit.integrations.diffusers_scheduler.SDEScheduler`).  Per model call at ``σ_i``:
    :meth:`correct` (UniC on the state the last predictor produced, now that ``m_i`` is known) then
    :meth:`predict` (UniP to ``σ_{i+1}``).  The order of step ``i`` is ``min(order, outputs stored, n − i)``
    (the last with ``lower_order_final``), so a run may also start at any ``i`` (with no stored outputs).

    Args:
        sigmas: the ``n + 1`` noise levels (host floats, strictly decreasing, ``>= 0``).
        order, solver_type, lower_order_final, disable_corrector: as :func:`sample_unipc`.
    Raises:
        ValueError / TypeError: on a bad ``order`` or ``solver_type``.
    """

    def __init__(self, sigmas, order: int = 2, solver_type: str = "bh2", lower_order_final: bool = True,
                 disable_corrector=()) -> None:
        self.order = check_positive_int("order", order)
        self.solver_type = check_choice("solver_type", solver_type, ("bh1", "bh2"))
        self.values = [float(v) for v in sigmas]
        self.lam = [-math.log(v) for v in self.values if v > 0]
        self.lower_order_final, self.skip = bool(lower_order_final), {int(k) for k in disable_corrector}
        self.history: list = []  # m_i, m_{i−1}, … newest first
        self.pending: tuple | None = None  # (x_i, ratio, corrector weights of step i) awaiting m_{i+1}

    def correct(self, x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        """Store ``m = D(x, σ_i)`` and return ``x`` corrected by UniC (unchanged on a first or uncorrected step)."""
        if self.pending is not None:
            x_prev, ratio, weights = self.pending
            x = ratio * x_prev + weights[0] * m + sum(w * d for w, d in zip(weights[1:], self.history))
        self.history = [m] + self.history[:self.order - 1]
        return x

    def predict(self, i: int, x: torch.Tensor) -> torch.Tensor:
        """UniP from ``σ_i`` to ``σ_{i+1}`` (``m_i`` itself where ``σ_{i+1} = 0``)."""
        if self.values[i + 1] == 0:  # λ = ∞: every order's step returns m_i
            self.pending = None
            return self.history[0]
        n = len(self.values) - 1
        p = min(self.order, len(self.history), n - i) if self.lower_order_final else min(self.order,
                                                                                           len(self.history))
        ratio, predictor, corrector = unipc_weights(self.lam, i, p, self.solver_type)
        self.pending = None if i in self.skip else (x, ratio, corrector)
        return ratio * x + sum(w * d for w, d in zip(predictor, self.history))


@torch.no_grad()
def sample_unipc(model, x, sigmas, extra_args=None, callback=None, disable=None, order=2, solver_type="bh2",
                 lower_order_final=True, disable_corrector=()):
    """UniPC-``order`` (UniP predictor + UniC corrector, data prediction) on the probability flow.

    Source: Zhao et al. 2023, Algorithms 1–2 (module docstring); diffusers'
    ``UniPCMultistepScheduler`` (``predict_x0=True``) has the same steps.  One
    model call per step.

    Args:
        model, x, sigmas, extra_args: as :func:`~sdekit.integrations.k_diffusion.sample_lms`.
        callback: called after each model call with ``{"x", "i", "sigma", "sigma_hat", "denoised"}``
            (``x`` the corrected state before step ``i``).
        disable: disable the tqdm bar.
        order: the predictor's order ``p >= 1`` (the corrected method has order ``p + 1``).
        solver_type: ``"bh2"`` (default) or ``"bh1"``.
        lower_order_final: lower the order on the last steps (``p <= n − i``), as diffusers.
        disable_corrector: step indices whose result is not corrected.
    Returns:
        ``(B, *D)`` the sample at ``sigmas[-1]``.
    Raises:
        ValueError: on a bad ``order``/``solver_type``, or as
            :func:`~sdekit.integrations.k_diffusion.sample_euler` (bad ``x``/``sigmas``/``extra_args``,
            a model output of the wrong shape).
        TypeError: as :func:`~sdekit.integrations.k_diffusion.sample_euler`.
    """
    denoiser, _, _, values, kw = setup(model, x, sigmas, extra_args)
    stepper = UniPCStepper(values, order, solver_type, lower_order_final, disable_corrector)
    ones = x.new_ones([x.shape[0]])
    for i in trange(len(values) - 1, disable=disable):
        m = check_model_output("denoiser", denoiser(x, sigmas[i] * ones, **kw), x)
        x = stepper.correct(x, m)
        report(callback, x, i, sigmas[i], sigmas[i], m)
        x = stepper.predict(i, x)
    return x
