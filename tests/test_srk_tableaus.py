"""Rößler's order conditions for the SRK tableaus (strong order 1.5).

SRA (additive noise, Rößler 2010, Theorem 6.2): matching the Itô–Taylor expansion of
``dy = a(t, y) dt + b(t) dW`` up to the ``h^{3/2}`` terms — ``a``, ``b I_(1)``,
``a' b I_(1,0)``, ``½(a' a + ½ a'' b²) h²`` (in mean), ``∂_t a h²/2`` and
``∂_t b I_(0,1) = ∂_t b (h I_(1) − I_(1,0))`` — gives

    αᵀe = 1, β1ᵀe = 1, β2ᵀe = 0, αᵀB0e = 1, αᵀA0e = 1/2, αᵀ(B0e)² = 3/2,
    β1ᵀc1 = 1, β2ᵀc1 = −1.

SRI (scalar / diagonal noise, Rößler 2010, Theorem 6.4), with ``e = (1, …, 1)``:

    αᵀe = 1, β1ᵀe = 1, β2ᵀe = β3ᵀe = β4ᵀe = 0,
    β1ᵀB1e = 0, β2ᵀB1e = 1, β3ᵀB1e = 0, β4ᵀB1e = 0,
    αᵀA0e = 1/2, αᵀB0e = 1, αᵀ(B0e)² = 3/2,
    β1ᵀA1e = 1, β2ᵀA1e = 0, β3ᵀA1e = −1, β4ᵀA1e = 0,
    β1ᵀ(B1e)² = 1, β2ᵀ(B1e)² = 0, β3ᵀ(B1e)² = −1, β4ᵀ(B1e)² = 2,
    β1ᵀB1(B1e) = β2ᵀB1(B1e) = β3ᵀB1(B1e) = 0, β4ᵀB1(B1e) = 1,
    ½ β1ᵀA1(B0e) + ⅓ β3ᵀA1(B0e) = 0.
"""

from __future__ import annotations

import numpy as np
import pytest

from sdekit.solvers.sde.srk_tableaus import SRA1, SRA3, SRI2


def _matrix(rows, s):
    M = np.zeros((s, s))
    for i, row in enumerate(rows):
        M[i, : len(row)] = row
    return M


@pytest.mark.parametrize("tab", [SRA1, SRA3], ids=lambda t: t.name)
def test_sra_order_conditions(tab):
    s = tab.stages
    e = np.ones(s)
    A0, B0 = _matrix(tab.A0, s), _matrix(tab.B0, s)
    al, b1, b2, c1 = map(np.asarray, (tab.alpha, tab.beta1, tab.beta2, tab.c1))
    conditions = {
        "αᵀe = 1": al @ e - 1,
        "β1ᵀe = 1": b1 @ e - 1,
        "β2ᵀe = 0": b2 @ e,
        "αᵀB0e = 1": al @ B0 @ e - 1,
        "αᵀA0e = 1/2": al @ A0 @ e - 0.5,
        "αᵀ(B0e)² = 3/2": al @ (B0 @ e) ** 2 - 1.5,
        "β1ᵀc1 = 1": b1 @ c1 - 1,
        "β2ᵀc1 = −1": b2 @ c1 + 1,
        "αᵀc0 = 1/2": al @ np.asarray(tab.c0) - 0.5,
    }
    bad = {k: v for k, v in conditions.items() if abs(v) > 1e-14}
    assert not bad, f"{tab.name} violates {bad}"
    assert np.allclose(np.tril(A0, -1), A0) and np.allclose(np.tril(B0, -1), B0)


def test_sri2_order_conditions():
    tab = SRI2
    s = tab.stages
    e = np.ones(s)
    A0, A1, B0, B1 = (_matrix(m, s) for m in (tab.A0, tab.A1, tab.B0, tab.B1))
    al, b1, b2, b3, b4 = map(np.asarray, (tab.alpha, tab.beta1, tab.beta2, tab.beta3, tab.beta4))
    B1e, B0e, A1e = B1 @ e, B0 @ e, A1 @ e
    conditions = {
        "αᵀe = 1": al @ e - 1, "β1ᵀe = 1": b1 @ e - 1, "β2ᵀe": b2 @ e, "β3ᵀe": b3 @ e, "β4ᵀe": b4 @ e,
        "β1ᵀB1e": b1 @ B1e, "β2ᵀB1e = 1": b2 @ B1e - 1, "β3ᵀB1e": b3 @ B1e, "β4ᵀB1e": b4 @ B1e,
        "αᵀA0e = 1/2": al @ A0 @ e - 0.5, "αᵀB0e = 1": al @ B0e - 1, "αᵀ(B0e)² = 3/2": al @ B0e**2 - 1.5,
        "β1ᵀA1e = 1": b1 @ A1e - 1, "β2ᵀA1e": b2 @ A1e, "β3ᵀA1e = −1": b3 @ A1e + 1, "β4ᵀA1e": b4 @ A1e,
        "β1ᵀ(B1e)² = 1": b1 @ B1e**2 - 1, "β2ᵀ(B1e)²": b2 @ B1e**2, "β3ᵀ(B1e)² = −1": b3 @ B1e**2 + 1,
        "β4ᵀ(B1e)² = 2": b4 @ B1e**2 - 2,
        "β1ᵀB1B1e": b1 @ B1 @ B1e, "β2ᵀB1B1e": b2 @ B1 @ B1e, "β3ᵀB1B1e": b3 @ B1 @ B1e,
        "β4ᵀB1B1e = 1": b4 @ B1 @ B1e - 1,
        "½β1ᵀA1B0e + ⅓β3ᵀA1B0e": 0.5 * b1 @ A1 @ B0e + b3 @ A1 @ B0e / 3,
    }
    bad = {k: v for k, v in conditions.items() if abs(v) > 1e-14}
    assert not bad, f"sri2 violates {bad}"
