"""The main job: a score-based model of scikit-learn's 8×8 digits, end to end.

    python -m sdekit.demo.digits [--out digits_out] [--device cuda|cpu] ...

1. Splits the 1,797 digits 80/20 (stratified, seeded) into train and test.
2. Trains a Gaussian-preconditioned ε-MLP by denoising score matching under
   the VP SDE (β_min = 0.1, β_max = 20, T = 1) with likelihood-weighted time
   sampling, or loads the checkpoint cached in the output folder for the same
   configuration (see :mod:`.checkpoint`).
3. Samples 64 digits with predictor–corrector (Euler–Maruyama + Langevin) and
   64 with the probability-flow ODE (adaptive RK45); writes a PNG grid of each.
4. Computes held-out bits/dim with the probability-flow likelihood, and for a
   full-covariance Gaussian fitted to the dequantised training split, on the
   same dequantised test points; beside each score model's exact (PF ODE)
   bits/dim, the continuous-time ELBO's bits/dim (:func:`sdekit.sde_elbo`,
   Song et al. 2021b Thm. 1, ``--elbo-samples`` Monte-Carlo draws of (t, z)
   per test image; an upper bound on the same model's bits/dim).
5. Trains (or loads) one class-conditional network with 10% label dropout to
   a null label, and computes its held-out bits/dim on the same test points
   given each image's true label (classifier-free guidance at γ = 1, the
   labels as per-sample ``model_kwargs`` of :func:`sdekit.log_likelihood`) and
   given the null label, with the paired difference of the two.
6. Prints a table (method, NFE per sample, wall time, bits/dim) and writes it
   to ``results.md`` in the output folder.
7. Class-conditional digits: at each ``--guidance-scales`` γ, samples one
   probability-flow ODE batch (adaptive RK45) holding every class (sample
   ``b`` has label ``b mod 10``, per-sample ``model_kwargs``) with
   classifier-free guidance, writes a PNG grid per γ (one row per class), and
   prints and writes (``guidance.md``, and in ``results.md``) the per-class
   accuracy of the samples under a logistic regression trained on the real
   training digits.

Every random draw is seeded from ``--seed``; the same seed on the same
machine gives the same numbers.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import torch

import sdekit
from sdekit.likelihood import sde_elbo

from .baseline import GaussianBaseline
from .checkpoint import load_or_train
from .data import DATA_RANGE, DIM, LEVELS, load_labelled_splits, to_pixels
from .guided import conditional_log_likelihood, evaluate_guidance, train_digit_classifier
from .plots import save_digit_grid
from .report import Row, format_accuracy_markdown, format_accuracy_text, format_markdown, format_text
from .train import TrainConfig

#: Seeds of the separate random streams, as offsets from ``--seed``.
STREAM_PC, STREAM_ODE, STREAM_TEST_DEQ, STREAM_TRAIN_DEQ, STREAM_PROBES, STREAM_GUIDED, STREAM_ELBO = 1, 2, 3, 4, 5, 6, 7
NUM_CLASSES = 10


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text}")
    return value


def _square_int(text: str) -> int:
    value = _positive_int(text)
    if math.isqrt(value) ** 2 != value:
        raise argparse.ArgumentTypeError(f"must be a perfect square (for the image grid), got {text}")
    return value


def _at_least_ten(text: str) -> int:
    value = _positive_int(text)
    if value < 10:
        raise argparse.ArgumentTypeError(f"must be >= 10 (a row of 10 digits per class in the grid), got {text}")
    return value


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
    return value


def _dropout(text: str) -> float:
    value = float(text)
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"must lie in (0, 1), got {text}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0 or not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface; every default gives the full run."""
    defaults = TrainConfig()
    p = argparse.ArgumentParser(prog="python -m sdekit.demo.digits", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("digits_out"), help="output folder (PNGs, results.md, checkpoint)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="torch device")
    p.add_argument("--seed", type=int, default=0, help="seed of the split, training, sampling and likelihood")
    p.add_argument("--train-steps", type=_positive_int, default=defaults.steps, help="optimiser steps")
    p.add_argument("--batch-size", type=_positive_int, default=defaults.batch_size, help="training batch size")
    p.add_argument("--lr", type=_positive_float, default=defaults.lr, help="peak learning rate")
    p.add_argument("--width", type=_positive_int, default=defaults.width, help="MLP hidden width")
    p.add_argument("--depth", type=_positive_int, default=defaults.depth, help="MLP residual blocks")
    p.add_argument("--time-sampling", choices=("uniform", "likelihood"), default=defaults.time_sampling,
                   help="training-time distribution (likelihood = importance-sampled likelihood weighting)")
    p.add_argument("--steps", type=_positive_int, default=1000, help="predictor steps of PC sampling")
    p.add_argument("--snr", type=_positive_float, default=0.16, help="Langevin corrector signal-to-noise ratio")
    p.add_argument("--n-samples", type=_square_int, default=64, help="samples per sampler (a perfect square)")
    p.add_argument("--n-test", type=_positive_int, default=None, help="test images for bits/dim (default: all)")
    p.add_argument("--rtol", type=_positive_float, default=1e-5, help="RK45 relative tolerance (ODE sampling, likelihood)")
    p.add_argument("--atol", type=_positive_float, default=1e-5, help="RK45 absolute tolerance (ODE sampling, likelihood)")
    p.add_argument("--elbo-samples", type=_positive_int, default=128,
                   help="Monte-Carlo draws of (t, z) per test image for the ELBO bits/dim")
    p.add_argument("--cond-train-steps", type=_positive_int, default=3000,
                   help="optimiser steps of the class-conditional network")
    p.add_argument("--label-dropout", type=_dropout, default=0.1,
                   help="probability of training the conditional network on the null label")
    p.add_argument("--guidance-scales", type=_finite_float, nargs="+", default=[1.0, 3.0],
                   help="classifier-free guidance scales γ to sample and score")
    p.add_argument("--n-per-class", type=_at_least_ten, default=100,
                   help="guided samples per class and scale (>= 10)")
    p.add_argument("--threads", type=_positive_int, default=None,
                   help="CPU threads for torch (default: torch's choice; 1 is much faster when other jobs load the CPU)")
    p.add_argument("--no-cache", action="store_true", help="retrain even if a checkpoint for this config exists")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    return p


def _timed(fn, device: torch.device):
    """Run ``fn()``; return its result and the wall time in seconds (device synchronised)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    out = fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return out, time.perf_counter() - start


def _generator(device: torch.device, seed: int) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed)


def _bits(log_prob: torch.Tensor) -> torch.Tensor:
    """Bits/dim of each test point, float64 ``(N,)``."""
    return sdekit.bits_per_dim(log_prob.to(torch.float64), dim=DIM, levels=LEVELS, data_range=DATA_RANGE)


def _mean_stderr(values: torch.Tensor) -> tuple[float, float]:
    """Mean over points and its standard error (NaN for one point)."""
    stderr = values.std().item() / math.sqrt(len(values)) if len(values) > 1 else float("nan")
    return values.mean().item(), stderr


def _bpd_summary(log_prob: torch.Tensor) -> tuple[float, float]:
    """Mean bits/dim over test points and its standard error over points."""
    return _mean_stderr(_bits(log_prob))


def _paired(worse: torch.Tensor, better: torch.Tensor) -> tuple[float, float]:
    """Mean and standard error of the per-point difference ``worse − better`` (bits/dim)."""
    return _mean_stderr((worse - better).cpu())


def run(args: argparse.Namespace) -> dict:
    """Run the job for parsed ``args`` (see :func:`build_parser`).

    Returns:
        dict with ``rows`` (list of :class:`.report.Row`), ``loaded_checkpoint``
        (bool), ``train_seconds``, ``checkpoint``, ``pngs`` (two paths),
        ``results_md`` (path), ``conditional_gain`` (``{"vs_unconditional": (mean,
        stderr), "vs_null_label": (mean, stderr)}``: bits/dim of the unconditional
        network, resp. of the conditional one given the null label, minus its
        bits/dim given the true label, paired over test images), and for the guided part ``guidance``
        (:class:`.guided.GuidanceResult`), ``guidance_pngs``, ``guidance_md``,
        ``conditional_checkpoint``, ``conditional_loaded``, ``conditional_train_seconds``.
    Raises:
        ValueError: if ``args.device`` names an unavailable device.
    """
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {args.device!r}: CUDA is not available on this machine; use --device cpu")
    progress = not args.no_progress
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    sde = sdekit.VPSDE(beta_min=0.1, beta_max=20.0, T=1.0)

    train_levels, train_labels, test_levels, test_labels = load_labelled_splits(seed=args.seed)
    all_test_levels, all_test_labels = test_levels, test_labels
    if args.n_test is not None:
        test_levels = test_levels[: args.n_test]
    config = TrainConfig(steps=args.train_steps, batch_size=args.batch_size, lr=args.lr, width=args.width,
                         depth=args.depth, time_sampling=args.time_sampling, seed=args.seed)
    trained = load_or_train(train_levels, sde, config, out, split_seed=args.seed, device=device,
                            use_cache=not args.no_cache, progress=progress)
    score = sdekit.score_from_epsilon(trained.net, sde)
    shape = (args.n_samples, DIM)
    rows = []

    # 1) Predictor–corrector: Euler–Maruyama predictor + Langevin corrector (Song et al. 2021, Alg. 2-3).
    with torch.no_grad():
        pc, secs = _timed(lambda: sdekit.sample(
            score, sde, shape, method="euler_maruyama", steps=args.steps, corrector="langevin", snr=args.snr,
            generator=_generator(device, args.seed + STREAM_PC), device=device, progress=progress), device)
    rows.append(Row("PC sampler (Euler-Maruyama + Langevin)", pc.nfe.double().mean().item(), secs))

    # 2) Probability-flow ODE, adaptive RK45 (Song et al. 2021, §4.3).
    with torch.no_grad():
        ode, secs = _timed(lambda: sdekit.sample(
            score, sde, shape, method="ode", rtol=args.rtol, atol=args.atol,
            generator=_generator(device, args.seed + STREAM_ODE), device=device, progress=progress), device)
    rows.append(Row("Probability-flow ODE sampler (RK45)", ode.nfe.double().mean().item(), secs))

    pngs = [
        save_digit_grid(to_pixels(pc.x), out / "samples_pc.png", title=f"PC sampler, {args.steps} steps"),
        save_digit_grid(to_pixels(ode.x), out / "samples_ode.png", title="probability-flow ODE (RK45)"),
    ]

    # 3) Held-out bits/dim: both models see the same dequantised test points.
    x_test = sdekit.dequantize(test_levels.to(device), LEVELS, DATA_RANGE,
                               generator=_generator(device, args.seed + STREAM_TEST_DEQ))
    ll, secs = _timed(lambda: sdekit.log_likelihood(
        score, sde, x_test, trace="hutchinson", probes=1, rtol=args.rtol, atol=args.atol, eps=1e-5,
        generator=_generator(device, args.seed + STREAM_PROBES)), device)
    bpd_uncond = _bits(ll.log_prob)
    bpd, err = _bpd_summary(ll.log_prob)
    elbo_bpd, elbo_err = _elbo_bpd(args, sde, device, score, x_test)
    rows.append(Row("Score model likelihood (PF ODE, Hutchinson)", ll.nfe.double().mean().item(), secs, bpd, err,
                    elbo_bpd, elbo_err, args.elbo_samples))

    def gaussian():
        x_train = sdekit.dequantize(train_levels.to(device), LEVELS, DATA_RANGE,
                                    generator=_generator(device, args.seed + STREAM_TRAIN_DEQ))
        return GaussianBaseline(x_train).log_prob(x_test)

    log_prob_gauss, secs = _timed(gaussian, device)
    bpd, err = _bpd_summary(log_prob_gauss)
    rows.append(Row("Gaussian baseline (full covariance, MLE)", None, secs, bpd, err))

    # 4) The class-conditional network as a density: log p(x | y) of the same test points given their true
    #    labels (classifier-free guidance at γ = 1, labels as per-sample model_kwargs), and log p(x) through
    #    its null label; same probes as the unconditional row, so the differences are paired.
    cond = _conditional_network(args, sde, device, out, train_levels, train_labels, progress)
    cond_rows, (bpd_true, bpd_null) = _conditional_likelihood(args, sde, device, cond.net, x_test,
                                                              test_labels[: len(x_test)])
    rows += cond_rows
    gain = {"vs_unconditional": _paired(bpd_uncond, bpd_true), "vs_null_label": _paired(bpd_null, bpd_true)}

    source = "loaded from cache" if trained.loaded else "trained"
    head = (f"Digits: {len(train_levels)} train / {len(test_levels)} test images, VP SDE, device {device}. "
            f"Network {source} in {trained.seconds:.1f} s ({config.steps} steps; {trained.path.name}).")
    (g_u, e_u), (g_n, e_n) = gain["vs_unconditional"], gain["vs_null_label"]
    gain_text = (f"Class-conditional gain in bits/dim (mean ± standard error of the difference, paired over test "
                 f"images): {g_u:.3f} ± {e_u:.3f} below the unconditional network, {g_n:.3f} ± {e_n:.3f} below "
                 f"the same network with the null label. For exact models the gain is I(x; y)/D <= "
                 f"log2({NUM_CLASSES})/{DIM} = {math.log2(NUM_CLASSES) / DIM:.3f}.")
    text = format_text(rows)
    print(head, text, gain_text, sep="\n\n", flush=True)

    # 5) Class-conditional digits with classifier-free guidance, scored by a classifier of the real digits.
    guided = _guidance(args, sde, device, out, cond, train_levels, train_labels, all_test_levels, all_test_labels)

    results_md = out / "results.md"
    results_md.write_text(
        "# sdekit digits demo\n\n" + head + "\n\n" + format_markdown(rows) + "\n\n"
        "bits/dim: mean over test images ± standard error over images; data dequantised "
        "uniformly into [-1, 1] (17 levels), converted with `sdekit.bits_per_dim`. "
        "NFE and time of the likelihood rows are those of the likelihood computation. "
        f"ELBO bits/dim: the continuous-time variational bound (`sdekit.sde_elbo`, Song et al. 2021b Thm. 1, "
        f"from t = 1e-5 like the ODE) of the same model on the same points, {args.elbo_samples} importance-sampled "
        f"draws of (t, z) per image ({args.elbo_samples} network calls); it bounds the model's bits/dim from above. "
        "The class-conditional rows are one network (the guided part's): given each test image's true label "
        "(`sdekit.classifier_free_guidance` at γ = 1 with the labels as per-sample `model_kwargs`; each NFE is "
        "one forward on the doubled batch), and given the null label (its unconditional model).\n\n"
        + gain_text + "\n\n" + guided["markdown"]
    )
    return {"rows": rows, "loaded_checkpoint": trained.loaded, "train_seconds": trained.seconds,
            "checkpoint": trained.path, "pngs": pngs, "results_md": results_md, "conditional_gain": gain,
            "conditional_checkpoint": cond.path, "conditional_loaded": cond.loaded,
            "conditional_train_seconds": cond.seconds, **guided["outputs"]}


def _elbo_bpd(args, sde, device, score, x_test, model_kwargs=None) -> tuple[float, float]:
    """Mean ELBO bits/dim over the test points and its standard error over points (the bound of
    :func:`sdekit.sde_elbo` from ``t = 1e-5``, ``args.elbo_samples`` draws per point)."""
    with torch.no_grad():
        res = sde_elbo(score, sde, x_test, eps=1e-5, n_samples=args.elbo_samples,
                                         generator=_generator(device, args.seed + STREAM_ELBO),
                                         model_kwargs=model_kwargs)
    return _bpd_summary(res.elbo)


def _conditional_network(args, sde, device, out: Path, train_levels, train_labels, progress):
    """Train or load the class-conditional network (label dropout to the null label); a ``TrainedModel``."""
    config = TrainConfig(steps=args.cond_train_steps, batch_size=args.batch_size, lr=args.lr, width=args.width,
                         depth=args.depth, time_sampling=args.time_sampling, seed=args.seed,
                         num_classes=NUM_CLASSES, label_dropout=args.label_dropout)
    return load_or_train(train_levels, sde, config, out, split_seed=args.seed, device=device,
                         use_cache=not args.no_cache, progress=progress, train_labels=train_labels)


def _conditional_likelihood(args, sde, device, net, x_test, labels) -> tuple[list[Row], tuple]:
    """Rows for the held-out bits/dim of the conditional network given the true labels and given the null
    label, and the bits/dim of each test point under both, ``(true, null)``."""
    rows, bpds = [], []
    for name, y in (("Class-conditional likelihood, true labels (CFG γ = 1)", labels.to(device)),
                    ("Class-conditional network, null label", None)):
        ll, secs = _timed(lambda y=y: conditional_log_likelihood(
            net, sde, x_test, y, trace="hutchinson", probes=1, rtol=args.rtol, atol=args.atol, eps=1e-5,
            generator=_generator(device, args.seed + STREAM_PROBES)), device)
        bpds.append(_bits(ll.log_prob))
        # the ELBO of the same model: the network called with the true labels (= CFG at γ = 1) or the null label
        y_elbo = torch.full((len(x_test),), net.null_label, dtype=torch.int64, device=device) if y is None else y
        elbo = _elbo_bpd(args, sde, device, sdekit.score_from_epsilon(net, sde), x_test, {"y": y_elbo})
        rows.append(Row(name, ll.nfe.double().mean().item(), secs, *_mean_stderr(bpds[-1]), *elbo,
                        args.elbo_samples))
    return rows, (bpds[0], bpds[1])


def _guidance(args, sde, device, out: Path, trained, train_levels, train_labels, test_levels, test_labels) -> dict:
    """Sample every class at every γ with the conditional network ``trained``, score and report."""
    classifier = train_digit_classifier(train_levels, train_labels, seed=args.seed)
    result = evaluate_guidance(trained.net, sde, classifier, test_levels, test_labels, args.guidance_scales,
                               args.n_per_class, rtol=args.rtol, atol=args.atol, seed=args.seed + STREAM_GUIDED,
                               device=device)
    pngs = []
    for scale, samples in zip(result.scales, result.samples):
        grid = samples[:, :10].reshape(NUM_CLASSES * 10, DIM)  # row c: ten samples of class c
        pngs.append(save_digit_grid(to_pixels(grid), out / f"samples_cfg_gamma{scale:g}.png",
                                    title=f"classifier-free guidance, γ = {scale:g} (row = class)"))
    source = "loaded from cache" if trained.loaded else "trained"
    head = (f"Class-conditional network ({args.cond_train_steps} steps, label dropout {args.label_dropout:g}) "
            f"{source} in {trained.seconds:.1f} s. {args.n_per_class} samples per class and scale, drawn per "
            f"scale as one probability-flow ODE batch of {len(result.batch_labels)} holding all {NUM_CLASSES} "
            f"classes (sample b has label b mod {NUM_CLASSES}, passed as per-sample model_kwargs; RK45, "
            f"rtol = {args.rtol:g}, atol = {args.atol:g}), classified by a logistic regression trained "
            f"on the {len(train_levels)} real training digits (samples quantised to pixel levels).")
    print("\n" + head, format_accuracy_text(result), sep="\n\n", flush=True)
    markdown = ("## Class-conditional digits, classifier-free guidance\n\n" + head + "\n\n"
                + format_accuracy_markdown(result) + "\n\nAccuracy: share of a class's samples the classifier "
                "assigns to that class; last column: the classifier on the real test digits of that class. "
                "NFE: network calls per sample, each on the doubled (conditional + null) batch; wall time: "
                "the whole batch.\n")
    guidance_md = out / "guidance.md"
    guidance_md.write_text("# sdekit digits demo: guidance\n\n" + markdown)
    outputs = {"guidance": result, "guidance_pngs": pngs, "guidance_md": guidance_md}
    return {"markdown": markdown, "outputs": outputs}


def main(argv: list[str] | None = None) -> dict:
    """Parse ``argv`` (default ``sys.argv[1:]``) and run the job; see :func:`run`."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        torch.device(args.device)
    except RuntimeError as err:
        parser.error(f"argument --device: {err}")
    if torch.device(args.device).type == "cuda" and not torch.cuda.is_available():
        parser.error(f"argument --device: CUDA is not available here, got {args.device!r}; use --device cpu")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    return run(args)


if __name__ == "__main__":
    main(sys.argv[1:])
