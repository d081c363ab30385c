"""The SDE methods ``sdeint`` knows, by name, with torchsde's names as aliases."""

from __future__ import annotations

from .base import AbstractSDESolver
from .euler import EulerMaruyama
from .euler_heun import EulerHeun
from .heun import Heun
from .log_ode import LogODEMidpoint
from .midpoint import Midpoint
from .milstein import DerivativeFreeMilstein, Milstein
from .reversible_heun import ReversibleHeun
from .srk import SRA1Solver, SRA3Solver, SRI2Solver

#: method name → solver class.
SDEINT_METHODS: dict[str, type[AbstractSDESolver]] = {
    cls.name: cls
    for cls in (EulerMaruyama, Milstein, DerivativeFreeMilstein, Heun, EulerHeun, Midpoint, ReversibleHeun,
                SRA1Solver, SRA3Solver, SRI2Solver, LogODEMidpoint)
}

#: The former name, kept so that programs importing it keep working.
METHODS = SDEINT_METHODS

#: other accepted names → canonical name ("srk" is resolved by noise type, as torchsde does).
ALIASES = {"euler_maruyama": "euler", "milstein_grad_free": "derivative_free_milstein"}

#: torchsde's "srk": SRA1 for additive noise, SRI2 for diagonal or scalar noise.
SRK_BY_NOISE = {"additive": "sra1", "diagonal": "sri2", "scalar": "sri2"}


#: torchsde's methods sdekit does not provide, with what they are (named in the error).
NOT_PROVIDED = {
    "adjoint_reversible_heun": "the adjoint of reversible Heun, used only inside torchsde's sdeint_adjoint",
}


#: the SDE type each of torchsde's method names solves (torchsde's solver classes' ``sde_type``).  For
#: torchsde-style SDEs these are enforced even for additive noise, where Itô and Stratonovich coincide
#: and sdekit's own SDEs may use either family: torchsde raises there, so sdeint does too.
TORCHSDE_SDE_TYPES = {"euler": ("ito",), "srk": ("ito",), "milstein": ("ito", "stratonovich"),
                      "heun": ("stratonovich",), "midpoint": ("stratonovich",), "euler_heun": ("stratonovich",),
                      "reversible_heun": ("stratonovich",), "log_ode": ("stratonovich",)}


def method_names() -> list[str]:
    """Every accepted ``method=`` string."""
    return sorted(set(SDEINT_METHODS) | set(ALIASES) | {"srk"})


def resolve(method: str, noise_type: str, sde_type: str, options: dict | None = None,
            torchsde_types: bool = False) -> type[AbstractSDESolver]:
    """The solver class for ``method`` (aliases and torchsde's ``options={"grad_free": True}`` resolved).

    With ``torchsde_types`` (a torchsde-style SDE), torchsde's method names keep torchsde's
    SDE types (:data:`TORCHSDE_SDE_TYPES`) for additive noise too.

    Raises:
        ValueError: for an unknown method, one sdekit does not provide, "srk" with noise it
            has no scheme for, or (``torchsde_types``) a torchsde method on the other SDE type.
    """
    if isinstance(method, str) and method in NOT_PROVIDED:
        raise ValueError(f"method={method!r} ({NOT_PROVIDED[method]}) is not provided by sdekit; "
                         f"the methods are {method_names()}")
    if not isinstance(method, str) or method not in method_names():
        raise ValueError(f"method must be one of {method_names()}, got {method!r}")
    allowed = TORCHSDE_SDE_TYPES.get(method, (sde_type,))
    if torchsde_types and sde_type not in allowed:
        others = ("euler, milstein or srk" if sde_type == "ito"
                  else "heun, midpoint, euler_heun, reversible_heun, log_ode or milstein")
        other_type = "stratonovich" if sde_type == "ito" else "ito"
        hint = (f"; for additive noise the SDE is the same when declared sde_type={other_type!r}"
                if noise_type == "additive" else "")
        raise ValueError(f"{method} does not support sde_type={sde_type!r} with noise_type={noise_type!r}: "
                         f"torchsde's {method} solves {' / '.join(allowed)} SDEs only, and so it does here for "
                         f"torchsde-style SDEs. Use {others}{hint}")
    name = ALIASES.get(method, method)
    if name == "srk":
        if noise_type not in SRK_BY_NOISE:
            raise ValueError(f"srk does not support noise_type={noise_type!r} (supported: additive, diagonal, scalar)")
        name = SRK_BY_NOISE[noise_type]
    if name == "milstein" and options and options.get("grad_free"):
        name = "derivative_free_milstein"
    return SDEINT_METHODS[name]


def default_method(noise_type: str, sde_type: str, torchsde_style: bool = False) -> str:
    """The method ``sdeint`` uses when none is given.

    torchsde-style SDEs get torchsde's default (its ``sdeint``, ``check_contract``): ``srk``
    for Itô SDEs with diagonal, scalar or additive noise, ``euler`` for Itô SDEs with
    general noise, ``midpoint`` for Stratonovich SDEs.  sdekit-style SDEs (``drift`` /
    ``diffusion``, which torchsde does not take) keep sdekit's: ``euler`` for Itô SDEs and
    additive noise, ``heun`` for Stratonovich SDEs.
    """
    if not torchsde_style:
        return "euler" if sde_type == "ito" or noise_type == "additive" else "heun"
    if sde_type == "stratonovich":
        return "midpoint"
    return "euler" if noise_type == "general" else "srk"
