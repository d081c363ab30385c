"""One internal protocol for the SDEs ``sdeint`` accepts.

Two conventions come in:

* sdekit's (``drift(x, t)``, ``diffusion(x, t)``, ``t`` of shape ``(B,)``; the
  diffusion is ``(B,)`` — the same ``g`` on every coordinate — or ``(B, *D)``:
  diagonal noise).  Optional attributes ``noise_type`` / ``sde_type``; the defaults
  are those of :class:`~sdekit.sdes.AbstractSDE` ("diagonal", "ito"), and
  :class:`~sdekit.sdes.AbstractLinearSDE` declares "additive".
* torchsde's (``f(t, y)``, ``g(t, y)``, scalar tensor ``t``, required attributes
  ``noise_type`` ∈ {diagonal, additive, scalar, general} and ``sde_type`` ∈
  {ito, stratonovich}; optional ``f_and_g(t, y)``, ``g_prod(t, y, v)``,
  ``f_and_g_prod(t, y, v)``).  ``y`` is ``(B, d)``; ``g`` is ``(B, d)`` for diagonal
  noise and ``(B, d, m)`` otherwise (``m = 1`` for scalar noise).

Both become an :class:`SDEProblem`: drift ``f(t, y)``, diffusion ``G(t, y)`` in one of
two *forms* — ``"elementwise"`` (``G`` broadcasts against ``y`` and ``G·dW = G ⊙ dW``)
or ``"matrix"`` (``G`` is ``(B, d, m)`` and ``G·dW`` a batched matrix–vector product) —
the noise and SDE types, the per-sample shape of ``W``, and counters of drift and
diffusion evaluations.  Times passed to the problem are 0-dim tensors on ``y``'s device.
"""

from __future__ import annotations

import warnings

import torch
import torch.autograd.forward_ad as fwAD

NOISE_TYPES = ("diagonal", "additive", "scalar", "general")
SDE_TYPES = ("ito", "stratonovich")


def _check_out(name: str, out, shape: tuple, what: str) -> torch.Tensor:
    if not isinstance(out, torch.Tensor):
        raise TypeError(f"{name} must return a torch.Tensor, got {type(out).__name__}")
    if tuple(out.shape) != tuple(shape):
        raise ValueError(f"{name} returned shape {tuple(out.shape)}, expected {tuple(shape)} ({what})")
    if not bool(torch.isfinite(out).all()):
        raise ValueError(f"{name} returned non-finite values at the initial state")
    return out


_FITS: dict = {}


def result_fits(out: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> bool:
    """Whether ``a ∘ b`` (an elementwise binary operation) has ``out``'s shape and dtype, so it may be written
    into ``out`` (``addcmul_``, ``add_``, ``mul(out=)``).

    Cached by shapes and dtypes: ``torch.broadcast_shapes`` costs about 15 µs a call, as much as a
    whole Euler step at small batch.  Raises (as it does) if the shapes do not broadcast.
    """
    key = (out.shape, a.shape, b.shape, out.dtype, a.dtype, b.dtype)
    fits = _FITS.get(key)
    if fits is None:
        if len(_FITS) > 4096:  # a program cycling through many shapes: start over rather than grow
            _FITS.clear()
        fits = _FITS[key] = (torch.broadcast_shapes(a.shape, b.shape) == out.shape
                             and torch.result_type(a, b) == out.dtype)
    return fits


def mul_maybe_into(a: torch.Tensor, b: torch.Tensor, out=None) -> torch.Tensor:
    """``a * b``, written into the scratch tensor ``out`` when it has the result's shape and dtype and
    no gradient is recorded (the same values either way; it saves an allocation per step)."""
    if (out is not None and a.dtype == b.dtype == out.dtype and not (a.requires_grad or b.requires_grad)
            and result_fits(out, a, b)):
        return torch.mul(a, b, out=out)
    return a * b


class SDEProblem:
    """The normalised SDE ``dy = f(t, y) dt + G(t, y) · dW`` (Itô or Stratonovich).

    Attributes:
        noise_type: "diagonal", "additive", "scalar" or "general".
        sde_type: "ito" or "stratonovich".
        form: "elementwise" or "matrix" (see the module docstring).
        noise_shape: per-sample shape ``S`` of ``W`` (``W`` is ``(B, *S)``).
        n_drift, n_diffusion: evaluations of ``f`` and ``G`` so far (the NFE).
        torchsde_style: whether the SDE came in through torchsde's protocol (then torchsde's
            method / SDE type rules apply: :func:`~sdekit.solvers.sde.registry.resolve`).
    """

    def __init__(self, *, f, g, noise_type, sde_type, form, noise_shape, g_prod=None, f_and_g=None,
                 torchsde_style: bool = False):
        self._f, self._g, self._g_prod, self._f_and_g = f, g, g_prod, f_and_g
        self.torchsde_style = torchsde_style
        self.noise_type, self.sde_type, self.form = noise_type, sde_type, form
        self.noise_shape = tuple(noise_shape)
        self.n_drift = 0
        self.n_diffusion = 0

    @property
    def has_diffusion(self) -> bool:
        """Whether ``G`` itself (not only ``G·v``) can be evaluated."""
        return self._g is not None or self._f_and_g is not None

    def drift(self, t, y):
        """``f(t, y)``, shape of ``y``."""
        self.n_drift += 1
        if self._f is None:
            self.n_diffusion += 1
            return self._f_and_g(t, y)[0]
        return self._f(t, y)

    def diffusion(self, t, y):
        """``G(t, y)`` in this problem's form."""
        self.n_diffusion += 1
        if self._g is None:
            self.n_drift += 1
            return self._f_and_g(t, y)[1]
        return self._g(t, y)

    def drift_and_diffusion(self, t, y):
        """``(f, G)`` in one call when the SDE defines ``f_and_g``."""
        if self._f_and_g is not None:
            self.n_drift += 1
            self.n_diffusion += 1
            return self._f_and_g(t, y)
        return self.drift(t, y), self.diffusion(t, y)

    def drift_and_g_prod(self, t, y, v, out=None):
        """``(f, G·v)``: one ``f_and_g`` call when defined, else ``f`` and ``g_prod`` (``out``: see :meth:`prod`)."""
        if self._f_and_g is not None and self._g_prod is None:
            f, G = self.drift_and_diffusion(t, y)
            return f, self.prod(G, v, out)
        return self.drift(t, y), self.g_prod(t, y, v, out)

    def prod(self, G, v, out=None):
        """``G · v`` for ``v`` of shape ``(B, *S)``: shape of ``y``.

        ``out``: a scratch tensor the elementwise product may be written into (saves an
        allocation per step); used only when the result has its shape and dtype and no
        gradient is recorded, so the value is the same either way.
        """
        if self.form == "matrix":
            return torch.matmul(G, v.unsqueeze(-1)).squeeze(-1)
        return mul_maybe_into(G, v, out)

    def g_prod(self, t, y, v, out=None):
        """``G(t, y) · v`` (uses the SDE's own ``g_prod`` when it has one; ``out``: see :meth:`prod`)."""
        if self._g_prod is not None:
            self.n_diffusion += 1
            return self._g_prod(t, y, v)
        return self.prod(self.diffusion(t, y), v, out)

    def diffusion_column(self, t, y):
        """For diagonal, scalar and elementwise additive noise: the vector ``g`` with ``G·dW = g ⊙ dW``.

        Scalar noise in matrix form ``(B, d, 1)`` gives ``(B, d)``.
        """
        G = self.diffusion(t, y)
        return G[..., 0] if self.form == "matrix" else G

    def diffusion_column_jvp(self, t, y, tangent):
        """``(g(t, y), ∂g/∂y · tangent)`` by forward-mode AD (dual tensors), one evaluation.

        Uses :mod:`torch.autograd.forward_ad` directly: the same values as ``torch.func.jvp``
        with about a third less overhead per call.
        """
        self.n_diffusion += 1
        with warnings.catch_warnings():
            # torch's forward-AD decompositions load through torch.jit.script once, with a DeprecationWarning.
            warnings.filterwarnings("ignore", message=".*torch.jit.script.*", category=DeprecationWarning)
            with fwAD.dual_level():
                z = fwAD.make_dual(y, tangent)
                G = self._g(t, z) if self._g is not None else self._f_and_g(t, z)[1]
                out = fwAD.unpack_dual(G[..., 0] if self.form == "matrix" else G)
        if out.tangent is None:  # g does not depend on y
            return out.primal, torch.zeros_like(out.primal)
        return out.primal, out.tangent


# ---------------------------------------------------------------------------- adapters


def _torchsde_style(sde) -> bool:
    return any(hasattr(sde, name) for name in ("f", "g", "f_and_g", "g_prod", "f_and_g_prod")) and not (
        hasattr(sde, "drift") and hasattr(sde, "diffusion")
    )


def _attribute(sde, name: str, choices, default=None) -> str:
    value = getattr(sde, name, default)
    if value is None:
        raise ValueError(f"sde must have the attribute {name} (one of {list(choices)}), as torchsde requires")
    if value not in choices:
        raise ValueError(f"sde.{name} must be one of {list(choices)}, got {value!r}")
    return value


def from_sdekit(sde, y0: torch.Tensor, t0) -> SDEProblem:
    """Wrap an SDE with ``drift(x, t)`` / ``diffusion(x, t)`` (``t`` of shape ``(B,)``).

    Raises:
        ValueError: if ``drift`` / ``diffusion`` return the wrong shape or non-finite
            values at ``(y0, t0)``, or the declared types are unknown.
        TypeError: if they do not return tensors.
    """
    noise_type = _attribute(sde, "noise_type", NOISE_TYPES, "diagonal")
    sde_type = _attribute(sde, "sde_type", SDE_TYPES, "ito")
    if noise_type in ("scalar", "general"):
        raise ValueError(
            f"noise_type={noise_type!r} needs a diffusion matrix; sdekit-style SDEs return (B,) or (B, *D). "
            "Use the torchsde protocol (f, g returning (B, d, m)) for it"
        )
    B = y0.shape[0]

    def batch(t):  # a 0-d time, or one per row ((B,) or (B, 1, …) from per-sample steps)
        return t.reshape(-1).expand(B)

    def f(t, y):
        return sde.drift(y, batch(t))

    def column(G, y):  # a (B,) diffusion broadcast against y
        return G.reshape(G.shape + (1,) * (y.dim() - G.dim())) if G.dim() == 1 else G

    def g(t, y):
        return column(sde.diffusion(y, batch(t)), y)

    def f_and_g(t, y):  # both at one expanded time (the Euler step's call)
        tb = batch(t)
        return sde.drift(y, tb), column(sde.diffusion(y, tb), y)

    f0 = _check_out("drift", f(t0, y0), y0.shape, "the shape of x")
    G0 = sde.diffusion(y0, batch(t0))
    if not isinstance(G0, torch.Tensor):
        raise TypeError(f"diffusion must return a torch.Tensor, got {type(G0).__name__}")
    if tuple(G0.shape) not in ((B,), tuple(y0.shape)):
        raise ValueError(
            f"diffusion returned shape {tuple(G0.shape)}, expected ({B},) or {tuple(y0.shape)} "
            f"(noise_type={noise_type!r})"
        )
    _check_out("diffusion", G0, G0.shape, "")
    del f0
    return SDEProblem(f=f, g=g, f_and_g=f_and_g, noise_type=noise_type, sde_type=sde_type, form="elementwise",
                      noise_shape=tuple(y0.shape[1:]))


def from_torchsde(sde, y0: torch.Tensor, t0, noise_size=None) -> SDEProblem:
    """Wrap an SDE following torchsde's protocol (``f(t, y)``, ``g(t, y)``, types as attributes).

    Args:
        sde: the SDE object.
        y0: ``(B, d)`` initial state.
        t0: 0-dim tensor, the initial time (used to check shapes once).
        noise_size: ``m`` when it cannot be read off ``g`` (SDEs with only ``g_prod``).
    Raises:
        ValueError: on missing or unknown ``noise_type`` / ``sde_type``, a ``y0`` that is not
            2-D, or ``f`` / ``g`` / ``g_prod`` shapes that do not match the noise type.
    """
    noise_type = _attribute(sde, "noise_type", NOISE_TYPES)
    sde_type = _attribute(sde, "sde_type", SDE_TYPES)
    if y0.dim() != 2:
        raise ValueError(f"y0 must have shape (batch, d) for a torchsde-style SDE, got {tuple(y0.shape)}")
    B, d = y0.shape
    f = getattr(sde, "f", None)
    g = getattr(sde, "g", None)
    f_and_g = getattr(sde, "f_and_g", None)
    g_prod = getattr(sde, "g_prod", None)
    f_and_g_prod = getattr(sde, "f_and_g_prod", None)
    m_shape: tuple[int, ...]  # the noise shape, set below once m is known (read by the f lambda)
    if f is None and f_and_g is None:
        if f_and_g_prod is None:
            raise ValueError("sde must define f(t, y) or f_and_g(t, y)")
        f = lambda t, y: f_and_g_prod(t, y, torch.zeros((B,) + m_shape, dtype=y.dtype, device=y.device))[0]
    if g is None and f_and_g is None and g_prod is None:
        if f_and_g_prod is None:
            raise ValueError("sde must define g(t, y), f_and_g(t, y) or g_prod(t, y, v)")
        g_prod = lambda t, y, v: f_and_g_prod(t, y, v)[1]
    form = "elementwise" if noise_type == "diagonal" else "matrix"
    has_g = g is not None or f_and_g is not None
    if has_g:
        if g is not None:
            G0 = g(t0, y0)
        else:
            assert f_and_g is not None  # has_g
            G0 = f_and_g(t0, y0)[1]
        if not isinstance(G0, torch.Tensor):
            raise TypeError(f"g must return a torch.Tensor, got {type(G0).__name__}")
        if form == "elementwise":
            _check_out("g", G0, (B, d), "noise_type='diagonal' needs (batch, d)")
            m = d
        else:
            if G0.dim() != 3 or tuple(G0.shape[:2]) != (B, d):
                raise ValueError(
                    f"g returned shape {tuple(G0.shape)}, expected ({B}, {d}, m) for noise_type={noise_type!r}"
                )
            m = G0.shape[2]
            if noise_type == "scalar" and m != 1:
                raise ValueError(f"g returned shape {tuple(G0.shape)}: noise_type='scalar' needs m = 1")
            _check_out("g", G0, G0.shape, "")
    elif form == "elementwise":
        m = d
    elif noise_type == "scalar":
        m = 1
    elif noise_size is not None:
        m = int(noise_size)
    else:
        raise ValueError("cannot infer the number of Brownian motions m from g_prod alone: pass bm of shape (B, m)")
    m_shape = (m,)
    if f is not None:
        f0 = f(t0, y0)
    else:
        assert f_and_g is not None  # f was built from f_and_g_prod where both are missing
        f0 = f_and_g(t0, y0)[0]
    _check_out("f", f0, (B, d), "the shape of y")
    if g_prod is not None:
        v = torch.zeros((B, m), dtype=y0.dtype, device=y0.device)
        _check_out("g_prod", g_prod(t0, y0, v), (B, d), "the shape of y")
    return SDEProblem(f=f, g=g, g_prod=g_prod, f_and_g=f_and_g, noise_type=noise_type, sde_type=sde_type,
                      form=form, noise_shape=m_shape, torchsde_style=True)


def as_problem(sde, y0: torch.Tensor, t0, noise_size=None) -> SDEProblem:
    """Normalise ``sde`` (sdekit or torchsde convention) into an :class:`SDEProblem`.

    Raises:
        TypeError: if ``sde`` follows neither convention.
    """
    if hasattr(sde, "drift") and hasattr(sde, "diffusion"):
        return from_sdekit(sde, y0, t0)
    if _torchsde_style(sde):
        return from_torchsde(sde, y0, t0, noise_size)
    raise TypeError(
        f"sde must have drift(x, t) and diffusion(x, t) (sdekit) or f(t, y) and g(t, y) (torchsde), "
        f"got {type(sde).__name__}"
    )


# ---------------------------------------------------------------------------- torchsde's names= and logqp=

#: torchsde's ``names=`` keys → the method of its SDE protocol each one renames.
RENAMABLE = {"drift": "f", "diffusion": "g", "prior_drift": "h", "diffusion_prod": "g_prod",
             "drift_and_diffusion": "f_and_g", "drift_and_diffusion_prod": "f_and_g_prod"}


class RenamedSDE:
    """torchsde's ``names=``: the SDE's methods under the protocol's names (``f``, ``g``, ``h``, …).

    ``names`` maps a key of :data:`RENAMABLE` to the name of the SDE's method playing that
    role, e.g. ``{"drift": "forward"}`` makes ``sde.forward`` the drift ``f``; methods whose
    key is not given keep their protocol name.  ``noise_type`` / ``sde_type`` are read from
    ``sde``.  (torchsde's ``sdeint`` contract: ``names`` of ``sdeint``, its ``RenameMethodsSDE``.)

    Raises:
        TypeError: if ``names`` is not a dict of strings.
        ValueError: for a key outside :data:`RENAMABLE`, or a name ``sde`` has no method for.
    """

    def __init__(self, sde, names):
        if not isinstance(names, dict):
            raise TypeError(f"names must be a dict such as {{'drift': 'forward'}}, got {type(names).__name__}")
        unknown = sorted(set(names) - set(RENAMABLE))
        if unknown:
            raise ValueError(f"names has unknown keys {unknown}; the keys are {sorted(RENAMABLE)}")
        for key in ("noise_type", "sde_type"):
            if hasattr(sde, key):
                setattr(self, key, getattr(sde, key))
        for key, attr in RENAMABLE.items():
            source = names.get(key, attr)
            if not isinstance(source, str):
                raise TypeError(f"names[{key!r}] must be a method name (str), got {type(source).__name__}")
            method = getattr(sde, source, None)
            if key in names and not callable(method):
                raise ValueError(f"names[{key!r}] = {source!r}, but sde has no method {source!r}")
            if callable(method):
                setattr(self, attr, method)


#: ``|g|`` below this is replaced by ``eps·sign(g)`` in the diagonal-noise ``u = (f − h)/g``.
LOGQP_EPS = 1e-7


def _stable_division(a: torch.Tensor, b: torch.Tensor, eps: float = LOGQP_EPS) -> torch.Tensor:
    """``a / b`` with ``|b| < eps`` replaced by ``eps`` of ``b``'s sign (``+eps`` where ``b = 0``)."""
    small = b.detach().abs() <= eps
    if bool(small.any()):
        b = torch.where(small, torch.where(b.detach() < 0, -eps, eps).to(b.dtype), b)
    return a / b


def with_logqp(problem: SDEProblem, h, y0: torch.Tensor) -> SDEProblem:
    """``problem`` with one more state coordinate ``L``: ``dL = ½‖u(t, y)‖² dt`` (zero diffusion).

    ``u`` solves ``G(t, y) u = f(t, y) − h(t, y)``: elementwise ``u = (f − h)/g`` for diagonal
    noise (``|g| < 1e-7`` read as ``±1e-7``), else the least-squares (pseudo-inverse)
    solution ``u = G⁺ (f − h)``, shape ``(B, m)``, for scalar, additive and general noise.
    Then ``L(t₁) − L(t₀) = ∫ ½‖u‖² dt`` is the log-ratio (KL) penalty of the posterior SDE
    (drift ``f``) against the prior (drift ``h``, same diffusion) along the path: Li, Wong,
    Chen & Duvenaud 2020, "Scalable gradients for stochastic differential equations",
    AISTATS, §9.6; torchsde's ``logqp=True``.  Every method integrates the
    augmented state, so any method works.

    Args:
        problem: the normalised SDE, ``y`` of shape ``(B, d)``.
        h: the prior drift ``h(t, y)``, ``(B, d)``.
        y0: ``(B, d)`` initial state (checks ``h``'s shape once).
    Returns:
        An :class:`SDEProblem` on ``(B, d + 1)``; for diagonal noise ``W`` is ``(B, d + 1)``
        (the last channel is multiplied by zero), otherwise ``W`` is unchanged.
    Raises:
        ValueError: if the SDE defines only ``g_prod`` (``u`` needs ``G`` itself), or ``h``
            returns the wrong shape or non-finite values at the initial state.
        TypeError: if ``h`` is not callable or does not return a tensor.
    """
    if not callable(h):
        raise TypeError("logqp=True needs the prior drift h(t, y) as a method of sde (torchsde's protocol)")
    if not problem.has_diffusion:
        raise ValueError("logqp=True needs the diffusion g(t, y) itself (u solves g u = f − h); the SDE only "
                         "defines g_prod")
    B, d = y0.shape
    diagonal = problem.form == "elementwise"

    def pad(G):
        zeros = G.new_zeros((B, 1) + tuple(G.shape[2:]))
        return torch.cat([G, zeros], dim=1)

    def drift_and_diffusion(t, Y):
        y = Y[:, :d]
        f, G = problem.drift_and_diffusion(t, y)
        r = f - h(t, y)
        if diagonal:
            u = _stable_division(r, G)
        else:
            u = torch.matmul(torch.linalg.pinv(G), r.unsqueeze(-1)).squeeze(-1)
        rate = 0.5 * (u * u).sum(dim=1, keepdim=True)
        return torch.cat([f, rate], dim=1), pad(G)

    return SDEProblem(f=lambda t, Y: drift_and_diffusion(t, Y)[0],
                      g=lambda t, Y: pad(problem.diffusion(t, Y[:, :d])),
                      f_and_g=drift_and_diffusion, noise_type=problem.noise_type, sde_type=problem.sde_type,
                      form=problem.form, noise_shape=(d + 1,) if diagonal else problem.noise_shape,
                      torchsde_style=problem.torchsde_style)


def check_prior_drift(h, t0, y0: torch.Tensor) -> None:
    """Check ``h(t0, y0)`` is a finite ``(B, d)`` tensor (``logqp=True``)."""
    _check_out("h", h(t0, y0), y0.shape, "the shape of y")
