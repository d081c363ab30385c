"""``odeint_adjoint``: gradients of :func:`~sdekit.odeint` by the continuous adjoint method (torchdiffeq's call).

The forward solve runs without an autograd graph, so memory does not grow with
the number of steps.  The backward pass solves the augmented system of Chen,
Rubanova, Bettencourt & Duvenaud (2018), "Neural Ordinary Differential
Equations", §2 and Appendix B (Algorithm 1), backwards in time between
consecutive output times::

    dy/dt = f(t, y, θ)                 (re-integrated from the stored y(t_i))
    da/dt = −aᵀ ∂f/∂y                  a(t) = dL/dy(t), eq. (4)
    dg/dt = −aᵀ ∂f/∂θ                  g(t_0) = dL/dθ, eq. (5)

with the vector–Jacobian products taken by ``torch.autograd.grad`` on one
evaluation of ``func`` per stage, and ``dL/dy(t_i)`` added to ``a`` at each
output time.  Time gradients use the identity of Appendix B in closed form:
``dL/dt_i = dL/dy(t_i) · f(t_i, y(t_i))`` for ``i ≥ 1`` and
``dL/dt_0 = −a(t_0⁺) · f(t_0, y_0)`` (``a(t_0⁺)`` before ``dL/dy(t_0)`` is
added), which equals the integrated time channel of Appendix B in exact
arithmetic and costs one ``func`` evaluation per output time instead of a
``∂f/∂t`` product at every stage.

The whole augmented state ``[y, a, g]`` is one flat vector solved by
:func:`~sdekit.odeint` (``y`` and ``a`` of ``N`` elements each, ``g`` of ``P``,
the total size of ``adjoint_params``).  Its error norm follows torchdiffeq:
``max(‖y‖, ‖a‖, max over parameters of RMS(g_p))`` with ``‖·‖`` the forward
norm, or with ``adjoint_options=dict(norm="seminorm")`` the same without the
parameter channels (Kidger, Chen & Lyons 2021, "'Hey, that's not an ODE':
Faster ODE Adjoints via Seminorms", §3): the ``g`` channels are integrals that
feed nothing back into the dynamics, so their error need not limit the step.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Callable

import torch
from torch import nn
from torch.autograd.function import once_differentiable

from .._checks import check_callable
from .odeint import METHOD_ALIASES, odeint
from .state import FlatState, rms_norm
from .tableaus import TABLEAUS

_CALLBACKS = ("callback_step", "callback_accept_step", "callback_reject_step")
_DEFAULT_METHOD = "dopri5"


def _odeint(*args, **kwargs):
    return odeint(*args, **kwargs)


class _Plan:
    """Everything the autograd function needs besides tensors (one per call of :func:`odeint_adjoint`)."""

    def __init__(self, *, func, state: FlatState, rtol, atol, method, options, event_fn, adjoint_rtol,
                 adjoint_atol, adjoint_method, adjoint_options, params: tuple):
        self.func = func
        self.state = state
        self.rtol, self.atol, self.method, self.options = rtol, atol, method, options
        self.event_fn = event_fn
        self.adjoint_rtol, self.adjoint_atol = adjoint_rtol, adjoint_atol
        self.adjoint_method, self.adjoint_options = adjoint_method, adjoint_options
        self.params = params
        self.sizes = [int(p.numel()) for p in params]
        self.N = state.numel

    def solver_adjoint_options(self) -> dict:
        """The backward solves' options: :attr:`adjoint_options` with a tuple-form ``norm`` (torchdiffeq's
        ``(t, y, adj_y, *adj_params)``, what the output's ``grad_fn.adjoint_options['norm']`` holds) read
        from that dict at each call, as a norm of the flat augmented state."""
        public = self.adjoint_options
        if not callable(public.get("norm")) or not _uses_norm(self.adjoint_method):
            return public
        N, state, params = self.N, self.state, self.params

        def flat_norm(z):
            y, a, g = z[:N], z[N:2 * N], z[2 * N:]
            if not state.is_tuple:
                y, a = y.reshape(state.shapes[0]), a.reshape(state.shapes[0])
            gp = [v.reshape(q.shape) for v, q in zip(torch.split(g, self.sizes), params)] if self.sizes else []
            out = public["norm"]((z.new_zeros(()), y, a, *gp))
            return torch.as_tensor(out, dtype=z.dtype, device=z.device).reshape(())
        return {**public, "norm": flat_norm}

    def eval_f(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.state.flatten(self.func(t, self.state.unflatten(y)), "func")

    # -- the augmented system [y, a, g] ---------------------------------------------------------------
    def aug_split(self, z: torch.Tensor):
        N = self.N
        y, a, g = z[:N], z[N:2 * N], z[2 * N:]
        return y, a, list(torch.split(g, self.sizes)) if self.sizes else []

    def aug_structure(self, z: torch.Tensor) -> tuple:
        """torchdiffeq's augmented tuple ``(t_channel, y, adj_y, *adj_params)`` (the time channel is a 0-d zero)."""
        y, a, gs = self.aug_split(z)
        st = self.state
        return (z.new_zeros(()), st.unflatten(y), st.unflatten(a),
                *[g.reshape(p.shape) for g, p in zip(gs, self.params)])

    def aug_func(self) -> Callable:
        state, func, params, N = self.state, self.func, self.params, self.N

        def aug(t, z):
            y, a = z[:N], z[N:2 * N]
            with torch.enable_grad():
                y_ = y.detach().requires_grad_(True)
                f = state.flatten(func(t.detach(), state.unflatten(y_)), "func")
                if f.requires_grad:
                    grads = torch.autograd.grad(f, (y_, *params), -a, allow_unused=True)
                else:  # func ignores y and the parameters: every product is zero
                    grads = (None,) * (1 + len(params))
            parts = [f.detach().to(z.dtype), _or_zeros(grads[0], y)]
            parts += [_or_zeros(g, p).reshape(-1).to(z.dtype) for g, p in zip(grads[1:], params)]
            return torch.cat(parts)

        for name in _CALLBACKS:
            cb = getattr(func, name + "_adjoint", None)
            if cb is not None:
                setattr(aug, name, _wrap_callback(cb, self.aug_structure))
        return aug


def _flatten_solution(state: FlatState, out) -> torch.Tensor:
    """``odeint``'s solution in the user's structure → ``(len(t), N)`` in the flat state's dtype."""
    parts = out if state.is_tuple else (out,)
    lead = parts[0].shape[0]
    return torch.cat([p.reshape(lead, -1) for p in parts], dim=1) if state.is_tuple else parts[0].reshape(lead, -1)


def _uses_norm(method: str) -> bool:
    """Whether ``method`` is an adaptive Runge–Kutta pair (the methods that read ``options['norm']``)."""
    name = METHOD_ALIASES.get(method, method)
    return name in TABLEAUS and TABLEAUS[name].adaptive


def _or_zeros(g, like: torch.Tensor) -> torch.Tensor:
    return torch.zeros_like(like) if g is None else g


def _wrap_callback(cb: Callable, structure: Callable) -> Callable:
    def wrapped(t0, y0, dt):
        return cb(t0, structure(y0), dt)

    return wrapped


def _max(values: Sequence[torch.Tensor]) -> torch.Tensor:
    out = values[0]
    for v in values[1:]:
        out = torch.maximum(out, v.to(out.dtype))
    return out


class _OdeintAdjoint(torch.autograd.Function):
    """Forward: ``odeint`` without graph.  Backward: the adjoint solve (Chen et al. 2018, Alg. 1)."""

    @staticmethod
    def forward(ctx: Any, plan: _Plan, y0: torch.Tensor, t: torch.Tensor, *params: torch.Tensor):
        ctx.plan = plan
        ctx.adjoint_options = plan.adjoint_options  # torchdiffeq's: the backward solves read its "norm"
        with torch.no_grad():
            state = plan.state
            y0_user = state.unflatten(y0.detach())
            if plan.event_fn is None:
                if t.numel() == 1:
                    ys = y0.detach().clone().unsqueeze(0)
                else:
                    out = _odeint(plan.func, y0_user, t.detach(), rtol=plan.rtol, atol=plan.atol,
                                  method=plan.method, options=plan.options)
                    ys = _flatten_solution(state, out).to(y0.dtype)
                ctx.save_for_backward(t, ys)
                if state.is_tuple:
                    return ys
                return ys.reshape((ys.shape[0],) + tuple(state.shapes[0]))  # the output itself: grad_fn is this node
            event_t, out = _odeint(plan.func, y0_user, t.detach(), rtol=plan.rtol, atol=plan.atol,
                                   method=plan.method, options=plan.options, event_fn=plan.event_fn)
            ys = _flatten_solution(state, out).to(y0.dtype)
            event_t = torch.as_tensor(event_t).to(device=t.device, dtype=t.dtype).reshape(())
            ctx.save_for_backward(t, ys, event_t)
            return event_t, ys

    @staticmethod
    @once_differentiable  # the adjoint solve runs without a graph: no double backward
    def backward(ctx: Any, *grads: torch.Tensor):
        plan: _Plan = ctx.plan
        event_mode = plan.event_fn is not None
        if event_mode:
            t, ys, event_t = ctx.saved_tensors
            g_event, g_ys = grads
            times = torch.stack([t[0], event_t])
        else:
            t, ys = ctx.saved_tensors
            (g_ys,) = grads
            g_ys = g_ys.reshape(ys.shape)  # a tensor state's output has its shape
            times = t
        need_t = bool(ctx.needs_input_grad[2])
        N, dtype = plan.N, ys.dtype
        t_grad = torch.zeros_like(t) if need_t else None
        params = plan.params
        with torch.no_grad():
            g_ys = g_ys.to(dtype)
            a = torch.zeros_like(ys[0])
            g_par = ys.new_zeros(sum(plan.sizes))
            if event_mode:  # the output gradient at the event time enters through the implicit function theorem
                a, g_par = _event_terminal(plan, event_t, ys[-1], g_ys[-1], g_event, g_par)
            aug = plan.aug_func() if len(times) > 1 else None
            adjoint_options = plan.solver_adjoint_options()
            for i in range(len(times) - 1, 0, -1):
                if not event_mode:
                    a = a + g_ys[i]
                    if need_t:  # dL/dt_i = dL/dy(t_i) . f(t_i, y(t_i))
                        assert t_grad is not None
                        f_i = plan.eval_f(t[i], ys[i]).to(dtype)
                        t_grad[i] = torch.dot(f_i, g_ys[i]).to(t.dtype)
                z = torch.cat([ys[i], a, g_par])
                seg = torch.stack([times[i], times[i - 1]])
                z = _odeint(aug, z, seg, rtol=plan.adjoint_rtol, atol=plan.adjoint_atol,
                            method=plan.adjoint_method, options=adjoint_options)[-1]
                a, g_par = z[N:2 * N], z[2 * N:]
            if need_t and len(times) > 1:  # dL/dt_0 = -a(t_0+) . f(t_0, y_0)
                assert t_grad is not None
                f0 = plan.eval_f(times[0], ys[0]).to(dtype)
                t_grad[0] = -torch.dot(f0, a).to(t.dtype)
            y0_grad = a + g_ys[0]
        p_grads = [g.reshape(p.shape).to(p.dtype) for g, p in
                   zip(torch.split(g_par, plan.sizes) if plan.sizes else [], params)]
        return (None, y0_grad, t_grad, *p_grads)


def _event_terminal(plan: _Plan, event_t, y_event, a, g_event, g_par):
    """Adjoint at the event time from the implicit function theorem.

    The event time ``t*`` solves ``e(t*, y(t*)) = 0`` (the component of a vector
    ``event_fn`` closest to zero there).  With ``Y = y(t*)``, ``f* = f(t*, Y)``
    and the total rate ``ė = ∂e/∂t + ∂e/∂y · f*``, a loss ``L(t*, Y)`` with
    output gradients ``G_t, G_Y`` has ``dt* = −(∂e/∂y · δy + ∂e/∂θ δθ)/ė`` for a
    perturbation ``δy`` of ``y(t*)`` at fixed time, so the adjoint starts from
    ``a(t*) = G_Y − μ ∂e/∂y`` and the parameter channel from ``−μ ∂e/∂θ``, with
    ``μ = (G_t + G_Y · f*)/ė``.
    """
    state, params, dtype = plan.state, plan.params, y_event.dtype
    f_star = plan.eval_f(event_t, y_event).to(dtype)
    with torch.enable_grad():
        te = event_t.detach().clone().requires_grad_(True)
        ye = y_event.detach().clone().requires_grad_(True)
        e = torch.as_tensor(plan.event_fn(te, state.unflatten(ye)))
        if e.dim() > 0:
            e = e.reshape(-1)[int(e.detach().reshape(-1).abs().argmin())]
        de: tuple[torch.Tensor | None, ...]
        if e.requires_grad:
            de = torch.autograd.grad(e, (te, ye, *params), allow_unused=True, retain_graph=True)
        else:
            de = (None,) * (2 + len(params))
    de_t = _or_zeros(de[0], te).to(dtype)
    de_y = _or_zeros(de[1], ye).to(dtype)
    rate = de_t + torch.dot(de_y, f_star)
    mu = (g_event.to(dtype) + torch.dot(a, f_star)) / rate
    a = a - mu * de_y
    if params:
        de_p = torch.cat([_or_zeros(g, p).reshape(-1).to(dtype) for g, p in zip(de[2:], params)])
        g_par = g_par - mu * de_p
    return a, g_par


def _find_parameters(func) -> list:
    if getattr(func, "_is_replica", False):  # DataParallel replicas hold their parameters as plain tensors
        return [v for _, v in func._named_members(
            get_members_fn=lambda m: [(k, v) for k, v in m.__dict__.items()
                                      if isinstance(v, torch.Tensor) and v.requires_grad])]
    return list(func.parameters())


def _check_params(adjoint_params) -> tuple:
    try:
        items = tuple(adjoint_params)
    except TypeError:
        raise TypeError(f"adjoint_params must be an iterable of tensors, got {type(adjoint_params).__name__}") \
            from None
    seen, out = set(), []
    for i, p in enumerate(items):
        if not isinstance(p, torch.Tensor):
            raise TypeError(f"adjoint_params[{i}] must be a tensor, got {type(p).__name__}")
        if p.requires_grad and id(p) not in seen:  # parameters without gradient are left out (torchdiffeq)
            seen.add(id(p))
            out.append(p)
    return tuple(out)


def _adjoint_tolerance(state: FlatState, name: str, tol, n_extra: int):
    """A forward-style tolerance extended to the augmented state ``[y, a, g]``."""
    flat = state.tolerance(name, tol)
    if isinstance(flat, float):
        return flat
    return torch.cat([flat, flat, flat.min().expand(n_extra)])


def _adjoint_norm(option, state_norm: Callable, state: FlatState) -> Callable:
    """The backward solves' error norm in torchdiffeq's form: ``norm((t, y, adj_y, *adj_params))`` → scalar.

    ``y`` and ``adj_y`` have the state's shape for a tensor state and are flat ``(N,)`` for a tuple state
    (torchdiffeq's layout); ``t`` is 0 (sdekit integrates no time adjoint).  ``None``: the largest of the
    state norm of ``y`` and of ``adj_y`` and the RMS of each parameter gradient; ``"seminorm"``: without
    the parameter gradients (Kidger et al. 2021, §3); a callable gets ``(t, y, adj_y, *adj_params)`` with
    ``y`` and ``adj_y`` in the state's own structure (``(t, *ys, *adj_ys, *adj_params)`` for a tuple).
    """
    if option is None or isinstance(option, str):
        if option is not None and option != "seminorm":
            raise ValueError(f"adjoint_options['norm'] must be 'seminorm' or a callable, got {option!r}")
        with_params = option is None

        def default(arg):
            t, y, a, *gs = arg
            values = [t.abs(), state_norm(y.reshape(-1)), state_norm(a.reshape(-1))]
            return _max(values + ([rms_norm(g.reshape(-1)) for g in gs] if with_params else []))
        return default
    check_callable("adjoint_options['norm']", option)

    def user(arg):
        t, y, a, *gs = arg
        if state.is_tuple:
            return option((t, *state.unflatten(y), *state.unflatten(a), *gs))
        return option((t, y, a, *gs))
    return user


def odeint_adjoint(func, y0, t, *, rtol=1e-7, atol=1e-9, method=None, options=None, event_fn=None,
                   adjoint_rtol=None, adjoint_atol=None, adjoint_method=None, adjoint_options=None,
                   adjoint_params=None):
    """Solve ``dy/dt = func(t, y)`` like :func:`~sdekit.odeint`; backpropagate by the continuous adjoint.

    A drop-in for ``torchdiffeq.odeint_adjoint``: the forward pass is
    ``odeint(func, y0, t, rtol, atol, method, options, event_fn)`` run under
    ``torch.no_grad()`` (memory independent of the number of steps); the
    backward pass solves the adjoint system of Chen et al. (2018), §2 and
    Appendix B, Algorithm 1, from ``t[-1]`` back to ``t[0]`` (see the module
    docstring for the equations and the time gradients).  Gradients reach
    ``y0``, ``t`` and ``adjoint_params``; other tensors ``func`` closes over
    receive none.

    Args:
        func: ``func(t, y) -> dy/dt``, ``t`` a 0-d tensor, ``y`` and the output
            of ``y0``'s structure (a tensor, or a tuple of tensors of the
            same shapes).  Must be an ``nn.Module`` unless ``adjoint_params``
            is given.  Optional attributes ``callback_step``,
            ``callback_accept_step``, ``callback_reject_step`` are seen by the
            forward solve with the state in ``y0``'s structure;
            ``callback_step_adjoint`` etc. are passed to the backward solve
            as ``callback_step`` etc. and receive the augmented state
            ``(0-d zero, y, adj_y, *adj_params)`` (torchdiffeq's layout, the
            time channel not integrated here so always zero).
        y0: initial state at ``t[0]``: a floating tensor of any shape
            (0-d included) or a tuple of tensors.
        t: 1-D output times, strictly increasing or decreasing (same units as
            ``func``'s ``t``).  ``t.requires_grad`` selects time gradients.
        rtol, atol: forward tolerances (numbers; tensors broadcastable to the
            state or one per tuple member, as :func:`~sdekit.odeint`).
        method: forward method name, ``None`` for ``"dopri5"``.
        options: forward options dict (see :func:`~sdekit.odeint`); its
            ``norm`` takes the state in ``y0``'s structure.
        event_fn: ``event_fn(t, y) -> tensor``; when given the forward solve
            stops at the first sign change (``odeint(..., event_fn=...)``) and
            ``(event_t, solution)`` is returned, ``solution`` of shape
            ``(2, *y0.shape)`` holding ``y0`` and the state at ``event_t``.
            The adjoint runs over ``[t[0], event_t]``; ``event_t`` is
            differentiable through the implicit function theorem,
            ``dt*/dθ = −(∂e/∂y · ∂y(t*)/∂θ + ∂e/∂θ)/(de/dt)`` with
            ``de/dt = ∂e/∂t + ∂e/∂y · f``, for ``y0``, ``t[0]`` and
            ``adjoint_params`` (``event_fn``'s own tensors get gradients only
            if they are in ``adjoint_params``; ``t[1:]`` gets zeros).  An event
            where ``de/dt = 0`` (grazing) gives infinite gradients.
        adjoint_rtol, adjoint_atol, adjoint_method: for the backward solves;
            ``None`` copies the forward value.
        adjoint_options: options of the backward solves (in forward time
            units: ``jump_t``, ``step_t``, ``grid_constructor``, ``perturb``
            ... apply as given, the solver running them in reverse time).
            ``None`` copies ``options`` without its ``norm``.  Its ``norm``:
            absent for torchdiffeq's default ``max(‖y‖, ‖a‖, RMS of each
            parameter gradient)``, ``"seminorm"`` to drop the parameter
            gradients (Kidger, Chen & Lyons 2021), or a callable taking
            ``(0-d zero, y, adj_y, *adj_params)`` (for a tuple state ``y`` and
            ``adj_y`` are unpacked in place: ``(0, *y, *adj_y, *adj_params)``).
        adjoint_params: tensors to differentiate ``func`` with respect to;
            ``None`` for ``func.parameters()``.  Tensors without
            ``requires_grad`` are left out; duplicates are counted once.
    Returns:
        ``(len(t), *y0.shape)`` tensor (a tuple of such for a tuple ``y0``),
        or ``(event_t, solution)`` with ``event_t`` 0-d of ``t``'s dtype.
        The outputs are differentiable once (the adjoint solve builds no
        graph; a double backward raises ``RuntimeError``).  Real floating
        states only; ``per_sample`` mode is not provided (use
        :func:`~sdekit.odeint` with direct backpropagation there).
    Raises:
        ValueError: ``func`` not an ``nn.Module`` and ``adjoint_params`` is
            ``None``; ``adjoint_method`` differs from ``method`` while
            ``options`` is given and ``adjoint_options`` is not; an
            ``adjoint_options['norm']`` string other than ``"seminorm"``;
            ``t`` not 1-D; and whatever :func:`~sdekit.odeint` raises for its
            arguments (bad tolerances, methods, options, shapes).
        TypeError: ``func`` or ``event_fn`` not callable, ``y0`` not a floating
            tensor or tuple of them, ``options``/``adjoint_options`` not dicts,
            ``adjoint_params`` not an iterable of tensors.
    """
    check_callable("func", func)
    if event_fn is not None:
        check_callable("event_fn", event_fn)
    if adjoint_params is None and not isinstance(func, nn.Module):
        raise ValueError("func must be an nn.Module for odeint_adjoint to find its parameters; otherwise pass "
                         "adjoint_params=(tensors func uses), or adjoint_params=() if there are none")
    for name, opt in (("options", options), ("adjoint_options", adjoint_options)):
        if opt is not None and not isinstance(opt, dict):
            raise TypeError(f"{name} must be a dict or None, got {type(opt).__name__}")
    method = _DEFAULT_METHOD if method is None else method
    adjoint_method = method if adjoint_method is None else adjoint_method
    adjoint_rtol = rtol if adjoint_rtol is None else adjoint_rtol
    adjoint_atol = atol if adjoint_atol is None else adjoint_atol
    if adjoint_method != method and options is not None and adjoint_options is None:
        raise ValueError(f"adjoint_method ({adjoint_method!r}) differs from method ({method!r}) and options were "
                         "given: pass adjoint_options too (they cannot be inferred from options)")
    options = dict(options) if options is not None else {}
    if adjoint_options is None:
        adjoint_options = {k: v for k, v in options.items() if k != "norm"}
    else:
        adjoint_options = dict(adjoint_options)
    params = _check_params(_find_parameters(func) if adjoint_params is None else adjoint_params)

    state, flat_y0 = FlatState.of(y0, "y0")
    if not isinstance(t, torch.Tensor):
        t = torch.as_tensor(t, dtype=flat_y0.dtype if flat_y0.is_floating_point() else None,
                            device=flat_y0.device)
    if t.dim() != 1 or t.numel() < 1:
        raise ValueError(f"t must be a 1-D tensor of output times, got shape {tuple(t.shape)}")

    user_norm = options.get("norm")
    if user_norm is not None:
        check_callable("options['norm']", user_norm)
        state_norm = state.user_norm(user_norm)
    else:
        state_norm = state.default_norm()
    P = sum(int(p.numel()) for p in params)
    adjoint_norm = adjoint_options.pop("norm", None)
    if _uses_norm(adjoint_method):
        adjoint_options["norm"] = _adjoint_norm(adjoint_norm, state_norm, state)
    elif adjoint_norm is not None:  # odeint warns that the method ignores it
        adjoint_options["norm"] = adjoint_norm

    plan = _Plan(func=func, state=state,
                 rtol=rtol, atol=atol,
                 method=method, options=options, event_fn=event_fn,
                 adjoint_rtol=_adjoint_tolerance(state, "adjoint_rtol", adjoint_rtol, P),
                 adjoint_atol=_adjoint_tolerance(state, "adjoint_atol", adjoint_atol, P),
                 adjoint_method=adjoint_method, adjoint_options=adjoint_options, params=params)
    out = _OdeintAdjoint.apply(plan, flat_y0, t, *params)
    if event_fn is None:
        return state.unflatten(out, (out.shape[0],)) if state.is_tuple else out
    event_t, ys = out
    return event_t, state.unflatten(ys, (ys.shape[0],))
