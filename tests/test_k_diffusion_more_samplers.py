"""sdekit's LMS, DPM-Solver-2 (ancestral), DPM-Solver++(2S) ancestral and (2M)/(3M) SDE k-diffusion samplers.

Against k-diffusion 0.1.1.post1's own on the same denoiser, σ grid (Karras and
log-uniform) and noise (the same ``noise_sampler``, which also records its
calls), then sdekit's own contract: keyed ``seed=`` noise and per-sample
``extra_args`` ride with the rows, errors name the argument.
"""

import functools
import inspect

import pytest
import torch
from k_diffusion_reference import load_sampling
from sdekit.kernels import normal
from test_k_diffusion import N_STEPS
from test_k_diffusion import _problem as base_problem
from test_k_diffusion_conditioning import SEED, SIGMAS, _batch, _rows_are_batches_of_one, component_denoiser

from sdekit.conditioning import select_model_kwargs
from sdekit.integrations import k_diffusion as ours
from sdekit.integrations.k_diffusion_multistep import lms_coefficients

KD = load_sampling()
needs_kd = pytest.mark.skipif(isinstance(KD, str), reason=KD if isinstance(KD, str) else "")
NEW = ("lms", "dpm_2", "dpm_2_ancestral", "dpmpp_2s_ancestral", "dpmpp_2m_sde", "dpmpp_3m_sde")
NOISY = ("dpm_2_ancestral", "dpmpp_2s_ancestral", "dpmpp_2m_sde", "dpmpp_3m_sde")

#: (sampler, keyword arguments).  eta = 1.5 clips σ_up to σ' (σ_down = 0 before the end) where σ'/σ <= 0.745:
#: on the later half of the Karras grid and on every step of the log-uniform one (σ'/σ = 0.694).
CASES = [
    ("lms", {}), ("lms", {"order": 2}), ("lms", {"order": 6}),
    ("dpm_2", {}),
    ("dpm_2_ancestral", {}), ("dpm_2_ancestral", {"eta": 0.0}), ("dpm_2_ancestral", {"eta": 1.5, "s_noise": 0.7}),
    ("dpmpp_2s_ancestral", {}), ("dpmpp_2s_ancestral", {"eta": 0.0}), ("dpmpp_2s_ancestral", {"eta": 1.5}),
    ("dpmpp_2m_sde", {}), ("dpmpp_2m_sde", {"eta": 0.0}), ("dpmpp_2m_sde", {"solver_type": "heun"}),
    ("dpmpp_2m_sde", {"eta": 0.0, "solver_type": "heun"}), ("dpmpp_2m_sde", {"eta": 0.4, "s_noise": 1.3}),
    ("dpmpp_3m_sde", {}), ("dpmpp_3m_sde", {"eta": 0.0}), ("dpmpp_3m_sde", {"eta": 0.5}),
]


def _case_id(case):
    name, kwargs = case
    return name + "".join(f"-{k}={v}" for k, v in kwargs.items())


@functools.cache
def _problem(kind, grid, dtype):
    return base_problem(kind, dtype, grid)


class RecordedNoise:
    """A seeded ``noise_sampler``: call ``k`` returns the ``k``-th of a fixed sequence, and the call is recorded."""

    def __init__(self, x, seed=11):
        self.shape, self.dtype, self.seed, self.calls = x.shape, x.dtype, seed, []

    def __call__(self, sigma, sigma_next):
        self.calls.append((float(sigma), float(sigma_next)))
        gen = torch.Generator().manual_seed(self.seed * 1000 + len(self.calls))
        return torch.randn(self.shape, generator=gen, dtype=self.dtype)


def _run_both(name, kwargs, model, x, sigmas):
    """(k-diffusion's result, ours, their callback payloads, their noise samplers)."""
    out, seen, noise = [], [], []
    for module in (KD, ours):
        kw = dict(kwargs)
        if name in NOISY:
            kw["noise_sampler"] = RecordedNoise(x)
            noise.append(kw["noise_sampler"])
        log = []
        out.append(getattr(module, f"sample_{name}")(model, x, sigmas, disable=True, callback=log.append, **kw))
        seen.append(log)
    return out[0], out[1], seen, noise


def _scaled_diff(got, expected):
    return float((got - expected).abs().max()) / max(1.0, float(expected.abs().max()))


def _check_callbacks(seen_kd, seen, tol):
    """Equal keys, steps and σ's; ``x`` and ``denoised`` within ``tol`` of the scale of this and the previous
    state (a step that lands on ``D`` from a state of size 200 rounds at that size)."""
    assert [d["i"] for d in seen] == [d["i"] for d in seen_kd] == list(range(N_STEPS))
    previous = 1.0
    for ref, got in zip(seen_kd, seen):
        assert set(got) == set(ref) == {"x", "i", "sigma", "sigma_hat", "denoised"}
        assert float(got["sigma"]) == float(ref["sigma"])
        assert abs(float(got["sigma_hat"]) - float(ref["sigma_hat"])) <= 1e-15 * float(ref["sigma_hat"])
        scale = max(previous, float(ref["x"].abs().max()))
        assert float((got["x"] - ref["x"]).abs().max()) <= tol * scale
        assert float((got["denoised"] - ref["denoised"]).abs().max()) <= tol * scale
        previous = float(ref["x"].abs().max())


@needs_kd
@pytest.mark.parametrize("kind", ["mixture", "network"])
@pytest.mark.parametrize("grid", ["karras", "exponential"])
@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_float64_agrees_with_k_diffusion(case, grid, kind):
    """Same model, σ's and noise: equal to ~1e-13 of the output's scale (measured max |Δ| <= 9e-14)."""
    name, kwargs = case
    model, x, sigmas = _problem(kind, grid, torch.float64)
    expected, got, (seen_kd, seen), noise = _run_both(name, kwargs, model, x, sigmas)
    assert got.dtype == expected.dtype and got.shape == expected.shape
    assert _scaled_diff(got, expected) <= 1e-12, _scaled_diff(got, expected)
    _check_callbacks(seen_kd, seen, 1e-12)
    if noise:
        kd_calls, our_calls = noise[0].calls, noise[1].calls
        if kwargs.get("eta", 1.0) > 0:
            assert our_calls == kd_calls  # the same draws, in the same order, with the same σ's
            assert our_calls or kwargs.get("eta") == 1.5  # (dpm_2_ancestral draws none where σ_down = 0)
        else:
            assert our_calls == []  # k-diffusion's ancestral samplers also draw (and multiply by 0); we do not


@needs_kd
@pytest.mark.parametrize("kind, tol", [("network", 1e-5), ("mixture", 5e-5)])
@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_float32_agrees_with_k_diffusion(case, kind, tol):
    """float32 (k-diffusion's scalars in float32, ours in float64): <= 1e-6 of the scale on the network.  The
    mixture's sharp posterior near σ_min amplifies float32 rounding (measured <= 1e-5 of the scale, and 3.5e-5
    for LMS of order 6, where k-diffusion's float32 weights are 4x further from the float64 run than ours)."""
    name, kwargs = case
    model, x, sigmas = _problem(kind, "karras" if kind == "network" else "exponential", torch.float32)
    expected, got, (seen_kd, seen), _ = _run_both(name, kwargs, model, x, sigmas)
    assert got.dtype == torch.float32
    assert _scaled_diff(got, expected) <= tol, _scaled_diff(got, expected)
    _check_callbacks(seen_kd, seen, tol)


@needs_kd
@pytest.mark.parametrize("name", NEW)
def test_without_the_step_to_zero(name):
    model, x, sigmas = _problem("mixture", "karras", torch.float64)
    expected, got, _, _ = _run_both(name, {}, model, x, sigmas[:-1])
    assert _scaled_diff(got, expected) <= 1e-12


@needs_kd
@pytest.mark.parametrize("name, kwargs", [
    ("dpm_2_ancestral", {}), ("dpm_2_ancestral", {"eta": 0.5}), ("dpmpp_2s_ancestral", {}),
    ("dpm_2", {"s_churn": 5.0}),
])
def test_default_noise_is_k_diffusions_global_rng(name, kwargs):
    """Where k-diffusion's default is ``randn_like``, ours draws the same global-RNG stream (every step churns)."""
    model, x, sigmas = _problem("mixture", "karras", torch.float64)

    def run(module):
        with torch.random.fork_rng():
            torch.manual_seed(7)
            return getattr(module, f"sample_{name}")(model, x, sigmas, disable=True, **kwargs)

    assert _scaled_diff(run(ours), run(KD)) <= 1e-12


@pytest.mark.parametrize("name, kwargs", [
    ("dpmpp_2m_sde", {}), ("dpmpp_2m_sde", {"solver_type": "heun"}), ("dpmpp_3m_sde", {"eta": 0.7}),
    ("dpmpp_2s_ancestral", {}), ("dpm_2_ancestral", {}),
])
def test_default_noise_draws_from_the_generator(name, kwargs):
    """The documented difference for the SDE samplers: no Brownian tree, one normal per noisy step from
    ``generator`` (the global RNG without one), i.e. a noise_sampler that draws from that generator."""
    model, x, sigmas = _problem("mixture", "karras", torch.float64)
    sampler = getattr(ours, f"sample_{name}")
    got = sampler(model, x, sigmas, disable=True, generator=torch.Generator().manual_seed(3), **kwargs)
    g = torch.Generator().manual_seed(3)
    by_hand = sampler(model, x, sigmas, disable=True, **kwargs,
                      noise_sampler=lambda s, s_next: torch.randn(x.shape, generator=g, dtype=x.dtype))
    assert torch.equal(got, by_hand)
    with torch.random.fork_rng():
        torch.manual_seed(3)
        assert torch.equal(sampler(model, x, sigmas, disable=True, **kwargs), got)
    other = sampler(model, x, sigmas, disable=True, generator=torch.Generator().manual_seed(4), **kwargs)
    assert not torch.allclose(other, got)


@needs_kd
def test_eta_zero_sde_samplers_are_the_ode_samplers():
    """η = 0: 2M SDE (midpoint) is DPM-Solver++(2M), and no noise is drawn at all."""
    model, x, sigmas = _problem("mixture", "karras", torch.float64)
    ode = ours.sample_dpmpp_2m(model, x, sigmas, disable=True)
    for seed_kw in ({}, {"seed": SEED}):
        got = ours.sample_dpmpp_2m_sde(model, x, sigmas, disable=True, eta=0.0, **seed_kw)
        assert _scaled_diff(got, ode) <= 1e-14
    assert _scaled_diff(ours.sample_dpmpp_3m_sde(model, x, sigmas, disable=True, eta=0.0),
                        KD.sample_dpmpp_3m_sde(model, x, sigmas, disable=True, eta=0.0)) <= 1e-12


def test_lms_coefficients_integrate_polynomials_exactly():
    """Σ_j c_ij p(σ_{i−j}) = ∫_{σ_i}^{σ_{i+1}} p for every polynomial p of degree < m (m slopes)."""
    grid = KD.get_sigmas_karras(12, 0.002, 80.0).tolist() if not isinstance(KD, str) else \
        [80.0, 40.0, 17.0, 9.0, 3.5, 1.0, 0.4, 0.05, 0.002, 0.0]
    weights = lms_coefficients(grid, 4)
    assert [len(w) for w in weights[:4]] == [1, 2, 3, 4]
    for i, row in enumerate(weights):
        for degree in range(len(row)):
            a, b = grid[i], grid[i + 1]
            exact = (b ** (degree + 1) - a ** (degree + 1)) / (degree + 1)
            approx = sum(c * grid[i - j] ** degree for j, c in enumerate(row))
            assert abs(approx - exact) <= 1e-13 * max(1.0, abs(a) ** (degree + 1))


@needs_kd
def test_lms_coefficients_match_k_diffusions_quadrature():
    grid = KD.get_sigmas_exponential(N_STEPS, 0.002, 80.0).double().numpy()  # (float32 nodes: quad in float32)
    weights = lms_coefficients(grid.tolist(), 4)
    for i, row in enumerate(weights):
        ref = [KD.linear_multistep_coeff(len(row), grid, i, j) for j in range(len(row))]
        assert max(abs(c - r) for c, r in zip(row, ref)) <= 1e-13 * max(1.0, abs(grid[i]))


@needs_kd
@pytest.mark.parametrize("name", NEW)
def test_signatures_are_k_diffusions_plus_sdekits_noise_keywords(name):
    theirs = inspect.signature(getattr(KD, f"sample_{name}")).parameters
    mine = inspect.signature(getattr(ours, f"sample_{name}")).parameters
    assert list(mine)[:len(theirs)] == list(theirs)
    for key, param in theirs.items():
        assert mine[key].default == param.default and mine[key].kind == param.kind, key
    extra = list(mine)[len(theirs):]
    opt_in = ["exact_third_order"] if name == "dpmpp_3m_sde" else []  # sdekit's opt-in improvements
    assert extra == ([] if name == "lms" else ["generator", "seed", "sample_index"] + opt_in)
    if extra:
        assert mine["seed"].kind is mine["sample_index"].kind is inspect.Parameter.KEYWORD_ONLY
    assert all(mine[k].kind is inspect.Parameter.KEYWORD_ONLY and mine[k].default is False for k in opt_in)
    assert f"sample_{name}" in ours.__all__ and getattr(ours, f"sample_{name}").__doc__


# ---- keyed noise and per-sample conditioning (the element-wise denoiser of test_k_diffusion_conditioning) ----

SAMPLERS = {
    "lms": lambda m, x, s, ea, idx: ours.sample_lms(m, x, s, ea, disable=True),
    "dpm_2": lambda m, x, s, ea, idx: ours.sample_dpm_2(m, x, s, ea, disable=True),
    "dpm_2_churn": lambda m, x, s, ea, idx: ours.sample_dpm_2(m, x, s, ea, disable=True, s_churn=4.0, s_tmax=10.0,
                                                             seed=SEED, sample_index=idx),
    "dpm_2_ancestral": lambda m, x, s, ea, idx: ours.sample_dpm_2_ancestral(m, x, s, ea, disable=True, seed=SEED,
                                                                            sample_index=idx),
    "dpmpp_2s_ancestral": lambda m, x, s, ea, idx: ours.sample_dpmpp_2s_ancestral(m, x, s, ea, disable=True,
                                                                                  seed=SEED, sample_index=idx),
    "dpmpp_2m_sde": lambda m, x, s, ea, idx: ours.sample_dpmpp_2m_sde(m, x, s, ea, disable=True, seed=SEED,
                                                                      sample_index=idx),
    "dpmpp_2m_sde_heun": lambda m, x, s, ea, idx: ours.sample_dpmpp_2m_sde(m, x, s, ea, disable=True, eta=0.5,
                                                                           solver_type="heun", seed=SEED,
                                                                           sample_index=idx),
    "dpmpp_3m_sde": lambda m, x, s, ea, idx: ours.sample_dpmpp_3m_sde(m, x, s, ea, disable=True, seed=SEED,
                                                                      sample_index=idx),
    "dpmpp_3m_sde_ode": lambda m, x, s, ea, idx: ours.sample_dpmpp_3m_sde(m, x, s, ea, disable=True, eta=0.0),
}
DETERMINISTIC = ("lms", "dpm_2", "dpmpp_3m_sde_ode")


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_each_row_is_what_a_batch_of_one_gives(name, dtype):
    """Row ``b`` alone, with its own ``extra_args`` rows and ``sample_index=[b]``, equals row ``b`` of the batch."""
    x, extra, index = _batch(dtype)
    sampler = SAMPLERS[name]
    full = _rows_are_batches_of_one(lambda x, ea, idx: sampler(component_denoiser(), x, SIGMAS.to(dtype), ea, idx),
                                    x, extra, index)
    swapped = dict(extra, cond={"label": extra["cond"]["label"].flip(0)})  # the conditioning reaches the rows
    assert not torch.allclose(sampler(component_denoiser(), x, SIGMAS.to(dtype), swapped, index), full)
    if name not in DETERMINISTIC:  # the noise is keyed on (seed, sample_index): other indices, other samples
        assert not torch.allclose(sampler(component_denoiser(), x, SIGMAS.to(dtype), extra, index + 100), full)


@pytest.mark.parametrize("name", ["dpm_2_ancestral", "dpmpp_2s_ancestral", "dpmpp_2m_sde", "dpmpp_3m_sde"])
def test_keyed_noise_layout(name):
    """Step ``i`` draws ``normal(seed, sample_index, 1 + i, …)``; the default index is ``arange(B)``, so row
    ``b`` of a batch is row ``b`` alone with ``sample_index=[b]``."""
    x, extra, index = _batch(torch.float64)
    model, sampler = component_denoiser(), getattr(ours, f"sample_{name}")
    step = {float(s): i for i, s in enumerate(SIGMAS)}

    def keyed(sigma, sigma_next):
        return normal(SEED, index, 1 + step[float(sigma)], x.shape[1:], dtype=x.dtype)

    got = sampler(model, x, SIGMAS, extra, disable=True, seed=SEED, sample_index=index)
    assert torch.equal(got, sampler(model, x, SIGMAS, extra, disable=True, noise_sampler=keyed))
    default = sampler(model, x, SIGMAS, extra, disable=True, seed=SEED)
    for b in (0, 4):
        alone = sampler(model, x[b:b + 1], SIGMAS, select_model_kwargs(extra, torch.tensor([b])), disable=True,
                        seed=SEED, sample_index=torch.tensor([b]))
        assert torch.equal(alone, default[b:b + 1])


# ---- errors ----

def _call(name, **kwargs):
    x, extra, _ = _batch(torch.float64)
    return getattr(ours, f"sample_{name}")(component_denoiser(), x, SIGMAS, extra, disable=True, **kwargs)


@pytest.mark.parametrize("name, kwargs, error, match", [
    ("lms", {"order": 0}, ValueError, "order"),
    ("lms", {"order": 2.5}, ValueError, "order"),
    ("lms", {"order": "4"}, TypeError, "order"),
    ("dpm_2_ancestral", {"eta": -0.1}, ValueError, "eta"),
    ("dpmpp_2s_ancestral", {"eta": -1.0}, ValueError, "eta"),
    ("dpmpp_2m_sde", {"eta": -1.0}, ValueError, "eta"),
    ("dpmpp_3m_sde", {"eta": float("nan")}, ValueError, "eta"),
    ("dpmpp_3m_sde", {"s_noise": float("inf")}, ValueError, "s_noise"),
    ("dpmpp_2m_sde", {"solver_type": "euler"}, ValueError, "solver_type"),
    ("dpmpp_2m_sde", {"seed": SEED, "noise_sampler": lambda s, t: torch.zeros(6, 2)}, ValueError, "not both"),
    ("dpmpp_3m_sde", {"sample_index": torch.arange(6), "noise_sampler": lambda s, t: torch.zeros(6, 2)},
     ValueError, "not both"),
    ("dpm_2_ancestral", {"generator": torch.Generator(), "noise_sampler": lambda s, t: torch.zeros(6, 2)},
     ValueError, "not both"),
    ("euler_ancestral", {"generator": torch.Generator(), "noise_sampler": lambda s, t: torch.zeros(6, 2)},
     ValueError, "not both"),
    ("dpmpp_2s_ancestral", {"noise_sampler": "randn"}, TypeError, "noise_sampler"),
    ("dpmpp_2m_sde", {"noise_sampler": lambda s, t: torch.zeros(6, 3)}, ValueError, "noise_sampler"),
    ("dpmpp_2m_sde", {"seed": SEED, "generator": torch.Generator()}, ValueError, "not both"),
    ("dpmpp_3m_sde", {"sample_index": torch.arange(6)}, ValueError, "needs seed"),
    ("dpm_2", {"seed": SEED, "sample_index": torch.arange(5), "s_churn": 1.0}, ValueError, "sample_index"),
    ("dpm_2_ancestral", {"seed": -1}, ValueError, "seed"),
])
def test_bad_arguments_are_rejected_by_name(name, kwargs, error, match):
    with pytest.raises(error, match=match):
        _call(name, **kwargs)


@pytest.mark.parametrize("name", NEW)
def test_bad_extra_args_and_sigmas_are_rejected(name):
    x, extra, _ = _batch(torch.float64)
    sampler = getattr(ours, f"sample_{name}")
    with pytest.raises(ValueError, match=r"extra_args\['shift'\]"):
        sampler(component_denoiser(), x, SIGMAS, {**extra, "shift": torch.zeros(4)}, disable=True)
    with pytest.raises(ValueError, match="decreasing"):
        sampler(component_denoiser(), x, SIGMAS.flip(0), extra, disable=True)
    with pytest.raises(ValueError, match="denoiser returned shape"):
        sampler(lambda x, sigma: x[:, :1], x, SIGMAS, disable=True)
