"""The log-ODE midpoint scheme (``log_ode``): registry, support matrix, the step, torchsde, order.

The solver is driven directly (registry + :func:`sdekit.solvers.sde.as_problem` + a fixed-step
loop over :class:`~sdekit.brownian.CallableBrownian` increments with ``levy_area=True``), the
plumbing ``sdeint`` uses.  The Lévy area convention is
``A_jk = ½(∫ (W^j − W^j_s) dW^k − ∫ (W^k − W^k_s) dW^j)``, torchsde's.
"""

from __future__ import annotations

import math

import pytest
import torch

from sdekit.brownian import BrownianTree, CallableBrownian, SequentialBrownian
from sdekit.solvers.sde import SDEINT_METHODS, LogODEMidpoint, Midpoint, as_problem, resolve
from sdekit.solvers.sde.registry import NOT_PROVIDED, TORCHSDE_SDE_TYPES, method_names
from sdekit.testing import fit_order
from sdekit.testing.sde_problems import GBM, ArctanProblem

torchsde = pytest.importorskip("torchsde")

F64 = torch.float64
S = "stratonovich"
Z = 5.0  # standard errors allowed in statistical checks (tests/stats.py)
LEVY = ("davie", "foster")


def _solve(problem, solver, bm, size, t0, t1, n, y0):
    """``n`` equal steps of ``solver`` from ``y0`` on ``bm`` (CallableBrownian, ``levy_area=True``)."""
    h = (t1 - t0) / n
    grid = [t0 + i * h for i in range(n + 1)]
    source = CallableBrownian(bm, size, dtype=y0.dtype, device=y0.device)
    y, state = y0, solver.init(torch.tensor(t0, dtype=y0.dtype), y0)
    with torch.no_grad():
        for i, (dW, A) in enumerate(source.increments(grid, levy_area=True)):
            y, state = solver.step(torch.tensor(grid[i], dtype=y0.dtype), h, y, state, dW, A)
    return y


def _interval(size, levy, entropy=7, t1=1.0):
    return torchsde.BrownianInterval(t0=0.0, t1=t1, size=size, dtype=F64, entropy=entropy,
                                     levy_area_approximation=levy)


# ------------------------------------------------------------------ registry


def test_registry_and_names():
    assert "log_ode" not in NOT_PROVIDED
    assert SDEINT_METHODS["log_ode"] is LogODEMidpoint
    assert "log_ode" in method_names()
    assert TORCHSDE_SDE_TYPES["log_ode"] == ("stratonovich",)
    for noise_type in ("diagonal", "scalar", "additive", "general"):
        assert resolve("log_ode", noise_type, S, torchsde_types=True) is LogODEMidpoint
    cls = LogODEMidpoint
    assert cls.name == "log_ode" and cls.needs_levy_area and not cls.uses_area and cls.sde_types == (S,)
    assert not Midpoint.needs_levy_area
    assert [cls.strong_order(n) for n in ("diagonal", "scalar", "additive", "general")] == [1.0, 1.0, 1.0, 0.5]
    assert cls.weak_order("general") == 1.0
    # torchsde's own declarations
    from torchsde._core.methods.log_ode import LogODEMidpoint as Theirs
    assert Theirs.sde_type == S and Theirs.weak_order == 1.0
    assert set(Theirs.noise_types) == set(cls.noise_types)
    assert set(Theirs.levy_area_approximations) == set(LEVY)


# ------------------------------------------------------------------ support matrix


class Toy:
    """A torchsde-style SDE of each noise type, d = 2 (m = 2 for additive / general)."""

    def __init__(self, noise_type, sde_type, with_g=True):
        self.noise_type, self.sde_type = noise_type, sde_type
        if not with_g:
            self.g_prod = lambda t, y, v: self._g_prod(t, y, v)
        else:
            self.g = self._g

    def f(self, t, y):
        return -0.5 * y + torch.sin(t)

    def _g(self, t, y):
        B = y.shape[0]
        if self.noise_type == "diagonal":
            return 0.3 * torch.cos(y)
        if self.noise_type == "scalar":
            return (0.3 * torch.cos(y)).unsqueeze(-1)
        if self.noise_type == "additive":
            return torch.tensor([[0.2, 0.1], [0.0, 0.3]], dtype=y.dtype).expand(B, 2, 2)
        return torch.stack([torch.stack([torch.cos(y[:, 1]), 0.2 * y[:, 0]], -1),
                            torch.stack([0.1 * y[:, 1], torch.sin(y[:, 0])], -1)], 1)

    def _g_prod(self, t, y, v):
        G = self._g(t, y)
        return G * v if G.dim() == 2 else (G @ v.unsqueeze(-1)).squeeze(-1)


def _m(noise_type):
    return 1 if noise_type == "scalar" else 2


def _ours_raises(noise_type, sde_type, levy, with_g=True):
    sde = Toy(noise_type, sde_type, with_g)
    y0 = torch.full((3, 2), 0.4, dtype=F64)
    try:
        problem = as_problem(sde, y0, torch.tensor(0.0, dtype=F64), _m(noise_type))
        solver = resolve("log_ode", problem.noise_type, problem.sde_type, torchsde_types=True)(problem)
        _solve(problem, solver, _interval((3, _m(noise_type)), levy), (3, _m(noise_type)), 0.0, 1.0, 4, y0)
    except ValueError:
        return True
    return False


def _theirs_raises(noise_type, sde_type, levy, with_g=True):
    sde = Toy(noise_type, sde_type, with_g)
    y0 = torch.full((3, 2), 0.4, dtype=F64)
    try:
        torchsde.sdeint(sde, y0, [0.0, 1.0], bm=_interval((3, _m(noise_type)), levy), method="log_ode", dt=0.25)
    except (ValueError, RuntimeError):
        return True
    return False


@pytest.mark.parametrize("noise_type", ["diagonal", "scalar", "additive", "general"])
@pytest.mark.parametrize("sde_type", ["ito", S])
def test_support_matrix_matches_torchsde(noise_type, sde_type):
    for levy in ("none", "space-time", "davie", "foster"):
        expected = _theirs_raises(noise_type, sde_type, levy)
        assert _ours_raises(noise_type, sde_type, levy) == expected, (noise_type, sde_type, levy, expected)
        assert expected == (sde_type == "ito" or levy not in LEVY)


@pytest.mark.parametrize("noise_type", ["diagonal", "scalar", "additive", "general"])
def test_g_prod_only(noise_type):
    """Without g the bracket (general noise) cannot be formed: torchsde fails in its step, we at construction."""
    expected = noise_type == "general"
    assert _theirs_raises(noise_type, S, "davie", with_g=False) == expected
    assert _ours_raises(noise_type, S, "davie", with_g=False) == expected
    if expected:
        problem = as_problem(Toy(noise_type, S, False), torch.zeros(3, 2, dtype=F64), torch.tensor(0.0), 2)
        with pytest.raises(ValueError, match="needs the diffusion g"):
            LogODEMidpoint(problem)


def test_sources_without_levy_area_raise_clearly():
    hint = r"log_ode needs the Lévy area A between noise channels: pass bm=torchsde\.BrownianInterval"
    tree = BrownianTree(0.0, 1.0, (3, 2), seed=0, dtype=F64)
    # sdekit's own tree provides A (tests/test_brownian_levy_area.py); its torchsde attribute stays 'space-time'.
    assert next(tree.increments([0.0, 0.5], levy_area=True))[1].shape == (3, 2, 2)
    with pytest.raises(ValueError, match=hint):
        next(SequentialBrownian((3, 2), dtype=F64).increments([0.0, 0.5], levy_area=True))
    for levy in ("none", "space-time"):
        source = CallableBrownian(_interval((3, 2), levy), (3, 2), dtype=F64, device="cpu")
        with pytest.raises(ValueError, match=f"{hint}.*levy_area_approximation='{levy}'"):
            next(source.increments([0.0, 0.5], levy_area=True))
    source = CallableBrownian(tree, (3, 2), dtype=F64, device="cpu")  # a bm without return_A
    with pytest.raises(ValueError, match=hint):
        next(source.increments([0.0, 0.5], levy_area=True))
    # The defaults are unchanged, and a wrong-shaped A is caught.
    assert next(tree.increments([0.0, 0.5]))[1] is None
    dW, A = next(CallableBrownian(_interval((3, 2), "davie"), (3, 2), dtype=F64, device="cpu")
                 .increments([0.0, 0.5], levy_area=True))
    assert dW.shape == (3, 2) and A.shape == (3, 2, 2)
    assert torch.equal(A, -A.transpose(-1, -2))
    def bad(ta, tb, return_U=False, return_A=False):  # A of the wrong shape
        return torch.zeros(3, 2, dtype=F64), torch.zeros(3, 2, dtype=F64), torch.zeros(3, 2, dtype=F64)

    with pytest.raises(ValueError, match=r"Lévy area A of shape \(3, 2\), expected \(3, 2, 2\)"):
        next(CallableBrownian(bad, (3, 2), dtype=F64, device="cpu").increments([0.0, 0.5], levy_area=True))


def test_step_without_area_raises():
    problem = as_problem(Toy("general", S), torch.zeros(3, 2, dtype=F64), torch.tensor(0.0), 2)
    solver = LogODEMidpoint(problem)
    y, dW = torch.zeros(3, 2, dtype=F64), torch.zeros(3, 2, dtype=F64)
    with pytest.raises(ValueError, match="log_ode needs the Lévy area A"):
        solver.step(torch.tensor(0.0, dtype=F64), 0.1, y, (), dW, None)
    with pytest.raises(ValueError, match=r"expected \(3, 2, 2\)"):
        solver.step(torch.tensor(0.0, dtype=F64), 0.1, y, (), dW, torch.zeros(3, 2, dtype=F64))


# ------------------------------------------------------------------ the step by hand


class Heisenberg:
    """``dy = (−y₁, y₃, t) dt + g₁ ∘ dW¹ + g₂ ∘ dW²``, ``g₁ = (1, 0, −y₂)``, ``g₂ = (0, 1, y₁)``.

    ``[g₁, g₂] = (∂g₂) g₁ − (∂g₁) g₂ = (0, 0, 2)``: the log-ODE adds ``2 A₁₂`` to ``y₃``.
    """

    noise_type, sde_type = "general", S

    def __init__(self, drift=True):
        self.drift = drift

    def f(self, t, y):
        if not self.drift:
            return torch.zeros_like(y)
        return torch.stack([-y[:, 0], y[:, 2], t.expand(y.shape[0])], -1)

    def g(self, t, y):
        one, zero = torch.ones_like(y[:, 0]), torch.zeros_like(y[:, 0])
        return torch.stack([torch.stack([one, zero], -1), torch.stack([zero, one], -1),
                            torch.stack([-y[:, 1], y[:, 0]], -1)], 1)


def test_step_equals_hand_computed_expression():
    gen = torch.Generator().manual_seed(3)
    B, h, t0 = 5, 0.3, 0.7
    y = torch.randn(B, 3, generator=gen, dtype=F64)
    dW = math.sqrt(h) * torch.randn(B, 2, generator=gen, dtype=F64)
    a = 0.1 * torch.randn(B, generator=gen, dtype=F64)
    A = torch.zeros(B, 2, 2, dtype=F64)
    A[:, 0, 1], A[:, 1, 0] = a, -a
    problem = as_problem(Heisenberg(), y, torch.tensor(t0, dtype=F64), 2)
    y1, _ = LogODEMidpoint(problem).step(torch.tensor(t0, dtype=F64), h, y, (), dW, A)

    def f(t, z):
        return torch.stack([-z[:, 0], z[:, 2], torch.full_like(z[:, 0], t)], -1)

    def gdw(z):
        return torch.stack([dW[:, 0], dW[:, 1], -z[:, 1] * dW[:, 0] + z[:, 0] * dW[:, 1]], -1)

    ym = y + 0.5 * h * f(t0, y) + 0.5 * gdw(y)
    expected = y + h * f(t0 + 0.5 * h, ym) + gdw(ym) + torch.stack([0 * a, 0 * a, 2 * a], -1)
    assert torch.allclose(y1, expected, rtol=0, atol=1e-14)
    # Midpoint is the same step without the bracket.
    y1_mid, _ = Midpoint(problem).step(torch.tensor(t0, dtype=F64), h, y, (), dW, None)
    assert torch.allclose(y1 - y1_mid, torch.stack([0 * a, 0 * a, 2 * a], -1), rtol=0, atol=1e-14)


def test_bracket_term_equals_lie_brackets_from_full_jacobians():
    """``Σ_k (∂g_k) (G A)_{:,k} = Σ_{j<k} [g_j, g_k] A_jk`` on a nonlinear diffusion (d = 3, m = 3)."""
    gen = torch.Generator().manual_seed(5)
    W1 = torch.randn(9, 3, generator=gen, dtype=F64)

    class Nonlinear:
        noise_type, sde_type = "general", S

        def f(self, t, y):
            return torch.zeros_like(y)

        def g(self, t, y):
            return torch.tanh(y @ W1.T + t).view(-1, 3, 3) * y.unsqueeze(-1)

    sde = Nonlinear()
    y = torch.randn(4, 3, generator=gen, dtype=F64)
    N = torch.randn(4, 3, 3, generator=gen, dtype=F64)
    A = N - N.transpose(-1, -2)
    t = torch.tensor(0.2, dtype=F64)
    solver = LogODEMidpoint(as_problem(sde, y, t, 3))
    G, bracket = solver.bracket_term(t, y, A)
    assert torch.equal(G, sde.g(t, y))
    for b in range(4):
        J = torch.autograd.functional.jacobian(lambda z: sde.g(t, z.unsqueeze(0))[0], y[b])  # (d, m, d)
        Gb = G[b]
        expected = torch.zeros(3, dtype=F64)
        for j in range(3):
            for k in range(j + 1, 3):
                lie = J[:, k, :] @ Gb[:, j] - J[:, j, :] @ Gb[:, k]
                expected += lie * A[b, j, k]
        assert torch.allclose(bracket[b], expected, rtol=1e-12, atol=1e-13)


def test_area_convention_matches_brownian_interval():
    """Chaining fine steps of Heisenberg (no drift) gives ``y₃ = 2 A₁₂`` by Chen's relation; against the
    coarse ``(W, H)`` of the same BrownianInterval it has the residual variance ``E Var(A₁₂ | W, H) = h²/12``
    of the convention ``A_jk = ½(∫ W^j dW^k − ∫ W^k dW^j)`` (the opposite sign would give ``h²/12 + 2h²/3``)."""
    B, n, h = 4000, 64, 1.0
    bm = _interval((B, 2), "davie", entropy=11, t1=h)
    W, U = bm(0.0, h, return_U=True)
    H = U / h - 0.5 * W
    mean = H[:, 0] * W[:, 1] - W[:, 0] * H[:, 1]
    y0 = torch.zeros(B, 3, dtype=F64)
    problem = as_problem(Heisenberg(drift=False), y0, torch.tensor(0.0, dtype=F64), 2)
    y = _solve(problem, LogODEMidpoint(problem), bm, (B, 2), 0.0, h, n, y0)
    assert torch.allclose(y[:, :2], W, atol=1e-12)
    residual = (0.5 * y[:, 2] - mean) ** 2
    m, se = float(residual.mean()), float(residual.std()) / B**0.5
    # The n chained fine-step approximations add at most n · (h/n)²/3 (each has variance ≤ (h/n)²/3).
    assert abs(m - h**2 / 12) <= Z * se + h**2 / (3 * n), (m, se, h**2 / 12)
    assert abs(m - (h**2 / 12 + 2 * h**2 / 3)) > 10 * Z * se


# ------------------------------------------------------------------ agreement with torchsde


class NeuralSDE(torch.nn.Module):
    """A small MLP SDE (tanh drift, sigmoid diffusion), float64, of one of torchsde's noise types (d = 3, m = 2)."""

    def __init__(self, noise_type, d=3, m=2, seed=0):
        super().__init__()
        self.noise_type, self.sde_type, self.d, self.m = noise_type, S, d, m
        gen = torch.Generator().manual_seed(seed)

        def mlp(n_in, n_out, last):
            lin1, lin2 = torch.nn.Linear(n_in, 8), torch.nn.Linear(8, n_out)
            with torch.no_grad():
                for lin in (lin1, lin2):
                    lin.weight.copy_(torch.randn(lin.weight.shape, generator=gen) / lin.weight.shape[1] ** 0.5)
                    lin.bias.copy_(0.5 * torch.randn(lin.bias.shape, generator=gen))
            return torch.nn.Sequential(lin1, torch.nn.Tanh(), lin2, *last).to(F64)

        g_in = 1 if noise_type == "additive" else d + 1
        g_out = {"diagonal": d, "scalar": d}.get(noise_type, d * m)
        self.f_net = mlp(d + 1, d, ())
        self.g_net = mlp(g_in, g_out, (torch.nn.Sigmoid(),))

    def f(self, t, y):
        return self.f_net(torch.cat([t.expand(y.shape[0], 1), y], 1))

    def g(self, t, y):
        B, d = y.shape
        if self.noise_type == "additive":
            return 0.5 * self.g_net(t.expand(B, 1)).view(B, d, self.m)
        out = 0.5 * self.g_net(torch.cat([t.expand(B, 1), y], 1))
        if self.noise_type == "diagonal":
            return out
        return out.unsqueeze(-1) if self.noise_type == "scalar" else out.view(B, d, self.m)


#: max |ours − torchsde| / max(1, max |torchsde|) allowed (float64 round-off).
AGREE = 1e-12


@pytest.mark.parametrize("levy", LEVY)
@pytest.mark.parametrize("noise_type", ["diagonal", "scalar", "additive", "general"])
def test_agrees_with_torchsde_log_ode(noise_type, levy):
    sde = NeuralSDE(noise_type)
    m = {"diagonal": sde.d, "scalar": 1}.get(noise_type, sde.m)
    B, n = 8, 32
    y0 = torch.linspace(-0.6, 0.9, B * sde.d, dtype=F64).reshape(B, sde.d)
    bm = _interval((B, m), levy)
    theirs = torchsde.sdeint(sde, y0, torch.tensor([0.0, 1.0], dtype=F64), bm=bm, method="log_ode",
                             dt=1.0 / n).detach()[-1]
    problem = as_problem(sde, y0, torch.tensor(0.0, dtype=F64), m)
    ours = _solve(problem, resolve("log_ode", noise_type, S, torchsde_types=True)(problem), bm, (B, m),
                  0.0, 1.0, n, y0)
    diff = float((ours - theirs).abs().max())
    assert diff <= AGREE * max(1.0, float(theirs.abs().max())), f"{noise_type}/{levy}: max |diff| = {diff:.2e}"
    if noise_type == "general":  # the bracket term is there: midpoint differs
        mid = _solve(problem, Midpoint(problem), bm, (B, m), 0.0, 1.0, n, y0)
        assert float((mid - theirs).abs().max()) > 1e-6


def test_gradients_flow_through_the_bracket():
    """Reverse-mode gradients through the forward-mode bracket term match finite differences."""
    sde = NeuralSDE("general")
    y0 = torch.linspace(-0.6, 0.9, 2 * sde.d, dtype=F64).reshape(2, sde.d)
    bm = _interval((2, 2), "foster")
    source = CallableBrownian(bm, (2, 2), dtype=F64, device="cpu")
    (dW, A), = list(source.increments([0.0, 0.25], levy_area=True))
    problem = as_problem(sde, y0, torch.tensor(0.0, dtype=F64), 2)
    solver = LogODEMidpoint(problem)

    def run(z):
        return solver.step(torch.tensor(0.0, dtype=F64), 0.25, z, (), dW, A)[0].sum()

    assert torch.autograd.gradcheck(run, (y0.clone().requires_grad_(True),))


# ------------------------------------------------------------------ strong order


class CommutativeGeneral:
    """``dy = μ y dt + Σ_j σ_j y ∘ dW^j`` (general noise, m = 2, commutative): ``y = y₀ exp(μt + σ·W_t)``."""

    noise_type, sde_type = "general", S

    def __init__(self, mu=0.1, sigma=(0.4, 0.3)):
        self.mu, self.sigma = mu, torch.tensor(sigma, dtype=F64)

    def f(self, t, y):
        return self.mu * y

    def g(self, t, y):
        return y.unsqueeze(-1) * self.sigma

    def exact(self, y0, t, W):
        return y0 * torch.exp(self.mu * t + (W * self.sigma).sum(-1, keepdim=True))


# (problem, d, m, declared order on this problem).  The general-noise problem is commutative, where the
# scheme keeps order 1 (the declared 0.5 is for non-commutative noise, from the approximated area).
STRONG = [
    (GBM(0.5, 0.5, S), 1, 1, 1.0),
    (ArctanProblem(0.5, S), 1, 1, 1.0),
    (CommutativeGeneral(), 2, 2, 1.0),
]


@pytest.mark.parametrize("levy", LEVY)
@pytest.mark.parametrize("case", STRONG, ids=lambda c: type(c[0]).__name__)
def test_strong_order_on_known_solutions(case, levy):
    prob, d, m, declared = case
    B, T, ks = 400, 1.0, range(3, 8)
    y0 = torch.full((B, d), 0.5, dtype=F64)
    bm = _interval((B, m), levy, entropy=2024)
    exact = prob.exact(y0, T, bm(0.0, T))
    problem = as_problem(prob, y0, torch.tensor(0.0, dtype=F64), m)
    errors = []
    for k in ks:
        y = _solve(problem, LogODEMidpoint(problem), bm, (B, m), 0.0, T, 2**k, y0)
        errors.append(float((y - exact).abs().mean()))
    fit = fit_order([T / 2**k for k in ks], errors)
    assert declared == LogODEMidpoint.strong_order(prob.noise_type) or prob.noise_type == "general"
    # Z standard errors of the slope, plus 0.1 for what is left of the pre-asymptotic range.
    assert abs(fit.order - declared) <= Z * fit.stderr + 0.1, (fit, errors)
