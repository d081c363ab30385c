"""sdeint keeps torchsde's contract: signature and positional order, defaults, names=, logqp=, extra=, and errors.

sdekit's old positional order (sde, y0, ts, method, dt, generator) still works with a DeprecationWarning.
Where torchsde is installed, its sdeint is the reference for the log-ratio and for where a call must raise.
"""

from __future__ import annotations

import inspect
import warnings

import pytest
import torch

import sdekit
from sdekit.brownian import BrownianTree
from sdekit.testing.sde_problems import GBM

try:
    import torchsde
except ImportError:  # the torchsde cross-checks are skipped
    torchsde = None

needs_torchsde = pytest.mark.skipif(torchsde is None, reason="torchsde is not installed")

F64 = torch.float64
B, D, M = 3, 2, 3
TS = [0.0, 0.25, 0.5]


class Problem:
    """A torchsde-style SDE of any noise type: f = a − y, g from the noise type, prior drift h = −y."""

    def __init__(self, noise_type="diagonal", sde_type="ito", a=0.3, c=0.7):
        self.noise_type, self.sde_type, self.a, self.c = noise_type, sde_type, a, c

    def f(self, t, y):
        return self.a - y

    def h(self, t, y):
        return -y

    def g(self, t, y):
        if self.noise_type == "diagonal":
            return self.c * torch.cos(y)
        if self.noise_type == "scalar":
            return (self.c * torch.cos(y)).unsqueeze(-1)
        base = torch.arange(1.0, 1.0 + D * M, dtype=y.dtype).reshape(D, M) / (D * M)
        if self.noise_type == "additive":
            return (self.c * base).expand(y.shape[0], D, M)
        return self.c * base * torch.cos(y).unsqueeze(-1)


def _m(noise_type):
    return {"diagonal": D, "scalar": 1}.get(noise_type, M)


def _y0():
    return torch.linspace(0.1, 0.9, B * D, dtype=F64).reshape(B, D)


def _tree(noise_type="diagonal", m=None):
    return BrownianTree(0.0, 0.5, (B, m or _m(noise_type)), seed=5, depth=8, dtype=F64)


# ---------------------------------------------------------------------------- signature and positional order

SIGNATURE = [("sde", inspect.Parameter.empty), ("y0", inspect.Parameter.empty), ("ts", inspect.Parameter.empty),
             ("bm", None), ("method", None), ("dt", 1e-3), ("adaptive", False), ("rtol", 1e-5), ("atol", 1e-4),
             ("dt_min", 1e-5), ("options", None), ("names", None), ("logqp", False), ("extra", False),
             ("extra_solver_state", None)]


def test_signature_is_torchsdes_with_keyword_only_sources():
    params = list(inspect.signature(sdekit.sdeint).parameters.values())
    positional = [p for p in params if p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD]
    assert [(p.name, p.default) for p in positional] == SIGNATURE
    keyword_only = [(p.name, p.default) for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY]
    assert keyword_only == [("generator", None), ("seed", None), ("sample_index", None), ("per_sample", False)]
    if torchsde is not None:
        theirs = [(p.name, p.default) for p in inspect.signature(torchsde.sdeint).parameters.values()
                  if p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD]
        assert theirs == SIGNATURE


def test_positional_order_is_sde_y0_ts_bm_method_dt():
    bm = _tree()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the new order does not warn
        positional = sdekit.sdeint(Problem(), _y0(), TS, bm, "milstein", 0.05)
    assert torch.equal(positional, sdekit.sdeint(Problem(), _y0(), TS, bm=bm, method="milstein", dt=0.05))
    ts = torch.tensor(TS, dtype=F64)  # an increasing tensor works as well as a list
    assert torch.equal(sdekit.sdeint(Problem(), _y0(), ts, bm, "milstein", 0.05), positional)


@pytest.mark.parametrize("call, expected, method", [
    (lambda s, y, g: sdekit.sdeint(s, y, TS, "euler", 0.05, g), "method='euler', dt=0.05, generator=", "euler"),
    (lambda s, y, g: sdekit.sdeint(s, y, TS, "euler", dt=0.05, generator=g), "method='euler')", "euler"),
    (lambda s, y, g: sdekit.sdeint(s, y, TS, None, 0.05, g), "(sde, y0, ts, dt=0.05, generator=...)", None),
    (lambda s, y, g: sdekit.sdeint(s, y, TS, None, "euler", 0.05, g), "(sde, y0, ts, generator=...)", "euler"),
])
def test_old_positional_calls_still_work_with_a_deprecation_warning(call, expected, method):
    reference = sdekit.sdeint(Problem(), _y0(), TS, method=method, dt=0.05,
                              generator=torch.Generator().manual_seed(3))
    with pytest.warns(DeprecationWarning, match="old order") as record:
        out = call(Problem(), _y0(), torch.Generator().manual_seed(3))
    assert expected in str(record[0].message)
    assert torch.equal(out, reference)


def test_old_and_new_readings_that_collide_raise():
    gen = torch.Generator()
    with pytest.raises(ValueError, match="generator= too"):
        sdekit.sdeint(Problem(), _y0(), TS, "euler", 0.05, gen, generator=gen)
    with pytest.raises(ValueError, match="dt twice"):
        sdekit.sdeint(Problem(), _y0(), TS, "euler", 0.05, dt=0.1)
    with pytest.raises(ValueError, match="where bm stands"):
        sdekit.sdeint(Problem(), _y0(), TS, "euler", "heun")
    with pytest.raises(TypeError, match="method must be"):
        sdekit.sdeint(Problem(), _y0(), TS, method=["euler"])


# ---------------------------------------------------------------------------- default method


@pytest.mark.parametrize("noise_type, sde_type, default", [
    ("diagonal", "ito", "srk"), ("scalar", "ito", "srk"), ("additive", "ito", "srk"), ("general", "ito", "euler"),
    ("diagonal", "stratonovich", "midpoint"), ("scalar", "stratonovich", "midpoint"),
    ("additive", "stratonovich", "midpoint"), ("general", "stratonovich", "midpoint"),
])
def test_default_method_is_torchsdes(noise_type, sde_type, default):
    prob, bm = Problem(noise_type, sde_type), _tree(noise_type)
    assert torch.equal(sdekit.sdeint(prob, _y0(), TS, bm, dt=0.05),
                       sdekit.sdeint(prob, _y0(), TS, bm, method=default, dt=0.05))


def test_sdekit_style_sdes_keep_sdekits_default():
    """drift / diffusion SDEs (not torchsde's protocol): euler for Itô and additive noise, heun for Stratonovich."""

    class StratSDE(sdekit.AbstractSDE):
        sde_type = "stratonovich"

        def drift(self, x, t):
            return -x

        def diffusion(self, x, t):
            return 0.5 * torch.cos(x)

        def prior_sample(self, shape, *, generator=None, device=None, dtype=None):
            raise NotImplementedError

        def prior_log_prob(self, z):
            raise NotImplementedError

    y0 = torch.full((B, D), 0.5, dtype=F64)
    for sde, default in ((sdekit.VPSDE(), "euler"), (StratSDE(), "heun")):
        assert torch.equal(sdekit.sdeint(sde, y0, [0.0, 1.0], dt=0.1, seed=0),
                           sdekit.sdeint(sde, y0, [0.0, 1.0], method=default, dt=0.1, seed=0))


class NoArea:
    """A bm with torchsde's protocol but no space-time area (levy_area_approximation='none')."""

    levy_area_approximation = "none"

    def __init__(self, tree):
        self.tree, self.shape = tree, tree.shape

    def __call__(self, ta, tb=None, return_U=False, return_A=False):
        if return_U:
            raise ValueError("no area")
        return self.tree(ta, tb)


def test_default_falls_back_to_euler_where_srk_cannot_run_and_srk_names_the_bm():
    bm = NoArea(_tree())
    assert torch.equal(sdekit.sdeint(Problem(), _y0(), TS, bm, dt=0.05),
                       sdekit.sdeint(Problem(), _y0(), TS, bm, method="euler", dt=0.05))
    with pytest.raises(ValueError, match="levy_area_approximation='space-time'"):
        sdekit.sdeint(Problem(), _y0(), TS, bm, method="srk", dt=0.05)


# ---------------------------------------------------------------------------- names


class CustomNames:
    noise_type, sde_type = "diagonal", "ito"

    def forward(self, t, y):
        return 0.3 - y

    def spread(self, t, y):
        return 0.7 * torch.cos(y)

    def prior(self, t, y):
        return -y


def test_names_remap_torchsdes_methods():
    bm = _tree()
    ref = sdekit.sdeint(Problem(), _y0(), TS, bm, method="milstein", dt=0.05)
    names = {"drift": "forward", "diffusion": "spread"}
    assert torch.equal(sdekit.sdeint(CustomNames(), _y0(), TS, bm, method="milstein", dt=0.05, names=names), ref)
    ys, lr = sdekit.sdeint(CustomNames(), _y0(), TS, bm, method="euler", dt=0.05, logqp=True,
                           names=dict(names, prior_drift="prior"))
    ref_ys, ref_lr = sdekit.sdeint(Problem(), _y0(), TS, bm, method="euler", dt=0.05, logqp=True)
    assert torch.equal(ys, ref_ys) and torch.equal(lr, ref_lr)
    # Renaming one method to another of the SDE: the prior drift as the drift.
    as_prior = sdekit.sdeint(Problem(), _y0(), TS, bm, method="euler", dt=0.05, names={"drift": "h"})
    assert not torch.equal(as_prior, sdekit.sdeint(Problem(), _y0(), TS, bm, method="euler", dt=0.05))
    with pytest.raises(ValueError, match="unknown keys"):
        sdekit.sdeint(CustomNames(), _y0(), TS, names={"drfit": "forward"})
    with pytest.raises(ValueError, match=r"names\['drift'\] = 'missing'"):
        sdekit.sdeint(CustomNames(), _y0(), TS, names={"drift": "missing"})
    with pytest.raises(TypeError, match="names must be a dict"):
        sdekit.sdeint(CustomNames(), _y0(), TS, names=["forward"])


# ---------------------------------------------------------------------------- logqp


class ConstantDrifts:
    """Posterior drift a, prior drift b (constants), constant diffusion: KL rate ½‖G⁺(a − b)‖² exactly."""

    sde_type = "ito"

    def __init__(self, noise_type):
        self.noise_type = noise_type
        self.a = torch.tensor([0.4, -0.2], dtype=F64)
        self.b = torch.tensor([-0.1, 0.3], dtype=F64)
        self.G = torch.tensor([[0.5, 0.1, 0.0], [0.2, 0.8, 0.3]], dtype=F64)
        self.gd = torch.tensor([0.5, 0.8], dtype=F64)

    def f(self, t, y):
        return self.a.expand_as(y) + 0.0 * y

    def h(self, t, y):
        return self.b.expand_as(y)

    def g(self, t, y):
        return self.gd.expand_as(y) if self.noise_type == "diagonal" else self.G.expand(y.shape[0], D, M)

    def rate(self):
        if self.noise_type == "diagonal":
            u = (self.a - self.b) / self.gd
        else:
            u = torch.linalg.lstsq(self.G, (self.a - self.b).unsqueeze(-1)).solution.squeeze(-1)
        return 0.5 * float((u * u).sum())


@pytest.mark.parametrize("noise_type, methods", [
    ("diagonal", ["euler", "milstein", "srk", "derivative_free_milstein"]),
    ("additive", ["euler", "srk", "sra3", "milstein"]),
])
def test_logqp_against_the_closed_form_for_constant_drifts(noise_type, methods):
    sde = ConstantDrifts(noise_type)
    ts = [0.0, 0.1, 0.35, 0.5]
    expected = torch.tensor([sde.rate() * (b - a) for a, b in zip(ts[:-1], ts[1:])], dtype=F64)
    for method in methods:
        ys, log_ratio = sdekit.sdeint(sde, _y0(), ts, method=method, dt=0.05, logqp=True, seed=1)
        assert ys.shape == (len(ts), B, D) and log_ratio.shape == (len(ts) - 1, B)
        torch.testing.assert_close(log_ratio, expected[:, None].expand(-1, B), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("noise_type", ["diagonal", "scalar", "additive", "general"])
def test_logqp_euler_accumulates_half_u_squared_dt_on_the_path(noise_type):
    """With ts on the step grid, Euler's log-ratio increment is ½‖u(t_k, y_k)‖² h, u solving G u = f − h."""
    sde = Problem(noise_type)
    ts = torch.linspace(0.0, 0.5, 11, dtype=F64)
    ys, log_ratio = sdekit.sdeint(sde, _y0(), ts, method="euler", dt=0.05, logqp=True, seed=2)
    for k in range(10):
        y = ys[k]
        r = sde.f(ts[k], y) - sde.h(ts[k], y)
        G = sde.g(ts[k], y)
        u = r / G if noise_type == "diagonal" else torch.linalg.lstsq(G, r.unsqueeze(-1)).solution.squeeze(-1)
        torch.testing.assert_close(log_ratio[k], 0.5 * (u * u).sum(-1) * 0.05, rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("method, sde_type", [("euler", "ito"), ("srk", "ito"), ("milstein", "ito"),
                                              ("heun", "stratonovich"), ("reversible_heun", "stratonovich")])
def test_logqp_leaves_the_path_unchanged(method, sde_type):
    sde = Problem("diagonal", sde_type)
    plain = sdekit.sdeint(sde, _y0(), TS, method=method, dt=0.05, seed=4)
    ys, _ = sdekit.sdeint(sde, _y0(), TS, method=method, dt=0.05, seed=4, logqp=True)
    torch.testing.assert_close(ys, plain, rtol=0, atol=1e-15)
    # A bm of torchsde's logqp shape (B, d + 1) for diagonal noise works too.
    bm = _tree(m=D + 1)
    ys_bm, lr_bm = sdekit.sdeint(sde, _y0(), TS, bm, method=method, dt=0.05, logqp=True)
    assert ys_bm.shape == (len(TS), B, D) and lr_bm.shape == (len(TS) - 1, B)


@needs_torchsde
@pytest.mark.parametrize("noise_type, method", [("diagonal", "euler"), ("diagonal", "srk"), ("diagonal", "milstein"),
                                                ("scalar", "euler"), ("additive", "srk"), ("general", "euler")])
def test_logqp_matches_torchsde_on_the_same_brownian_interval(noise_type, method):
    sde = Problem(noise_type)
    m = D + 1 if noise_type == "diagonal" else _m(noise_type)
    bm = torchsde.BrownianInterval(0.0, 0.5, (B, m), dtype=F64, levy_area_approximation="space-time", entropy=7)
    ts = torch.tensor(TS, dtype=F64)
    ours = sdekit.sdeint(sde, _y0(), ts, bm, method=method, dt=2.0**-5, logqp=True)
    theirs = torchsde.sdeint(sde, _y0(), ts, bm, method=method, dt=2.0**-5, logqp=True)
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b.detach(), rtol=1e-10, atol=1e-12)


def test_logqp_needs_the_prior_drift_and_a_torchsde_style_sde():
    with pytest.raises(ValueError, match="prior drift h"):
        sdekit.sdeint(GBM(), _y0(), TS, logqp=True)
    with pytest.raises(ValueError, match="torchsde-style"):
        sdekit.sdeint(sdekit.VPSDE(), _y0(), TS, logqp=True)

    class BadPrior(Problem):
        def h(self, t, y):
            return y[:, :1]

    with pytest.raises(ValueError, match=r"h returned shape \(3, 1\)"):
        sdekit.sdeint(BadPrior(), _y0(), TS, logqp=True)


# ---------------------------------------------------------------------------- extra / extra_solver_state


@pytest.mark.parametrize("logqp", [False, True])
def test_extra_state_round_trip_two_halves_equal_one_solve(logqp):
    sde = Problem("general", "stratonovich")
    bm, ts = _tree("general"), [0.0, 0.25, 0.5]
    kw = {"method": "reversible_heun", "dt": 2.0**-5, "extra": True, "logqp": logqp}
    *whole, state = sdekit.sdeint(sde, _y0(), ts, bm, **kw)
    *first, mid = sdekit.sdeint(sde, _y0(), ts[:2], bm, **kw)
    *second, end = sdekit.sdeint(sde, first[0][-1], ts[1:], bm, extra_solver_state=mid, **kw)
    assert len(state) == 3 and [s.shape for s in state] == [(B, D + logqp), (B, D + logqp, M), (B, D + logqp)]
    assert torch.equal(second[0][-1], whole[0][-1])
    if not logqp:
        assert all(torch.equal(a, b) for a, b in zip(end, state))
    else:
        # (the one solve's second increment is a difference of accumulated penalties: round-off apart)
        torch.testing.assert_close(torch.cat([first[1], second[1]]), whole[1], rtol=0, atol=1e-14)
        # The penalty coordinate restarts at 0 in each solve (as torchsde's), so only z's penalty entry differs
        # (it never feeds back into the solve); every other entry is the one solve's.
        assert torch.equal(end[0], state[0]) and torch.equal(end[1], state[1])
        assert torch.equal(end[2][:, :D], state[2][:, :D])
    # Without the state the second half restarts reversible Heun (z = y): a different solve.
    restarted = sdekit.sdeint(sde, first[0][-1], ts[1:], bm, method="reversible_heun", dt=2.0**-5)
    assert not torch.equal(restarted[-1], whole[0][-1])


def test_one_step_methods_have_an_empty_state_and_bad_states_raise():
    ys, state = sdekit.sdeint(Problem(), _y0(), TS, method="euler", dt=0.05, seed=0, extra=True)
    assert state == () and ys.shape == (len(TS), B, D)
    ys, lr, state = sdekit.sdeint(Problem(), _y0(), TS, method="euler", dt=0.05, seed=0, extra=True, logqp=True)
    assert state == () and lr.shape == (len(TS) - 1, B)
    sde = Problem("diagonal", "stratonovich")
    with pytest.raises(ValueError, match="has 1 tensors"):
        sdekit.sdeint(sde, _y0(), TS, method="reversible_heun", extra_solver_state=(_y0(),))
    with pytest.raises(ValueError, match=r"extra_solver_state\[2\] has shape"):
        sdekit.sdeint(sde, _y0(), TS, method="reversible_heun", extra_solver_state=(_y0(), _y0(), _y0()[:1]))
    with pytest.raises(TypeError, match="tuple of tensors"):
        sdekit.sdeint(sde, _y0(), TS, method="reversible_heun", extra_solver_state=[1.0, 2.0, 3.0])


# ---------------------------------------------------------------------------- where torchsde raises

TORCHSDE_METHODS = ["euler", "milstein", "srk", "midpoint", "heun", "euler_heun", "reversible_heun"]
NOISE_TYPES = ["diagonal", "scalar", "additive", "general"]


def _torchsde_rejects(method, sde_type, noise_type):
    """torchsde's rule (its solvers' sde_type / noise_types): the Itô ones and the Stratonovich ones."""
    ito_only, strat_only = ("euler", "srk"), ("midpoint", "heun", "euler_heun", "reversible_heun")
    if method in ito_only and sde_type != "ito" or method in strat_only and sde_type != "stratonovich":
        return True
    return method in ("milstein", "srk") and noise_type == "general"


GRID = [(m, s, n) for m in TORCHSDE_METHODS for s in ("ito", "stratonovich") for n in NOISE_TYPES]


@pytest.mark.parametrize("method, sde_type, noise_type", GRID)
def test_methods_raise_exactly_where_torchsde_raises(method, sde_type, noise_type):
    sde, bm = Problem(noise_type, sde_type), _tree(noise_type)
    if _torchsde_rejects(method, sde_type, noise_type):
        with pytest.raises(ValueError, match=f"{method} does not support"):
            sdekit.sdeint(sde, _y0(), TS, bm, method=method, dt=0.1)
    else:
        assert sdekit.sdeint(sde, _y0(), TS, bm, method=method, dt=0.1).shape == (len(TS), B, D)


@needs_torchsde
def test_the_rule_is_torchsdes_own():
    for method, sde_type, noise_type in GRID:
        bm = torchsde.BrownianInterval(0.0, 0.5, (B, _m(noise_type)), dtype=F64, levy_area_approximation="space-time")
        try:
            torchsde.sdeint(Problem(noise_type, sde_type), _y0(), torch.tensor(TS, dtype=F64), bm, method=method,
                            dt=0.1)
            raised = False
        except ValueError:
            raised = True
        assert raised == _torchsde_rejects(method, sde_type, noise_type), (method, sde_type, noise_type)


def test_sdekit_style_additive_sdes_keep_both_families():
    """For sdekit's own SDEs (not torchsde's protocol) Itô ≡ Stratonovich with additive noise: both families run."""
    y0 = torch.full((B, D), 0.5, dtype=F64)
    for method in ("heun", "midpoint", "reversible_heun", "euler", "srk"):
        assert sdekit.sdeint(sdekit.VPSDE(), y0, [0.0, 1.0], method=method, dt=0.1, seed=0).shape == (2, B, D)


def test_adaptive_stepping_keeps_torchsdes_checks_and_warning():
    # torchsde's incompatibility errors come first, and its adaptive-Euler warning is kept.
    with pytest.raises(ValueError, match="heun does not support"):
        sdekit.sdeint(Problem(), _y0(), TS, method="heun", adaptive=True)
    with pytest.warns(UserWarning, match="adaptive time-stepping with the Euler"):
        sdekit.sdeint(Problem(), _y0(), TS, method="euler", adaptive=True, seed=0)
