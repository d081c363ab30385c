"""The SDE methods ``sdeint`` knows, by name, with torchsde's names as aliases."""

from __future__ import annotations

from .base import AbstractSDESolver
from .euler import EulerMaruyama
from .euler_heun import EulerHeun
from .heun import Heun
from .midpoint import Midpoint
from .milstein import DerivativeFreeMilstein, Milstein
from .reversible_heun import ReversibleHeun
from .srk import SRA1Solver, SRA3Solver, SRI2Solver

#: method name → solver class.
METHODS: dict[str, type[AbstractSDESolver]] = {
    cls.name: cls
    for cls in (EulerMaruyama, Milstein, DerivativeFreeMilstein, Heun, EulerHeun, Midpoint, ReversibleHeun,
                SRA1Solver, SRA3Solver, SRI2Solver)
}

#: other accepted names → canonical name ("srk" is resolved by noise type, as torchsde does).
ALIASES = {"euler_maruyama": "euler", "milstein_grad_free": "derivative_free_milstein"}

#: torchsde's "srk": SRA1 for additive noise, SRI2 for diagonal or scalar noise.
SRK_BY_NOISE = {"additive": "sra1", "diagonal": "sri2", "scalar": "sri2"}


def method_names() -> list[str]:
    """Every accepted ``method=`` string."""
    return sorted(set(METHODS) | set(ALIASES) | {"srk"})


def resolve(method: str, noise_type: str, sde_type: str, options: dict | None = None) -> type[AbstractSDESolver]:
    """The solver class for ``method`` (aliases and torchsde's ``options={"grad_free": True}`` resolved).

    Raises:
        ValueError: for an unknown method, or "srk" with noise it has no scheme for.
    """
    if not isinstance(method, str) or method not in method_names():
        raise ValueError(f"method must be one of {method_names()}, got {method!r}")
    name = ALIASES.get(method, method)
    if name == "srk":
        if noise_type not in SRK_BY_NOISE:
            raise ValueError(f"srk does not support noise_type={noise_type!r} (supported: additive, diagonal, scalar)")
        name = SRK_BY_NOISE[noise_type]
    if name == "milstein" and options and options.get("grad_free"):
        name = "derivative_free_milstein"
    return METHODS[name]


def default_method(noise_type: str, sde_type: str) -> str:
    """``euler`` for Itô SDEs (and additive noise), ``heun`` for Stratonovich SDEs."""
    return "euler" if sde_type == "ito" or noise_type == "additive" else "heun"
