"""Butcher tableaus of embedded explicit Runge–Kutta pairs, as data.

One generic stepper (:mod:`sdekit.solvers.adaptive`) reads them.  Each
tableau states the order of its propagated solution (``order``) and of its
embedded error estimator (``error_order``).
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction as F


@dataclass(frozen=True)
class ButcherTableau:
    """An explicit embedded Runge–Kutta pair.

    Attributes:
        name: short name.
        c: nodes, length s.
        a: strictly lower-triangular stage matrix, row i has i entries.
        b: weights of the propagated solution, length s.
        b_error: ``b − b̂``, weights of the embedded error estimate, length s.
        order: order of the propagated solution.
        error_order: order of the embedded (lower-order) solution.
        fsal: whether the last stage is evaluated at the new solution
            (first-same-as-last), so accepted steps cost ``s − 1`` evaluations.
    """

    name: str
    c: tuple
    a: tuple
    b: tuple
    b_error: tuple
    order: int
    error_order: int
    fsal: bool

    @property
    def stages(self) -> int:
        return len(self.c)


def _floats(rows):
    return tuple(tuple(float(v) for v in row) for row in rows)


_DP_B = (F(35, 384), 0, F(500, 1113), F(125, 192), F(-2187, 6784), F(11, 84), 0)
_DP_BHAT = (F(5179, 57600), 0, F(7571, 16695), F(393, 640), F(-92097, 339200), F(187, 2100), F(1, 40))

#: Dormand & Prince (1980), "A family of embedded Runge–Kutta formulae",
#: J. Comput. Appl. Math. 6(1), Table 2 (RK5(4)7M): order 5, error order 4, FSAL.
DOPRI5 = ButcherTableau(
    name="dopri5",
    c=tuple(float(v) for v in (0, F(1, 5), F(3, 10), F(4, 5), F(8, 9), 1, 1)),
    a=_floats(
        [
            [],
            [F(1, 5)],
            [F(3, 40), F(9, 40)],
            [F(44, 45), F(-56, 15), F(32, 9)],
            [F(19372, 6561), F(-25360, 2187), F(64448, 6561), F(-212, 729)],
            [F(9017, 3168), F(-355, 33), F(46732, 5247), F(49, 176), F(-5103, 18656)],
            list(_DP_B[:6]),
        ]
    ),
    b=tuple(float(v) for v in _DP_B),
    b_error=tuple(float(b - bh) for b, bh in zip(_DP_B, _DP_BHAT)),
    order=5,
    error_order=4,
    fsal=True,
)
