"""Denoising score matching for the digits MLP, with an EMA of the weights, through :func:`sdekit.losses.dsm_loss`.

Loss (Vincent 2011; Song et al. 2021, eq. 7, in Ho et al. 2020's ε form, eq. 14):
for ``x_t = m(t) x_0 + σ(t) ε``,

    L = E_{t, x_0, ε} ‖ε̂(x_t, t) − ε‖² / D,

which is σ(t)²-weighted score matching since ``s = −ε̂/σ``: the public
``dsm_loss(net, sde, x0, t=t, parameterization="epsilon", weighting="sigma2",
dim_reduction="mean").mean()``.  Two choices of the training-time distribution
are offered (drawn by :func:`sdekit.losses.sample_time`):

* ``"uniform"``: ``t ~ U[eps, T]`` (Ho et al. 2020's "simple" loss);
* ``"likelihood"``: ``t`` drawn with density ``q ∝ g(t)²/σ(t)² = β(t)/σ(t)²``.
  With the plain ε-loss this is the *likelihood weighting* ``λ(t) = g(t)²`` of
  Song et al. 2021b ("Maximum likelihood training of score-based diffusion
  models", Thm. 1 and §5 importance sampling) divided by the constant
  normaliser ``Z/(T − eps)`` of ``q`` (``dsm_loss(..., weighting="likelihood",
  time_sampling="importance")`` is the same estimator times that constant): the
  same minimiser and gradient direction, and the step sizes the demo was tuned
  with.  It lowers held-out bits/dim markedly here.

With ``num_classes > 0`` the network is class-conditional
(:class:`~.network.ConditionalEpsilonMLP`) and each training label is replaced
by the null label with probability ``label_dropout``, so that the same network
also learns the unconditional model (Ho & Salimans 2022, Alg. 1; seed notes
001, "10% of the time, drop C"); the labels reach the network as
``model_kwargs={"y": labels}``.

The random draws per step (batch indices, dequantisation, times, label
dropout, noise, in that order, from one generator) and the arithmetic are those
of the demo's former private ε-loss, so a seed trains to the same weights.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from tqdm.auto import tqdm

import sdekit
from sdekit.losses import dsm_loss, sample_time

from .data import DATA_RANGE, LEVELS, dequantized_moments
from .network import ConditionalEpsilonMLP, EpsilonMLP

TIME_SAMPLINGS = ("uniform", "likelihood")


@dataclass(frozen=True)
class TrainConfig:
    """Hyperparameters of one training run (everything that changes the weights).

    Attributes:
        steps: optimiser steps.
        batch_size: images per step.
        lr: peak Adam learning rate (cosine-decayed to 0 after ``warmup`` steps).
        warmup: linear warm-up steps.
        width, depth, time_dim, dropout: :class:`EpsilonMLP` settings.
        weight_decay: AdamW's decoupled weight decay (Loshchilov & Hutter 2019).
        ema_decay: decay of the exponential moving average of the weights.
        eps: smallest training time (SDE time units).
        time_sampling: ``"uniform"`` or ``"likelihood"`` (see module docstring).
        seed: seed of initialisation, batches, dequantisation and noise.
        num_classes: 0 for the unconditional network, else the number of
            classes of a class-conditional one (null label = ``num_classes``).
        label_dropout: probability of training on the null label (conditional only).
    """

    steps: int = 6000
    batch_size: int = 256
    lr: float = 1e-3
    warmup: int = 200
    width: int = 256
    depth: int = 3
    time_dim: int = 64
    dropout: float = 0.0
    weight_decay: float = 0.0
    ema_decay: float = 0.999
    eps: float = 1e-5
    time_sampling: str = "likelihood"
    seed: int = 0
    num_classes: int = 0
    label_dropout: float = 0.0

    def __post_init__(self):
        for name in ("steps", "batch_size", "width", "depth", "time_dim"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.warmup < 0:
            raise ValueError(f"warmup must be >= 0, got {self.warmup}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must lie in [0, 1), got {self.dropout}")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must lie in [0, 1), got {self.ema_decay}")
        if not 0.0 < self.eps < 1.0:
            raise ValueError(f"eps must lie in (0, 1), got {self.eps}")
        if self.num_classes < 0:
            raise ValueError(f"num_classes must be >= 0, got {self.num_classes}")
        if not 0.0 <= self.label_dropout < 1.0 or (self.label_dropout > 0 and self.num_classes == 0):
            raise ValueError(f"label_dropout must lie in [0, 1), and be 0 without classes, got {self.label_dropout}")
        if self.time_sampling not in TIME_SAMPLINGS:
            raise ValueError(f"time_sampling must be one of {TIME_SAMPLINGS}, got {self.time_sampling!r}")


def build_network(config: TrainConfig, sde, train_levels: torch.Tensor):
    """A fresh network of ``config``'s sizes, preconditioned with the exact moments of the dequantised
    ``train_levels`` ``(N, D)``: an :class:`EpsilonMLP`, or a :class:`ConditionalEpsilonMLP` when
    ``config.num_classes > 0``."""
    mean, cov = dequantized_moments(train_levels)
    if config.num_classes == 0:
        return EpsilonMLP(sde, mean, cov, width=config.width, depth=config.depth, time_dim=config.time_dim,
                          dropout=config.dropout)
    return ConditionalEpsilonMLP(sde, mean, cov, config.num_classes, width=config.width, depth=config.depth,
                                 time_dim=config.time_dim, dropout=config.dropout)


def sample_times(n: int, sde, eps: float, mode: str, *, generator=None, device=None) -> torch.Tensor:
    """Draw ``n`` training times in ``[eps, T]`` (SDE time units), shape ``(n,)``, float32.

    ``mode="uniform"``: ``U[eps, T]``.  ``mode="likelihood"``: density ∝
    ``β(t)/σ(t)²`` on ``[eps, T]`` (:func:`sdekit.losses.sample_time`'s
    ``"likelihood"``; for a VP SDE its antiderivative is ``log(exp(B(t)) − 1)``,
    inverted in closed form).  The importance weights are not returned: the
    demo's loss is the unweighted ε-loss at these times (module docstring).

    Raises:
        ValueError: on an unknown ``mode``, or an SDE without a closed-form proposal.
    """
    if mode not in TIME_SAMPLINGS:
        raise ValueError(f"mode must be one of {TIME_SAMPLINGS}, got {mode!r}")
    t, _ = sample_time(n, sde, eps, mode, generator=generator, device=device, dtype=torch.float32)
    return t


def train_epsilon_net(
    train_levels: torch.Tensor,
    sde,
    config: TrainConfig,
    *,
    train_labels: torch.Tensor | None = None,
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> tuple[torch.nn.Module, list[float]]:
    """Train an :class:`EpsilonMLP` (or, with classes, a :class:`ConditionalEpsilonMLP`) by denoising score matching.

    Every batch is drawn with replacement from ``train_levels`` and freshly
    dequantised (``sdekit.dequantize``, 17 levels into (−1, 1)).

    Args:
        train_levels: ``(N, D)`` int64 pixel levels in ``{0, …, 16}``.
        sde: the VP SDE to train under.
        config: hyperparameters, including the seed.
        train_labels: ``(N,)`` int64 labels, needed when ``config.num_classes > 0``.
        device: where to train.
        progress: show a tqdm bar.
    Returns:
        ``(ema_net, losses)``: the EMA network in eval mode with gradients
        disabled for its parameters, and the loss of each step.
    Raises:
        ValueError: if ``train_levels`` is not 2-D, or labels are missing for a conditional config.
    """
    if train_levels.dim() != 2:
        raise ValueError(f"train_levels must have shape (N, D), got {tuple(train_levels.shape)}")
    device = torch.device(device)
    cuda = [device.index or 0] if device.type == "cuda" else []
    # Initialisation and dropout draw from the global RNG: seed it, inside a
    # fork so that the caller's global random state is left as it was.
    with torch.random.fork_rng(devices=cuda):
        torch.manual_seed(config.seed)
        if config.num_classes > 0 and (train_labels is None or train_labels.shape != (train_levels.shape[0],)):
            raise ValueError("train_labels of shape (N,) are needed to train a class-conditional network")
        net = build_network(config, sde, train_levels).to(device)
        labels = None if config.num_classes == 0 or train_labels is None else train_labels.to(device)
        return _train_loop(net, train_levels.to(device), labels, sde, config, progress)


def _train_loop(net, levels, labels, sde, config: TrainConfig, progress: bool):
    device = levels.device
    # EMA of parameters and buffers: shadow ← d·shadow + (1 − d)·param (torch's own implementation).
    ema = AveragedModel(net, multi_avg_fn=get_ema_multi_avg_fn(config.ema_decay), use_buffers=True)
    opt = torch.optim.AdamW(net.parameters(), lr=config.lr, weight_decay=config.weight_decay)

    def lr_factor(step: int) -> float:
        if step < config.warmup:
            return (step + 1) / config.warmup
        progress_frac = (step - config.warmup) / max(1, config.steps - config.warmup)
        return 0.5 * (1.0 + math.cos(math.pi * progress_frac))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor)
    gen = torch.Generator(device=device).manual_seed(config.seed)
    losses = torch.zeros(config.steps, device=device)
    bar = tqdm(range(config.steps), desc="train", disable=not progress, mininterval=0.5)
    for step in bar:
        idx = torch.randint(len(levels), (config.batch_size,), generator=gen, device=device)
        x0 = sdekit.dequantize(levels[idx], LEVELS, DATA_RANGE, generator=gen)
        t = sample_times(config.batch_size, sde, config.eps, config.time_sampling, generator=gen, device=device)
        y = None
        if labels is not None:  # drop each label to the null label with probability label_dropout
            drop = torch.rand(config.batch_size, generator=gen, device=device) < config.label_dropout
            y = torch.where(drop, torch.full_like(labels[idx], config.num_classes), labels[idx])
        # Ho et al.'s ε-loss, mean over pixels and batch (σ²-weighted DSM; module docstring).
        loss = dsm_loss(net, sde, x0, t=t, parameterization="epsilon", weighting="sigma2", dim_reduction="mean",
                        eps=config.eps, generator=gen, model_kwargs=None if y is None else {"y": y}).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        ema.update_parameters(net)
        losses[step] = loss.detach()
        if (step + 1) % 200 == 0:  # one host sync every 200 steps
            bar.set_postfix(loss=f"{losses[step - 199 : step + 1].mean().item():.4f}")
    return ema.module.eval().requires_grad_(False), losses.tolist()
