import numpy as np
import pytest

from sdekit.testing import fit_order


def test_recovers_exact_power_law():
    h = np.array([0.1, 0.05, 0.025, 0.0125])
    fit = fit_order(h, 3.0 * h**1.5)
    assert fit.order == pytest.approx(1.5, abs=1e-12)
    assert fit.constant == pytest.approx(3.0, rel=1e-10)
    assert fit.stderr < 1e-10


def test_rejects_bad_input():
    with pytest.raises(ValueError, match="same length"):
        fit_order([0.1, 0.2], [1.0])
    with pytest.raises(ValueError, match="errors must be positive"):
        fit_order([0.1, 0.2], [0.0, 1.0])
    with pytest.raises(ValueError, match="at least 2"):
        fit_order([0.1], [1.0])
