"""Coefficients of Rößler's stochastic Runge–Kutta methods, as data.

Source: A. Rößler 2010, "Runge–Kutta methods for the strong approximation of solutions of
stochastic differential equations", SIAM J. Numer. Anal. 48(3), 922–952: the SRA
schemes for additive noise (§6.1, Table 6.1 / 6.2) and the SRI schemes for Itô SDEs with
scalar / diagonal noise (§6.2, Table 6.3).  ``c0``, ``c1``: nodes of the drift and
diffusion stages; ``A0``, ``B0`` (and ``A1``, ``B1`` for SRI): stage matrices (strictly
lower triangular, rows as tuples); ``alpha``: drift weights; ``beta1 … beta4``: weights of
``I_(1)``, ``I_(1,1)/√h``, ``I_(1,0)/h`` and ``I_(1,1,1)/h`` (SRA uses beta1, beta2 for
``I_(1)`` and ``I_(1,0)/h``).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SRATableau:
    """An explicit SRA scheme (Rößler 2010, eq. (6.1)) for ``dy = f(t, y) dt + g(t) dW``."""

    name: str
    c0: tuple
    c1: tuple
    A0: tuple
    B0: tuple
    alpha: tuple
    beta1: tuple
    beta2: tuple

    @property
    def stages(self) -> int:
        return len(self.alpha)


@dataclass(frozen=True)
class SRITableau:
    """An explicit SRI scheme (Rößler 2010, eq. (6.2)) for Itô SDEs with scalar or diagonal noise."""

    name: str
    c0: tuple
    c1: tuple
    A0: tuple
    A1: tuple
    B0: tuple
    B1: tuple
    alpha: tuple
    beta1: tuple
    beta2: tuple
    beta3: tuple
    beta4: tuple

    @property
    def stages(self) -> int:
        return len(self.alpha)


#: SRA1: two stages, strong order 1.5, weak order 2.0 (Rößler 2010, Table 6.1).
SRA1 = SRATableau(
    name="sra1",
    c0=(0.0, 3 / 4),
    c1=(1.0, 0.0),
    A0=((), (3 / 4,)),
    B0=((), (3 / 2,)),
    alpha=(1 / 3, 2 / 3),
    beta1=(1.0, 0.0),
    beta2=(-1.0, 1.0),
)

#: SRA3: three stages, strong order 1.5, weak order 2.0, deterministic order 3
#: (Rößler 2010, Table 6.2).  ``beta2`` is the one that meets the order condition
#: ``beta2 · c1 = −1`` of a time-dependent diffusion (see tests/test_srk_tableaus.py).
SRA3 = SRATableau(
    name="sra3",
    c0=(0.0, 1.0, 1 / 2),
    c1=(1.0, 0.0, 0.0),
    A0=((), (1.0,), (1 / 4, 1 / 4)),
    B0=((), (0.0,), (1.0, 1 / 2)),
    alpha=(1 / 6, 1 / 6, 2 / 3),
    beta1=(1.0, 0.0, 0.0),
    beta2=(-1.0, 1.0, 0.0),
)

#: SRI2: four stages, strong order 1.5 for scalar or diagonal noise (Rößler 2010, Table 6.3).
SRI2 = SRITableau(
    name="sri2",
    c0=(0.0, 1.0, 1 / 2, 0.0),
    c1=(0.0, 1 / 4, 1.0, 1 / 4),
    A0=((), (1.0,), (1 / 4, 1 / 4), (0.0, 0.0, 0.0)),
    A1=((), (1 / 4,), (1.0, 0.0), (0.0, 0.0, 1 / 4)),
    B0=((), (0.0,), (1.0, 1 / 2), (0.0, 0.0, 0.0)),
    B1=((), (-1 / 2,), (1.0, 0.0), (2.0, -1.0, 1 / 2)),
    alpha=(1 / 6, 1 / 6, 2 / 3, 0.0),
    beta1=(-1.0, 4 / 3, 2 / 3, 0.0),
    beta2=(1.0, -4 / 3, 1 / 3, 0.0),
    beta3=(2.0, -4 / 3, -2 / 3, 0.0),
    beta4=(-2.0, 5 / 3, -2 / 3, 1.0),
)
