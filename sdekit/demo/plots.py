"""Image grids of digit samples, written with matplotlib's non-interactive Agg backend."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch


def save_digit_grid(pixels: torch.Tensor, path: str | Path, *, title: str = "", side: int = 8,
                    vmax: float = 16.0) -> Path:
    """Write a square grid of greyscale digits to a PNG file.

    Args:
        pixels: ``(N, side*side)`` pixel intensities (0 = background, ``vmax``
            = full ink), ``N`` a perfect square (64 → an 8×8 grid).  Values
            outside ``[0, vmax]`` are clipped *for display only*; the tensor is
            not changed.
        path: output file (``.png``); parent folders are created.
        title: figure title.
        side: image side length in pixels.
        vmax: intensity drawn as full ink.
    Returns:
        the path written.
    Raises:
        ValueError: if ``pixels`` is not ``(N, side*side)`` with square ``N``.
    """
    n = pixels.shape[0] if pixels.dim() == 2 else -1
    cols = math.isqrt(n) if n > 0 else 0
    if pixels.dim() != 2 or pixels.shape[1] != side * side or cols * cols != n:
        raise ValueError(
            f"pixels must have shape (N, {side * side}) with N a perfect square, got {tuple(pixels.shape)}"
        )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Clip for display only: samples can overshoot the data range slightly.
    images = pixels.detach().to("cpu", torch.float32).clamp(0.0, vmax).reshape(n, side, side)
    grid = images.reshape(cols, cols, side, side).permute(0, 2, 1, 3).reshape(cols * side, cols * side)
    fig, ax = plt.subplots(figsize=(4, 4), dpi=100)
    ax.imshow(grid.numpy(), cmap="gray_r", vmin=0.0, vmax=vmax, interpolation="nearest")
    for k in range(1, cols):  # thin separators between digits
        ax.axhline(k * side - 0.5, color="0.7", lw=0.5)
        ax.axvline(k * side - 0.5, color="0.7", lw=0.5)
    ax.set_axis_off()
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
