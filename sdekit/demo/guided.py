"""Class-conditional digits with classifier-free guidance, scored by a classifier of the real digits.

For each guidance scale γ, one batch holding every class (sample ``b`` has
label ``b mod K``) is drawn with the probability-flow ODE (adaptive RK45) from
the guided ε-prediction ``γ ε̂(x, t, y_b) + (1 − γ) ε̂(x, t, ∅)`` of one
class-conditional network (:func:`sdekit.classifier_free_guidance`; Ho &
Salimans 2022).  The labels travel as per-sample conditioning,
``model_kwargs={"y": labels}`` (:mod:`sdekit.conditioning`), so the adaptive
solver, which evaluates only its still-active samples, gathers each sample's
label with its row.  Samples are quantised back to pixel levels and classified
by a multinomial logistic regression trained on the real training digits
(scikit-learn).  A class's accuracy is the share of its samples the classifier
assigns to it; the classifier's accuracy on the real test digits of that class
is the reference.

:func:`conditional_log_likelihood` measures the same network as a density:
``log p(x | y)`` of held-out digits given their true labels (the guided model
at γ = 1, which is the conditional model), or ``log p(x)`` through the null
label, with :func:`sdekit.log_likelihood` and the labels in ``model_kwargs``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from threadpoolctl import threadpool_limits  # a scikit-learn dependency

import sdekit

from .data import LEVELS, to_levels


def train_digit_classifier(levels: torch.Tensor, labels: torch.Tensor, *, seed: int = 0) -> LogisticRegression:
    """Multinomial logistic regression on pixel levels scaled to [0, 1].

    Args:
        levels: ``(N, 64)`` integer pixel levels of the real training digits.
        labels: ``(N,)`` their classes.
        seed: ``random_state`` of the solver.
    Returns:
        the fitted ``sklearn.linear_model.LogisticRegression``.

    BLAS runs on one thread: the problem is small, and a multi-threaded BLAS
    on a busy machine made this fit ~100× slower (5.9 s instead of 0.05 s).
    """
    features = levels.cpu().numpy().astype(np.float64) / (LEVELS - 1)
    with threadpool_limits(limits=1, user_api="blas"):
        return LogisticRegression(max_iter=5000, random_state=seed).fit(features, labels.cpu().numpy())


def classify(classifier: LogisticRegression, levels: torch.Tensor) -> np.ndarray:
    """Predicted classes ``(N,)`` of ``(N, 64)`` integer pixel levels."""
    with threadpool_limits(limits=1, user_api="blas"):
        return classifier.predict(levels.cpu().numpy().astype(np.float64) / (LEVELS - 1))


@dataclass
class GuidanceResult:
    """Per-class accuracy of guided samples at each guidance scale.

    Attributes:
        scales: the guidance scales γ.
        accuracy: ``(len(scales), K)`` share of class ``c``'s samples classified as ``c``.
        reference: ``(K,)`` the classifier's accuracy on the real test digits of each class.
        samples: ``(len(scales), K, n, 64)`` samples in data space (``samples[i, c]``: class ``c``).
        nfe: ``(len(scales),)`` mean network evaluations per sample (both CFG passes counted once).
        seconds: ``(len(scales),)`` wall time of sampling at each scale.
        batch_labels: ``(K n,)`` the labels of the one batch sampled per scale (``b mod K``).
    """

    scales: list[float]
    accuracy: np.ndarray
    reference: np.ndarray
    samples: torch.Tensor
    nfe: np.ndarray
    seconds: np.ndarray
    batch_labels: torch.Tensor


def interleaved_labels(num_classes: int, n_per_class: int, device=None) -> torch.Tensor:
    """``(K n,)`` int64 labels ``b mod K``: every class, interleaved, ``n_per_class`` times each."""
    return torch.arange(num_classes * n_per_class, device=device) % num_classes


def sample_classes(net, sde, labels: torch.Tensor, scale: float, *, rtol: float, atol: float, generator=None,
                   seed: int | None = None, sample_index: torch.Tensor | None = None, device=None):
    """One guided sample per entry of ``labels``, all in one probability-flow ODE batch (RK45).

    The labels are per-sample conditioning (``model_kwargs={"y": labels}``),
    gathered with the samples the adaptive solver still integrates.

    Args:
        net: class-conditional ε-network ``net(x, t, y)`` with ``null_label`` and ``dim``.
        sde: the VP SDE it was trained under.
        labels: ``(B,)`` int64 class of each sample (any mix of classes).
        scale: guidance scale γ.
        rtol, atol: RK45 tolerances.
        generator, seed, sample_index: the prior draw, as :func:`sdekit.sample`
            (sample ``b`` depends on ``(seed, sample_index[b])`` only).
        device: where to sample.
    Returns:
        :class:`sdekit.SampleResult` with ``x`` of shape ``(B, 64)``.
    """
    guided = sdekit.classifier_free_guidance(net, None, scale, null_label=net.null_label)
    score = sdekit.score_from_epsilon(guided, sde)
    labels = labels.to(device)
    with torch.no_grad():
        return sdekit.sample(score, sde, (labels.shape[0], net.dim), method="ode", rtol=rtol, atol=atol,
                             generator=generator, seed=seed, sample_index=sample_index, device=device,
                             model_kwargs={"y": labels})


def sample_class(net, sde, label: int, scale: float, n: int, *, rtol: float, atol: float, generator, device):
    """``n`` samples of class ``label`` at guidance scale γ = ``scale`` (:func:`sample_classes` with one label).

    Returns:
        :class:`sdekit.SampleResult` with ``x`` of shape ``(n, 64)``.
    """
    labels = torch.full((n,), label, dtype=torch.int64, device=device)
    return sample_classes(net, sde, labels, scale, rtol=rtol, atol=atol, generator=generator, device=device)


def conditional_log_likelihood(net, sde, x: torch.Tensor, labels: torch.Tensor | None, **kwargs):
    """``log p(x_b | y_b)`` under the conditional network, or ``log p(x_b)`` through its null label.

    With ``labels`` the score is the classifier-free-guided model at γ = 1
    (exactly the conditional model ``ε̂(x, t, y)``), the labels passed as
    ``model_kwargs={"y": labels}``; with ``labels=None`` every sample gets the
    null label ∅, which is the unconditional model the same network learned
    from the dropped labels.

    Args:
        net: class-conditional ε-network with ``null_label``.
        sde: the VP SDE it was trained under.
        x: ``(B, 64)`` dequantised data.
        labels: ``(B,)`` int64 true classes, or ``None`` for the null label.
        **kwargs: passed to :func:`sdekit.log_likelihood` (``trace``, ``rtol``, ``generator``…).
    Returns:
        :class:`sdekit.LikelihoodResult` (``log_prob`` in nats, ``(B,)``).
    """
    if labels is None:
        score = sdekit.score_from_epsilon(net, sde)
        labels = torch.full((x.shape[0],), net.null_label, dtype=torch.int64, device=x.device)
    else:
        score = sdekit.score_from_epsilon(sdekit.classifier_free_guidance(net, None, 1.0, net.null_label), sde)
    return sdekit.log_likelihood(score, sde, x, model_kwargs={"y": labels.to(x.device)}, **kwargs)


def evaluate_guidance(net, sde, classifier, test_levels, test_labels, scales, n_per_class, *, rtol, atol, seed,
                      device, progress: bool = False) -> GuidanceResult:
    """Sample ``n_per_class`` digits of every class at every scale and score them with ``classifier``.

    Each scale draws one batch of ``K · n_per_class`` samples holding every
    class (labels :func:`interleaved_labels`), from the same prior draws (a
    generator seeded with ``seed`` per scale), so the scales are compared on
    common random numbers.
    """
    K = net.num_classes
    predicted_test = classify(classifier, test_levels)
    truth = test_labels.cpu().numpy()
    reference = np.array([(predicted_test[truth == c] == c).mean() for c in range(K)])
    labels = interleaved_labels(K, n_per_class)
    accuracy = np.zeros((len(scales), K))
    nfe, seconds = np.zeros(len(scales)), np.zeros(len(scales))
    samples = torch.zeros(len(scales), K, n_per_class, net.dim)
    for i, scale in enumerate(scales):
        gen = torch.Generator(device=device).manual_seed(seed)
        start = time.perf_counter()
        out = sample_classes(net, sde, labels, scale, rtol=rtol, atol=atol, generator=gen, device=device)
        x = out.x.cpu()  # (waits for the device)
        seconds[i] = time.perf_counter() - start
        samples[i] = x.reshape(n_per_class, K, net.dim).transpose(0, 1)  # row b = j K + c → [c, j]
        correct = classify(classifier, to_levels(x)) == labels.numpy()
        accuracy[i] = [correct[labels.numpy() == c].mean() for c in range(K)]
        nfe[i] = float(out.nfe.double().mean())
        if progress:
            print(f"guidance γ = {scale:g}: {seconds[i]:.1f} s, mean accuracy {accuracy[i].mean():.3f}", flush=True)
    return GuidanceResult(list(scales), accuracy, reference, samples, nfe, seconds, labels)
