"""Counter-based noise: Philox known answers, batch invariance, and the normal law."""

import math

import pytest
import torch

from sdekit.noise import counter_normal, philox4x32
from tests.philox_kat import KAT
from tests.stats import Z, assert_mean_close


@pytest.mark.parametrize("ctr,key,expected", KAT)
def test_philox_known_answers(ctr, key, expected):
    out = philox4x32(*(torch.tensor([c], dtype=torch.int64) for c in ctr), *key)
    assert tuple(int(o) for o in out) == expected


def test_batch_invariant_and_deterministic():
    idx = torch.arange(64)
    full = counter_normal(7, 3, idx, (5, 3))
    assert full.shape == (64, 5, 3) and full.dtype == torch.float32
    for rows in (torch.tensor([0]), torch.arange(10, 17), torch.tensor([63, 2, 40])):
        assert torch.equal(counter_normal(7, 3, rows, (5, 3)), full[rows])
    assert torch.equal(counter_normal(7, 3, idx, (5, 3)), full)


def test_keys_give_different_draws():
    idx = torch.arange(4)
    base = counter_normal(7, 3, idx, (16,))
    for other in (counter_normal(8, 3, idx, (16,)), counter_normal(7, 4, idx, (16,)),
                  counter_normal(7, 3, idx + 4, (16,)), counter_normal(2**40 + 7, 3, idx, (16,))):
        assert not torch.isclose(base, other).any()


def test_per_sample_stream_tensor_matches_scalar_stream():
    idx = torch.arange(6)
    streams = torch.tensor([0, 1, 2, 0, 1, 2])
    z = counter_normal(1, streams, idx, (9,))
    for s in range(3):
        rows = streams == s
        assert torch.equal(z[rows], counter_normal(1, s, idx[rows], (9,)))


def test_normal_law():
    """Mean 0, variance 1, kurtosis 3 and no correlation across elements, samples or streams."""
    n, d = 4096, 8
    z = counter_normal(123, 0, torch.arange(n), (d,)).double()
    flat = z.reshape(-1, 1)
    assert_mean_close(flat, [0.0])
    assert_mean_close(flat**2, [1.0], what="variance")
    assert_mean_close(flat**4, [3.0], what="fourth moment")
    # Lag-1 products within a sample (neighbours share a Philox call), across samples and streams.
    z2 = counter_normal(123, 1, torch.arange(n), (d,)).double()
    for prod, what in ((z[:, :-1] * z[:, 1:], "element lag"), (z[:-1] * z[1:], "sample lag"), (z * z2, "stream")):
        assert_mean_close(prod.reshape(-1, 1), [0.0], what=what)
    # Tail mass beyond 3σ: 2.7e-3 with binomial standard error.
    p = math.erfc(3 / math.sqrt(2))
    frac = (flat.abs() > 3).double().mean().item()
    assert abs(frac - p) <= Z * math.sqrt(p * (1 - p) / flat.numel())


def test_odd_shapes_and_errors():
    assert counter_normal(0, 0, torch.arange(3), (7,)).shape == (3, 7)
    assert counter_normal(0, 0, torch.arange(3), ()).shape == (3,)
    with pytest.raises(ValueError, match="seed"):
        counter_normal(-1, 0, torch.arange(3), (2,))
    with pytest.raises(ValueError, match="stream"):
        counter_normal(0, 2**32, torch.arange(3), (2,))
    with pytest.raises(ValueError, match="sample_index"):
        counter_normal(0, 0, torch.tensor([-1, 0]), (2,))
    with pytest.raises(TypeError, match="sample_index"):
        counter_normal(0, 0, torch.zeros(3), (2,))


def test_one_rule_for_seed_and_generator():
    """``noise_kind``: the rule sample(), the k-diffusion samplers, the scheduler and the likelihood apply."""
    from sdekit.noise import noise_kind

    assert noise_kind(3, None, None) == "keyed" and noise_kind(3, torch.arange(2), None) == "keyed"
    assert noise_kind(None, None, None) == "generator" == noise_kind(None, None, torch.Generator())
    with pytest.raises(ValueError, match="either seed or generator for the probes, not both"):
        noise_kind(3, None, torch.Generator(), what="the probes")
    with pytest.raises(ValueError, match="sample_index needs seed"):
        noise_kind(None, torch.arange(2), None)
    assert noise_kind(None, torch.arange(2), None, index_needs_seed=False) == "generator"
    with pytest.raises(TypeError, match="generator must be a torch.Generator"):
        noise_kind(None, None, 7)
    with pytest.raises(ValueError, match="seed"):
        noise_kind(-1, None, None)
