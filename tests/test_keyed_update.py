"""sdekit.kernels.keyed.KeyedUpdate (the key bound once for a sampling loop) against the plain calls.

Its bound C path (sdekit._native.KeyedLoop) must give the bits of affine_update / langevin_step, and
every call it cannot take (autograd, non-contiguous data, non-float scalars, a coefficient float32
cannot hold) must be the plain call.
"""

import pytest
import torch

from sdekit import _native
from sdekit import kernels as K
from sdekit.kernels.keyed import KeyedUpdate

pytestmark = pytest.mark.skipif(_native.library() is None, reason="no C compiler: only the plain path exists")

SEED = 2**63 + 99
SHAPES = [(1, 64), (7, 37), (3, 1), (2, 4100), (5, 3, 5, 7)]


def _bits_equal(a, b):
    assert a.dtype == b.dtype and a.shape == b.shape
    assert torch.equal(a.contiguous().view(torch.uint8), b.contiguous().view(torch.uint8))


@pytest.fixture
def bound(monkeypatch):
    """Counts the calls that took the bound C path."""
    n = []
    for name in ("affine", "langevin"):
        real = getattr(_native.KeyedLoop, name)

        def counted(self, *args, real=real, name=name):
            n.append(name)
            return real(self, *args)

        monkeypatch.setattr(_native.KeyedLoop, name, counted)
    return n


def _data(shape, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g).to(dtype), torch.randn(shape, generator=g).to(dtype)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("index", [None, "given"])
def test_affine_and_langevin_are_the_plain_calls(bound, shape, dtype, index):
    x, s = _data(shape, dtype)
    idx = None if index is None else torch.tensor([4, 2**32 - 1, 0, 9, 2**31, 1, 3][:shape[0]])
    update = KeyedUpdate(x, seed=SEED, sample_index=idx)
    key = {"seed": SEED, "sample_index": idx}
    for coefs in ((0.97, -0.013, 0.11, 0.25), (0.9, 0.5, 0.0, 0.0), (1.0, 0.02, 0.2, -0.0)):
        _bits_equal(update.affine(x, s, *coefs, stream=2**32 - 1), K.affine_update(x, s, *coefs, stream=2**32 - 1,
                                                                                   **key))
    s[0] = 0.0  # eps = 0 for that row (per-sample rule)
    for per_sample in (True, False):
        got = update.langevin(x, s, 0.16, 0.93, per_sample_norm=per_sample, stream=7)
        _bits_equal(got, K.langevin_step(x, s, 0.16, 0.93, per_sample_norm=per_sample, stream=7, **key)[0])
    assert bound == ["affine"] * 3 + ["langevin"] * 2


def test_what_the_bound_path_cannot_take_is_the_plain_call(bound):
    x, s = _data((4, 9), torch.float32, 1)
    update = KeyedUpdate(x, seed=SEED)
    plain = lambda xx, ss, *c: K.affine_update(xx, ss, *c, seed=SEED, stream=3)
    s_grad = s.clone().requires_grad_(True)
    y = update.affine(x, s_grad, 0.9, 0.1, 0.2, stream=3)  # autograd: differentiable, eager
    assert y.grad_fn is not None
    _bits_equal(y.detach(), plain(x, s, 0.9, 0.1, 0.2))
    wide = torch.randn(4, 18, generator=torch.Generator().manual_seed(2))[:, ::2]  # not contiguous
    _bits_equal(update.affine(x, wide, 0.9, 0.1, 0.2, stream=3), plain(x, wide, 0.9, 0.1, 0.2))
    _bits_equal(update.affine(x, s, 1, 0.1, 0.2, stream=3), plain(x, s, 1, 0.1, 0.2))  # an int coefficient
    _bits_equal(update.affine(x, s, 0.9, torch.tensor(0.1), 0.2, stream=3), plain(x, s, 0.9, torch.tensor(0.1), 0.2))
    _bits_equal(update.affine(x, s, 0.9, 1e39, 0.2, stream=3), plain(x, s, 0.9, 1e39, 0.2))  # beyond float32
    assert bound == ["affine"]  # only the last call reached the C loop (which refused it)
    with pytest.raises(TypeError, match="must be a finite real number"):
        update.affine(x, s, float("nan"), 0.1, 0.2, stream=3)
    with pytest.raises(ValueError, match="stream must be an integer"):
        update.affine(x, s, 0.9, 0.1, 0.2, stream=2**32)


def test_the_key_is_checked_once_at_construction():
    x = torch.zeros(3, 4)
    with pytest.raises(ValueError, match="seed must be given"):
        KeyedUpdate(x, seed=None)
    with pytest.raises(ValueError, match=r"sample_index must have shape \(3,\)"):
        KeyedUpdate(x, seed=1, sample_index=torch.arange(2))
    with pytest.raises(ValueError, match="backend must be one of"):
        KeyedUpdate(x, seed=1, backend="numpy")
