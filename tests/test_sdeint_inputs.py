"""sdeint's inputs: both SDE protocols, the Brownian sources, reproducibility, and clear errors on bad input."""

from __future__ import annotations

import pytest
import torch

import sdekit
from sdekit.brownian import BrownianTree
from sdekit.solvers.sde import SDEINT_METHODS, method_names, resolve
from sdekit.testing.sde_problems import GBM, AdditiveProblem, ArctanProblem, ScalarNoiseGBM

F64 = torch.float64


class Torchsde:
    """A configurable torchsde-style SDE (f, g, types as attributes)."""

    def __init__(self, noise_type="diagonal", sde_type="ito", f=None, g=None):
        self.noise_type, self.sde_type = noise_type, sde_type
        self._f = f or (lambda t, y: -y)
        self._g = g or (lambda t, y: 0.5 * torch.ones_like(y))

    def f(self, t, y):
        return self._f(t, y)

    def g(self, t, y):
        return self._g(t, y)


class BrownianOnly(sdekit.AbstractSDE):
    """``dx = dW``: every method returns ``x₀ + W_t`` exactly, so outputs expose the Brownian path."""

    noise_type = "additive"

    def drift(self, x, t):
        return torch.zeros_like(x)

    def diffusion(self, x, t):
        return torch.ones_like(t)

    def prior_sample(self, shape, *, generator=None, device=None, dtype=None):
        raise NotImplementedError

    def prior_log_prob(self, z):
        raise NotImplementedError


Y0 = torch.full((4, 2), 0.5, dtype=F64)


def test_output_layout_and_exact_output_times():
    ts = torch.tensor([0.0, 0.3, 0.55, 1.0], dtype=F64)
    out = sdekit.sdeint(GBM(), Y0, ts, method="milstein", dt=0.07, seed=3)
    assert out.shape == (4, 4, 2) and out.dtype == F64 and torch.equal(out[0], Y0)
    # Outputs are the states at ts (no interpolation): restarting from out[1] on the same path gives out[2:].
    bm = BrownianTree(0.0, 1.0, (4, 2), seed=3, depth=8, dtype=F64)
    full = sdekit.sdeint(GBM(), Y0, ts, method="milstein", dt=0.07, bm=bm)
    rest = sdekit.sdeint(GBM(), full[1], ts[1:], method="milstein", dt=0.07, bm=bm)
    torch.testing.assert_close(rest, full[1:], rtol=0, atol=1e-14)
    out32 = sdekit.sdeint(GBM(), Y0.float(), ts, method="sri2", dt=0.1, seed=3)
    assert out32.dtype == torch.float32 and bool(torch.isfinite(out32).all())


@pytest.mark.parametrize("dt", [2.0**-3, 2.0**-6, 0.3, 0.013])
def test_seeded_path_is_the_same_at_every_step_size(dt):
    """x_T − x_0 = W_T for dx = dW: the same W_T at every dt, dyadic or not, equal to the tree's root."""
    y0 = torch.zeros(6, 3, dtype=F64)
    out = sdekit.sdeint(BrownianOnly(), y0, [0.0, 0.5, 1.0], dt=dt, seed=42)
    W = BrownianTree(0.0, 1.0, (6, 3), seed=42, depth=1, dtype=F64).evaluate([0.5, 1.0])[0]
    torch.testing.assert_close(out[1:], W, rtol=0, atol=1e-13)


def test_per_sample_noise_does_not_depend_on_the_batch():
    y0 = torch.linspace(0.1, 1.0, 10, dtype=F64).reshape(5, 2)
    full = sdekit.sdeint(ArctanProblem(), y0, [0.0, 1.0], method="sri2", dt=0.05, seed=9)
    rows = torch.tensor([3, 0])
    part = sdekit.sdeint(ArctanProblem(), y0[rows], [0.0, 1.0], method="sri2", dt=0.05, seed=9, sample_index=rows)
    torch.testing.assert_close(part, full[:, rows], rtol=0, atol=0)


def test_generator_and_global_seed_are_reproducible():
    def run(**kw):
        return sdekit.sdeint(GBM(), Y0, [0.0, 1.0], method="euler", dt=0.1, **kw)

    a = run(generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, run(generator=torch.Generator().manual_seed(1)))
    assert not torch.equal(a, run(generator=torch.Generator().manual_seed(2)))
    torch.manual_seed(123)
    b = run()
    torch.manual_seed(123)
    assert torch.equal(b, run())
    assert torch.equal(run(seed=5), run(seed=5)) and not torch.equal(run(seed=5), run(seed=6))


def test_method_defaults_aliases_and_options():
    kw = dict(ts=[0.0, 1.0], dt=0.1, seed=2)
    strat = GBM(sde_type="stratonovich")
    # torchsde's defaults: srk for Itô SDEs (diagonal, scalar, additive noise), midpoint for Stratonovich SDEs.
    assert torch.equal(sdekit.sdeint(GBM(), Y0, **kw), sdekit.sdeint(GBM(), Y0, method="srk", **kw))
    assert torch.equal(sdekit.sdeint(strat, Y0, **kw), sdekit.sdeint(strat, Y0, method="midpoint", **kw))
    assert torch.equal(sdekit.sdeint(GBM(), Y0, method="euler_maruyama", **kw),
                       sdekit.sdeint(GBM(), Y0, method="euler", **kw))
    assert torch.equal(sdekit.sdeint(GBM(), Y0, method="milstein", options={"grad_free": True}, **kw),
                       sdekit.sdeint(GBM(), Y0, method="derivative_free_milstein", **kw))
    y1 = torch.full((4, 1), 0.5, dtype=F64)
    assert torch.equal(sdekit.sdeint(AdditiveProblem(), y1, method="srk", **kw),
                       sdekit.sdeint(AdditiveProblem(), y1, method="sra1", **kw))
    assert torch.equal(sdekit.sdeint(GBM(), Y0, method="srk", **kw), sdekit.sdeint(GBM(), Y0, method="sri2", **kw))
    # Every registered solver declares its orders for every noise type it supports.
    for cls in SDEINT_METHODS.values():
        for nt in cls.noise_types:
            assert cls.strong_order(nt) in (0.5, 1.0, 1.5)
            assert cls.weak_order(nt) in (None, 1.0, 2.0)
    assert set(method_names()) >= {"euler", "milstein", "srk", "heun", "midpoint", "euler_heun", "reversible_heun"}


def test_torchsde_protocol_variants_run_unchanged():
    class FAndG:
        noise_type, sde_type = "diagonal", "ito"

        def f_and_g(self, t, y):
            return -y, 0.3 * y

    class GProdOnly:
        noise_type, sde_type = "general", "ito"

        def f(self, t, y):
            return -y

        def g_prod(self, t, y, v):  # G = [[1, 1]] per coordinate pair: y_i gets v_0 + v_1
            return (v[:, :1] + v[:, 1:]).expand_as(y)

    ref = sdekit.sdeint(Torchsde(g=lambda t, y: 0.3 * y), Y0, [0.0, 1.0], method="euler",
                        dt=0.1, seed=1)
    torch.testing.assert_close(sdekit.sdeint(FAndG(), Y0, [0.0, 1.0], method="euler", dt=0.1, seed=1), ref)
    bm = BrownianTree(0.0, 1.0, (4, 2), seed=1, depth=4, dtype=F64)
    out = sdekit.sdeint(GProdOnly(), Y0, [0.0, 1.0], method="euler", dt=0.1, bm=bm)
    assert out.shape == (2, 4, 2)
    with pytest.raises(ValueError, match="cannot infer"):
        sdekit.sdeint(GProdOnly(), Y0, [0.0, 1.0], method="euler", dt=0.1)
    with pytest.raises(ValueError, match="milstein does not support noise_type='general'"):
        sdekit.sdeint(GProdOnly(), Y0, [0.0, 1.0], method="milstein", dt=0.1, bm=bm)


def _bad_g(shape_fn):
    return Torchsde(g=lambda t, y: torch.ones(shape_fn(y), dtype=y.dtype))


@pytest.mark.parametrize(
    "sde, y0, kwargs, error, match",
    [
        # Unsupported method / noise type / SDE type combinations name both.
        (Torchsde("general", g=lambda t, y: torch.ones(y.shape + (3,), dtype=y.dtype)), Y0, dict(method="milstein"),
         ValueError, "milstein does not support noise_type='general'"),
        (Torchsde("general", g=lambda t, y: torch.ones(y.shape + (3,), dtype=y.dtype)), Y0, dict(method="srk"),
         ValueError, "srk does not support noise_type='general'"),
        (GBM(), Y0, dict(method="sra1"), ValueError, "sra1 does not support noise_type='diagonal'"),
        (GBM(), Y0, dict(method="heun"), ValueError, "heun does not support sde_type='ito'"),
        (GBM(sde_type="stratonovich"), Y0, dict(method="euler"), ValueError, "euler does not support sde_type='stratonovich'"),
        (GBM(sde_type="stratonovich"), Y0, dict(method="sri2"), ValueError, "sri2 does not support sde_type='stratonovich'"),
        (GBM(), Y0, dict(method="rk4"), ValueError, "method must be one of"),
        # Time grid and step size.
        (GBM(), Y0, dict(ts=[0.0, 0.5, 0.5]), ValueError, "ts must be strictly increasing"),
        (GBM(), Y0, dict(ts=[1.0, 0.0]), ValueError, "ts must be strictly increasing"),
        (GBM(), Y0, dict(ts=[0.0, float("inf")]), ValueError, "ts must be finite"),
        (GBM(), Y0, dict(ts=[0.0]), ValueError, "ts must be 1-D"),
        (GBM(), Y0, dict(dt=0.0), ValueError, "dt must be"),
        (GBM(), Y0, dict(dt=-0.1), ValueError, "dt must be"),
        # y0.
        (GBM(), torch.zeros(4, dtype=F64), {}, ValueError, r"y0 must have shape \(batch, d\)"),
        (GBM(), torch.zeros(4, 2, 1, dtype=F64), {}, ValueError, r"y0 must have shape \(batch, d\)"),
        (GBM(), torch.tensor([[0.0], [float("nan")]], dtype=F64), {}, ValueError, "y0 must be finite"),
        (GBM(), torch.zeros(4, 2, dtype=torch.int64), {}, TypeError, "y0 must have a floating dtype"),
        # f and g of the wrong shape or non-finite.
        (Torchsde(f=lambda t, y: y[:, :1]), Y0, {}, ValueError, r"f returned shape \(4, 1\)"),
        (_bad_g(lambda y: y.shape + (1,)), Y0, {}, ValueError, r"g returned shape \(4, 2, 1\), expected \(4, 2\)"),
        (Torchsde("scalar", g=lambda t, y: torch.ones(y.shape + (2,), dtype=y.dtype)), Y0, {}, ValueError,
         "noise_type='scalar' needs m = 1"),
        (Torchsde("general", g=lambda t, y: torch.ones_like(y)), Y0, {}, ValueError,
         r"expected \(4, 2, m\) for noise_type='general'"),
        (Torchsde(g=lambda t, y: y / 0.0), Y0, {}, ValueError, "g returned non-finite values"),
        (Torchsde(f=lambda t, y: y * float("nan")), Y0, {}, ValueError, "f returned non-finite values"),
        # SDE objects.
        (Torchsde("weird"), Y0, {}, ValueError, r"sde.noise_type must be one of"),
        (Torchsde(sde_type="ito2"), Y0, {}, ValueError, r"sde.sde_type must be one of"),
        (object(), Y0, {}, TypeError, "drift"),
        # Brownian sources.
        (GBM(), Y0, dict(seed=1, generator=torch.Generator()), ValueError, "seed and generator"),
        (GBM(), Y0, dict(generator=torch.Generator(), sample_index=torch.arange(4)), ValueError, "sample_index"),
        (GBM(), Y0, dict(bm=BrownianTree(0.0, 1.0, (4, 3), seed=1)), ValueError, "bm has shape"),
        (GBM(), Y0, dict(bm=BrownianTree(0.0, 0.5, (4, 2), seed=1)), ValueError, "does not contain ts"),
        # torchsde arguments that are out of scope.
        (GBM(), Y0, dict(adaptive=True, generator=torch.Generator()), ValueError, "adaptive=True.*generator"),
        (GBM(), Y0, dict(adaptive=True, rtol=-1.0), ValueError, "rtol"),
        (GBM(), Y0, dict(adaptive=True, dt_min=0.0), ValueError, "dt_min"),
        (GBM(), Y0, dict(logqp=True), ValueError, "logqp"),
        (GBM(), Y0, dict(names={"drift": "h"}), ValueError, "names"),
        (GBM(), Y0, dict(options={"trapezoidal": True}), ValueError, "options"),
    ],
)
def test_bad_input_raises_a_clear_error(sde, y0, kwargs, error, match):
    args = dict(ts=[0.0, 1.0], dt=0.1)
    args.update(kwargs)
    with pytest.raises(error, match=match):
        sdekit.sdeint(sde, y0, args.pop("ts"), **args)


def test_missing_type_attributes_and_sdekit_style_errors():
    class NoTypes:
        def f(self, t, y):
            return y

        def g(self, t, y):
            return y

    with pytest.raises(ValueError, match="attribute noise_type"):
        sdekit.sdeint(NoTypes(), Y0, [0.0, 1.0])

    class WrongDiffusion(BrownianOnly):
        def diffusion(self, x, t):
            return torch.ones(x.shape[0], 7, dtype=x.dtype)

    with pytest.raises(ValueError, match=r"diffusion returned shape \(4, 7\)"):
        sdekit.sdeint(WrongDiffusion(), Y0, [0.0, 1.0])

    class General(BrownianOnly):
        noise_type = "general"

    with pytest.raises(ValueError, match="needs a diffusion matrix"):
        sdekit.sdeint(General(), Y0, [0.0, 1.0])
    # Linear SDEs declare additive noise, so the order-1.5 additive schemes accept them.
    assert sdekit.VPSDE.noise_type == "additive" and sdekit.sdeint(sdekit.VPSDE(), Y0, [0.0, 1.0], method="srk",
                                                                    dt=0.1, seed=0).shape == (2, 4, 2)


def test_resolve_rejects_unknown_methods():
    with pytest.raises(ValueError, match="method must be one of"):
        resolve("dopri5", "diagonal", "ito")
    assert resolve("srk", "scalar", "ito").name == "sri2"
    assert ScalarNoiseGBM.noise_type == "scalar"
