"""Class-conditional digits with classifier-free guidance, scored by a classifier of the real digits.

For each guidance scale γ and class ``c``, samples are drawn with the
probability-flow ODE (adaptive RK45) from the guided ε-prediction
``γ ε̂(x, t, c) + (1 − γ) ε̂(x, t, ∅)`` of one class-conditional network
(:func:`sdekit.classifier_free_guidance`; Ho & Salimans 2022), quantised back
to pixel levels and classified by a multinomial logistic regression trained on
the real training digits (scikit-learn).  A class's accuracy is the share of its
samples the classifier assigns to it; the classifier's accuracy on the real
test digits of that class is the reference.
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
        samples: ``(len(scales), K, n, 64)`` samples in data space.
        nfe: ``(len(scales),)`` mean network evaluations per sample (both CFG passes counted once).
        seconds: ``(len(scales),)`` wall time of sampling at each scale.
    """

    scales: list[float]
    accuracy: np.ndarray
    reference: np.ndarray
    samples: torch.Tensor
    nfe: np.ndarray
    seconds: np.ndarray


def sample_class(net, sde, label: int, scale: float, n: int, *, rtol: float, atol: float, generator, device):
    """``n`` samples of class ``label`` at guidance scale γ = ``scale`` (probability-flow ODE, RK45).

    Returns:
        :class:`sdekit.SampleResult` with ``x`` of shape ``(n, 64)``.
    """
    guided = sdekit.classifier_free_guidance(net, label, scale, null_label=net.null_label)
    score = sdekit.score_from_epsilon(guided, sde)
    with torch.no_grad():
        return sdekit.sample(score, sde, (n, net.dim), method="ode", rtol=rtol, atol=atol, generator=generator,
                             device=device)


def evaluate_guidance(net, sde, classifier, test_levels, test_labels, scales, n_per_class, *, rtol, atol, seed,
                      device, progress: bool = False) -> GuidanceResult:
    """Sample ``n_per_class`` digits of every class at every scale and score them with ``classifier``.

    Every scale starts from the same prior draws (a generator seeded with
    ``seed`` per scale), so the scales are compared on common random numbers.
    """
    K = net.num_classes
    predicted_test = classify(classifier, test_levels)
    truth = test_labels.cpu().numpy()
    reference = np.array([(predicted_test[truth == c] == c).mean() for c in range(K)])
    accuracy = np.zeros((len(scales), K))
    nfe, seconds = np.zeros(len(scales)), np.zeros(len(scales))
    samples = torch.zeros(len(scales), K, n_per_class, net.dim)
    for i, scale in enumerate(scales):
        gen = torch.Generator(device=device).manual_seed(seed)
        start = time.perf_counter()
        evaluations = 0.0
        for c in range(K):
            out = sample_class(net, sde, c, scale, n_per_class, rtol=rtol, atol=atol, generator=gen, device=device)
            samples[i, c] = out.x.cpu()
            evaluations += float(out.nfe.double().mean())
            accuracy[i, c] = (classify(classifier, to_levels(out.x)) == c).mean()
        seconds[i] = time.perf_counter() - start
        nfe[i] = evaluations / K
        if progress:
            print(f"guidance γ = {scale:g}: {seconds[i]:.1f} s, mean accuracy {accuracy[i].mean():.3f}", flush=True)
    return GuidanceResult(list(scales), accuracy, reference, samples, nfe, seconds)
