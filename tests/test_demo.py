"""Tests of the digits demo (sdekit.demo): a tiny end-to-end run, the cache, and its parts."""

import math

import numpy as np
import pytest
import torch
from scipy import stats

import sdekit
from sdekit.demo import digits
from sdekit.demo.baseline import GaussianBaseline
from sdekit.demo.data import (
    DATA_RANGE,
    LEVELS,
    dequantized_moments,
    load_digit_splits,
    load_labelled_splits,
    to_levels,
    to_pixels,
)
from sdekit.demo.guided import (
    classify,
    conditional_log_likelihood,
    evaluate_guidance,
    interleaved_labels,
    sample_classes,
    train_digit_classifier,
)
from sdekit.demo.train import TrainConfig, build_network, sample_times

TINY = ["--train-steps", "15", "--batch-size", "32", "--width", "32", "--depth", "1", "--steps", "5",
        "--n-samples", "4", "--n-test", "6", "--rtol", "1e-3", "--atol", "1e-3", "--no-progress",
        "--cond-train-steps", "15", "--n-per-class", "10", "--guidance-scales", "1", "3", "--elbo-samples", "4"]
EXPECTED_ROWS = [
    "PC sampler (Euler-Maruyama + Langevin)",
    "Probability-flow ODE sampler (RK45)",
    "Score model likelihood (PF ODE, Hutchinson)",
    "Gaussian baseline (full covariance, MLE)",
    "Class-conditional likelihood, true labels (CFG γ = 1)",
    "Class-conditional network, null label",
]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("digits_out")
    return out, digits.main(TINY + ["--out", str(out)])


def test_tiny_run_writes_outputs(tiny_run):
    out, result = tiny_run
    assert not result["loaded_checkpoint"]
    assert [r.method for r in result["rows"]] == EXPECTED_ROWS
    for name in ("samples_pc.png", "samples_ode.png", "results.md"):
        assert (out / name).stat().st_size > 0
    assert (out / "samples_pc.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = (out / "results.md").read_text()
    for method in EXPECTED_ROWS:
        assert f"| {method} |" in md
    for name in ("samples_cfg_gamma1.png", "samples_cfg_gamma3.png", "guidance.md"):
        assert (out / name).stat().st_size > 0
    guided = result["guidance"]
    assert guided.scales == [1.0, 3.0] and guided.accuracy.shape == (2, 10) and guided.samples.shape == (2, 10, 10, 64)
    assert ((guided.accuracy >= 0) & (guided.accuracy <= 1)).all() and (guided.reference > 0.5).all()
    assert "## Class-conditional digits, classifier-free guidance" in md and "| γ = 3 |" in md
    assert not result["conditional_loaded"] and result["conditional_checkpoint"] != result["checkpoint"]
    sampling, likelihood = result["rows"][:2], result["rows"][2:]
    assert all(r.bpd is None and r.nfe >= 1 for r in sampling)
    assert sampling[0].nfe == 5 * 2 + 1  # predictor + one corrector step per step, + denoising
    for r in likelihood:
        assert math.isfinite(r.bpd) and 0.0 < r.bpd < 10.0 and math.isfinite(r.bpd_stderr)
    assert likelihood[0].nfe > 0 and likelihood[1].nfe is None
    assert likelihood[2].nfe > 0 and likelihood[3].nfe > 0  # conditional: true labels, null label
    # the ELBO bits/dim beside the PF-ODE bits/dim, for every score model (not the Gaussian baseline)
    for r in (likelihood[0], likelihood[2], likelihood[3]):
        assert math.isfinite(r.elbo_bpd) and 0.0 < r.elbo_bpd < 10.0 and math.isfinite(r.elbo_stderr)
    assert likelihood[1].elbo_bpd is None and all(r.elbo_bpd is None for r in sampling)
    assert "| ELBO bits/dim |" in md and "sde_elbo" in md
    gain = result["conditional_gain"]
    assert all(math.isfinite(v) for pair in gain.values() for v in pair)
    assert gain["vs_null_label"][0] == pytest.approx(likelihood[3].bpd - likelihood[2].bpd, abs=1e-9)
    assert gain["vs_unconditional"][0] == pytest.approx(likelihood[0].bpd - likelihood[2].bpd, abs=1e-9)
    assert "Class-conditional gain" in md
    # The guided digits: one ODE batch per scale holding every class, ten samples each.
    assert torch.equal(guided.batch_labels, torch.arange(100) % 10)
    assert guided.nfe.shape == (2,) and (guided.nfe > 0).all()
    assert "one probability-flow ODE batch of 100 holding all 10 classes" in md


def test_second_run_loads_cache_and_reproduces(tiny_run):
    out, first = tiny_run
    second = digits.main(TINY + ["--out", str(out)])
    assert second["loaded_checkpoint"] and second["conditional_loaded"]
    assert second["checkpoint"] == first["checkpoint"]
    np.testing.assert_array_equal(second["guidance"].accuracy, first["guidance"].accuracy)
    # Same seed, same weights: the same numbers.
    assert [r.bpd for r in second["rows"]] == [r.bpd for r in first["rows"]]
    assert [r.elbo_bpd for r in second["rows"]] == [r.elbo_bpd for r in first["rows"]]
    assert [r.nfe for r in second["rows"]] == [r.nfe for r in first["rows"]]


def test_changed_config_retrains(tiny_run):
    out, first = tiny_run
    args = list(TINY)
    args[args.index("--train-steps") + 1] = "16"
    other = digits.main(args + ["--out", str(out)])
    assert not other["loaded_checkpoint"]
    assert other["checkpoint"] != first["checkpoint"]


@pytest.mark.parametrize(
    "argv, name",
    [(["--n-samples", "10"], "--n-samples"), (["--train-steps", "0"], "--train-steps"),
     (["--rtol", "-1"], "--rtol"), (["--time-sampling", "cosine"], "--time-sampling"),
     (["--n-per-class", "5"], "--n-per-class"), (["--label-dropout", "1.5"], "--label-dropout"),
     (["--guidance-scales", "nan"], "--guidance-scales"), (["--elbo-samples", "0"], "--elbo-samples")],
)
def test_bad_cli_input_names_the_argument(argv, name, capsys):
    with pytest.raises(SystemExit):
        digits.main(argv)
    assert name in capsys.readouterr().err


def test_gaussian_baseline_matches_scipy():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(200, 3, generator=gen, dtype=torch.float64) @ torch.tensor(
        [[1.0, 0.5, 0.0], [0.0, 1.0, -0.3], [0.0, 0.0, 0.2]], dtype=torch.float64
    ) + torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    model = GaussianBaseline(x)
    ref = stats.multivariate_normal(x.mean(0).numpy(), np.cov(x.numpy().T, bias=True))  # MLE covariance
    query = torch.randn(7, 3, generator=gen, dtype=torch.float64)
    np.testing.assert_allclose(model.log_prob(query).numpy(), ref.logpdf(query.numpy()), rtol=1e-10)


def test_gaussian_baseline_rejects_singular_covariance():
    x = torch.randn(50, 3, generator=torch.Generator().manual_seed(0))
    x[:, 2] = 1.0
    with pytest.raises(ValueError, match="positive definite"):
        GaussianBaseline(x)


def test_dequantized_moments_match_many_draws():
    levels, _ = load_digit_splits(seed=0)
    mean, cov = dequantized_moments(levels)
    gen = torch.Generator().manual_seed(0)
    draws = torch.cat([sdekit.dequantize(levels, LEVELS, DATA_RANGE, generator=gen) for _ in range(20)]).double()
    torch.testing.assert_close(draws.mean(0), mean, atol=3e-3, rtol=0)
    torch.testing.assert_close(torch.cov(draws.T, correction=0), cov, atol=3e-3, rtol=0)


def test_to_pixels_puts_bin_centres_on_levels():
    lo, hi = DATA_RANGE
    k = torch.arange(LEVELS, dtype=torch.float64)
    centres = lo + (hi - lo) * (k + 0.5) / LEVELS
    torch.testing.assert_close(to_pixels(centres), k)


def test_untrained_network_is_the_gaussian_noise_predictor():
    """Zero-initialised residual: ε̂ = σ (m² C + σ² I)⁻¹ (x − m μ), the exact Gaussian predictor."""
    levels, _ = load_digit_splits(seed=0)
    sde = sdekit.VPSDE()
    net = build_network(TrainConfig(width=16, depth=1), sde, levels)
    mean, cov = dequantized_moments(levels)
    x = torch.randn(5, 64, generator=torch.Generator().manual_seed(1))
    t = torch.tensor([1e-4, 1e-2, 0.1, 0.5, 1.0])
    m, s = sde.mean_coeff(t.double()), sde.std(t.double())
    expected = torch.stack([
        s[i] * torch.linalg.solve(m[i] ** 2 * cov + s[i] ** 2 * torch.eye(64, dtype=torch.float64),
                                  x[i].double() - m[i] * mean)
        for i in range(5)
    ])
    with torch.no_grad():
        torch.testing.assert_close(net(x, t).double(), expected, rtol=1e-3, atol=1e-4)


def test_likelihood_time_sampling_follows_its_density():
    """Times drawn for likelihood weighting have CDF ∝ log(expm1(B(t))) on [eps, T]."""
    sde, eps = sdekit.VPSDE(), 1e-5
    t = sample_times(4000, sde, eps, "likelihood", generator=torch.Generator().manual_seed(0)).double()
    assert float(t.min()) >= eps and float(t.max()) <= sde.T
    F = lambda u: np.log(np.expm1(sde.integrated_beta(torch.as_tensor(u, dtype=torch.float64)).numpy()))
    cdf = lambda u: (F(u) - F(eps)) / (F(sde.T) - F(eps))
    assert stats.kstest(t.numpy(), cdf).pvalue > 1e-3
    # and it is not the uniform distribution
    assert stats.kstest(t.numpy(), stats.uniform(eps, sde.T - eps).cdf).pvalue < 1e-6


def test_to_levels_inverts_dequantisation():
    k = torch.arange(LEVELS).repeat(50)
    x = sdekit.dequantize(k, LEVELS, DATA_RANGE, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(to_levels(x), k)


def test_digit_classifier_is_accurate_on_real_test_digits():
    train, train_labels, test, test_labels = load_labelled_splits(seed=0)
    assert train.shape == (1437, 64) and test_labels.shape == (360,)
    clf = train_digit_classifier(train, train_labels)
    assert (classify(clf, test) == test_labels.numpy()).mean() > 0.9


def test_untrained_conditional_network_ignores_the_label():
    """Zero-initialised output layer: every label gives the same (Gaussian) ε̂, so guidance starts as a no-op;
    with weights the labels matter."""
    levels, _, _, _ = load_labelled_splits(seed=0)
    sde = sdekit.VPSDE()
    net = build_network(TrainConfig(width=16, depth=1, num_classes=10, label_dropout=0.1), sde, levels)
    x = torch.randn(4, 64, generator=torch.Generator().manual_seed(1))
    t = torch.full((4,), 0.3)
    with torch.no_grad():
        outs = [net(x, t, torch.full((4,), y)) for y in (0, 5, net.null_label)]
        torch.testing.assert_close(outs[0], outs[2])
        torch.nn.init.normal_(net.out.weight, std=0.1)
        assert not torch.allclose(net(x, t, torch.zeros(4, dtype=torch.int64)), net(x, t, torch.full((4,), 10)))
    with pytest.raises(ValueError, match="y must be an int64"):
        net(x, t, torch.zeros(4))
    with pytest.raises(ValueError, match="label_dropout"):
        TrainConfig(label_dropout=0.1)  # no classes


@pytest.fixture(scope="module")
def label_sensitive_net():
    """A small conditional network whose output depends on the label (random output layer), and the test split."""
    levels, labels, test, test_labels = load_labelled_splits(seed=0)
    torch.manual_seed(0)  # the network's initialisation too: the same net in every run
    net = build_network(TrainConfig(width=16, depth=1, num_classes=10, label_dropout=0.1), sdekit.VPSDE(), levels)
    with torch.no_grad():
        torch.nn.init.normal_(net.out.weight, std=0.1)
        torch.nn.init.normal_(net.label_embed.weight, std=1.0)
    return net.eval(), (levels, labels, test, test_labels)


def test_one_ode_batch_of_all_classes_matches_sampling_each_class(label_sensitive_net):
    """Per-sample labels on the adaptive ODE follow their rows: sample b of a mixed batch (label b mod 10) is the
    sample with the same prior draw (same seed and sample index) from a batch of its class alone."""
    net, (levels, labels, test, test_labels) = label_sensitive_net
    sde, tol = sdekit.VPSDE(), {"rtol": 1e-4, "atol": 1e-4}
    y = interleaved_labels(10, 3)
    mixed = sample_classes(net, sde, y, 2.0, seed=7, **tol)
    assert mixed.x.shape == (30, 64) and len(set(mixed.nfe.tolist())) > 1  # per-sample step control
    for c in range(10):
        rows = torch.nonzero(y == c).flatten()
        alone = sample_classes(net, sde, y[rows], 2.0, seed=7, sample_index=rows, **tol)
        torch.testing.assert_close(alone.x, mixed.x[rows], rtol=1e-4, atol=1e-4)
    # the labels matter: the same draws with every label shifted by one give other digits
    shifted = sample_classes(net, sde, (y + 1) % 10, 2.0, seed=7, **tol)
    assert (shifted.x - mixed.x).abs().amax(1).min() > 1e-2
    # evaluate_guidance files sample b = j·10 + c as samples[i, c, j]
    clf = train_digit_classifier(levels, labels)
    result = evaluate_guidance(net, sde, clf, test, test_labels, [2.0], 3, seed=11, device="cpu", **tol)
    again = sample_classes(net, sde, y, 2.0, generator=torch.Generator().manual_seed(11), **tol)
    torch.testing.assert_close(result.samples[0], again.x.reshape(3, 10, 64).transpose(0, 1))
    assert result.nfe[0] == again.nfe.double().mean().item()


def test_conditional_likelihood_is_the_conditional_model_with_labels_per_row(label_sensitive_net):
    """log p(x | y) through CFG at γ = 1 with labels in model_kwargs equals the network called with y directly;
    on the adaptive likelihood ODE each row keeps its own label (mixed batch = per-class batches)."""
    net, (_, _, test, test_labels) = label_sensitive_net
    sde = sdekit.VPSDE()
    rows = torch.arange(0, 360, 30)  # 12 test digits of mixed classes
    x = sdekit.dequantize(test[rows], LEVELS, DATA_RANGE, generator=torch.Generator().manual_seed(0))
    y = test_labels[rows]
    assert len(set(y.tolist())) > 5
    opts = {"rtol": 1e-4, "atol": 1e-4, "seed": 3}
    cond = conditional_log_likelihood(net, sde, x, y, **opts)
    direct = sdekit.log_likelihood(sdekit.score_from_epsilon(net, sde), sde, x, model_kwargs={"y": y}, **opts)
    torch.testing.assert_close(cond.log_prob, direct.log_prob, rtol=1e-5, atol=1e-4)
    for c in y.unique():
        idx = torch.nonzero(y == c).flatten()
        alone = conditional_log_likelihood(net, sde, x[idx], y[idx], sample_index=idx, **opts)
        torch.testing.assert_close(alone.log_prob, cond.log_prob[idx], rtol=1e-5, atol=1e-3)
    null = conditional_log_likelihood(net, sde, x, None, **opts)
    assert torch.isfinite(null.log_prob).all() and (null.log_prob - cond.log_prob).abs().min() > 1e-2


def test_training_loss_is_the_former_epsilon_loss_bit_for_bit():
    """The demo trains through sdekit.losses.dsm_loss (ε form, σ² weighting, mean over pixels); its gradient is
    bit-for-bit that of the former private loss mean‖ε̂ − ε‖² with the same noise draw, so a seed trains the same."""
    from sdekit.losses import dsm_loss

    levels, labels, _, _ = load_labelled_splits(seed=0)
    sde = sdekit.VPSDE()
    torch.manual_seed(0)
    net = build_network(TrainConfig(width=16, depth=1, num_classes=10), sde, levels)
    with torch.no_grad():
        torch.nn.init.normal_(net.out.weight, std=0.1)
    x0 = sdekit.dequantize(levels[:32], LEVELS, DATA_RANGE, generator=torch.Generator().manual_seed(1))
    t = sample_times(32, sde, 1e-5, "likelihood", generator=torch.Generator().manual_seed(2))
    y = labels[:32]

    def grads(loss):
        net.zero_grad()
        loss.backward()
        return [p.grad.clone() for p in net.parameters()]

    gen = torch.Generator().manual_seed(3)
    noise = torch.randn(x0.shape, generator=gen)
    xt = sde.mean_coeff(t)[:, None] * x0 + sde.std(t)[:, None] * noise
    old = grads((net(xt, t, y) - noise).pow(2).mean())
    new = grads(dsm_loss(net, sde, x0, t=t, parameterization="epsilon", weighting="sigma2", dim_reduction="mean",
                         eps=1e-5, generator=torch.Generator().manual_seed(3), model_kwargs={"y": y}).mean())
    assert all(torch.equal(a, b) for a, b in zip(old, new))
