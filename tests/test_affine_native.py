"""The fused C affine update (sdekit._native.affine) against the eager torch code of affine_update_ref.

Both sides draw the noise natively (SDEKIT_NATIVE unchanged), so the noise is the same bits; the
eager side is forced by the private switch ``kernels.affine._NATIVE_FUSED = False``.  The C loop
evaluates ``a·x + b·s``, ``+ d``, ``+ c·z`` in the reference's order with the same rounding
(-ffp-contract=off), so the results must be equal bit for bit, not merely close.
"""

import pytest
import torch

import sdekit
from sdekit import _native
from sdekit import kernels as K
from sdekit.kernels import affine as A
from sdekit.noise import counter_normal_unchecked, split_seed

LIB = _native.library()
pytestmark = pytest.mark.skipif(LIB is None, reason="no C compiler: the eager path is the only path")

SEED = 2**63 + 12345
# (B, *D): odd numel, one sample, one element per sample, several C blocks per sample, a 4-D batch.
SHAPES = [(7, 37), (1, 5), (3, 1), (2, 4100), (5, 3, 5, 7)]


def _bits_equal(a, b):
    assert a.dtype == b.dtype and a.shape == b.shape
    assert torch.equal(a.contiguous().view(torch.uint8), b.contiguous().view(torch.uint8))


@pytest.fixture
def calls(monkeypatch):
    """Counts the C affine calls (so a test knows the fused path really ran)."""
    n = []
    real = _native.affine

    def counted(*args, **kwargs):
        ok = real(*args, **kwargs)
        n.append(ok)
        return ok

    monkeypatch.setattr(_native, "affine", counted)
    return n


def _eager(monkeypatch, fn, *args, **kwargs):
    with monkeypatch.context() as m:
        m.setattr(A, "_NATIVE_FUSED", False)
        return fn(*args, **kwargs)


def _data(shape, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g).to(dtype), torch.randn(shape, generator=g).to(dtype)


def _coef(kind, B, value, dtype, seed):
    g = torch.Generator().manual_seed(seed)
    if kind == "float":
        return value
    if kind == "scalar_tensor":
        return torch.tensor(value, dtype=dtype)
    if kind == "row":
        return (value * (1 + torch.rand(B, generator=g, dtype=torch.float64))).to(dtype)
    if kind == "row64":  # float64 coefficients for float32 data: rounded as the reference rounds them
        return value * (1 + torch.rand(B, generator=g, dtype=torch.float64))
    if kind == "strided":
        return (value * (1 + torch.rand(2 * B, generator=g, dtype=torch.float64))).to(dtype)[::2]
    raise AssertionError(kind)


def _check(monkeypatch, calls, *args, fused=True, **kwargs):
    ref = _eager(monkeypatch, K.affine_update_ref, *[a.clone() if isinstance(a, torch.Tensor) else a for a in args],
                 **{k: (v.clone() if isinstance(v, torch.Tensor) and k == "out" else v) for k, v in kwargs.items()})
    before = len(calls)
    got = K.affine_update_ref(*args, **kwargs)
    assert (len(calls) > before) == fused
    if isinstance(ref, tuple):
        assert len(got) == len(ref)
        for r, g in zip(ref, got):
            _bits_equal(g, r)
    else:
        _bits_equal(got, ref)
    return got


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("kind", ["float", "scalar_tensor", "row", "row64", "strided"])
@pytest.mark.parametrize("d", ["zero", "nonzero"])
@pytest.mark.parametrize("return_mean", [False, True])
def test_keyed_bitwise(monkeypatch, calls, shape, dtype, kind, d, return_mean):
    B = shape[0]
    x, s = _data(shape, dtype)
    a, b, c = (_coef(kind, B, v, dtype, i) for i, v in enumerate((0.97, -0.013, 0.11)))
    dd = 0.0 if d == "zero" else _coef(kind, B, 0.25, dtype, 7)
    idx = torch.tensor([0, 2**32 - 1, 5, 2**31, 17, 3, 9][:B])
    _check(monkeypatch, calls, x, s, a, b, c, dd, seed=SEED, sample_index=idx, stream=2**32 - 1,
           return_mean=return_mean)
    _check(monkeypatch, calls, x, s, a, b, c, dd, seed=3, stream=0, return_mean=return_mean)  # arange index


@pytest.mark.parametrize("return_mean", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(("noise", "target"), [(n, t) for n in ("key", "z", "none", "zero_tensor_c")
                                               for t in ("fresh", "x", "s", "z") if t != "z" or n == "z"])
def test_out(monkeypatch, calls, return_mean, dtype, noise, target):
    """``out=`` a fresh tensor, ``x``, ``s`` or the given ``z``: the reference's semantics (read, then write)."""
    shape = (7, 37)
    x, s = _data(shape, dtype, 1)
    z = _data(shape, dtype, 2)[0]
    kw = {"seed": SEED, "stream": 5}
    c = 0.3
    if noise == "z":
        kw["z"] = z
    elif noise == "none":
        c = 0.0
    elif noise == "zero_tensor_c":
        c = torch.zeros(7, dtype=dtype)  # a tensor zero still draws and adds c·z (-0 becomes +0)
    x[0, :3] = -0.0
    s[0, :3] = 0.0
    ref_args = {"fresh": None, "x": x, "s": s, "z": z}
    ref_x, ref_s, ref_z = x.clone(), s.clone(), z.clone()
    ref_out = {"fresh": torch.full(shape, 7.0, dtype=dtype), "x": ref_x, "s": ref_s, "z": ref_z}[target]
    ref_kw = dict(kw, z=ref_z) if "z" in kw else kw
    ref = _eager(monkeypatch, K.affine_update_ref, ref_x, ref_s, 0.9, 0.5, c, 0.0, out=ref_out,
                 return_mean=return_mean, **ref_kw)
    out = torch.full(shape, 7.0, dtype=dtype) if ref_args[target] is None else ref_args[target]
    got = K.affine_update_ref(x, s, 0.9, 0.5, c, 0.0, out=out, return_mean=return_mean, **kw)
    assert calls == [True]
    new = got[0] if return_mean else got
    assert new is out
    _bits_equal(new, ref[0] if return_mean else ref)
    if return_mean:
        _bits_equal(got[1], ref[1])
        assert got[1].data_ptr() != out.data_ptr()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_given_z_and_no_noise(monkeypatch, calls, dtype):
    x, s = _data((5, 3, 5, 7), dtype, 3)
    z = _data((5, 3, 5, 7), dtype, 4)[0]
    rows = torch.linspace(0.1, 0.9, 5, dtype=dtype)
    _check(monkeypatch, calls, x, s, rows, 0.5, rows, 0.25, z=z, return_mean=True)
    _check(monkeypatch, calls, x, s, rows, 0.5, 0.0, rows, return_mean=False)
    new, mean = _check(monkeypatch, calls, x, s, 0.9, rows, 0.0, 0.0, return_mean=True)
    assert new is mean  # the reference's mean is its result without noise and out


def test_stream_tensor():
    """Per-row streams (the C entry point; affine_update's key takes an int stream)."""
    B, N = 6, 1029
    x, s = _data((B, N), torch.float32, 5)
    idx = torch.tensor([0, 1, 2**32 - 1, 7, 7, 123456789])
    streams = torch.tensor([0, 2**32 - 1, 3, 3, 4, 99])
    a = torch.linspace(0.5, 1.0, B)
    c = torch.linspace(0.1, 0.2, B)
    k0, k1 = split_seed(SEED)
    for stream in (streams, 11):
        out, mean = torch.empty_like(x), torch.empty_like(x)
        assert _native.affine(x, s, (a, 0.3, c, 0.5), True, key=(k0, k1, stream, idx), out=out, mean=mean)
        ref_mean = a[:, None] * x
        ref_mean = ref_mean + 0.3 * s
        ref_mean = ref_mean + 0.5
        z = counter_normal_unchecked(k0, k1, stream, idx, (N,))
        _bits_equal(mean, ref_mean)
        _bits_equal(out, ref_mean + c[:, None] * z)


def test_eager_where_it_does_not_apply(monkeypatch, calls):
    x, s = _data((4, 9), torch.float32, 6)
    ref = _eager(monkeypatch, K.affine_update_ref, x, s, 0.9, 0.1, 0.2, seed=1)
    xg = x.clone().requires_grad_(True)
    y = K.affine_update_ref(xg, s, 0.9, 0.1, 0.2, seed=1)  # autograd: eager, differentiable
    assert y.grad_fn is not None
    _bits_equal(y.detach(), ref)
    with torch.no_grad():
        _bits_equal(K.affine_update_ref(xg, s, 0.9, 0.1, 0.2, seed=1), ref)  # no graph needed: fused
    assert calls == [True]
    K.affine_update_ref(x.half(), s.half(), 0.9, 0.1, 0.2, seed=1)  # float16: eager
    K.affine_update_ref(x.t().contiguous().t(), s, 0.9, 0.1, 0.2, seed=1)  # non-contiguous x: eager
    K.affine_update_ref(x, s.double(), 0.9, 0.1, 0.2, seed=1)  # mixed dtypes: eager
    K.affine_update_ref(x, s, 1e300, 0.1, 0.2, seed=1)  # a float float32 cannot hold: torch's code (and error)
    buf = torch.zeros(2 * 36 + 1)
    xo = buf[:36].view(4, 9)
    xo.copy_(x)
    K.affine_update_ref(xo, s, 0.9, 0.1, 0.2, seed=1, out=buf[1:37].view(4, 9))  # out partly overlaps x: eager
    monkeypatch.setenv("SDEKIT_NATIVE", "0")
    K.affine_update_ref(x, s, 0.9, 0.1, 0.2, seed=1)
    assert calls == [True, False]  # the 1e300 call reached the C wrapper, which declined


@pytest.mark.parametrize("per_sample_norm", [True, False])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("out", [None, "x"])
@pytest.mark.parametrize("return_mean", [False, True])
def test_langevin_bitwise(monkeypatch, calls, per_sample_norm, dtype, out, return_mean):
    x, s = _data((5, 3, 7), dtype, 8)
    s[2] = 0  # eps = 0 for that sample
    alpha = torch.linspace(0.5, 1.0, 5, dtype=dtype)
    ref_x = x.clone()
    kw = {"per_sample_norm": per_sample_norm, "seed": SEED, "stream": 9, "return_mean": return_mean}
    ref = _eager(monkeypatch, K.langevin_step_ref, ref_x, s, 0.16, alpha, out=ref_x if out else None, **kw)
    got = K.langevin_step_ref(x, s, 0.16, alpha, out=x if out else None, **kw)
    assert calls == [True]
    if out:
        assert got[0] is x
    for r, g in zip(ref, got):
        _bits_equal(g, r)
    z = _data((5, 3, 7), dtype, 9)[0]
    got = K.langevin_step_ref(x, s, 0.16, 1.0, z=z, **kw)
    ref = _eager(monkeypatch, K.langevin_step_ref, x, s, 0.16, 1.0, z=z, **kw)
    for r, g in zip(ref, got):
        _bits_equal(g, r)


@pytest.mark.parametrize("method", ["euler_maruyama", "reverse_diffusion", "ancestral"])
@pytest.mark.parametrize("corrector", [None, "langevin"])
def test_sample_bitwise(monkeypatch, calls, method, corrector):
    """The whole keyed sampler (predictor, corrector, Tweedie step) gives the eager path's bits."""
    sde = sdekit.VPSDE()
    kw = {"method": method, "steps": 6, "corrector": corrector, "seed": 4}
    ref = _eager(monkeypatch, sdekit.sample, lambda x, t: -x, sde, (3, 2, 5), **kw)
    got = sdekit.sample(lambda x, t: -x, sde, (3, 2, 5), **kw)
    assert calls and all(calls)
    _bits_equal(got.x, ref.x)
