"""``sdeint_adjoint``: torchsde's signature, sdeint's forward values, and gradients checked against
backprop through ``sdeint`` on the same Brownian path.

The reversible Heun adjoint must reproduce backprop's gradients to round-off (it inverts each step
exactly); the stochastic adjoint (Li et al. 2020) approximates them to the discretisation error, so
it is checked at a tolerance and for convergence as ``dt`` shrinks.
"""

from __future__ import annotations

import inspect

import pytest
import torch

import sdekit
from sdekit.brownian import BrownianTree

F64 = torch.float64
B, D = 4, 3
M = {"diagonal": D, "scalar": 1, "additive": 2, "general": 2}


class Neural(torch.nn.Module):
    """A neural SDE of any noise type (torchsde's protocol), with a prior drift for logqp."""

    def __init__(self, noise_type="diagonal", sde_type="stratonovich", m=None):
        super().__init__()
        self.noise_type, self.sde_type = noise_type, sde_type
        m = m or M[noise_type]
        gen = torch.Generator().manual_seed(0)
        self.A = torch.nn.Parameter(0.5 * torch.randn(D, D, generator=gen, dtype=F64))
        self.b = torch.nn.Parameter(0.1 * torch.randn(D, generator=gen, dtype=F64))
        self.C = torch.nn.Parameter(0.3 * torch.randn(D, m, generator=gen, dtype=F64))
        self.c = torch.nn.Parameter(0.3 * torch.randn(D, generator=gen, dtype=F64))

    def f(self, t, y):
        return torch.tanh(y @ self.A + self.b) - 0.3 * y

    def h(self, t, y):
        return -y

    def g(self, t, y):
        if self.noise_type == "diagonal":
            return 0.3 * torch.sigmoid(self.c * y)
        if self.noise_type == "scalar":
            return 0.3 * torch.sigmoid(self.c * y).unsqueeze(-1)
        if self.noise_type == "additive":
            return self.C.expand(y.shape[0], -1, -1)
        return torch.tanh(y).unsqueeze(-1) * self.C + 0.1


def _grads(out, sde, y0, weights):
    inputs = (y0,) + tuple(sde.parameters())
    grads = torch.autograd.grad(out, inputs, weights, allow_unused=True)
    return torch.cat([(g if g is not None else torch.zeros_like(x)).flatten() for g, x in zip(grads, inputs)])


def _compare(noise_type, sde_type, method, dt, len_ts=9, logqp=False, adaptive=False):
    sde = Neural(noise_type, sde_type)
    y0 = torch.full((B, D), 0.1, dtype=F64, requires_grad=True)
    ts = torch.linspace(0.0, 1.0, len_ts, dtype=F64)
    m = M[noise_type] + (1 if logqp and noise_type == "diagonal" else 0)
    bm = BrownianTree(0.0, 1.0, (B, m), seed=7, depth=14, dtype=F64)
    kwargs = dict(method=method, dt=dt, logqp=logqp, adaptive=adaptive, rtol=1e-3, atol=1e-3)
    ref = sdekit.sdeint(sde, y0, ts, bm, **kwargs)
    out = sdekit.sdeint_adjoint(sde, y0, ts, bm, **kwargs)
    ref, out = (ref, out) if logqp else ((ref,), (out,))
    for a, b in zip(ref, out):
        assert torch.equal(a, b)  # the forward values are sdeint's
    weights = tuple(torch.randn(a.shape, generator=torch.Generator().manual_seed(1), dtype=F64) for a in ref)
    g_ref, g_out = _grads(ref, sde, y0, weights), _grads(out, sde, y0, weights)
    return float((g_out - g_ref).norm() / g_ref.norm())


def test_signature_is_torchsdes_with_keyword_only_sources():
    params = inspect.signature(sdekit.sdeint_adjoint).parameters
    names = ["sde", "y0", "ts", "bm", "method", "adjoint_method", "dt", "adaptive", "adjoint_adaptive", "rtol",
             "adjoint_rtol", "atol", "adjoint_atol", "dt_min", "options", "adjoint_options", "adjoint_params",
             "names", "logqp", "extra", "extra_solver_state"]
    positional = [n for n, p in params.items() if p.kind is p.POSITIONAL_OR_KEYWORD]
    assert positional == names
    defaults = {n: params[n].default for n in names[3:]}
    assert defaults == dict(bm=None, method=None, adjoint_method=None, dt=1e-3, adaptive=False,
                            adjoint_adaptive=False, rtol=1e-5, adjoint_rtol=1e-5, atol=1e-4, adjoint_atol=1e-4,
                            dt_min=1e-5, options=None, adjoint_options=None, adjoint_params=None, names=None,
                            logqp=False, extra=False, extra_solver_state=None)
    assert {n for n, p in params.items() if p.kind is p.KEYWORD_ONLY} == {"seed", "sample_index"}


@pytest.mark.parametrize("noise_type", ["diagonal", "scalar", "additive", "general"])
@pytest.mark.parametrize("len_ts", [2, 9])
def test_reversible_heun_adjoint_is_backprop_to_round_off(noise_type, len_ts):
    assert _compare(noise_type, "stratonovich", "reversible_heun", 1e-2, len_ts) < 1e-11


@pytest.mark.parametrize("noise_type", ["diagonal", "general"])
def test_reversible_heun_adjoint_with_logqp_and_adaptive_steps(noise_type):
    assert _compare(noise_type, "stratonovich", "reversible_heun", 1e-2, logqp=True) < 1e-11
    # Adaptive steps are chosen without gradients, so backprop and the adjoint see the same steps.
    assert _compare(noise_type, "stratonovich", "reversible_heun", 0.1, adaptive=True) < 1e-11


CASES = [("diagonal", "ito", "milstein"), ("diagonal", "ito", "srk"), ("scalar", "ito", "milstein"),
         ("additive", "ito", "srk"), ("diagonal", "stratonovich", "midpoint"),
         ("scalar", "stratonovich", "heun"), ("additive", "stratonovich", "midpoint"),
         ("general", "stratonovich", "midpoint")]


@pytest.mark.parametrize("noise_type, sde_type, method", CASES)
def test_stochastic_adjoint_approximates_backprop(noise_type, sde_type, method):
    # torchsde's own suite asks 1e-2 at dt = 1e-3; measured here ≤ 4e-3 already at dt = 1e-2.
    assert _compare(noise_type, sde_type, method, 1e-2) < 1e-2


@pytest.mark.parametrize("noise_type, sde_type, method",
                         [("diagonal", "ito", "milstein"), ("scalar", "stratonovich", "midpoint")])
def test_stochastic_adjoint_error_shrinks_with_the_step(noise_type, sde_type, method):
    # Commutative noise: both the forward scheme and the backward midpoint have strong order 1, so a
    # 8× smaller step must cut the gap to backprop at least 3× (order ≥ ½ would give only 2.8×).
    coarse, fine = _compare(noise_type, sde_type, method, 1 / 16), _compare(noise_type, sde_type, method, 1 / 128)
    assert fine < coarse / 3, (coarse, fine)


def test_backward_replays_no_graph_and_uses_the_adjoint_function():
    sde = Neural()
    y0 = torch.full((B, D), 0.1, dtype=F64, requires_grad=True)
    ys = sdekit.sdeint_adjoint(sde, y0, [0.0, 1.0], method="midpoint", dt=0.1, seed=3)
    assert "SdeintAdjoint" in type(ys.grad_fn).__name__
    ys.sum().backward()
    assert y0.grad is not None and all(p.grad is not None for p in sde.parameters())


def test_adjoint_params_and_errors():
    sde = Neural()
    y0 = torch.full((B, D), 0.1, dtype=F64)

    class Plain:
        noise_type, sde_type = "diagonal", "stratonovich"

        def f(self, t, y):
            return -y

        def g(self, t, y):
            return 0.1 * torch.ones_like(y)

    with pytest.raises(ValueError, match="nn.Module"):
        sdekit.sdeint_adjoint(Plain(), y0, [0.0, 1.0], method="midpoint", dt=0.1)
    out = sdekit.sdeint_adjoint(Plain(), y0.clone().requires_grad_(), [0.0, 1.0], method="midpoint", dt=0.1,
                                adjoint_params=())
    assert out.shape == (2, B, D)
    with pytest.raises(ValueError, match="adjoint_method must be one of"):
        sdekit.sdeint_adjoint(sde, y0, [0.0, 1.0], method="midpoint", adjoint_method="milstein")
    with pytest.raises(ValueError, match="needs method='reversible_heun'"):
        sdekit.sdeint_adjoint(sde, y0, [0.0, 1.0], method="midpoint", adjoint_method="adjoint_reversible_heun")
    with pytest.warns(UserWarning, match="replays the forward"):
        sdekit.sdeint_adjoint(sde, y0, [0.0, 1.0], method="midpoint", dt=0.1, adjoint_adaptive=True, seed=0)
    # Only the parameters given are differentiated.
    y0g = y0.clone().requires_grad_()
    ys = sdekit.sdeint_adjoint(sde, y0g, [0.0, 1.0], method="reversible_heun", dt=0.1, seed=0,
                               adjoint_params=(sde.A,))
    ys.sum().backward()
    assert sde.A.grad is not None and sde.C.grad is None and y0g.grad is not None


def test_adjoint_of_an_sde_free_of_y_and_of_trainable_parameters():
    class Frozen(torch.nn.Module):
        noise_type, sde_type = "diagonal", "ito"

        def __init__(self):
            super().__init__()
            self.frozen = torch.nn.Parameter(torch.ones(1, D, dtype=F64), requires_grad=False)
            self.unused = torch.nn.Parameter(torch.ones(1, D, dtype=F64))

        def f(self, t, y):
            return 0.2 * self.frozen + torch.zeros_like(y)

        def g(self, t, y):
            return torch.sigmoid(self.frozen) + torch.zeros_like(y)

    sde = Frozen()
    y0 = torch.full((B, D), 0.1, dtype=F64, requires_grad=True)
    ys = sdekit.sdeint_adjoint(sde, y0, [0.0, 0.5], method="milstein", dt=0.05, seed=0)
    ys[-1].sum().backward()
    assert torch.equal(y0.grad, torch.ones_like(y0))
    assert sde.unused.grad is None or not bool(sde.unused.grad.any())  # unused: a zero gradient (as torchsde)


@pytest.mark.parametrize("method", ["milstein", "srk"])
@pytest.mark.parametrize("g_kind", ["parameters_only", "constant"])
def test_ito_adjoint_with_a_diffusion_free_of_y(method, g_kind):
    # The Itô–Stratonovich correction is zero when g does not depend on y (torchsde's test_basic
    # cases); then both the forward scheme and the adjoint are exact for this linear-in-θ problem.
    class Free(torch.nn.Module):
        noise_type, sde_type = "diagonal", "ito"

        def __init__(self):
            super().__init__()
            self.p = torch.nn.Parameter(torch.tensor([[0.2, -0.1, 0.3]], dtype=F64))

        def f(self, t, y):
            return self.p + torch.zeros_like(y)

        def g(self, t, y):
            if g_kind == "constant":
                return torch.full_like(y, 0.5)
            return torch.sigmoid(self.p) + torch.zeros_like(y)

    sde = Free()
    y0 = torch.full((B, D), 0.1, dtype=F64, requires_grad=True)
    ys = sdekit.sdeint_adjoint(sde, y0, [0.0, 0.5], method=method, dt=0.05, seed=0)
    ys[-1].sum().backward()
    # y(T) = y0 + p T + g W(T): ∂Σ y(T)/∂p = B T (+ Σ_b W_b(T) σ'(p) when g = σ(p)); ∂/∂y0 = 1.
    assert torch.allclose(y0.grad, torch.ones_like(y0))
    if g_kind == "constant":
        assert torch.allclose(sde.p.grad, torch.full_like(sde.p, B * 0.5))
    else:
        ys2 = sdekit.sdeint(sde, y0.detach(), [0.0, 0.5], method=method, dt=0.05, seed=0)
        W = (ys2[-1] - y0.detach() - 0.5 * sde.p.detach()) / torch.sigmoid(sde.p.detach())
        s = torch.sigmoid(sde.p.detach())
        assert torch.allclose(sde.p.grad, B * 0.5 + (W.sum(0, keepdim=True) * s * (1 - s)), atol=1e-10)
