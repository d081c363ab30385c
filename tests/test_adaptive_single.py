"""The batch-of-one adaptive loop (sdekit/solvers/adaptive_single.py) is the batched loop, bit for bit.

A row solved alone takes the host-controlled loop; the same row beside a second one (which needs other
steps) takes the masked batched loop.  Both must give the same outputs, counts and failures.
"""


import pytest
import torch

import sdekit
from sdekit.solvers.adaptive import ToleranceNotMetError, solve_adaptive

F64 = {"dtype": torch.float64}


def rhs(t, y, k):
    return -k[:, None] * y + torch.sin(3 * t)[:, None] * y.roll(1, dims=1)


@pytest.mark.parametrize("method", ["dopri5", "bosh3", "adaptive_heun", "fehlberg2", "dopri8"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_a_row_alone_is_the_row_in_a_batch(method, dtype):
    y0 = torch.randn(2, 5, generator=torch.Generator().manual_seed(0), dtype=dtype)
    k = torch.tensor([0.7, 9.0], dtype=dtype)  # the second row is stiffer: other steps
    t_eval = torch.linspace(0, 3, 9, dtype=dtype).expand(2, 9)
    kw = {"rtol": 1e-6, "atol": 1e-8}
    tableau = sdekit.solvers.tableaus.TABLEAUS[method]
    both = solve_adaptive(rhs, y0, None, None, t_eval=t_eval, tableau=tableau, args=(k,), backend="torch", **kw)
    alone = solve_adaptive(rhs, y0[:1], None, None, t_eval=t_eval[:1], tableau=tableau, args=(k[:1],),
                           backend="torch", **kw)
    assert int(both.steps[0]) != int(both.steps[1])  # the batched loop really ran with masks
    assert torch.equal(alone.ys[:, 0], both.ys[:, 0])
    for name in ("nfe", "steps", "rejected", "failure"):
        assert torch.equal(getattr(alone, name), getattr(both, name)[:1]), name


def test_step_bounds_and_first_step_alone_and_batched():
    y0 = torch.randn(2, 4, generator=torch.Generator().manual_seed(1), **F64)
    k = torch.tensor([0.3, 5.0], **F64)
    opts = sdekit.solvers.adaptive.StepOptions(first_step=0.01, min_step=1e-3, max_step=0.2)
    run = lambda rows: solve_adaptive(rhs, y0[rows], 0.0, 2.0, args=(k[rows],), options=opts, backend="torch")
    both, alone = run(slice(0, 2)), run(slice(0, 1))
    assert torch.equal(alone.y[0], both.y[0]) and torch.equal(alone.nfe, both.nfe[:1])


def test_failures_alone_are_the_batched_ones():
    """max_steps and a collapsing step: the same error text and the same partial solution."""
    y0 = torch.ones(2, 3, **F64)

    def blowup(t, y):
        return y / (1.5 - t)[:, None]

    for kw in ({"max_steps": 4, "t1": 1.0}, {"max_steps": 10_000, "t1": 2.0}):
        errors = []
        for rows in (slice(0, 2), slice(0, 1)):
            with pytest.raises(ToleranceNotMetError) as info:
                solve_adaptive(blowup, y0[rows], 0.0, kw["t1"], max_steps=kw["max_steps"], backend="torch")
            errors.append(info.value)
        batched, single = errors
        assert str(single).split(":")[0] == str(batched).split(":")[0]
        assert single.failures[0] == batched.failures[0]
        torch.testing.assert_close(single.solution.ys[:, 0], batched.solution.ys[:, 0], rtol=0, atol=0,
                                   equal_nan=True)
