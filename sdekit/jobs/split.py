"""How a job's sample-index range is cut into shards and the shards dealt to ranks.

Shard ``k`` holds the global sample indices ``[k·S, min((k+1)·S, N))``.  The
cut depends only on ``N`` and ``S``, never on the number of ranks or the batch
size, so a job resumed with a different world size reuses every shard.
Rank ``r`` of ``W`` takes shards ``r, r + W, r + 2W, …`` (round robin).
"""

from __future__ import annotations

from .._checks import check_positive_int


def shard_ranges(num_samples: int, shard_size: int) -> list[tuple[int, int]]:
    """``[(start, stop), …]`` of every shard, in order.

    Raises:
        ValueError: if ``num_samples`` or ``shard_size`` is not an integer >= 1,
            or the indices would not fit the noise key (< 2³²).
    """
    n = check_positive_int("num_samples", num_samples)
    s = check_positive_int("shard_size", shard_size)
    if n > 2**32:
        raise ValueError(f"num_samples must be at most 2**32 (sample indices key the noise), got {n}")
    return [(k, min(k + s, n)) for k in range(0, n, s)]


def shards_of_rank(n_shards: int, rank: int, world_size: int) -> list[int]:
    """The shard numbers rank ``rank`` of ``world_size`` computes."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must lie in [0, world_size) = [0, {world_size}), got {rank}")
    return list(range(rank, n_shards, world_size))


def batches(start: int, stop: int, batch_size: int) -> list[tuple[int, int]]:
    """``[start, stop)`` cut into consecutive batches of at most ``batch_size``."""
    b = check_positive_int("batch_size", batch_size)
    return [(i, min(i + b, stop)) for i in range(start, stop, b)]
