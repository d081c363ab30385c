"""torch.distributed set-up for jobs: rank, world size, device, and the one barrier at the end.

Launched by ``torchrun`` (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR``/``MASTER_PORT`` in the environment), a job joins the default
process group (NCCL when the job runs on CUDA, gloo on the CPU).  Without
those variables, and no process group already initialised, it is one rank.
A job calls two collectives: :meth:`DistContext.broadcast` once at the start,
before any work (rank 0 tells the others whether it took the directory's lock
and accepted the manifest, :mod:`sdekit.jobs.lock`), and
:meth:`DistContext.barrier` after every rank has written its shards.  Neither
depends on how many function evaluations a rank's samples took, so adaptive
solvers cannot hang ranks that finish early (they simply wait there).
"""

from __future__ import annotations

import atexit
import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class DistContext:
    """Where this process stands in the job.

    Attributes:
        rank, world_size: of the default process group (0, 1 without one).
        device: this rank's device (``cuda:LOCAL_RANK`` for a CUDA job).
        owns_group: whether :func:`join` created the process group (it is then
            destroyed at interpreter exit, so that several jobs can run in one process).
    """

    rank: int
    world_size: int
    device: torch.device
    owns_group: bool = False

    def barrier(self) -> None:
        """Wait for every rank (no-op for one rank)."""
        if self.world_size > 1:
            dist.barrier()

    def broadcast(self, obj):
        """Rank 0's ``obj`` (any picklable object), on every rank (``obj`` itself for one rank)."""
        if self.world_size == 1:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]


def join(device: str = "cpu", timeout_s: float = 7200.0) -> DistContext:
    """Join the job's process group (or run as one rank) and pick this rank's device.

    Args:
        device: ``"cpu"`` or ``"cuda"``; with ``"cuda"`` rank ``r`` uses ``cuda:LOCAL_RANK``.
        timeout_s: how long the final barrier waits for the slowest rank
            (generous: ranks finish at different times by design).
    Raises:
        ValueError: on a ``device`` other than ``"cpu"``/``"cuda"``, or ``"cuda"`` without CUDA.
    """
    if device not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'cpu' or 'cuda', got {device!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device='cuda' but torch.cuda.is_available() is False")
    owns = False
    if not dist.is_initialized() and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        backend = "nccl" if device == "cuda" else "gloo"
        dist.init_process_group(backend=backend, timeout=datetime.timedelta(seconds=timeout_s))
        atexit.register(_destroy)
        owns = True
    rank = dist.get_rank() if dist.is_initialized() else 0
    world = dist.get_world_size() if dist.is_initialized() else 1
    dev = torch.device("cpu")
    if device == "cuda":
        dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(dev)
    return DistContext(rank, world, dev, owns)


def _destroy() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
