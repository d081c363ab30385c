"""The log-ODE midpoint scheme (Stratonovich), torchsde's ``log_ode``."""

from __future__ import annotations

import warnings

import torch
import torch.autograd.forward_ad as fwAD

from .base import AbstractSDESolver


class LogODEMidpoint(AbstractSDESolver):
    r"""Log-ODE midpoint: one explicit-midpoint step of the ODE driven by the step's log-signature.

    For the Stratonovich SDE ``dy = f(t, y) dt + Σ_k g_k(t, y) ∘ dW^k`` (``g_k`` the ``k``-th
    column of ``G``), the depth-2 log-signature of ``(t, W)`` over the step is
    ``(h, ΔW, A)`` with the Lévy area ``A_jk = ½(∫ (W^j − W^j_{t0}) dW^k − ∫ (W^k − W^k_{t0}) dW^j)``
    (``(B, m, m)``, antisymmetric).  The log-ODE (Castell–Gaines) method solves over unit
    time the ODE with vector field

        ``V(y) = f h + G ΔW + Σ_{j<k} [g_j, g_k] A_jk = f h + G ΔW + Σ_k (∂g_k/∂y) (G A)_{:,k}``,

    (``[g_j, g_k] = (∂g_k/∂y) g_j − (∂g_j/∂y) g_k``; the last form uses ``A_kj = −A_jk``),
    here by the explicit midpoint rule with the drift's time at ``t0 + h/2``:

        ``ỹ = y + ½ f(t0, y) h + ½ G(t0, y) ΔW``,
        ``y₁ = y + f(t̃, ỹ) h + G(t̃, ỹ) ΔW + Σ_k (∂g_k/∂y)(t̃, ỹ) · (G(t̃, ỹ) A)_{:,k}``, ``t̃ = t0 + h/2``.

    Foster, Lyons & Oberhauser 2020, "An optimal polynomial approximation of Brownian
    motion", SIAM J. Numer. Anal. 58(3), the log-ODE method section (arXiv:1904.06998), and
    Foster 2020, DPhil thesis (Oxford), for the scheme and the Lévy area approximations it
    is run with (Davie's, ``A ≈ H ⊗ ΔW − ΔW ⊗ H + N(0, h²/12)`` noise, and Foster's
    correction of its variance; torchsde's ``levy_area_approximation='davie'`` /
    ``'foster'``).  Declared orders (those of torchsde's ``log_ode``): strong 1.0 for
    diagonal, scalar and additive noise, 0.5 for general noise (the area is approximated,
    not exact); weak 1.0.

    The bracket term is computed for general noise only, by forward-mode AD through
    ``G`` (``m`` evaluations of ``G`` on dual tensors at ``ỹ``, whose primal also gives
    ``G(t̃, ỹ)``).  For the other noise types it vanishes — scalar noise has one channel
    (``A = 0``), additive noise has ``∂g/∂y = 0``, and diagonal noise (``g_i`` depending on
    ``y_i`` alone) is commutative — and the step is :class:`~sdekit.solvers.sde.midpoint.Midpoint`'s;
    like torchsde, it is then left out also for "diagonal" diffusions whose ``g_i`` depend
    on all of ``y`` (non-commutative; see :class:`~sdekit.solvers.sde.milstein.Milstein`).

    Brownian input: ``step``'s ``dZ`` is the Lévy area ``A`` of shape ``(B, m, m)``
    (``needs_levy_area``), e.g. from :class:`~sdekit.brownian.CallableBrownian` over a
    ``torchsde.BrownianInterval(..., levy_area_approximation='davie' or 'foster')``.  As
    in torchsde it is required for every noise type.

    Raises:
        ValueError: at construction, for an Itô SDE with non-additive noise, or general
            noise on an SDE that defines only ``g_prod`` (the bracket needs ``G`` itself);
            in ``step``, if ``dZ`` is ``None`` or not of shape ``(B, m, m)``.
        TypeError: in ``step``, if ``dZ`` is neither ``None`` nor a tensor.
    """

    name = "log_ode"
    sde_types = ("stratonovich",)
    needs_levy_area = True
    source = "Foster, Lyons & Oberhauser 2020, SIAM J. Numer. Anal. 58(3), log-ODE method; Foster 2020 (thesis)"

    @classmethod
    def strong_order(cls, noise_type):
        return 0.5 if noise_type == "general" else 1.0

    @classmethod
    def weak_order(cls, noise_type):
        return 1.0

    def __init__(self, problem):
        super().__init__(problem)
        if problem.noise_type == "general" and not problem.has_diffusion:
            raise ValueError(f"{self.name} needs the diffusion g(t, y) for general noise (its Lie-bracket term "
                             "differentiates G); the SDE only defines g_prod")

    def _check_area(self, dW: torch.Tensor, A) -> torch.Tensor:
        m = dW.shape[-1]
        expected = tuple(dW.shape) + (m,)
        if A is None:
            raise ValueError(f"{self.name} needs the Lévy area A between noise channels, {expected}, as dZ; got "
                             "None: pass bm=torchsde.BrownianInterval(..., levy_area_approximation='davie' or "
                             "'foster')")
        if not isinstance(A, torch.Tensor):
            raise TypeError(f"{self.name}: the Lévy area A must be a tensor {expected}, got {type(A).__name__}")
        if tuple(A.shape) != expected:
            raise ValueError(f"{self.name}: the Lévy area A has shape {tuple(A.shape)}, expected {expected}")
        return A

    def bracket_term(self, t, y: torch.Tensor, A: torch.Tensor):
        """``(G(t, y), Σ_k (∂g_k/∂y)(t, y) · (G(t, y) A)_{:,k})`` for matrix-form ``G``, ``(B, d, m)``.

        Forward-mode AD (dual tensors): one evaluation of ``G`` for ``G A``, then one per
        column ``k`` with tangent ``(G A)_{:,k}``, keeping that column's tangent.  The sum
        runs over ``k`` in order.
        """
        p = self.problem
        G = p.diffusion(t, y)
        GA = torch.matmul(G, A)
        total = torch.zeros_like(y)
        with warnings.catch_warnings():
            # torch's forward-AD decompositions load through torch.jit.script once, with a DeprecationWarning.
            warnings.filterwarnings("ignore", message=".*torch.jit.script.*", category=DeprecationWarning)
            for k in range(G.shape[-1]):
                with fwAD.dual_level():
                    tangent = fwAD.unpack_dual(p.diffusion(t, fwAD.make_dual(y, GA[..., k]))).tangent
                if tangent is not None:  # None: G does not depend on y
                    total = total + tangent[..., k]
        return G, total

    def step(self, t0, h, y, state, dW, dZ):
        A = self._check_area(dW, dZ)
        p = self.problem
        f, gdW = p.drift_and_g_prod(t0, y, dW)
        tm = t0 + 0.5 * h
        ym = y + 0.5 * h * f + 0.5 * gdW
        if p.noise_type != "general":
            fm, gdWm = p.drift_and_g_prod(tm, ym, dW)
            return y + h * fm + gdWm, state
        fm = p.drift(tm, ym)
        Gm, bracket = self.bracket_term(tm, ym, A)
        return y + h * fm + p.prod(Gm, dW) + bracket, state
