"""Tests of the digits demo (sdekit.demo): a tiny end-to-end run, the cache, and its parts."""

import math

import numpy as np
import pytest
import torch
from scipy import stats

import sdekit
from sdekit.demo import digits
from sdekit.demo.baseline import GaussianBaseline
from sdekit.demo.data import (DATA_RANGE, LEVELS, dequantized_moments, load_digit_splits, load_labelled_splits,
                               to_levels, to_pixels)
from sdekit.demo.guided import classify, train_digit_classifier
from sdekit.demo.train import TrainConfig, build_network, sample_times

TINY = ["--train-steps", "15", "--batch-size", "32", "--width", "32", "--depth", "1", "--steps", "5",
        "--n-samples", "4", "--n-test", "6", "--rtol", "1e-3", "--atol", "1e-3", "--no-progress",
        "--cond-train-steps", "15", "--n-per-class", "10", "--guidance-scales", "1", "3"]
EXPECTED_ROWS = [
    "PC sampler (Euler-Maruyama + Langevin)",
    "Probability-flow ODE sampler (RK45)",
    "Score model likelihood (PF ODE, Hutchinson)",
    "Gaussian baseline (full covariance, MLE)",
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
        assert math.isfinite(r.bpd) and 0.0 < r.bpd < 10.0
    assert likelihood[0].nfe > 0 and likelihood[1].nfe is None


def test_second_run_loads_cache_and_reproduces(tiny_run):
    out, first = tiny_run
    second = digits.main(TINY + ["--out", str(out)])
    assert second["loaded_checkpoint"] and second["conditional_loaded"]
    assert second["checkpoint"] == first["checkpoint"]
    np.testing.assert_array_equal(second["guidance"].accuracy, first["guidance"].accuracy)
    # Same seed, same weights: the same numbers.
    assert [r.bpd for r in second["rows"]] == [r.bpd for r in first["rows"]]
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
     (["--guidance-scales", "nan"], "--guidance-scales")],
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
    F = lambda u: np.log(np.expm1(sde.integrated_beta(torch.as_tensor(u, dtype=torch.float64)).numpy()))  # noqa: E731
    cdf = lambda u: (F(u) - F(eps)) / (F(sde.T) - F(eps))  # noqa: E731
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
    levels, labels, _, _ = load_labelled_splits(seed=0)
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
