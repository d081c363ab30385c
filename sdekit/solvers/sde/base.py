"""The interface every fixed-step SDE solver implements.

A solver is built for one :class:`~sdekit.solvers.sde.problem.SDEProblem`; the
constructor checks that the problem's noise type and SDE type are supported and
raises naming both otherwise.  State is explicit: ``init`` makes the solver state
(empty for one-step methods), ``step`` maps ``(y, state)`` over one step to the new
pair given the step's Brownian increment ``ΔW`` and, for methods with
``uses_area``, ``ΔZ = ∫ (W_s − W_{t0}) ds`` over the step.
"""

from __future__ import annotations

import abc
import math

import torch

from .problem import SDEProblem, result_fits


class AbstractSDESolver(abc.ABC):
    """A fixed-step SDE method.

    Class attributes:
        name: the ``method=`` string.
        noise_types: the noise types it supports.
        sde_types: the SDE types it supports for non-additive noise (with additive noise
            Itô and Stratonovich coincide; see :meth:`supports`).
        uses_area: whether ``step`` needs ``ΔZ``.
        needs_levy_area: whether ``step`` needs, as ``dZ``, the Lévy area ``A`` between noise
            channels, ``(B, m, m)``, ``A_jk = ½(∫ W^j dW^k − ∫ W^k dW^j)`` over the step
            (``sdeint`` asks its source for it with ``levy_area=True``).
        source: the paper / book and equation implemented.
    """

    name: str = ""
    noise_types: tuple = ("diagonal", "additive", "scalar", "general")
    sde_types: tuple = ("ito",)
    uses_area: bool = False
    needs_levy_area: bool = False
    needs_diffusion: bool = False  # needs G itself, not only products G·v (torchsde's g_prod)
    source: str = ""

    @classmethod
    def supports(cls, noise_type: str, sde_type: str) -> bool:
        """Whether the method applies to this noise type and SDE type."""
        if noise_type not in cls.noise_types:
            return False
        return sde_type in cls.sde_types or noise_type == "additive"

    @classmethod
    @abc.abstractmethod
    def strong_order(cls, noise_type: str) -> float:
        """Declared strong order of convergence for this noise type."""

    @classmethod
    @abc.abstractmethod
    def weak_order(cls, noise_type: str) -> float | None:
        """Declared weak order of convergence for this noise type (``None``: not declared)."""

    def __init__(self, problem: SDEProblem):
        if problem.noise_type not in self.noise_types:
            raise ValueError(
                f"{self.name} does not support noise_type={problem.noise_type!r} "
                f"(supported: {', '.join(self.noise_types)})"
            )
        if not self.supports(problem.noise_type, problem.sde_type):
            raise ValueError(
                f"{self.name} does not support sde_type={problem.sde_type!r} with "
                f"noise_type={problem.noise_type!r} (it solves {' / '.join(self.sde_types)} SDEs)"
            )
        if self.needs_diffusion and not problem.has_diffusion:
            raise ValueError(f"{self.name} needs the diffusion g(t, y); the SDE only defines g_prod")
        self.problem = problem

    def scratch(self, like: torch.Tensor, slot: str = "") -> torch.Tensor:
        """A work tensor shaped like ``like``, allocated once per solver (and ``slot``) and overwritten every step.

        Reusing it saves an allocation per step, which on the CPU is a fresh page-faulted buffer for
        large batches; only for values no autograd graph holds on to.
        """
        bufs = self.__dict__.setdefault("_scratch", {})
        buf = bufs.get(slot)
        if buf is None or buf.shape != like.shape or buf.dtype != like.dtype or buf.device != like.device:
            buf = bufs[slot] = torch.empty_like(like, memory_format=torch.contiguous_format)
        return buf

    def init(self, t0: torch.Tensor, y0: torch.Tensor) -> tuple:
        """Solver state at the start (empty for one-step methods)."""
        return ()

    @abc.abstractmethod
    def step(self, t0: torch.Tensor, h: float, y: torch.Tensor, state: tuple, dW: torch.Tensor, dZ):
        """Advance ``y`` from ``t0`` to ``t0 + h``.

        Args:
            t0: 0-dim tensor, the step's start time.
            h: the step size (> 0): a float, or with per-sample steps a ``(B, 1, …)`` tensor
                (then ``t0`` is ``(B, 1, …)`` too).
            y: ``(B, *D)`` state at ``t0``.
            state: the solver state.
            dW: ``(B, *S)`` Brownian increment over the step.
            dZ: ``(B, *S)`` ``∫_{t0}^{t0+h} (W_s − W_{t0}) ds`` for methods with ``uses_area``;
                ``(B, m, m)`` the Lévy area for those with ``needs_levy_area``; else ``None``.
        Returns:
            ``(y1, state1)``.
        """


def records_graph(*tensors: torch.Tensor) -> bool:
    """Whether autograd records operations on any of ``tensors`` (then a work tensor they touch may be saved
    for backward, and must not be overwritten next step)."""
    return torch.is_grad_enabled() and any(t.requires_grad for t in tensors)


def sqrt_step(h):
    """``√h`` for a step size that is a float or a tensor of per-row steps (``(B, 1, …)``)."""
    return h.sqrt() if isinstance(h, torch.Tensor) else math.sqrt(h)


def add_into(acc: torch.Tensor, *terms: torch.Tensor) -> torch.Tensor:
    """``acc + terms[0] + terms[1] + …`` (left to right), in place on ``acc`` where possible.

    ``acc`` must be a temporary the caller owns (never the state ``y`` or a user's tensor).
    Floating-point addition is commutative, so ``acc.add_(t)`` gives the same bits as
    ``acc + t``; the sum falls back to an out-of-place addition when broadcasting or type
    promotion would change ``acc``'s shape or dtype.
    """
    for term in terms:
        if term.shape == acc.shape and term.dtype == acc.dtype or result_fits(acc, acc, term):
            acc = acc.add_(term)
        else:
            acc = acc + term
    return acc


def axpy(total: torch.Tensor, a, x: torch.Tensor, owned: bool, v: torch.Tensor | None = None) -> torch.Tensor:
    """``total + a·x`` (``total + a·x·v`` with ``v``) in one fused operation where ``a`` is a number.

    ``a`` is a float or a tensor of per-row step sizes ``(B, 1, …)`` (then two operations).
    ``owned``: ``total`` is a temporary of this step, so it is updated in place (never the
    state ``y`` or a user's tensor); it must then have the result's shape and dtype.
    """
    if isinstance(a, torch.Tensor):
        term = a * x if v is None else (a * x) * v
        return total.add_(term) if owned else total + term
    if v is None:
        return total.add_(x, alpha=a) if owned else torch.add(total, x, alpha=a)
    return total.addcmul_(x, v, value=a) if owned else torch.addcmul(total, x, v, value=a)


class CommutativeStratonovichSolver(AbstractSDESolver):
    """Base of the Heun-type Stratonovich schemes (heun, midpoint, euler_heun, reversible_heun).

    They converge to the Stratonovich solution with strong order 1.0 for commutative
    noise (diagonal, scalar, additive) and 0.5 for general noise, and weak order 1.0
    (Burrage, Burrage & Tian 2004, Proc. R. Soc. Lond. A 460, §4).
    """

    sde_types = ("stratonovich",)
    source = "Burrage, Burrage & Tian 2004, §4"

    @classmethod
    def strong_order(cls, noise_type):
        return 0.5 if noise_type == "general" else 1.0

    @classmethod
    def weak_order(cls, noise_type):
        return 1.0
