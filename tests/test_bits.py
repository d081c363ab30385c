"""Dequantisation and bits/dim conventions."""

import math

import pytest
import torch

import sdekit


def test_uniform_density_costs_log2_levels_bits():
    """A uniform density on [lo, hi]^D gives every discrete value P = levels^-D: log2(levels) bits/dim."""
    for levels, (lo, hi) in [(256, (0.0, 1.0)), (256, (-1.0, 1.0)), (17, (-1.0, 1.0))]:
        dim = 64
        log_p = torch.full((3,), -dim * math.log(hi - lo), dtype=torch.float64)
        bpd = sdekit.bits_per_dim(log_p, dim, levels, (lo, hi))
        torch.testing.assert_close(bpd, torch.full((3,), math.log2(levels), dtype=torch.float64))


def test_offsets_match_the_usual_8_and_7_bits():
    zero = torch.zeros(1, dtype=torch.float64)
    assert sdekit.bits_per_dim(zero, 10, 256, (0, 1)).item() == pytest.approx(8.0)
    assert sdekit.bits_per_dim(zero, 10, 256, (-1, 1)).item() == pytest.approx(7.0)


def test_dequantize_stays_in_its_bin_and_is_seeded():
    k = torch.randint(0, 17, (500, 64), generator=torch.Generator().manual_seed(0))
    x = sdekit.dequantize(k, 17, (-1.0, 1.0), generator=torch.Generator().manual_seed(1))
    width = 2.0 / 17
    assert torch.equal(torch.floor((x + 1.0) / width).long(), k)
    y = sdekit.dequantize(k, 17, (-1.0, 1.0), generator=torch.Generator().manual_seed(1))
    assert torch.equal(x, y)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: sdekit.dequantize(torch.tensor([17]), 17, (-1, 1)), "levels-1"),
        (lambda: sdekit.dequantize(torch.tensor([0.5]), 17, (-1, 1)), "integers"),
        (lambda: sdekit.bits_per_dim(torch.zeros(2), 4, 0), "levels"),
        (lambda: sdekit.bits_per_dim(torch.zeros(2), 0, 4), "dim"),
        (lambda: sdekit.bits_per_dim(torch.zeros(2), 4, 4, (1, 0)), "data_range"),
    ],
)
def test_bad_input(call, match):
    with pytest.raises(ValueError, match=match):
        call()
