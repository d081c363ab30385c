"""Deterministic per-sample sums of the partial sums a kernel wrote per (sample, chunk).

The kernels that need a per-sample norm write one partial sum per tile row;
this adds a row's partials in a fixed order (blocks of ``BLOCK_C`` then one
tree), so a sample's total does not depend on how many samples share the batch
(torch's reductions may split a row differently for different batch sizes, and
atomics would add in a racy order).

Imports Triton: the launchers import this at their first launch, never ``import sdekit``.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl


# C is a compile-time constant (one compile per per-sample size): Triton < 3.8's interpreter
# cannot take a runtime loop bound.
@triton.jit
def _row_sum_kernel(in_ptr, out_ptr, C: tl.constexpr, BLOCK_C: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    acc = tl.zeros((BLOCK_C,), tl.float32)
    for start in range(0, C, BLOCK_C):
        cols = start + tl.arange(0, BLOCK_C)
        acc += tl.load(in_ptr + row * C + cols, mask=cols < C, other=0.0)
    tl.store(out_ptr + row, tl.sum(acc, axis=0))


def row_sum(partials: torch.Tensor) -> torch.Tensor:
    """``(R, C)`` float32 partial sums → ``(R,)`` row totals (the partials themselves when ``C == 1``)."""
    R, C = partials.shape
    if C == 1:
        return partials[:, 0]
    out = torch.empty(R, dtype=torch.float32, device=partials.device)
    _row_sum_kernel[(R,)](partials, out, C, BLOCK_C=min(1024, triton.next_power_of_2(C)))
    return out
