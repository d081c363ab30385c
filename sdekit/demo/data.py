"""scikit-learn's digits: loading, a seeded split, and the map to/from data space.

The data set (``sklearn.datasets.load_digits``; ships with scikit-learn, no
download) holds 1,797 images of 8×8 pixels with integer values 0…16, i.e.
``LEVELS = 17`` discrete values per pixel.  Models see the flattened
``DIM = 64`` vector, uniformly dequantised into ``DATA_RANGE = (−1, 1)`` by
:func:`sdekit.dequantize` (one bin of width 2/17 per level).
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

LEVELS = 17
DIM = 64
SIDE = 8
DATA_RANGE = (-1.0, 1.0)


def load_labelled_splits(seed: int = 0, test_fraction: float = 0.2):
    """Load the digits with their labels and split them, stratified by class, into train and test.

    Args:
        seed: seed of the split (``train_test_split``'s ``random_state``).
        test_fraction: share of the images held out, in (0, 1).
    Returns:
        ``(train, train_labels, test, test_labels)``: int64 tensors of shapes
        ``(N_train, 64)``, ``(N_train,)``, ``(N_test, 64)``, ``(N_test,)``; pixel
        levels in ``{0, …, 16}``, labels in ``{0, …, 9}`` (1,437 / 360 images for
        the default 0.2).
    Raises:
        ValueError: if ``test_fraction`` is not in (0, 1).
    """
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must lie in (0, 1), got {test_fraction}")
    images, labels = load_digits(return_X_y=True)
    index = np.arange(len(images))
    train_idx, test_idx = train_test_split(
        index, test_size=test_fraction, stratify=labels, random_state=seed
    )
    train_idx, test_idx = np.sort(train_idx), np.sort(test_idx)
    levels = torch.as_tensor(images, dtype=torch.int64)
    classes = torch.as_tensor(labels, dtype=torch.int64)
    return levels[train_idx], classes[train_idx], levels[test_idx], classes[test_idx]


def load_digit_splits(seed: int = 0, test_fraction: float = 0.2) -> tuple[torch.Tensor, torch.Tensor]:
    """The images of :func:`load_labelled_splits` without labels: ``(train (N_train, 64), test (N_test, 64))``.

    Raises:
        ValueError: if ``test_fraction`` is not in (0, 1).
    """
    train, _, test, _ = load_labelled_splits(seed, test_fraction)
    return train, test


def to_levels(x: torch.Tensor) -> torch.Tensor:
    """Quantise data-space values back to integer pixel levels: the bin each value falls in.

    The inverse of dequantisation (:func:`sdekit.dequantize`): level ``k`` owns
    ``[lo + kΔ, lo + (k+1)Δ)``.  Values outside ``DATA_RANGE`` belong to no bin
    and go to the nearest end level (0 or 16), as an image format would store
    them; use this to feed samples to models of the real (discrete) digits.

    Args:
        x: ``(…)`` tensor in data space.
    Returns:
        int64 tensor of the same shape with values in ``{0, …, 16}``.
    """
    lo, hi = DATA_RANGE
    return torch.floor((x - lo) * (LEVELS / (hi - lo))).clamp(0, LEVELS - 1).to(torch.int64)


def to_pixels(x: torch.Tensor) -> torch.Tensor:
    """Map data-space values ``x`` in ``DATA_RANGE`` back to pixel intensities.

    Inverse of the affine part of dequantisation: level ``k`` owns the bin
    ``[lo + kΔ, lo + (k+1)Δ)`` with ``Δ = (hi − lo)/17``, so intensity
    ``(x − lo)/Δ − ½`` puts each bin's centre on its integer level.  No
    clipping here: samples may leave [0, 16]; clip only for display.

    Args:
        x: ``(…)`` tensor in data space.
    Returns:
        tensor of the same shape in pixel units (nominally 0…16).
    """
    lo, hi = DATA_RANGE
    return (x - lo) * (LEVELS / (hi - lo)) - 0.5


def dequantized_moments(levels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact mean and covariance of the dequantised empirical distribution.

    For ``x = lo + Δ (k + u)`` with ``u ~ U[0, 1)^D`` independent of ``k``
    (drawn uniformly from the rows of ``levels``), ``E x = lo + Δ (k̄ + ½)``
    and ``Cov x = Δ² (Cov k + I/12)`` (MLE, i.e. ``1/N``, covariance of ``k``).
    Deterministic: no dequantisation noise is drawn.

    Args:
        levels: ``(N, D)`` integer pixel levels.
    Returns:
        ``(mean (D,), cov (D, D))`` in float64, in data space.
    Raises:
        ValueError: if ``levels`` is not 2-D.
    """
    if levels.dim() != 2:
        raise ValueError(f"levels must have shape (N, D), got {tuple(levels.shape)}")
    lo, hi = DATA_RANGE
    width = (hi - lo) / LEVELS
    k = levels.to(torch.float64)
    k_mean = k.mean(0)
    centred = k - k_mean
    k_cov = centred.T @ centred / k.shape[0]
    eye = torch.eye(k.shape[1], dtype=torch.float64, device=k.device)
    return lo + width * (k_mean + 0.5), width**2 * (k_cov + eye / 12.0)
