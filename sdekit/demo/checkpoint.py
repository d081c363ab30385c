"""A checkpoint cache for the trained network, keyed by what determines its weights."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from pathlib import Path

import torch

from .train import TrainConfig, build_network, train_epsilon_net

#: Bump when the network or training code changes in a way the config cannot see.
CODE_VERSION = 2


def cache_key(config: TrainConfig, split_seed: int, sde) -> str:
    """Hex digest (16 chars) of the hyperparameters, data split, SDE, code version and torch version."""
    payload = {
        "config": dataclasses.asdict(config),
        "split_seed": split_seed,
        "sde": repr(sde),
        "code_version": CODE_VERSION,
        "torch": torch.__version__,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


@dataclasses.dataclass
class TrainedModel:
    """A network ready for sampling, and where it came from.

    Attributes:
        net: the (EMA) ε-network in eval mode, on the requested device.
        loaded: ``True`` if read from the cache, ``False`` if trained now.
        path: the checkpoint file.
        seconds: wall time spent training (or loading), in seconds.
        final_loss: mean ε-loss of the last 10% of training steps (NaN if loaded).
    """

    net: torch.nn.Module
    loaded: bool
    path: Path
    seconds: float
    final_loss: float


def load_or_train(train_levels: torch.Tensor, sde, config: TrainConfig, out_dir: str | Path, *,
                  split_seed: int, device="cpu", use_cache: bool = True, progress: bool = True,
                  train_labels: torch.Tensor | None = None) -> TrainedModel:
    """Return the network for ``config``, from ``out_dir`` if cached, else train and cache it.

    The file is ``out_dir/checkpoint-<cache_key>.pt`` holding the EMA weights
    (a ``state_dict``) and the config; any change of hyperparameters, split
    seed, SDE or torch version gives another key and so retrains.

    Args:
        train_levels: ``(N, D)`` int64 training pixel levels.
        sde: the SDE to train under.
        config: training hyperparameters.
        out_dir: cache folder (created if missing).
        split_seed: seed of the train/test split (part of the key).
        device: where the returned network lives.
        use_cache: ``False`` ignores an existing checkpoint (and overwrites it).
        progress: tqdm bar while training.
        train_labels: ``(N,)`` int64 labels (class-conditional configs).
    Returns:
        :class:`TrainedModel`.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"checkpoint-{cache_key(config, split_seed, sde)}.pt"
    start = time.perf_counter()
    if use_cache and path.exists():
        state = torch.load(path, map_location=device, weights_only=True)
        net = build_network(config, sde, train_levels).to(device)
        net.load_state_dict(state["state_dict"])
        net.eval().requires_grad_(False)
        return TrainedModel(net, True, path, time.perf_counter() - start, float("nan"))
    net, losses = train_epsilon_net(train_levels, sde, config, train_labels=train_labels, device=device,
                                    progress=progress)
    seconds = time.perf_counter() - start
    tail = losses[-max(1, len(losses) // 10):]
    torch.save({"state_dict": net.state_dict(), "config": dataclasses.asdict(config)}, path)
    return TrainedModel(net, False, path, seconds, sum(tail) / len(tail))
