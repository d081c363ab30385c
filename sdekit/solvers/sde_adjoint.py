"""``sdekit.sdeint_adjoint``: gradients of an SDE solve by solving backwards in time.

Two backward passes, both on the forward pass's own Brownian path and its own steps:

* ``adjoint_method="midpoint"`` / ``"heun"`` (default except after reversible Heun): the
  stochastic adjoint of Li, Wong, Chen & Duvenaud 2020 ("Scalable gradients for stochastic
  differential equations", AISTATS, §3, eq. (5)–(8)).  The augmented Stratonovich SDE of
  ``(y, a_y, a_θ)``, with ``a_y = ∂L/∂y(t)``,

      dy = f_s dt + G ∘ dW,
      da_y = −a_y ∂f_s/∂y dt − a_y ∂G/∂y ∘ dW,
      da_θ = −a_y ∂f_s/∂θ dt − a_y ∂G/∂θ ∘ dW,

  is solved from ``ts[-1]`` to ``ts[0]`` with the step's increments reversed, where
  ``f_s`` is the Stratonovich drift (``f`` for Stratonovich SDEs and additive noise;
  ``f − ½ Σ_j (∂G_j/∂y) G_j`` for Itô SDEs, by autograd).  Each augmented evaluation is
  one ``f`` / ``G·ΔW`` evaluation and one vector–Jacobian product of ``f_s h + G·ΔW``.
  At each ``ts[k]`` the state restarts from the forward value ``ys[k]`` and ``a_y``
  gains ``∂L/∂ys[k]``.  The gradients approximate those of the exact solution: they
  agree with backprop through the forward solve to the discretisation error (strong
  order 1 for commutative noise, ½ for general noise).
* ``adjoint_method="adjoint_reversible_heun"`` (the default after ``method="reversible_heun"``):
  Kidger, Foster, Li & Lyons 2021 ("Efficient and accurate gradients for neural SDEs",
  NeurIPS, §3, Algorithm 2).  Each reversible Heun step is inverted algebraically (exactly,
  up to floating-point rounding) and differentiated locally, so the gradients are those of
  backprop through the forward solve, with memory independent of the number of steps.

Memory: the outputs ``ys`` and the list of step times (three floats per step); no graph.
"""

from __future__ import annotations

import warnings

import torch

from .sde.problem import SDEProblem
from .sdeint import SolvePlan, _legacy_positional, _result, integrate, plan_solve, step_increments

#: adjoint_method values (the augmented SDE is Stratonovich, so only Stratonovich schemes apply).
ADJOINT_METHODS = ("midpoint", "heun", "adjoint_reversible_heun")


def _ito_correction(problem: SDEProblem, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``½ Σ_j (∂G_j/∂y) G_j`` (Itô drift minus Stratonovich drift) with a graph through ``y``.

    Elementwise (diagonal) noise: ``½ g ⊙ ∂g/∂y`` with ``g_i`` a function of ``y_i`` (torchsde's
    definition of diagonal noise).  Matrix noise: one Jacobian–vector product per column,
    by the double-vjp trick.
    """
    if not problem.has_diffusion:
        raise ValueError("sdeint_adjoint of an Itô SDE needs the diffusion g(t, y) itself (for the Itô–"
                         "Stratonovich correction); this SDE only defines g_prod")
    G = problem.diffusion(t, y)
    out = torch.zeros_like(y)
    if not G.requires_grad:  # G does not depend on y (nor on any parameter)
        return out
    if problem.form != "matrix":
        (dg,) = torch.autograd.grad(G, y, torch.ones_like(G), create_graph=True, allow_unused=True)
        return out if dg is None else 0.5 * G * dg
    for j in range(G.shape[-1]):
        col = G[..., j]
        w = torch.zeros_like(col, requires_grad=True)
        (u,) = torch.autograd.grad(col, y, w, create_graph=True, allow_unused=True)
        if u is None:  # column j does not depend on y
            continue
        (jvp,) = torch.autograd.grad(u, w, col, create_graph=True, allow_unused=True)
        if jvp is not None:
            out = out + 0.5 * jvp
    return out


class _Augmented:
    """Evaluations of the augmented adjoint SDE over one backward step (increments reversed)."""

    def __init__(self, problem: SDEProblem, params: tuple):
        self.problem, self.params = problem, params
        self.ito = problem.sde_type == "ito" and problem.noise_type != "additive"

    def increment(self, t: float, tau: float, y, a, dW):
        """``(Φ, −a·∂Φ/∂y, −a·∂Φ/∂θ)`` with ``Φ = f_s(t, y) τ + G(t, y)·ΔW`` (τ < 0, ΔW reversed)."""
        p = self.problem
        tt = torch.tensor(t, dtype=y.dtype, device=y.device)
        with torch.enable_grad():
            y_ = y.detach().requires_grad_(True)
            f, Gv = p.drift_and_g_prod(tt, y_, dW)
            if self.ito:
                f = f - _ito_correction(p, tt, y_)
            phi = f * tau + Gv
            grads: tuple[torch.Tensor | None, ...] = (None,) * (1 + len(self.params))
            if phi.requires_grad:  # else it depends neither on y nor on a parameter that needs a gradient
                grads = torch.autograd.grad(phi, (y_,) + self.params, a, allow_unused=True)
        da_theta = [None if g is None else -g for g in grads[1:]]
        da_y = torch.zeros_like(a) if grads[0] is None else -grads[0]  # Φ may not depend on y
        return phi.detach(), da_y, da_theta


def _add(acc: list, terms: list, scale: float = 1.0) -> None:
    for i, g in enumerate(terms):
        if g is not None:
            acc[i] = acc[i] + (g if scale == 1.0 else scale * g)


def _stochastic_adjoint(plan: SolvePlan, method: str, ys, grad_ys, record, params):
    """Li et al. 2020: the augmented SDE backwards with midpoint or Heun; ``(∂L/∂y0, ∂L/∂θ)``."""
    aug = _Augmented(plan.problem, params)
    a = grad_ys[-1]
    g_theta = [torch.zeros_like(p) for p in params]
    for k in reversed(range(len(record))):
        if k + 1 < len(record):
            a = a + grad_ys[k + 1]
        y = ys[k + 1]
        for ta, tb, h in reversed(record[k]):
            dW = -step_increments(plan, ta, tb)[0]
            tau = -h
            k1y, k1a, k1t = aug.increment(tb, tau, y, a, dW)
            if method == "midpoint":
                k2y, k2a, k2t = aug.increment(tb + 0.5 * tau, tau, y + 0.5 * k1y, a + 0.5 * k1a, dW)
                y, a = y + k2y, a + k2a
                _add(g_theta, k2t)
            else:  # Heun: trapezoid of the two ends
                k2y, k2a, k2t = aug.increment(tb + tau, tau, y + k1y, a + k1a, dW)
                y, a = y + 0.5 * (k1y + k2y), a + 0.5 * (k1a + k2a)
                _add(g_theta, k1t, 0.5)
                _add(g_theta, k2t, 0.5)
    return a + grad_ys[0], g_theta


def _reversible_heun_adjoint(plan: SolvePlan, ys, grad_ys, record, params, final_state, plan_starts_at_y0: bool):
    """Kidger et al. 2021, Algorithm 2: invert each step exactly, differentiate it locally."""
    p = plan.problem
    f1, G1, z1 = final_state
    y1 = ys[-1]
    a_y, a_z = grad_ys[-1], torch.zeros_like(ys[-1])
    g_theta = [torch.zeros_like(q) for q in params]
    for k in reversed(range(len(record))):
        if k + 1 < len(record):
            a_y = a_y + grad_ys[k + 1]
        for ta, tb, h in reversed(record[k]):
            dW, _ = step_increments(plan, ta, tb)
            t0 = torch.tensor(ta, dtype=y1.dtype, device=y1.device)
            z0 = 2.0 * y1 - z1 - f1 * h - p.prod(G1, dW)  # the step's z-update, solved for z0
            with torch.enable_grad():
                z0_ = z0.detach().requires_grad_(True)
                f0, G0 = p.drift_and_diffusion(t0, z0_)
                y0 = y1 - 0.5 * (f0.detach() + f1) * h - p.prod(G0.detach() + G1, 0.5 * dW)  # its y-update
                y0_ = y0.detach().requires_grad_(True)
                z1_ = 2.0 * y0_ - z0_ + f0 * h + p.prod(G0, dW)  # the forward step again, differentiably
                f1_, G1_ = p.drift_and_diffusion(t0 + h, z1_)
                y1_ = y0_ + 0.5 * (f0 + f1_) * h + p.prod(G0 + G1_, 0.5 * dW)
                grads = torch.autograd.grad((y1_, z1_), (y0_, z0_) + params, (a_y, a_z), allow_unused=True)
            a_y, a_z = (torch.zeros_like(a_y) if g is None else g for g in grads[:2])
            _add(g_theta, list(grads[2:]))
            y1, z1, f1, G1 = y0_.detach(), z0, f0.detach(), G0.detach()
    # z0 = y0 unless the caller gave the solver state (whose gradient is not propagated).
    return a_y + grad_ys[0] + (a_z if plan_starts_at_y0 else 0.0), g_theta


class _SdeintAdjoint(torch.autograd.Function):
    @staticmethod
    def forward(ctx, plan, adjoint_method, z_is_y0, solved, y0, *params):
        # The solve itself ran before apply(): forward-mode AD (milstein's derivative) is inert in here.
        ys, state, record = solved
        ctx.plan, ctx.adjoint_method, ctx.record, ctx.state = plan, adjoint_method, record, state
        ctx.z_is_y0 = z_is_y0
        ctx.save_for_backward(ys, *params)
        ctx.mark_non_differentiable(*state)
        return (ys,) + tuple(state)

    @staticmethod
    def backward(ctx, grad_ys, *grad_state):
        ys, *params = ctx.saved_tensors
        params = tuple(params)
        if grad_ys is None:
            grad_ys = torch.zeros_like(ys)
        if ctx.adjoint_method == "adjoint_reversible_heun":
            g_y0, g_theta = _reversible_heun_adjoint(ctx.plan, ys, grad_ys, ctx.record, params, ctx.state,
                                                     ctx.z_is_y0)
        else:
            g_y0, g_theta = _stochastic_adjoint(ctx.plan, ctx.adjoint_method, ys, grad_ys, ctx.record, params)
        return (None, None, None, None, g_y0, *g_theta)


def sdeint_adjoint(sde, y0: torch.Tensor, ts, bm=None, method: str | None = None, adjoint_method: str | None = None,
                   dt: float = 1e-3, adaptive: bool = False, adjoint_adaptive: bool = False, rtol: float = 1e-5,
                   adjoint_rtol: float = 1e-5, atol: float = 1e-4, adjoint_atol: float = 1e-4,
                   dt_min: float = 1e-5, options: dict | None = None, adjoint_options: dict | None = None,
                   adjoint_params=None, names: dict | None = None, logqp: bool = False, extra: bool = False,
                   extra_solver_state=None, *, seed: int | None = None, sample_index=None):
    """:func:`~sdekit.sdeint` whose backward pass solves the adjoint SDE instead of storing a graph.

    torchsde's ``sdeint_adjoint`` signature (v0.2.6) and return conventions; the forward
    values are exactly :func:`~sdekit.sdeint`'s with the same arguments.  Gradients flow
    to ``y0`` and to ``adjoint_params`` (default: ``sde.parameters()`` that require grad);
    the backward pass replays the forward steps on the same Brownian path (see the module
    docstring for the two adjoint methods and their sources).

    Args:
        sde, y0, ts, bm, method, dt, adaptive, rtol, atol, dt_min, options, names, logqp,
        extra, extra_solver_state, seed, sample_index: as :func:`~sdekit.sdeint` (no
            ``generator``: the backward pass must query the same path again).  No gradient
            flows into a given ``extra_solver_state``.
        adjoint_method: ``"midpoint"`` (default), ``"heun"``, or ``"adjoint_reversible_heun"``
            (default with ``method="reversible_heun"``, and only with it).
        adjoint_adaptive, adjoint_rtol, adjoint_atol: accepted for torchsde's signature; the
            backward pass takes the forward pass's steps, so ``adjoint_adaptive=True`` warns.
        adjoint_options: accepted for torchsde's signature; non-empty options warn (none apply).
        adjoint_params: tensors to differentiate with respect to (default the SDE module's
            parameters); those without ``requires_grad`` are skipped.
    Returns:
        as :func:`~sdekit.sdeint`: ``ys`` ``(len(ts), B, d)``, then ``log_ratio`` with ``logqp``,
        then the solver state with ``extra`` (not differentiable).
    Raises:
        ValueError: ``sde`` not a ``torch.nn.Module`` and no ``adjoint_params`` (as torchsde);
            an unknown ``adjoint_method``, or ``adjoint_reversible_heun`` after another method;
            an Itô SDE that defines only ``g_prod`` (at backward time); anything
            :func:`~sdekit.sdeint` raises.
    """
    bm, method, dt, adaptive, _ = _legacy_positional(bm, method, dt, adaptive, None)
    if adjoint_params is None and not isinstance(sde, torch.nn.Module):
        raise ValueError("sde must be a torch.nn.Module so that its parameters are the adjoint parameters; "
                         "otherwise pass adjoint_params= (a tuple of tensors, () for none)")
    params = tuple(sde.parameters()) if adjoint_params is None else tuple(adjoint_params)
    params = tuple(q for q in params if isinstance(q, torch.Tensor) and q.requires_grad)
    if adjoint_method is None:
        adjoint_method = "adjoint_reversible_heun" if method == "reversible_heun" else "midpoint"
    if adjoint_method not in ADJOINT_METHODS:
        raise ValueError(f"adjoint_method must be one of {list(ADJOINT_METHODS)} (sdekit solves the adjoint in "
                         f"Stratonovich form, whatever the forward SDE type), got {adjoint_method!r}")
    if adjoint_method == "adjoint_reversible_heun" and method != "reversible_heun":
        raise ValueError(f"adjoint_method='adjoint_reversible_heun' inverts reversible Heun steps: it needs "
                         f"method='reversible_heun', got method={method!r}")
    if adjoint_adaptive:
        warnings.warn("sdeint_adjoint: the backward pass replays the forward pass's steps; adjoint_adaptive, "
                      "adjoint_rtol and adjoint_atol have no effect", UserWarning, stacklevel=2)
    if adjoint_options:
        warnings.warn(f"sdeint_adjoint: adjoint_options {sorted(adjoint_options)} have no effect", UserWarning,
                      stacklevel=2)
    plan = plan_solve(sde, y0, ts, bm, method, dt, adaptive, rtol, atol, dt_min, options, names, logqp,
                      extra_solver_state, seed=seed, sample_index=sample_index)
    y_start = plan.y0
    record: list = []
    with torch.no_grad():
        plan.y0 = y_start.detach()
        solved = integrate(plan, record=record) + (record,)
    ys, *state = _SdeintAdjoint.apply(plan, adjoint_method, extra_solver_state is None, solved, y_start, *params)
    return _result(ys, tuple(state), logqp, extra)
