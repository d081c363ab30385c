"""Per-sample ``extra_args`` and keyed noise in sdekit's k-diffusion samplers.

The denoiser is the exact one of a label-dependent Gaussian ``N(μ_label + shift, diag v_label)``,
written with element-wise arithmetic only, so every row of a batch is computed
bit for bit as in a batch of one: a sampler that keeps each row's conditioning
(and, with ``seed=``, its noise) with the row gives ``torch.equal`` results.
"""

import pytest
import torch
from sdekit.kernels import normal

import sdekit
from sdekit.conditioning import select_model_kwargs
from sdekit.integrations import k_diffusion as K

MEANS = torch.tensor([[-2.0, 1.0], [3.0, -1.5], [0.5, 4.0]], dtype=torch.float64)
VARIANCES = torch.tensor([[0.3, 1.2], [0.05, 0.5], [2.0, 0.01]], dtype=torch.float64)
SEED = 1234
SIGMAS = torch.tensor([80.0, 30.0, 9.0, 3.0, 1.0, 0.3, 0.08, 0.02, 0.0], dtype=torch.float64)


def component_denoiser(means=MEANS, variances=VARIANCES, batches=None):
    """``D(x, σ) = μ + v/(v + σ²)(x − μ)``: exact for ``x = x_0 + σ ε``, ``x_0 ~ N(μ, diag v)``, per row's label."""

    def D(x, sigma, cond, shift, mode="exact"):
        label = cond["label"]
        if not label.shape[0] == shift.shape[0] == x.shape[0] == sigma.shape[0]:
            raise AssertionError(f"rows of x {x.shape[0]} and extra_args {label.shape[0]}, {shift.shape[0]} differ")
        assert mode == "exact"  # a non-tensor entry passes through unchanged
        if batches is not None:
            batches.append(x.shape[0])
        mu = means[label].to(x.dtype) + shift[:, None]
        v = variances[label].to(x.dtype)
        return mu + v / (v + sigma[:, None] ** 2) * (x - mu)

    return D


def _batch(dtype, B=6):
    g = torch.Generator().manual_seed(0)
    labels = torch.tensor([0, 1, 2, 2, 0, 1])[:B]
    extra = {"cond": {"label": labels}, "shift": torch.randn(B, generator=g, dtype=dtype), "mode": "exact"}
    x = 80.0 * torch.randn(B, 2, generator=g, dtype=dtype)
    index = torch.tensor([10, 3, 7, 0, 42, 5], dtype=torch.int64)[:B]
    return x, extra, index


SAMPLERS = {
    "euler": lambda m, x, s, ea, idx: K.sample_euler(m, x, s, ea, disable=True),
    "heun": lambda m, x, s, ea, idx: K.sample_heun(m, x, s, ea, disable=True),
    "euler_churn": lambda m, x, s, ea, idx: K.sample_euler(m, x, s, ea, disable=True, s_churn=4.0, seed=SEED,
                                                          sample_index=idx),
    "heun_churn": lambda m, x, s, ea, idx: K.sample_heun(m, x, s, ea, disable=True, s_churn=4.0, s_tmax=10.0,
                                                        seed=SEED, sample_index=idx),
    "euler_ancestral": lambda m, x, s, ea, idx: K.sample_euler_ancestral(m, x, s, ea, disable=True, seed=SEED,
                                                                         sample_index=idx),
    "euler_ancestral_eta": lambda m, x, s, ea, idx: K.sample_euler_ancestral(m, x, s, ea, disable=True, eta=0.5,
                                                                             seed=SEED, sample_index=idx),
    "dopri5": lambda m, x, s, ea, idx: K.sample_dopri5(m, x, s, ea, rtol=1e-6, atol=1e-6),
    "dpmpp_2m": lambda m, x, s, ea, idx: K.sample_dpmpp_2m(m, x, s, ea, disable=True),
}


def _rows_are_batches_of_one(run, x, extra, index):
    full = run(x, extra, index)
    assert full.shape == x.shape and bool(torch.isfinite(full).all())
    for b in range(x.shape[0]):
        row = torch.tensor([b])
        single = run(x[b:b + 1], select_model_kwargs(extra, row), index[b:b + 1])
        assert torch.equal(full[b:b + 1], single), (b, full[b], single[0])
    return full


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_each_row_is_what_a_batch_of_one_gives(name, dtype):
    x, extra, index = _batch(dtype)
    sampler = SAMPLERS[name]
    full = _rows_are_batches_of_one(lambda x, ea, idx: sampler(component_denoiser(), x, SIGMAS.to(dtype), ea, idx),
                                    x, extra, index)
    if name in ("euler", "heun", "dopri5", "dpmpp_2m"):  # deterministic: the label changes the result
        swapped = dict(extra, cond={"label": extra["cond"]["label"].flip(0)})
        other = sampler(component_denoiser(), x, SIGMAS.to(dtype), swapped, index)
        assert not torch.allclose(other, full)


def test_dopri5_gathers_extra_args_with_the_shrinking_active_set():
    """Rows of very different difficulty finish at different steps; each still follows its own exact flow.

    For ``N(μ, diag v)`` the flow from σ_0 to σ_min scales ``x − μ`` by ``√((v + σ_min²)/(v + σ_0²))``, and
    the last step to 0 is ``D(x, σ_min)``."""
    means = torch.tensor([[1.0, -1.0], [-3.0, 2.0]], dtype=torch.float64)
    variances = torch.tensor([[1e-7, 1e-6], [25.0, 40.0]], dtype=torch.float64)  # sharp (hard) and broad (easy)
    B = 8
    g = torch.Generator().manual_seed(5)
    labels = torch.tensor([0, 1, 1, 0, 1, 0, 1, 1])
    extra = {"cond": {"label": labels}, "shift": torch.randn(B, generator=g, dtype=torch.float64)}
    x = 80.0 * torch.randn(B, 2, generator=g, dtype=torch.float64)
    sigmas = torch.tensor([80.0, 1e-4, 0.0], dtype=torch.float64)
    batches = []
    got, info = K.sample_dopri5(component_denoiser(means, variances, batches), x, sigmas, extra, rtol=1e-8,
                                atol=1e-8, return_info=True)
    hard = labels == 0
    assert int(info["nfe"][hard].min()) > int(info["nfe"][~hard].max())  # the active set shrinks ...
    assert min(batches) < B and B in batches  # ... and the model saw it shrink
    mu, v = means[labels] + extra["shift"][:, None], variances[labels]
    flowed = mu + ((v + 1e-8) / (v + 6400.0)).sqrt() * (x - mu)
    exact = mu + v / (v + 1e-8) * (flowed - mu)
    torch.testing.assert_close(got, exact, rtol=1e-6, atol=1e-6)
    index = torch.arange(B)
    _rows_are_batches_of_one(
        lambda x, ea, idx: K.sample_dopri5(component_denoiser(means, variances), x, sigmas, ea, rtol=1e-8, atol=1e-8),
        x, extra, index)


@pytest.mark.parametrize("name", sorted(SAMPLERS))
@pytest.mark.parametrize("bad, where", [
    ({"cond": {"label": torch.tensor([0, 1, 2])}}, r"extra_args\['cond'\]\['label'\]"),
    ({"shift": torch.tensor(0.5, dtype=torch.float64)}, r"extra_args\['shift'\]"),
])
def test_extra_args_with_the_wrong_leading_dimension_are_rejected(name, bad, where):
    x, extra, index = _batch(torch.float64)
    with pytest.raises(ValueError, match=where):
        SAMPLERS[name](component_denoiser(), x, SIGMAS, {**extra, **bad}, index)


def test_extra_args_must_be_a_mapping():
    x, _, _ = _batch(torch.float64)
    with pytest.raises(TypeError, match="extra_args"):
        K.sample_euler(component_denoiser(), x, SIGMAS, [torch.zeros(6)], disable=True)


def test_keyed_noise_layout_and_reproducibility():
    """Step ``i`` draws ``sdekit.kernels.normal(seed, sample_index, 1 + i, ...)``; seed and index both matter."""
    x, extra, index = _batch(torch.float64)
    model = component_denoiser()

    def run(seed=SEED, idx=index):
        return K.sample_euler_ancestral(model, x, SIGMAS, extra, disable=True, seed=seed, sample_index=idx)

    steps = iter(range(len(SIGMAS)))

    def keyed(sigma, sigma_next):
        return normal(SEED, index, 1 + next(steps), x.shape[1:], dtype=x.dtype)

    by_hand = K.sample_euler_ancestral(model, x, SIGMAS, extra, disable=True, noise_sampler=keyed)
    assert torch.equal(run(), by_hand)
    assert torch.equal(run(), run())
    assert not torch.allclose(run(), run(seed=SEED + 1))
    assert not torch.allclose(run(), run(idx=index + 100))
    default_index = K.sample_euler_ancestral(model, x, SIGMAS, extra, disable=True, seed=SEED)
    assert torch.equal(default_index, run(idx=torch.arange(6)))
    perm = torch.tensor([3, 0, 5, 1, 4, 2])
    permuted = K.sample_euler_ancestral(model, x[perm], SIGMAS, select_model_kwargs(extra, perm), disable=True,
                                        seed=SEED, sample_index=index[perm])
    assert torch.equal(permuted, run()[perm])


def test_generator_and_global_rng_are_still_the_default():
    x, extra, _ = _batch(torch.float64)
    model = component_denoiser()

    def run(g):
        return K.sample_euler(model, x, SIGMAS, extra, disable=True, s_churn=4.0, generator=g)

    assert torch.equal(run(torch.Generator().manual_seed(3)), run(torch.Generator().manual_seed(3)))
    with torch.random.fork_rng():
        torch.manual_seed(3)
        first = run(None)
        torch.manual_seed(3)
        assert torch.equal(first, run(None))


@pytest.mark.parametrize("kwargs, match", [
    ({"seed": SEED, "generator": torch.Generator()}, "not both"),
    ({"sample_index": torch.arange(6)}, "needs seed"),
    ({"seed": -1}, "seed"),
    ({"seed": SEED, "sample_index": torch.arange(5)}, "sample_index"),
    ({"seed": SEED, "sample_index": torch.zeros(6)}, "sample_index"),
])
@pytest.mark.parametrize("name", ["euler", "heun", "euler_ancestral"])
def test_bad_noise_arguments_are_rejected(name, kwargs, match):
    x, extra, _ = _batch(torch.float64)
    sampler = getattr(K, f"sample_{name}")
    with pytest.raises((ValueError, TypeError), match=match):
        sampler(component_denoiser(), x, SIGMAS, extra, disable=True, **kwargs)


def test_noise_sampler_and_seed_are_exclusive():
    x, extra, _ = _batch(torch.float64)
    with pytest.raises(ValueError, match="not both"):
        K.sample_euler_ancestral(component_denoiser(), x, SIGMAS, extra, disable=True, seed=SEED,
                                 noise_sampler=lambda s, s_next: torch.zeros_like(x))


def test_dopri5_callback_reports_the_whole_batch():
    x, extra, _ = _batch(torch.float64)
    seen = []
    out = K.sample_dopri5(component_denoiser(), x, SIGMAS, extra, callback=seen.append)
    assert len(seen) == 1 and torch.equal(seen[0]["denoised"], out)
    K.sample_dopri5(component_denoiser(), x, SIGMAS[:-1], extra, callback=seen.append)
    assert seen[1]["denoised"] is None and seen[1]["x"].shape == x.shape


@pytest.mark.parametrize("method", ["ode", "dpmpp_2m"])
def test_denoiser_score_conditioning_is_gathered_by_sdekit_sample(method):
    """``denoiser_score(model, extra_args)`` in :func:`sdekit.sample`: its bound rows follow RK45's active set."""
    _, extra, index = _batch(torch.float64)
    sde = sdekit.EDMSDE(0.02, 80.0)

    def run(ea, idx):
        # EDMSDE has no prior_from_normal, so the keyed prior draw is made here (stream 0, as sdekit.sample's).
        x_init = 80.0 * normal(SEED, idx, 0, (2,), dtype=torch.float64)
        return sdekit.sample(K.denoiser_score(component_denoiser(), ea), sde, (idx.shape[0], 2), method=method,
                             steps=12, x_init=x_init, dtype=torch.float64)

    full = run(extra, index)
    for b in range(6):
        single = run(select_model_kwargs(extra, torch.tensor([b])), index[b:b + 1])
        assert torch.equal(full.x[b:b + 1], single.x)
    if method == "ode":
        assert len(set(full.nfe.tolist())) > 1  # rows took different steps: the active set shrank


def test_denoiser_score_checks_its_extra_args():
    _, extra, _ = _batch(torch.float64)
    score = K.denoiser_score(component_denoiser(), extra)
    x, sigma = torch.zeros(6, 2, dtype=torch.float64), torch.ones(6, dtype=torch.float64)
    assert score(x, sigma).shape == (6, 2)
    with pytest.raises(ValueError, match=r"extra_args\['cond'\]\['label'\]"):
        score(x[:3], sigma[:3])  # bound to 6 rows, evaluated on 3
    with pytest.raises(ValueError, match=r"extra_args\['shift'\]"):
        K.denoiser_score(component_denoiser(), {**extra, "shift": torch.zeros(4)})
    with pytest.raises(TypeError, match="extra_args"):
        K.denoiser_score(component_denoiser(), [torch.zeros(6)])
    with pytest.raises(TypeError, match="bound"):
        score(x, sigma, shift=extra["shift"])  # passed twice
