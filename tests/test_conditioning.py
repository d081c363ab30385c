"""Per-sample conditioning (``model_kwargs``) through every sampler, the likelihood and guidance.

The conditional model is an exact one: class ``k`` is the isotropic Gaussian
``N(μ_k, s_k² I)``, so under a linear SDE its marginal is
``N(m μ_k, (m² s_k² + σ²) I)`` and its score is element-wise arithmetic: the
model is batch-invariant bit for bit, and a row of a conditional batch must
equal (``torch.equal``) the batch of one with the same index and conditioning.
"""

import math

import pytest
import torch

import sdekit
from sdekit.conditioning import check_model_kwargs, flatten_model_kwargs, select_model_kwargs

SDE = sdekit.VPSDE()
D = 4
K = 3
MU = torch.tensor([[-2.0, 1.0, 0.0, 3.0], [2.0, -1.0, 0.5, 0.0], [0.0, 0.0, -3.0, 1.0]], dtype=torch.float64)
S = torch.tensor([0.05, 1.0, 3.0], dtype=torch.float64)  # very different stiffness: RK45 step counts differ


def class_score(x, t, y, extra=None):
    """Exact score of class ``y`` (``(B,)`` int64) under ``SDE``; ``extra["shift"]`` ``(B, D)`` moves the mean."""
    m = SDE.mean_coeff(t)[:, None]
    var = m**2 * S.to(x)[y][:, None] ** 2 + SDE.std(t)[:, None] ** 2
    mean = m * MU.to(x)[y]
    if extra is not None:
        mean = mean + m * extra["shift"]
    return -(x - mean) / var


def class_log_prob(x, t: float, y):
    """Exact log-density ``(B,)`` of class ``y`` at time ``t``."""
    tt = torch.full((x.shape[0],), t, dtype=x.dtype)
    m, s = SDE.mean_coeff(tt)[:, None], SDE.std(tt)[:, None]
    var = m**2 * S.to(x)[y][:, None] ** 2 + s**2
    return (-0.5 * (x - m * MU.to(x)[y]) ** 2 / var - 0.5 * torch.log(2 * math.pi * var)).sum(1)


def _cond(B):
    g = torch.Generator().manual_seed(5)
    y = torch.arange(B) % K
    shift = 0.1 * torch.randn(B, D, generator=g, dtype=torch.float64)
    return {"y": y, "extra": {"shift": shift}}


def _row(kw, b):
    return select_model_kwargs(kw, torch.tensor([b]))


METHODS = [
    dict(method="euler_maruyama", steps=40),
    dict(method="euler_maruyama", steps=20, corrector="langevin", corrector_norm="batch_mean", snr=0.1),
    dict(method="reverse_diffusion", steps=30, corrector="annealed_langevin"),
    dict(method="ancestral", steps=30),
    dict(method="dpmpp_2m", steps=15),
    dict(method="ode", rtol=1e-6, atol=1e-6),
]


@pytest.mark.parametrize("opts", METHODS, ids=lambda o: o["method"] + ("+" + o["corrector"] if "corrector" in o else ""))
def test_each_row_is_its_batch_of_one(opts):
    if opts.get("corrector_norm") == "batch_mean":  # couples the batch by design: per-sample rule instead
        opts = {**opts, "corrector_norm": "per_sample"}
    B = 7
    kw = _cond(B)
    full = sdekit.sample(class_score, SDE, (B, D), seed=11, dtype=torch.float64, model_kwargs=kw, **opts)
    for b in range(B):
        one = sdekit.sample(class_score, SDE, (1, D), seed=11, dtype=torch.float64, model_kwargs=_row(kw, b),
                            sample_index=torch.tensor([b]), **opts)
        assert torch.equal(full.x[b], one.x[0]), f"row {b}"
        assert torch.equal(full.nfe[b], one.nfe[0])


def test_ode_active_set_shrinks_and_rows_keep_their_conditioning():
    B = 9
    kw = _cond(B)
    seen = []

    def score(x, t, y, extra):
        assert y.shape[0] == x.shape[0] == extra["shift"].shape[0]
        seen.append(x.shape[0])
        return class_score(x, t, y, extra)

    out = sdekit.sample(score, SDE, (B, D), method="ode", seed=2, dtype=torch.float64, model_kwargs=kw)
    assert min(seen) < B, "the test needs samples that finish at different steps"
    assert len(set(out.steps.tolist())) > 1


@pytest.mark.parametrize("trace", ["exact", "hutchinson"])
def test_likelihood_rows_match_batch_of_one_and_the_closed_form(trace):
    B, eps = 6, 1e-3
    kw = _cond(B)
    kw["extra"]["shift"].zero_()
    g = torch.Generator().manual_seed(3)
    y = kw["y"]
    x = MU[y] * SDE.mean_coeff(torch.tensor(eps)) + torch.randn(B, D, generator=g, dtype=torch.float64) * S[y, None]
    opts = dict(trace=trace, probes=2, eps=eps, rtol=1e-7, atol=1e-7, seed=4)
    ll = sdekit.log_likelihood(class_score, SDE, x, model_kwargs=kw, **opts)
    for b in range(B):
        one = sdekit.log_likelihood(class_score, SDE, x[b : b + 1], model_kwargs=_row(kw, b),
                                    sample_index=torch.tensor([b]), **opts)
        assert torch.equal(ll.log_prob[b], one.log_prob[0]), f"row {b}"
    if trace == "exact":  # exact flow of a Gaussian: log p_eps(x | y) in closed form once the prior N(0, I)
        # is swapped for the class's true marginal at T
        exact = class_log_prob(x, eps, y)
        prior_gap = (class_log_prob(ll.x_T, SDE.T, y) - ll.prior_log_prob)
        torch.testing.assert_close(ll.log_prob + prior_gap, exact, atol=1e-4, rtol=0)
    # the conditioning matters: the wrong labels give other densities
    wrong = sdekit.log_likelihood(class_score, SDE, x, model_kwargs={**kw, "y": (y + 1) % K}, **opts)
    assert bool((wrong.log_prob < ll.log_prob).all())


def test_cfg_with_per_sample_labels_on_the_ode_and_likelihood():
    """Labels bound in the guidance wrapper, or passed as model_kwargs, give the same result on every path."""
    B = 6
    y = torch.arange(B) % K
    null = K

    def model(x, t, labels):
        uncond = class_score(x, t, torch.zeros_like(labels))
        cond = class_score(x, t, labels.clamp(max=K - 1))
        return torch.where((labels == null)[:, None], uncond, cond)

    bound = sdekit.classifier_free_guidance(model, y, 1.0, null_label=null)
    per_call = sdekit.classifier_free_guidance(model, None, 1.0, null_label=null)
    for method in ("ode", "dpmpp_2m", "euler_maruyama"):
        a = sdekit.sample(bound, SDE, (B, D), method=method, steps=10, seed=1, dtype=torch.float64)
        b = sdekit.sample(per_call, SDE, (B, D), method=method, steps=10, seed=1, dtype=torch.float64,
                          model_kwargs={"y": y})
        c = sdekit.sample(class_score, SDE, (B, D), method=method, steps=10, seed=1, dtype=torch.float64,
                          model_kwargs={"y": y})
        assert torch.equal(a.x, b.x), method
        torch.testing.assert_close(a.x, c.x, rtol=0, atol=1e-12)  # γ = 1: the conditional model itself
    x = torch.randn(B, D, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    la = sdekit.log_likelihood(bound, SDE, x, trace="exact")
    lc = sdekit.log_likelihood(class_score, SDE, x, trace="exact", model_kwargs={"y": y})
    torch.testing.assert_close(la.log_prob, lc.log_prob, rtol=0, atol=1e-9)


def test_cfg_doubles_the_other_conditioning_tensors():
    B = 3
    got = {}

    def model(x, t, labels, mask):
        got["labels"], got["mask"] = labels, mask
        return x * mask

    guided = sdekit.classifier_free_guidance(model, None, 2.0, null_label=9)
    mask = torch.rand(B, 2)
    guided(torch.ones(B, 2), torch.full((B,), 0.5), y=torch.tensor([0, 1, 2]), mask=mask)
    assert torch.equal(got["labels"], torch.tensor([0, 1, 2, 9, 9, 9]))
    assert torch.equal(got["mask"], torch.cat([mask, mask]))


def test_adapters_pass_model_kwargs_to_the_network():
    seen = {}

    def eps_net(x, t, context):
        seen["context"] = context
        return torch.zeros_like(x)

    score = sdekit.score_from_epsilon(eps_net, SDE)
    ctx = torch.randn(5, 7)
    sdekit.sample(score, SDE, (5, 2), method="ode", seed=0, model_kwargs={"context": ctx})
    assert seen["context"].shape == (5, 7)


def test_bad_conditioning_is_named():
    with pytest.raises(ValueError, match=r"model_kwargs\['y'\] must have the batch as leading dimension"):
        sdekit.sample(class_score, SDE, (4, D), method="ode", model_kwargs={"y": torch.arange(3)})
    with pytest.raises(ValueError, match=r"model_kwargs\['extra'\]\['shift'\]"):
        sdekit.sample(class_score, SDE, (4, D), steps=3,
                      model_kwargs={"y": torch.arange(4) % K, "extra": {"shift": torch.zeros(2, D)}})
    with pytest.raises(ValueError, match=r"model_kwargs\['y'\]"):
        sdekit.log_likelihood(class_score, SDE, torch.zeros(4, D), model_kwargs={"y": torch.tensor(1)})
    with pytest.raises(TypeError, match="model_kwargs must be a mapping"):
        sdekit.sample(class_score, SDE, (4, D), steps=3, model_kwargs=[1, 2])
    with pytest.raises(TypeError, match="keys must be strings"):
        check_model_kwargs({1: torch.zeros(4)}, 4)
    guided = sdekit.classifier_free_guidance(lambda x, t, y: x, torch.zeros(4, dtype=torch.int64), 1.0, 9)
    with pytest.raises(ValueError, match="collide"):
        sdekit.sample(guided, SDE, (4, D), steps=3, model_kwargs={"_sdekit_guidance_labels": torch.zeros(4)})
    with pytest.raises(ValueError, match=r"model_kwargs\['y'\]"):
        sdekit.classifier_free_guidance(lambda x, t, y: x, None, 1.0, 9)(torch.zeros(2, D), torch.ones(2))


def test_flatten_and_rebuild_round_trip():
    kw = {"a": torch.arange(3), "b": {"c": torch.ones(3, 2), "n": 4}, "d": [torch.zeros(3), "s"], "e": None}
    leaves, rebuild = flatten_model_kwargs(kw)
    assert len(leaves) == 3
    again = rebuild(tuple(v[:2] for v in leaves))
    assert again["b"]["n"] == 4 and again["d"][1] == "s" and again["e"] is None
    assert again["b"]["c"].shape == (2, 2) and again["d"][0].shape == (2,)
    sel = select_model_kwargs(kw, torch.tensor([2, 0]))
    assert torch.equal(sel["a"], torch.tensor([2, 0]))


def test_conditioning_on_another_device_is_named_for_the_gathering_paths():
    labels = torch.zeros(4, dtype=torch.int64, device="meta")
    with pytest.raises(ValueError, match=r"model_kwargs\['y'\] is on meta but the samples are on cpu"):
        sdekit.sample(class_score, SDE, (4, D), method="ode", model_kwargs={"y": labels})
    with pytest.raises(ValueError, match=r"model_kwargs\['y'\] is on meta"):
        sdekit.log_likelihood(class_score, SDE, torch.zeros(4, D), model_kwargs={"y": labels})
