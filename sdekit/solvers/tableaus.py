"""Butcher tableaus of explicit Runge–Kutta methods, as data.

One generic stepper (:mod:`sdekit.solvers.rk`) reads them.  A tableau states
the order of its propagated solution (``order``); an embedded pair also has the
error weights ``b_error = b − b̂`` and the order of its embedded solution
(``error_order``), and may carry a continuous extension (``dense``) for output
between steps.  Exact rational coefficients are kept as ``Fraction`` where the
source gives them and converted to float once.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction as F


@dataclass(frozen=True)
class ButcherTableau:
    """An explicit Runge–Kutta method, optionally with an embedded error estimate and dense output.

    Attributes:
        name: short name (the ``method`` string of :func:`~sdekit.odeint`).
        c: nodes, length s.
        a: strictly lower-triangular stage matrix, row i has i entries.
        b: weights of the propagated solution, length s.
        order: order of the propagated solution.
        b_error: ``b − b̂``, weights of the embedded error estimate (length s), or ``None``.
        error_order: order of the embedded solution ``b̂`` (0 when there is none).
        fsal: whether the last stage is evaluated at the new solution
            (first-same-as-last), so an accepted step costs ``s − 1`` evaluations.
        dense: continuous extension ``y(t + θh) = y + h Σᵢ bᵢ(θ) kᵢ`` with
            ``bᵢ(θ) = Σ_m dense[i][m] θ^{m+1}``, or ``None``.
        dense_order: order of the continuous extension (0 when there is none).
    """

    name: str
    c: tuple
    a: tuple
    b: tuple
    order: int
    b_error: tuple | None = None
    error_order: int = 0
    fsal: bool = False
    dense: tuple | None = None
    dense_order: int = 0

    @property
    def stages(self) -> int:
        return len(self.c)

    @property
    def adaptive(self) -> bool:
        """Whether the tableau has an embedded error estimate (needed for step-size control)."""
        return self.b_error is not None


def _floats(rows):
    return tuple(tuple(float(v) for v in row) for row in rows)


def _vec(v):
    return tuple(float(x) for x in v)


def _hermite_dense(b):
    """Cubic Hermite extension of an FSAL pair from ``y₀, y₁, f₀ = k₁, f₁ = k_s`` (order 3).

    ``y(θ) − y₀ = h [h₀₁(θ) Σ bᵢkᵢ + h₁₀(θ) k₁ + h₁₁(θ) k_s]`` with the Hermite
    basis ``h₀₁ = 3θ² − 2θ³``, ``h₁₀ = θ − 2θ² + θ³``, ``h₁₁ = −θ² + θ³``.
    """
    rows = [[0, 3 * bi, -2 * bi] for bi in b]
    rows[0] = [r + h for r, h in zip(rows[0], (1, -2, 1))]
    rows[-1] = [r + h for r, h in zip(rows[-1], (0, -1, 1))]
    return _floats(rows)


def _quartic_dense(b, b_mid):
    """Quartic extension through ``y₀, y₁, f₀ = k₁, f₁ = k_s`` and a midpoint value ``y(½) = y₀ + h Σ b_midᵢ kᵢ``.

    Solves for ``p(θ) = a₁θ + a₂θ² + a₃θ³ + a₄θ⁴`` (in units of ``h``) with
    ``p′(0) = k₁``, ``p(1) = Σ bᵢkᵢ``, ``p′(1) = k_s``, ``p(½) = Σ b_midᵢkᵢ``,
    stage by stage in exact arithmetic.  Order 4 when ``y(½)`` is order 4
    (Shampine 1986, "Some practical Runge–Kutta formulas", Math. Comp. 46).
    """
    s = len(b)
    rows = []
    for i in range(s):
        a1 = F(1) if i == 0 else F(0)
        p1 = F(b[i])                      # a1 + a2 + a3 + a4
        d1 = F(1) if i == s - 1 else F(0)  # a1 + 2a2 + 3a3 + 4a4
        m = F(b_mid[i])                   # a1/2 + a2/4 + a3/8 + a4/16
        # Eliminate: with r1 = p1 − a1, r2 = d1 − a1, r3 = 16m − 8a1 (= 4a2 + 2a3 + a4).
        r1, r2, r3 = p1 - a1, d1 - a1, 16 * m - 8 * a1
        # a2 + a3 + a4 = r1; 2a2 + 3a3 + 4a4 = r2; 4a2 + 2a3 + a4 = r3.
        a2, a3, a4 = _solve3(((1, 1, 1), (2, 3, 4), (4, 2, 1)), (r1, r2, r3))
        rows.append([a1, a2, a3, a4])
    return _floats(rows)


def _solve3(m, r):
    """Solve a 3×3 linear system exactly (Cramer's rule on Fractions)."""
    def det(x):
        return (x[0][0] * (x[1][1] * x[2][2] - x[1][2] * x[2][1])
                - x[0][1] * (x[1][0] * x[2][2] - x[1][2] * x[2][0])
                + x[0][2] * (x[1][0] * x[2][1] - x[1][1] * x[2][0]))
    m = [[F(v) for v in row] for row in m]
    d = det(m)
    out = []
    for j in range(3):
        mj = [row[:] for row in m]
        for i in range(3):
            mj[i][j] = F(r[i])
        out.append(det(mj) / d)
    return out


# ---- fixed-step methods -------------------------------------------------------------

#: Forward Euler, order 1.
EULER = ButcherTableau(name="euler", c=(0.0,), a=((),), b=(1.0,), order=1)

#: Explicit midpoint rule, order 2 (Hairer, Nørsett & Wanner, "Solving ODEs I", §II.1, eq. 1.3).
MIDPOINT = ButcherTableau(name="midpoint", c=(0.0, 0.5), a=((), (0.5,)), b=(0.0, 1.0), order=2)

#: Heun's method (explicit trapezoidal rule), order 2 (Hairer et al., §II.1, Table 1.1).
HEUN = ButcherTableau(name="heun", c=(0.0, 1.0), a=((), (1.0,)), b=(0.5, 0.5), order=2)

#: The classical Runge–Kutta method, order 4 (Kutta 1901; Hairer et al., §II.1, Table 1.2 left).
RK4 = ButcherTableau(
    name="rk4",
    c=(0.0, 0.5, 0.5, 1.0),
    a=((), (0.5,), (0.0, 0.5), (0.0, 0.0, 1.0)),
    b=_vec((F(1, 6), F(1, 3), F(1, 3), F(1, 6))),
    order=4,
)

# ---- embedded pairs ---------------------------------------------------------------

_BS_B = (F(2, 9), F(1, 3), F(4, 9), F(0))
_BS_BHAT = (F(7, 24), F(1, 4), F(1, 3), F(1, 8))

#: Bogacki & Shampine (1989), "A 3(2) pair of Runge–Kutta formulas", Appl. Math. Lett. 2(4):
#: order 3, error order 2, FSAL; cubic Hermite dense output.
BOSH3 = ButcherTableau(
    name="bosh3",
    c=_vec((0, F(1, 2), F(3, 4), 1)),
    a=_floats([[], [F(1, 2)], [0, F(3, 4)], list(_BS_B[:3])]),
    b=_vec(_BS_B),
    order=3,
    b_error=_vec(b - bh for b, bh in zip(_BS_B, _BS_BHAT)),
    error_order=2,
    fsal=True,
    dense=_hermite_dense(_BS_B),
    dense_order=3,
)

_DP_B: tuple[F | int, ...] = (F(35, 384), 0, F(500, 1113), F(125, 192), F(-2187, 6784), F(11, 84), 0)
_DP_BHAT: tuple[F | int, ...] = (F(5179, 57600), 0, F(7571, 16695), F(393, 640), F(-92097, 339200), F(187, 2100), F(1, 40))
# Shampine's order-4 midpoint value y(t + h/2) (Shampine 1986, as used with DOPRI5's dense output).
_DP_BMID = (
    F(6025192743, 30085553152) / 2, 0, F(51252292925, 65400821598) / 2, F(-2691868925, 45128329728) / 2,
    F(187940372067, 1594534317056) / 2, F(-1776094331, 19743644256) / 2, F(11237099, 235043384) / 2,
)

#: Dormand & Prince (1980), "A family of embedded Runge–Kutta formulae",
#: J. Comput. Appl. Math. 6(1), Table 2 (RK5(4)7M): order 5, error order 4, FSAL;
#: quartic dense output through Shampine's midpoint value.
DOPRI5 = ButcherTableau(
    name="dopri5",
    c=_vec((0, F(1, 5), F(3, 10), F(4, 5), F(8, 9), 1, 1)),
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
    b=_vec(_DP_B),
    order=5,
    b_error=_vec(b - bh for b, bh in zip(_DP_B, _DP_BHAT)),
    error_order=4,
    fsal=True,
    dense=_quartic_dense(_DP_B, _DP_BMID),
    dense_order=4,
)

_TS_B = (0.09646076681806523, 0.01, 0.4798896504144996, 1.379008574103742, -3.290069515436081,
         2.324710524099774, 0.0)

#: Tsitouras (2011), "Runge–Kutta pairs of order 5(4) satisfying only the first column
#: simplifying assumption", Comput. Math. Appl. 62(2), Table 1: order 5, error order 4,
#: FSAL; its order-4 continuous extension (same paper, §3).  Decimal coefficients as published.
TSIT5 = ButcherTableau(
    name="tsit5",
    c=(0.0, 0.161, 0.327, 0.9, 0.9800255409045097, 1.0, 1.0),
    a=(
        (),
        (0.161,),
        (-0.008480655492356989, 0.335480655492357),
        (2.8971530571054935, -6.359448489975075, 4.3622954328695815),
        (5.325864828439257, -11.748883564062828, 7.4955393428898365, -0.09249506636175525),
        (5.86145544294642, -12.92096931784711, 8.159367898576159, -0.071584973281401, -0.028269050394068383),
        _TS_B[:6],
    ),
    b=_TS_B,
    order=5,
    b_error=(-0.00178001105222577714, -0.0008164344596567469, 0.007880878010261995, -0.1447110071732629,
             0.5823571654525552, -0.45808210592918697, 1.0 / 66.0),
    error_order=4,
    fsal=True,
    dense=(
        (1.0, -2.763706197274826, 2.9132554618219126, -1.0530884977290216),
        (0.0, 0.13169999999999998, -0.2234, 0.1017),
        (0.0, 3.9302962368947516, -5.941033872131505, 2.490627285651253),
        (0.0, -12.411077166933676, 30.33818863028232, -16.548102889244902),
        (0.0, 37.50931341651104, -88.1789048947664, 47.37952196281928),
        (0.0, -27.896526289197286, 65.09189467479366, -34.87065786149661),
        (0.0, 1.5, -4.0, 2.5),
    ),
    dense_order=4,
)

#: Every tableau by ``method`` name.
TABLEAUS = {t.name: t for t in (EULER, MIDPOINT, HEUN, RK4, BOSH3, DOPRI5, TSIT5)}
FIXED_STEP_METHODS = tuple(n for n, t in TABLEAUS.items() if not t.adaptive)
ADAPTIVE_METHODS = tuple(n for n, t in TABLEAUS.items() if t.adaptive)
