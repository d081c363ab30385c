"""The bad-input catalogue (issue 17, item 4).

Every public function and constructor answers bad input with a ``ValueError`` or
``TypeError`` whose message names the argument — never an ``IndexError``,
``AssertionError`` or ``OverflowError`` from inside, a hang, or silent NaN.

``CATALOGUE`` lists ``(function, argument, bad value, exception, regex)``; each
function has a valid base call in ``CALLS`` and a case replaces one argument.
The hypothesis tests at the end fuzz the arguments of ``sample`` and
``log_likelihood``: every outcome is a finite result or a ValueError/TypeError.
"""


import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import sdekit
from sdekit.sampling.sample import SAMPLE_METHODS
from sdekit.sampling.sigma_samplers import SIGMA_SAMPLERS

VP = sdekit.VPSDE()
NAN, INF = float("nan"), float("inf")
CUDA = "cuda" if not torch.cuda.is_available() else "cuda:4096"  # an unavailable device either way


def score(x, t, **kw):
    return -x


def eps_net(x, t, **kw):
    return torch.zeros_like(x)


def cfg_net(x, t, y, **kw):
    return torch.zeros_like(x)


def classifier(x, t):
    return torch.zeros(x.shape[0], 3)


def _call(fn, *names, **base):
    """A caller of ``fn`` with positional ``names`` taken from ``base`` (overridden per case)."""

    def call(**override):
        kw = {**base, **override}
        args = [kw.pop(n) for n in names]
        return fn(*args, **kw)

    return call


CALLS = {
    "sample": _call(sdekit.sample, "score", "sde", "shape", score=score, sde=VP, shape=(2, 2), steps=2),
    "log_likelihood": _call(sdekit.log_likelihood, "score", "sde", "x", score=score, sde=VP, x=torch.zeros(2, 2)),
    "bits_per_dim": _call(sdekit.bits_per_dim, "log_prob", "dim", "levels", log_prob=torch.zeros(2), dim=4, levels=256),
    "dequantize": _call(sdekit.dequantize, "k", "levels", k=torch.zeros(2, 2, dtype=torch.int64), levels=256),
    "odeint": _call(sdekit.odeint, "func", "y0", "t", func=lambda t, y: -y, y0=torch.ones(2, 2),
                    t=torch.tensor([0.0, 1.0])),
    "sdeint": _call(sdekit.sdeint, "sde", "y0", "ts", sde=VP, y0=torch.ones(2, 2), ts=[0.0, 0.5], dt=0.25),
    "solve_adaptive": _call(sdekit.solve_adaptive, "func", "y0", "t0", "t1", func=lambda t, y: -y,
                            y0=torch.ones(2, 2), t0=0.0, t1=1.0),
    "VPSDE": _call(sdekit.VPSDE),
    "SubVPSDE": _call(sdekit.SubVPSDE),
    "VESDE": _call(sdekit.VESDE),
    "EDMSDE": _call(sdekit.EDMSDE),
    "OrnsteinUhlenbeck": _call(sdekit.OrnsteinUhlenbeck, theta=1.0, sigma=1.0),
    "DiscreteVPSDE": _call(sdekit.DiscreteVPSDE, alphas_cumprod=torch.tensor([0.9, 0.5, 0.1])),
    "score_from_epsilon": _call(sdekit.score_from_epsilon, "model", "sde", model=eps_net, sde=VP),
    "score_from_x0": _call(sdekit.score_from_x0, "model", "sde", model=eps_net, sde=VP),
    "score_from_v": _call(sdekit.score_from_v, "model", "sde", model=eps_net, sde=VP),
    "score_from_denoiser": _call(sdekit.score_from_denoiser, "model", "sde", model=eps_net, sde=VP),
    "classifier_free_guidance": _call(sdekit.classifier_free_guidance, "model", "labels", "scale", "null_label",
                                      model=cfg_net, labels=torch.tensor([0, 1]), scale=2.0, null_label=10),
    "classifier_guidance": _call(sdekit.classifier_guidance, "score", "classifier", "labels", score=score,
                                 classifier=classifier, labels=torch.tensor([0, 1])),
    "BrownianTree": _call(sdekit.BrownianTree, "t0", "t1", "size", t0=0.0, t1=1.0, size=(2, 2), seed=0),
}

V, T = ValueError, TypeError

# Shared cases: a positive finite number / an integer >= 1.
POSITIVE = [("0.1", T), (0.0, V), (-1.0, V), (NAN, V), (INF, V), (None, T), (True, T)]
COUNT = [(0, V), (-1, V), (2.5, V), (INF, V), (NAN, V), (True, T), ("3", T), (None, T)]
SDE_BAD = [("vp", T), (None, T), (3, T)]
EMPTY = torch.zeros(0, 2)


def _cases(fn, arg, values, regex=None):
    return [(fn, arg, bad, exc, regex or arg) for bad, exc in values]


CATALOGUE = [
    # sample
    *_cases("sample", "sde", SDE_BAD),
    *_cases("sample", "steps", COUNT),
    *_cases("sample", "eps", [(0, V), (0.0, V), (-1e-3, V), (1.0, V), (2.0, V), (NAN, V), (INF, V), ("0.1", T),
                              (True, T)]),
    ("sample", "eps", 0.0, V, r"σ\(eps\)"),
    *_cases("sample", "shape", [((0, 2), V), ((2,), V), ((2, -1), V), ((INF, 2), T), ((2.5, 2), T), ("ab", T),
                                (None, T), ((True, 2), T)]),
    *_cases("sample", "device", [(CUDA, V), ("bogus", V)]),
    *_cases("sample", "method", [("bogus", V)]),
    *_cases("sample", "corrector", [("bogus", V)]),
    *_cases("sample", "corrector_steps", COUNT[:4]),
    *_cases("sample", "snr", POSITIVE[:5]),
    *_cases("sample", "max_steps", [(0, V), (INF, V)]),
    *_cases("sample", "x_init", [(torch.zeros(3, 2), V), ([[0.0, 0.0]], T)]),
    # log_likelihood
    *_cases("log_likelihood", "sde", SDE_BAD),
    *_cases("log_likelihood", "x", [(EMPTY, V), (torch.zeros(2), V), (torch.zeros(2, 2, dtype=torch.int64), T),
                                    ([[0.0]], T), (torch.full((2, 2), NAN), V)]),
    *_cases("log_likelihood", "eps", [(0, V), (0.0, V), (-1.0, V), (1.0, V), (NAN, V), ("0.1", T)]),
    *_cases("log_likelihood", "probes", COUNT[:5]),
    *_cases("log_likelihood", "trace", [("bogus", V)]),
    *_cases("log_likelihood", "noise", [("bogus", V)]),
    *_cases("log_likelihood", "max_steps", [(0, V), (INF, V)]),
    *_cases("log_likelihood", "rtol", POSITIVE[:5]),
    # bits_per_dim / dequantize
    *_cases("bits_per_dim", "log_prob", [([0.0], T), (torch.zeros(2, dtype=torch.int64), T)]),
    *_cases("bits_per_dim", "dim", COUNT[:5]),
    *_cases("bits_per_dim", "levels", COUNT[:5]),
    *_cases("bits_per_dim", "data_range", [((1.0, 0.0), V), ((0.0, NAN), V), ((0.0,), V), ("ab", V), ((0.0, "1"), V)]),
    *_cases("dequantize", "k", [([0, 1], T), (torch.tensor([0, 300]), V), (torch.tensor([0.5]), V)]),
    *_cases("dequantize", "levels", COUNT[:5]),
    *_cases("dequantize", "data_range", [((1.0, 0.0), V), ((0.0, INF), V)]),
    # odeint / sdeint / solve_adaptive
    *_cases("odeint", "func", [(None, T), ("f", T)]),
    *_cases("odeint", "y0", [(torch.zeros(0, 2), V), ([1.0], T), (torch.ones(2, dtype=torch.int64), T),
                             (torch.full((2, 2), INF), V)]),
    *_cases("odeint", "t", [(torch.tensor([0.0, 0.0]), V), (torch.tensor([0.0, NAN]), V), (torch.zeros(2, 2), V)]),
    *_cases("odeint", "method", [("bogus", V)]),
    *_cases("odeint", "max_steps", [(0, V), (INF, V), (True, T)]),
    *_cases("odeint", "rtol", POSITIVE[:5]),
    *_cases("sdeint", "sde", [("vp", T), (None, T)]),
    *_cases("sdeint", "y0", [(torch.zeros(0, 2), V), (torch.ones(2, dtype=torch.int64), T), ([1.0], T),
                             (torch.full((2, 2), NAN), V)]),
    *_cases("sdeint", "ts", [([0.0], V), ([0.5, 0.0], V), ([0.0, NAN], V)]),
    *_cases("sdeint", "dt", POSITIVE[:5]),
    *_cases("sdeint", "method", [("bogus", V)]),
    *_cases("solve_adaptive", "func", [(None, T)]),
    *_cases("solve_adaptive", "y0", [(torch.zeros(0, 2), V), (torch.ones(2, dtype=torch.int64), T),
                                     (torch.full((2, 2), NAN), V)]),
    *_cases("solve_adaptive", "rtol", POSITIVE[:5]),
    *_cases("solve_adaptive", "atol", POSITIVE[:5]),
    *_cases("solve_adaptive", "max_steps", [(0, V), (INF, V), (2.5, V)]),
    # SDE constructors
    *[c for sde in ("VPSDE", "SubVPSDE") for a in ("beta_min", "beta_max", "T") for c in _cases(sde, a, POSITIVE)],
    ("VPSDE", "beta_max", 0.05, V, "beta_max must be >= beta_min"),
    *[c for a in ("sigma_min", "sigma_max", "T") for c in _cases("VESDE", a, POSITIVE)],
    ("VESDE", "sigma_max", 0.001, V, "sigma_max must be > sigma_min"),
    *[c for a in ("sigma_min", "sigma_max") for c in _cases("EDMSDE", a, POSITIVE)],
    ("EDMSDE", "sigma_min", 100.0, V, "sigma_max must be > sigma_min"),
    *[c for a in ("theta", "sigma", "T") for c in _cases("OrnsteinUhlenbeck", a, POSITIVE)],
    *_cases("OrnsteinUhlenbeck", "mu", [("0", T), (NAN, V), (INF, V), (None, T)]),
    *_cases("DiscreteVPSDE", "alphas_cumprod", [([0.9, 0.5], T), (torch.tensor([0.5, 0.9]), V),
                                                 (torch.tensor([1.0, 1.0]), V), (torch.tensor([0.9, 0.0]), V),
                                                 (torch.tensor([[0.9]]), V), (torch.tensor([0.9, NAN]), V)]),
    *_cases("DiscreteVPSDE", "T", POSITIVE),
    # score adapters
    *[c for fn in ("score_from_epsilon", "score_from_x0", "score_from_v", "score_from_denoiser")
      for c in _cases(fn, "model", [(None, T), (3, T), ("net", T)]) + _cases(fn, "sde", [("vp", T), (None, T)])],
    *[c for fn in ("score_from_epsilon", "score_from_x0", "score_from_v")
      for c in _cases(fn, "time_input", [(999, T)])],
    # guidance
    *_cases("classifier_free_guidance", "model", [(None, T)]),
    *_cases("classifier_free_guidance", "labels", [(torch.tensor([0.0, 1.0]), T), (torch.tensor([0, 10]), V),
                                                   (10, V), (torch.tensor([-1, 0]), V), (1.5, T), ("a", T)]),
    ("classifier_free_guidance", "labels", torch.tensor([0, 10]), V, "null_label"),
    *_cases("classifier_free_guidance", "scale", [(NAN, V), (INF, V), ("2", T)]),
    *_cases("classifier_free_guidance", "null_label", [(-1, V), (1.5, T), (None, T)]),
    *_cases("classifier_free_guidance", "num_classes", [(0, V), (2.5, V), ("10", T)]),
    ("classifier_free_guidance", "labels", torch.tensor([0, 12]), V, r"num_classes\) = \[0, 10\)"),
    *_cases("classifier_guidance", "score", [(None, T)]),
    *_cases("classifier_guidance", "classifier", [(None, T), ("clf", T)]),
    *_cases("classifier_guidance", "labels", [(torch.tensor([0.0, 1.0]), T), (torch.tensor([-1, 0]), V),
                                              (torch.zeros(2, 2, dtype=torch.int64), V), (1.5, T)]),
    *_cases("classifier_guidance", "scale", [(NAN, V), ("1", T)]),
    *_cases("classifier_guidance", "num_classes", [(0, V), (INF, V)]),
    # BrownianTree
    *_cases("BrownianTree", "t0", [(NAN, V), ("0", T), (2.0, V)]),
    *_cases("BrownianTree", "t1", [(INF, V), (0.0, V)]),
    *_cases("BrownianTree", "size", [((0, 2), V), ((), V), ((2.5,), V), ("ab", V), ((INF,), V)]),
    *_cases("BrownianTree", "dtype", [(torch.int64, T), (torch.bool, T), ("float32", T)]),
    *_cases("BrownianTree", "depth", [(-1, V), (2.5, V), (1000, V), ("3", V), (INF, V)]),
    *_cases("BrownianTree", "tol", POSITIVE[:5]),
    *_cases("BrownianTree", "device", [(CUDA, V), ("bogus", V)]),
]

# Per-case overrides where the argument only matters together with another one.
EXTRA = {
    ("sample", "corrector_steps"): dict(corrector="langevin"),
    ("sample", "snr"): dict(corrector="langevin"),
    ("sample", "max_steps"): dict(method="ode"),
    ("classifier_free_guidance", "num_classes"): dict(labels=torch.tensor([0, 1])),
    ("odeint", "rtol"): dict(method="dopri5"),
}
# Each case also gets num_classes=10 for the out-of-range labels cases.
RANGE_CASES = {("classifier_free_guidance", r"num_classes\) = \[0, 10\)")}


def _id(case):
    fn, arg, bad, _exc, _ = case
    text = repr(bad) if not isinstance(bad, torch.Tensor) else f"tensor{tuple(bad.shape)}{bad.dtype}"
    return f"{fn}-{arg}-{text[:30]}"


def test_catalogue_size():
    """The report's count: functions × arguments × cases."""
    functions = {c[0] for c in CATALOGUE}
    arguments = {(c[0], c[1]) for c in CATALOGUE}
    assert functions == set(CALLS)
    assert (len(functions), len(arguments), len(CATALOGUE)) == (20, 87, 346), (
        len(functions), len(arguments), len(CATALOGUE))


@pytest.mark.parametrize("case", CATALOGUE, ids=[_id(c) for c in CATALOGUE])
def test_bad_input_is_named(case):
    fn, arg, bad, exc, regex = case
    kwargs = dict(EXTRA.get((fn, arg), {}))
    if (fn, regex) in RANGE_CASES:
        kwargs["num_classes"] = 10
    kwargs[arg] = bad
    with pytest.raises(exc, match=regex):
        CALLS[fn](**kwargs)


@pytest.mark.parametrize("fn", sorted(CALLS))
def test_base_calls_are_valid(fn):
    """The catalogue's base calls work, so each case fails on its one bad argument."""
    CALLS[fn]()


def test_valid_edge_values_still_work():
    """Integral floats for counts, numpy-free real numbers, embeddings with a tensor null label."""
    out = CALLS["sample"](steps=2.0, eps=0.5, shape=(1, 3))
    assert out.x.shape == (1, 3) and bool(torch.isfinite(out.x).all())
    emb = sdekit.classifier_free_guidance(cfg_net, torch.randn(2, 3), 2.0, torch.zeros(3))
    assert emb(torch.zeros(2, 2), torch.ones(2)).shape == (2, 2)
    assert sdekit.BrownianTree(0, 1, (2,), seed=0, depth=3.0, dtype=torch.float64).depth == 3
    assert sdekit.VPSDE(torch.tensor(0.1), 20, 1).beta_min == pytest.approx(0.1)


def _finite(t: torch.Tensor) -> bool:
    return bool(torch.isfinite(t).all())


def _draw(data, good: dict, bad: dict) -> tuple[dict, list]:
    """Good values for every argument except up to two, which get a bad value."""
    names = data.draw(st.lists(st.sampled_from(sorted(bad)), max_size=2, unique=True), label="bad arguments")
    kwargs = {k: data.draw(st.sampled_from(bad[k] if k in names else good[k]), label=k) for k in good}
    return kwargs, names


SAMPLE_GOOD = dict(method=list(SAMPLE_METHODS), steps=[1, 2, 3, 2.0], eps=[None, 1e-3, 0.5, 0.999],
                   shape=[(2, 2), (1, 3), (3, 1, 2)], corrector=[None, "langevin"], device=[None, "cpu"])
SAMPLE_BAD = dict(method=["bogus", None], steps=[0, -1, 2.5, INF, NAN, True, "1", None],
                  eps=[0, 0.0, -1e-3, 1.0, 2.0, NAN, INF, True, "0.1"],
                  shape=[(0, 2), (2,), (), (2, 0), (2.5, 2), (INF, 2), "ab", None], corrector=["bogus", 1],
                  device=[CUDA, "bogus", 3.5])


#: Methods that take no Langevin corrector (a ValueError names it).
NO_CORRECTOR = ("ode", "dpmpp_2m", "ncsn") + tuple(SIGMA_SAMPLERS)


@settings(max_examples=40, derandomize=True, deadline=None)
@given(data=st.data())
def test_fuzz_sample(data):
    kw, bad = _draw(data, SAMPLE_GOOD, SAMPLE_BAD)
    shape = kw.pop("shape")
    try:
        out = sdekit.sample(score, VP, shape, max_steps=200, seed=0, **kw)
    except (ValueError, TypeError):
        assert bad or (kw["corrector"] and kw["method"] in NO_CORRECTOR), "valid input was rejected"
        return
    assert not bad, f"bad {bad} accepted"
    assert out.x.shape == tuple(shape) and _finite(out.x)


LL_GOOD = dict(x=[torch.zeros(2, 2), torch.ones(1, 3), 0.5 * torch.ones(2, 1, 2)], eps=[1e-5, 1e-3, 0.5],
               probes=[1, 2, 2.0], trace=["hutchinson", "exact"], sde=[VP, sdekit.VESDE(), sdekit.EDMSDE()])
LL_BAD = dict(x=[torch.zeros(0, 2), torch.zeros(2), torch.full((2, 2), NAN), torch.zeros(2, 2, dtype=torch.int64),
                 "x", None], eps=[0, 0.0, -1.0, 1.0, NAN, INF, True, "1e-5", None],
              probes=[0, -1, 2.5, INF, True, "1", None], trace=["bogus", None], sde=["vp", None, 1.0])


def _data_score(sde):
    """The exact score of data ~ N(0, I) under a linear SDE: a gentle probability flow."""

    def s(x, t, **kw):
        var = sde.mean_coeff(t) ** 2 + sde.std(t) ** 2
        return -x / var.reshape((-1,) + (1,) * (x.dim() - 1))

    return s


@settings(max_examples=30, derandomize=True, deadline=None)
@given(data=st.data())
def test_fuzz_log_likelihood(data):
    kw, bad = _draw(data, LL_GOOD, LL_BAD)
    sde = kw.pop("sde")
    model = _data_score(sde) if hasattr(sde, "std") else score
    try:
        out = sdekit.log_likelihood(model, sde, kw.pop("x"), seed=0, max_steps=2000, **kw)
    except (ValueError, TypeError):
        assert bad, "valid input was rejected"
        return
    assert not bad, f"bad {bad} accepted"
    assert _finite(out.log_prob)


def test_per_call_labels_are_checked_without_a_sync():
    """Labels passed per call (labels=None): float labels with an int null_label are a TypeError naming labels."""
    guided = sdekit.classifier_free_guidance(cfg_net, None, 2.0, 10)
    with pytest.raises(TypeError, match="labels"):
        guided(torch.zeros(2, 2), torch.ones(2), y=torch.tensor([0.0, 1.0]))
    assert guided(torch.zeros(2, 2), torch.ones(2), y=torch.tensor([0, 1])).shape == (2, 2)
