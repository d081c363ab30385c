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


# ---------------------------------------------------------------------------- neural SDEs
#
# Small MLP SDEs (tanh drift, sigmoid diffusion, fixed seed) integrated by both libraries on
# the same torchsde.BrownianInterval in float64.  ``coupled=True`` makes g_i depend on all of
# y (as torchsde's own NeuralDiagonal / NeuralScalar test problems do); ``coupled=False``
# applies one scalar MLP to each coordinate, so g_i depends on y_i alone (diagonal noise in
# Kloeden & Platen's sense, torchsde's "element-wise").


class NeuralSDE(torch.nn.Module):
    def __init__(self, noise_type, d=3, m=2, sde_type="ito", coupled=True, seed=0):
        super().__init__()
        self.noise_type, self.sde_type, self.d, self.m, self.coupled = noise_type, sde_type, d, m, coupled
        gen = torch.Generator().manual_seed(seed)

        def mlp(n_in, n_out, last):
            lin1, lin2 = torch.nn.Linear(n_in, 8), torch.nn.Linear(8, n_out)
            for lin in (lin1, lin2):
                with torch.no_grad():
                    lin.weight.copy_(torch.randn(lin.weight.shape, generator=gen) / lin.weight.shape[1] ** 0.5)
                    lin.bias.copy_(0.5 * torch.randn(lin.bias.shape, generator=gen))
            return torch.nn.Sequential(lin1, torch.nn.Tanh(), lin2, *last).to(F64)

        g_in = {"additive": 1}.get(noise_type, d + 1 if coupled else 2)
        g_out = {"diagonal": d if coupled else 1, "scalar": d}.get(noise_type, d * m)
        self.f_net = mlp(d + 1, d, ())
        self.g_net = mlp(g_in, g_out, (torch.nn.Sigmoid(),))

    def _ty(self, t, y):
        return torch.cat([t.expand(y.shape[0], 1), y], dim=1)

    def f(self, t, y):
        return self.f_net(self._ty(t, y))

    def g(self, t, y):
        B, d = y.shape
        if self.noise_type == "additive":
            return 0.5 * self.g_net(t.expand(B, 1)).view(B, d, self.m)
        if not self.coupled:  # g_i = net(t, y_i): the same scalar net on each coordinate
            ty = torch.stack([t.expand(B, d), y], dim=-1).reshape(B * d, 2)
            return 0.5 * self.g_net(ty).view(B, d)
        out = 0.5 * self.g_net(self._ty(t, y))
        return out.unsqueeze(-1) if self.noise_type == "scalar" else out.view(B, d, -1).squeeze(-1)


def _noise_size(sde):
    return {"diagonal": sde.d, "scalar": 1}.get(sde.noise_type, sde.m)


def _both_on_interval(sde, ours, theirs, options, ts=TS, dt=DT):
    y0 = torch.linspace(-0.6, 0.9, 8 * sde.d, dtype=F64).reshape(8, sde.d)
    levy = "space-time" if ours == "srk" else "none"
    bm = torchsde.BrownianInterval(t0=0.0, t1=1.0, size=(8, _noise_size(sde)), dtype=F64, entropy=7,
                                   levy_area_approximation=levy)
    with torch.no_grad():
        a = sdekit.sdeint(sde, y0, ts, method=ours, dt=dt, bm=bm)
    b = torchsde.sdeint(sde, y0, ts, bm=bm, method=theirs, dt=dt, options=dict(options)).detach()
    return y0, bm, a, b


NEURAL_CASES = [
    # (sdekit method, noise type, sde type, coupled, torchsde method, torchsde options)
    ("euler", "diagonal", "ito", True, "euler", {}),
    ("euler", "scalar", "ito", True, "euler", {}),
    ("euler", "additive", "ito", True, "euler", {}),
    ("euler", "general", "ito", True, "euler", {}),
    ("milstein", "diagonal", "ito", False, "milstein", {}),
    ("milstein", "diagonal", S, False, "milstein", {}),
    ("milstein", "additive", "ito", True, "milstein", {}),
    ("derivative_free_milstein", "diagonal", "ito", True, "milstein", {"grad_free": True}),
    ("derivative_free_milstein", "diagonal", S, True, "milstein", {"grad_free": True}),
    ("derivative_free_milstein", "scalar", "ito", True, "milstein", {"grad_free": True}),
    ("derivative_free_milstein", "scalar", S, True, "milstein", {"grad_free": True}),
    ("srk", "diagonal", "ito", True, "srk", {}),
    ("srk", "scalar", "ito", True, "srk", {}),
    ("srk", "additive", "ito", True, "srk", {}),
    ("heun", "diagonal", S, True, "heun", {}),
    ("midpoint", "general", S, True, "midpoint", {}),
    ("euler_heun", "general", S, True, "euler_heun", {}),
    ("reversible_heun", "general", S, True, "reversible_heun", {}),
]


@pytest.mark.parametrize("case", NEURAL_CASES, ids=lambda c: f"{c[0]}-{c[1]}-{c[2]}-{'coupled' if c[3] else 'elementwise'}")
def test_neural_sde_same_path_on_torchsde_brownian_interval(case):
    ours, noise_type, sde_type, coupled, theirs, options = case
    sde = NeuralSDE(noise_type, sde_type=sde_type, coupled=coupled)
    _, _, a, b = _both_on_interval(sde, ours, theirs, options)
    diff = float((a - b).abs().max())
    assert diff <= 1e-12 * max(1.0, float(b.abs().max())), f"{ours} vs torchsde {theirs}: max |diff| = {diff:.2e}"


def _jacobian(sde, t, y):
    """Per-sample Jacobian ∂g_i/∂y_j of the diffusion column, (B, d, d)."""
    col = (lambda z: sde.g(t, z.unsqueeze(0)).reshape(-1))
    return torch.stack([torch.autograd.functional.jacobian(col, row) for row in y])


@pytest.mark.parametrize("noise_type", ["diagonal", "scalar"])
def test_neural_milstein_documented_difference_from_torchsde(noise_type):
    """With g_i depending on all of y, Milstein's g·∇g differs between the libraries (one step, Itô).

    sdekit: diagonal ``g ⊙ (J·1)`` (exact ``g_i ∂g_i/∂y_i`` when J is diagonal), scalar ``J g``
    (the Milstein term for scalar noise).  torchsde (its gdg_prod, a reverse-mode
    vector-Jacobian product): ``Jᵀ (g ⊙ v)`` with ``v = ½(ΔW² − h)``.  Both agree with
    these formulas to round-off, so the libraries agree exactly where J is diagonal (the
    elementwise cases above) and differ by ``½ ((J·1) ⊙ g ⊙ (ΔW²−h) − Jᵀ(g ⊙ (ΔW²−h)))`` otherwise.
    """
    sde = NeuralSDE(noise_type, coupled=True)
    h = 2.0**-4
    ts = torch.tensor([0.0, h], dtype=F64)
    y0, bm, a, b = _both_on_interval(sde, "milstein", "milstein", {}, ts=ts, dt=h)
    t0 = ts[0]
    dW = bm(ts[0], ts[1])
    v = dW * dW - h
    J = _jacobian(sde, t0, y0)
    with torch.no_grad():
        f, G = sde.f(t0, y0), sde.g(t0, y0)
    g = G.squeeze(-1)
    base = y0 + f * h + g * dW
    if noise_type == "diagonal":
        ours = base + 0.5 * g * J.sum(-1) * v
    else:
        ours = base + 0.5 * torch.einsum("bij,bj->bi", J, g) * v
    theirs = base + 0.5 * torch.einsum("bji,bj->bi", J, g * v)
    assert float((a[-1] - ours).abs().max()) <= 1e-13
    assert float((b[-1] - theirs).abs().max()) <= 1e-13
    assert float((ours - theirs).abs().max()) > 1e-6  # the difference is real, not round-off
