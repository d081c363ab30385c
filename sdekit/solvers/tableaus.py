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


def _hermite_dense_through(b, points):
    """Polynomial extension of an FSAL pair through ``y₀, y₁, f₀ = k₁, f₁ = k_s`` and interior values.

    Each point ``(θⱼ, wⱼ)`` gives an interior value ``y(θⱼ) ≈ y₀ + h Σᵢ wⱼᵢ kᵢ``.
    With ``J`` points the extension has degree ``3 + J`` and, stage by stage,
    ``p(θ) = Σ_{m=1}^{3+J} a_m θ^m`` (in units of ``h``) solves
    ``p′(0) = [i = 1]``, ``p(1) = bᵢ``, ``p′(1) = [i = s]``, ``p(θⱼ) = wⱼᵢ`` in
    exact arithmetic.  Its local error is ``O(h^{q+1})`` with
    ``q = min(3 + J, order of y₁, order of the interior values)``.
    """
    s, d = len(b), 3 + len(points)
    m = [[F(int(k == 1)) for k in range(1, d + 1)], [F(1)] * d, [F(k) for k in range(1, d + 1)]]
    m += [[F(theta) ** k for k in range(1, d + 1)] for theta, _ in points]
    # Cardinal polynomials: basis[j] meets condition j with value 1 and the others with 0.
    basis = [_solve(m, [F(int(i == j)) for i in range(d)]) for j in range(d)]
    rows = []
    for i in range(s):
        r = [F(int(i == 0)), F(b[i]), F(int(i == s - 1))] + [F(w[i]) for _, w in points]
        rows.append([sum((rj * bj[k] for rj, bj in zip(r, basis) if rj != 0), F(0)) for k in range(d)])
    return _floats(rows)


def _solve(m, r):
    """Solve the square linear system ``m x = r`` exactly (Gauss–Jordan on Fractions)."""
    n = len(r)
    aug = [[F(v) for v in row] + [F(r[i])] for i, row in enumerate(m)]
    for col in range(n):
        piv = next(i for i in range(col, n) if aug[i][col] != 0)
        aug[col], aug[piv] = aug[piv], aug[col]
        pv = aug[col][col]
        aug[col] = [v / pv for v in aug[col]]
        for i in range(n):
            if i != col and aug[i][col] != 0:
                f = aug[i][col]
                aug[i] = [v - f * w for v, w in zip(aug[i], aug[col])]
    return [aug[i][n] for i in range(n)]


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

#: Heun's third-order method (Heun 1900; Hairer, Nørsett & Wanner, "Solving ODEs I",
#: §II.1, Table 1.1): c = (0, 1/3, 2/3), a₂₁ = 1/3, a₃₂ = 2/3, b = (1/4, 0, 3/4); order 3.
HEUN3 = ButcherTableau(
    name="heun3",
    c=_vec((0, F(1, 3), F(2, 3))),
    a=_floats([[], [F(1, 3)], [0, F(2, 3)]]),
    b=_vec((F(1, 4), 0, F(3, 4))),
    order=3,
)

# ---- embedded pairs ---------------------------------------------------------------

# Low-order pairs.  Neither method is FSAL as published, so each gets one extra
# stage at (t + h, y₁) with weight 0 in b and b̂ ("FSAL extension"): it is the
# next step's first stage, so an attempt still costs the published number of
# evaluations in the adaptive stepper, and it supplies f(t₁, y₁) for a cubic
# Hermite dense output.  That output is only as accurate as y₁ (order 2), so
# ``dense_order`` is 2: the local error is O(h³).

_HE_B: tuple[F | int, ...] = (F(1, 2), F(1, 2), 0)
_HE_BHAT: tuple[F | int, ...] = (1, 0, 0)

#: Heun–Euler 2(1) pair: Heun's method (explicit trapezoidal rule, order 2; Heun 1900)
#: propagated, forward Euler (order 1, the same first stage) embedded for the error
#: estimate (embedded formulas: Hairer, Nørsett & Wanner, "Solving ODEs I", §II.4),
#: as torchdiffeq's ``adaptive_heun``.  FSAL-extended (see above); cubic Hermite
#: dense output (order 2).  An accepted step costs 2 evaluations.
ADAPTIVE_HEUN = ButcherTableau(
    name="adaptive_heun",
    c=(0.0, 1.0, 1.0),
    a=_floats([[], [1], list(_HE_B[:2])]),
    b=_vec(_HE_B),
    order=2,
    b_error=_vec(b - bh for b, bh in zip(_HE_B, _HE_BHAT)),
    error_order=1,
    fsal=True,
    dense=_hermite_dense(_HE_B),
    dense_order=2,
)

_RKF2_B: tuple[F | int, ...] = (F(1, 512), F(255, 256), F(1, 512), 0)
_RKF2_BHAT: tuple[F | int, ...] = (F(1, 256), F(255, 256), 0, 0)

#: Runge–Kutta–Fehlberg 2(1) (Fehlberg 1969, "Low-order classical Runge–Kutta formulas
#: with stepsize control and their application to some heat transfer problems",
#: NASA TR R-315, formula pair RK1(2)): c = (0, 1/2, 1), a₂₁ = 1/2, a₃ = (1/256, 255/256).
#: Here the order-2 weights (1/512, 255/256, 1/512) are propagated (local
#: extrapolation) and the order-1 weights (1/256, 255/256, 0) are embedded, as in
#: torchdiffeq's ``fehlberg2``.  FSAL-extended (see above); cubic Hermite dense output
#: (order 2).  An accepted step costs 3 evaluations.
FEHLBERG2 = ButcherTableau(
    name="fehlberg2",
    c=_vec((0, F(1, 2), 1, 1)),
    a=_floats([[], [F(1, 2)], [F(1, 256), F(255, 256)], list(_RKF2_B[:3])]),
    b=_vec(_RKF2_B),
    order=2,
    b_error=_vec(b - bh for b, bh in zip(_RKF2_B, _RKF2_BHAT)),
    error_order=1,
    fsal=True,
    dense=_hermite_dense(_RKF2_B),
    dense_order=2,
)

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

# Prince & Dormand (1981) RK8(7)13M.  The paper gives every coefficient as a
# rational; the 8th-order (b) and 7th-order (b̂) weights skip stages 2–5.  The
# rationals of c₉, c₁₁ and rows 7–13 are approximations of irrational values:
# the order conditions hold to about 1e-17 (measured in exact arithmetic over all
# 200 rooted trees of order ≤ 8 for b and 115 of order ≤ 7 for b̂), below float64
# resolution, and row sums equal c to 1e-17.
_DP8_C = (0, F(1, 18), F(1, 12), F(1, 8), F(5, 16), F(3, 8), F(59, 400), F(93, 200),
          F(5490023248, 9719169821), F(13, 20), F(1201146811, 1299019798), 1, 1)
_DP8_A = (
    (),
    (F(1, 18),),
    (F(1, 48), F(1, 16)),
    (F(1, 32), 0, F(3, 32)),
    (F(5, 16), 0, F(-75, 64), F(75, 64)),
    (F(3, 80), 0, 0, F(3, 16), F(3, 20)),
    (F(29443841, 614563906), 0, 0, F(77736538, 692538347), F(-28693883, 1125000000), F(23124283, 1800000000)),
    (F(16016141, 946692911), 0, 0, F(61564180, 158732637), F(22789713, 633445777), F(545815736, 2771057229),
     F(-180193667, 1043307555)),
    (F(39632708, 573591083), 0, 0, F(-433636366, 683701615), F(-421739975, 2616292301), F(100302831, 723423059),
     F(790204164, 839813087), F(800635310, 3783071287)),
    (F(246121993, 1340847787), 0, 0, F(-37695042795, 15268766246), F(-309121744, 1061227803),
     F(-12992083, 490766935), F(6005943493, 2108947869), F(393006217, 1396673457), F(123872331, 1001029789)),
    (F(-1028468189, 846180014), 0, 0, F(8478235783, 508512852), F(1311729495, 1432422823),
     F(-10304129995, 1701304382), F(-48777925059, 3047939560), F(15336726248, 1032824649),
     F(-45442868181, 3398467696), F(3065993473, 597172653)),
    (F(185892177, 718116043), 0, 0, F(-3185094517, 667107341), F(-477755414, 1098053517),
     F(-703635378, 230739211), F(5731566787, 1027545527), F(5232866602, 850066563),
     F(-4093664535, 808688257), F(3962137247, 1805957418), F(65686358, 487910083)),
    (F(403863854, 491063109), 0, 0, F(-5068492393, 434740067), F(-411421997, 543043805),
     F(652783627, 914296604), F(11173962825, 925320556), F(-13158990841, 6184727034),
     F(3936647629, 1978049680), F(-160528059, 685178525), F(248638103, 1413531060), 0),
)
# Weights padded with a 14th entry 0 for the FSAL extension stage.
_DP8_B: tuple[F | int, ...] = (F(14005451, 335480064), 0, 0, 0, 0, F(-59238493, 1068277825), F(181606767, 758867731),
          F(561292985, 797845732), F(-1041891430, 1371343529), F(760417239, 1151165299),
          F(118820643, 751138087), F(-528747749, 2220607170), F(1, 4), 0)
_DP8_BHAT: tuple[F | int, ...] = (F(13451932, 455176623), 0, 0, 0, 0, F(-808719846, 976000145), F(1757004468, 5645159321),
             F(656045339, 265891186), F(-3867574721, 1518517206), F(465885868, 322736535),
             F(53011238, 667516719), F(2, 45), 0, 0)


def _dp8_interior(w):
    """Spread 10 interior weights over stages 1, 6, …, 14 (stages 2–5 get 0)."""
    return (w[0], 0.0, 0.0, 0.0, 0.0) + tuple(w[1:])


# Interior values y(t + θh) = y + h Σ wᵢ kᵢ of order 5 at θ = 1/3 and 2/3 from the
# 13 stages and the FSAL stage (sdekit's own derivation, not from the paper): they
# satisfy the 17 order conditions of a continuous extension of order 5 (to 2e-19)
# — order 6 is not attainable from these stages — and, among such weights, make
# the order-6 error coefficients small (regularised least squares in 60-digit
# arithmetic; 2-norm of (Φ(τ) − θ⁶/γ(τ))/σ(τ) over the 20 order-6 trees 5.0e-7 at
# both points, against 6.1e-5 and 3.9e-5 for the minimum-norm weights).
_DP8_W13 = _dp8_interior((
    0.04353949419476226, 0.0696898187293943, 0.22577560480630013, 0.009964228403403611,
    -0.015013316788707882, -0.0025272723657183468, 0.003914589388827765, -0.0007691862720470547,
    0.014919934638677038, -0.016160561401558474))
_DP8_W23 = _dp8_interior((
    0.044170274791192086, 0.16485817271705827, 0.2235674644088551, 0.10334876992401235,
    0.06376716592778672, 0.06769089885596193, -0.0011169500573627513, -0.029302974363082657,
    0.004869248894241293, 0.024814595568004316))

#: Prince & Dormand (1981), "High order embedded Runge–Kutta formulae", J. Comput.
#: Appl. Math. 7(1), 67–75, RK8(7)13M: order 8, error order 7, 13 stages, here with a
#: 14th FSAL-extension stage at (t + h, y₁) (weight 0; it is the next step's first
#: stage, so an attempt still costs 13 evaluations in the adaptive stepper, 14 with
#: fixed steps).  Dense output: the quintic through y₀, y₁, f₀, f₁ and order-5
#: interior values at θ = 1/3, 2/3 (see above), order 5 (local error O(h⁶)).
DOPRI8 = ButcherTableau(
    name="dopri8",
    c=_vec(_DP8_C + (1,)),
    a=_floats(list(_DP8_A) + [list(_DP8_B[:13])]),
    b=_vec(_DP8_B),
    order=8,
    b_error=_vec(b - bh for b, bh in zip(_DP8_B, _DP8_BHAT)),
    error_order=7,
    fsal=True,
    dense=_hermite_dense_through(_DP8_B, [(F(1, 3), _DP8_W13), (F(2, 3), _DP8_W23)]),
    dense_order=5,
)

#: Every tableau by ``method`` name.
TABLEAUS = {t.name: t for t in (EULER, MIDPOINT, HEUN, HEUN3, RK4, ADAPTIVE_HEUN, FEHLBERG2, BOSH3, DOPRI5,
                                TSIT5, DOPRI8)}
FIXED_STEP_METHODS = tuple(n for n, t in TABLEAUS.items() if not t.adaptive)
ADAPTIVE_METHODS = tuple(n for n, t in TABLEAUS.items() if t.adaptive)
