"""Same SDE, same Brownian path: sdekit.sdeint agrees with torchsde.sdeint to float64 round-off.

Two directions: torchsde integrates on *our* Brownian tree (passed as its ``bm``), and
sdekit integrates on torchsde's ``BrownianInterval``.  The SDE classes are plain
torchsde-style objects (sdekit/testing/sde_problems.py) that run unchanged through both libraries.
Step sizes are powers of two so both libraries land on the same grid.
"""

from __future__ import annotations

import pytest
import torch

import sdekit
from sdekit.brownian import BrownianTree
from sdekit.testing.sde_problems import GBM, AdditiveProblem, ArctanProblem, NonlinearAdditiveProblem, ScalarNoiseGBM

torchsde = pytest.importorskip("torchsde")

F64 = torch.float64
S = "stratonovich"
TS = torch.tensor([0.0, 0.25, 0.5, 1.0], dtype=F64)
DT = 2.0**-6

# (sdekit method, problem, torchsde method, torchsde options)
CASES = [
    ("euler", GBM(), "euler", {}),
    ("euler", ScalarNoiseGBM(), "euler", {}),
    ("milstein", GBM(), "milstein", {}),
    ("milstein", ArctanProblem(), "milstein", {}),
    ("milstein", GBM(sde_type=S), "milstein", {}),
    ("milstein", ScalarNoiseGBM(), "milstein", {}),
    ("derivative_free_milstein", GBM(), "milstein", {"grad_free": True}),
    ("derivative_free_milstein", ArctanProblem(sde_type=S), "milstein", {"grad_free": True}),
    ("heun", ArctanProblem(sde_type=S), "heun", {}),
    ("midpoint", ArctanProblem(sde_type=S), "midpoint", {}),
    ("euler_heun", GBM(sde_type=S), "euler_heun", {}),
    ("reversible_heun", ArctanProblem(sde_type=S), "reversible_heun", {}),
    ("srk", AdditiveProblem(), "srk", {}),
    ("srk", NonlinearAdditiveProblem(), "srk", {}),
    ("srk", GBM(), "srk", {}),
    ("srk", ArctanProblem(), "srk", {}),
    ("srk", ScalarNoiseGBM(), "srk", {}),
]


def _id(case):
    return f"{case[0]}-{type(case[1]).__name__}-{case[1].sde_type}"


def _y0(prob, batch=16, d=3):
    return torch.linspace(0.2, 0.9, batch * d, dtype=F64).reshape(batch, d)


@pytest.mark.parametrize("case", CASES, ids=_id)
def test_same_path_same_solution_on_our_brownian_tree(case):
    ours, prob, theirs, options = case
    y0 = _y0(prob)
    m = 1 if prob.noise_type == "scalar" else y0.shape[1]
    bm = BrownianTree(0.0, 1.0, (y0.shape[0], m), seed=11, depth=6, dtype=F64)
    a = sdekit.sdeint(prob, y0, TS, method=ours, dt=DT, bm=bm)
    b = torchsde.sdeint(prob, y0, TS, bm=bm, method=theirs, dt=DT, options=dict(options)).detach()
    assert a.shape == b.shape == (len(TS),) + tuple(y0.shape)
    diff = float((a - b).abs().max())
    assert diff <= 1e-12 * max(1.0, float(b.abs().max())), f"{ours} vs torchsde {theirs}: max |diff| = {diff:.2e}"


@pytest.mark.parametrize("case", [CASES[0], CASES[2], CASES[8], CASES[12], CASES[15]], ids=_id)
def test_same_path_same_solution_on_torchsde_brownian_interval(case):
    ours, prob, theirs, options = case
    y0 = _y0(prob)
    levy = "space-time" if ours == "srk" else "none"
    bm = torchsde.BrownianInterval(t0=0.0, t1=1.0, size=(y0.shape[0], y0.shape[1]), dtype=F64, entropy=5,
                                   levy_area_approximation=levy)
    a = sdekit.sdeint(prob, y0, TS, method=ours, dt=DT, bm=bm)
    b = torchsde.sdeint(prob, y0, TS, bm=bm, method=theirs, dt=DT, options=dict(options)).detach()
    diff = float((a - b).abs().max())
    assert diff <= 1e-12 * max(1.0, float(b.abs().max())), f"{ours} vs torchsde {theirs}: max |diff| = {diff:.2e}"


def test_general_noise_matches_torchsde():
    class General:
        noise_type, sde_type = "general", "ito"

        def f(self, t, y):
            return -0.5 * y

        def g(self, t, y):  # (B, 2, 3), state-dependent, non-commutative
            return torch.stack([torch.stack([y[:, 0], 0.3 * y[:, 1], torch.ones_like(y[:, 0])], -1),
                                torch.stack([0.2 * y[:, 0], torch.sin(y[:, 1]), 0.5 * y[:, 0]], -1)], 1)

    y0 = _y0(None, d=2)
    bm = BrownianTree(0.0, 1.0, (y0.shape[0], 3), seed=4, depth=6, dtype=F64)
    a = sdekit.sdeint(General(), y0, TS, method="euler", dt=DT, bm=bm)
    b = torchsde.sdeint(General(), y0, TS, bm=bm, method="euler", dt=DT)
    assert float((a - b).abs().max()) <= 1e-12
