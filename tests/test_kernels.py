"""Triton kernels against their PyTorch references, the in-kernel noise, and batch invariance.

Without a GPU the kernels run in Triton's interpreter (tests/conftest.py sets
TRITON_INTERPRET=1 before sdekit is imported); with one they run compiled on it.

Accuracy criterion (flash-attention's): against a float64 evaluation of the same
formula on the same stored inputs, the kernel's error is at most twice the error
of the PyTorch reference in the same storage dtype, plus ``ATOL``.
"""

import math

import pytest
import torch
from scipy import stats

from sdekit import kernels as K
from sdekit.noise import counter_normal, philox4x32
from sdekit.solvers.tableaus import DOPRI5
from tests.philox_kat import KAT
from tests.stats import Z, assert_mean_close

RUNNABLE = K.HAS_TRITON and (K.INTERPRETED or torch.cuda.is_available())
pytestmark = pytest.mark.skipif(
    not RUNNABLE, reason="needs Triton with a CUDA GPU, or TRITON_INTERPRET=1 set before sdekit is imported"
)
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
DTYPES = [torch.float32, torch.float16, torch.bfloat16]
# (B, *D): odd sizes, one element per sample, several tiles per sample (2 × 2048 + 4), a 4-D image batch.
SHAPES = [(7, 37), (3, 1), (2, 4100), (5, 3, 5, 7)]
ATOL = 1e-5
#: Float32 noise of the kernel vs the reference: the Philox words and uniforms are identical bit for
#: bit, so |Δz| is the rounding of log/sqrt/cos/sin in float32 (a few ulp of |z| <= 5.9).
NOISE_ATOL = 1e-5
SEED = 2**63 + 12345  # both key words non-zero, the high one above 2**31
BIG_INDEX = 2**32 - 1


def _randn(shape, seed, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    return (scale * torch.randn(shape, generator=g, dtype=torch.float64)).to(DEVICE)


def assert_as_accurate(out, ref, truth, what):
    """Kernel error <= max(2 × reference error, one storage ulp at the largest |truth|) + ATOL.

    The ulp floor covers tensors too small for the reference's maximum error to reach
    half an ulp by chance (and Triton's interpreter, which rounds to bfloat16 by truncation).
    """
    err_k = (out.double() - truth).abs().max().item()
    err_r = (ref.double() - truth).abs().max().item()
    ulp = torch.finfo(out.dtype).eps * truth.abs().max().item()
    tol = max(2 * err_r, ulp) + ATOL
    assert err_k <= tol, (f"{what}: kernel error {err_k:.3g} > max(2 × reference error {err_r:.3g}, "
                          f"ulp {ulp:.3g}) + {ATOL}")


if K.HAS_TRITON:
    import triton
    import triton.language as tl

    from sdekit.kernels.philox import philox4x32 as philox_in_kernel

    @triton.jit(do_not_specialize=["k0", "k1"])
    def _philox_words_kernel(out_ptr, ctr_ptr, k0, k1, n, BLOCK: tl.constexpr):
        i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        m = i < n
        c0 = tl.load(ctr_ptr + 4 * i, mask=m, other=0).to(tl.uint32)
        c1 = tl.load(ctr_ptr + 4 * i + 1, mask=m, other=0).to(tl.uint32)
        c2 = tl.load(ctr_ptr + 4 * i + 2, mask=m, other=0).to(tl.uint32)
        c3 = tl.load(ctr_ptr + 4 * i + 3, mask=m, other=0).to(tl.uint32)
        key0, key1 = k0.to(tl.uint32, bitcast=True), k1.to(tl.uint32, bitcast=True)
        w0, w1, w2, w3 = philox_in_kernel(c0, c1, c2, c3, key0, key1)
        tl.store(out_ptr + 4 * i, w0.to(tl.int64), mask=m)
        tl.store(out_ptr + 4 * i + 1, w1.to(tl.int64), mask=m)
        tl.store(out_ptr + 4 * i + 2, w2.to(tl.int64), mask=m)
        tl.store(out_ptr + 4 * i + 3, w3.to(tl.int64), mask=m)


def _words(ctr: torch.Tensor, k0: int, k1: int) -> torch.Tensor:
    out = torch.empty_like(ctr)
    n = ctr.shape[0]
    _philox_words_kernel[(triton.cdiv(n, 64),)](out, ctr, K._triton.as_int32_word(k0), K._triton.as_int32_word(k1),
                                                n, BLOCK=64)
    return out



@pytest.mark.parametrize("ctr,key,expected", KAT)
def test_in_kernel_philox_known_answers(ctr, key, expected):
    out = _words(torch.tensor([ctr], dtype=torch.int64, device=DEVICE), *key)
    assert tuple(out[0].tolist()) == expected


def test_in_kernel_philox_words_equal_the_reference():
    g = torch.Generator().manual_seed(0)
    ctr = torch.randint(0, 2**32, (1000, 4), generator=g, dtype=torch.int64)
    k0, k1 = 0x9E3779B9, 0x0BADF00D
    ref = torch.stack(philox4x32(*ctr.unbind(1), k0, k1), dim=1)
    assert torch.equal(_words(ctr.to(DEVICE), k0, k1).cpu(), ref)


@pytest.mark.parametrize("shape", [(5, 37), (3, 1), (2, 4100), (4, 3, 5, 7)])
def test_kernel_noise_equals_the_reference_noise(shape):
    idx = torch.tensor([0, BIG_INDEX, 17, 2**31, 5][: shape[0]], device=DEVICE)
    stream = 2**32 - 2
    z = K.normal(SEED, idx, stream, shape[1:], backend="triton")
    ref = counter_normal(SEED, stream, idx.cpu(), shape[1:])
    assert z.shape == shape and z.dtype == torch.float32
    torch.testing.assert_close(z.cpu(), ref, rtol=0, atol=NOISE_ATOL)
    half = K.normal(SEED, idx, stream, shape[1:], dtype=torch.bfloat16, backend="triton")
    assert half.dtype == torch.bfloat16  # stored after a float32 draw: within one bfloat16 ulp
    torch.testing.assert_close(half.cpu().float(), ref, rtol=2**-7, atol=NOISE_ATOL)


def test_normal_has_its_own_kernel_and_reference():
    """``normal_triton`` (its own kernel) and ``normal_ref`` draw the words the fused update adds: the affine
    update of ``x = 0`` with ``c = 1`` is the same noise, on both backends."""
    idx = torch.tensor([3, BIG_INDEX, 0], device=DEVICE)
    z = K.normal_triton(SEED, idx, 7, (2, 33))
    ref = K.normal_ref(SEED, idx.cpu(), 7, (2, 33))
    torch.testing.assert_close(z.cpu(), ref, rtol=0, atol=NOISE_ATOL)
    zero = torch.zeros((3, 2, 33), device=DEVICE)
    fused = K.affine_update_triton(zero, zero, 1.0, 0.0, 1.0, seed=SEED, sample_index=idx, stream=7)
    torch.testing.assert_close(fused, z, rtol=0, atol=0)
    assert torch.equal(K.normal(SEED, idx.cpu(), 7, (2, 33), backend="torch"), ref)
    with pytest.raises(ValueError, match="sample_index"):
        K.normal_ref(SEED, torch.zeros((2, 2), dtype=torch.int64), 0, (4,))


def test_kernel_noise_normal_law():
    """Mean 0, variance 1, kurtosis 3, KS, tail mass; no correlation across elements, groups, samples, streams."""
    n, d = 4096, 8
    idx = torch.arange(n, device=DEVICE)
    z = K.normal(123, idx, 0, (d,), backend="triton").double().cpu()
    flat = z.reshape(-1, 1)
    assert_mean_close(flat, [0.0])
    assert_mean_close(flat**2, [1.0], what="variance")
    assert_mean_close(flat**4, [3.0], what="fourth moment")
    z2 = K.normal(123, idx, 1, (d,), backend="triton").double().cpu()
    pairs = (
        (z[:, :-1] * z[:, 1:], "element lag 1 (same Philox call)"),
        (z[:, :-4] * z[:, 4:], "element lag 4 (next Philox call)"),
        (z[:-1] * z[1:], "sample lag 1"),
        (z * z2, "stream"),
    )
    for prod, what in pairs:
        assert_mean_close(prod.reshape(-1, 1), [0.0], what=what)
    # Kolmogorov–Smirnov against N(0, 1): a p-value below 5.7e-7 is a 5σ event.
    assert stats.kstest(flat[:, 0].numpy(), "norm").pvalue > 5.7e-7
    p = math.erfc(3 / math.sqrt(2))
    frac = (flat.abs() > 3).double().mean().item()
    assert abs(frac - p) <= Z * math.sqrt(p * (1 - p) / flat.numel())


def _coefs(kind, B):
    if kind == "scalar":
        return 0.9, -0.4, 0.7, 0.25
    if kind == "per_sample":  # float64 vectors, as the samplers' per-sample times give
        v = torch.linspace(0.5, 1.5, B, dtype=torch.float64, device=DEVICE)
        return v, -0.4 * v, 0.3 * v, torch.full((B,), 0.25, dtype=torch.float64, device=DEVICE)
    return (torch.tensor(0.9, device=DEVICE), -0.4, torch.tensor(0.7, device=DEVICE), 0.0)  # 0-dim tensors


def _affine_truth(x, s, z, coefs):
    col = lambda v: v.double().reshape((-1,) + (1,) * (x.dim() - 1)) if isinstance(v, torch.Tensor) else v  # noqa: E731
    a, b, c, d = (col(v) for v in coefs)
    mean = a * x.double() + b * s.double() + d
    return mean + c * z.double(), mean


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("kind", ["scalar", "per_sample", "zero_dim"])
def test_affine_update_matches_reference_with_explicit_noise(dtype, shape, kind):
    x, s, z = (_randn(shape, i).to(dtype) for i in range(3))
    coefs = _coefs(kind, shape[0])
    out, mean = K.affine_update_triton(x, s, *coefs, z=z, return_mean=True)
    ref, ref_mean = K.affine_update_ref(x, s, *coefs, z=z, return_mean=True)
    assert out.dtype == dtype and out.shape == shape
    truth, truth_mean = _affine_truth(x, s, z, coefs)
    assert_as_accurate(out, ref, truth, f"affine {dtype} {shape} {kind}")
    assert_as_accurate(mean, ref_mean, truth_mean, f"affine mean {dtype} {shape} {kind}")


@pytest.mark.parametrize("shape", SHAPES)
def test_affine_update_in_kernel_noise_matches_reference(shape):
    x, s = _randn(shape, 1).float(), _randn(shape, 2).float()
    B = shape[0]
    idx = torch.arange(BIG_INDEX - B + 1, BIG_INDEX + 1, device=DEVICE)
    kw = dict(seed=SEED, sample_index=idx, stream=77)
    out = K.affine_update_triton(x, s, 0.9, -0.4, 1.3, 0.1, **kw)
    ref = K.affine_update_ref(x, s, 0.9, -0.4, 1.3, 0.1, **kw)
    torch.testing.assert_close(out, ref, rtol=0, atol=1.3 * NOISE_ATOL + ATOL)


def test_affine_update_in_place_noise_free_and_non_contiguous():
    x, s = _randn((6, 9), 1).float(), _randn((6, 9), 2).float()
    expected = K.affine_update_ref(x, s, 0.5, 2.0, 1.0, seed=3, stream=4)
    buf = x.clone()
    assert K.affine_update_triton(buf, s, 0.5, 2.0, 1.0, seed=3, stream=4, out=buf) is buf
    torch.testing.assert_close(buf, expected, rtol=0, atol=NOISE_ATOL + ATOL)
    # c = 0.0 draws no noise (and needs no seed); a transposed s is read correctly.
    st = _randn((9, 6), 2).float().t()
    torch.testing.assert_close(K.affine_update_triton(x, st, 0.5, 2.0), 0.5 * x + 2.0 * st, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_langevin_step_matches_reference_with_explicit_noise(dtype, shape):
    x, s, z = _randn(shape, 1).to(dtype), _randn(shape, 2, scale=3.0).to(dtype), _randn(shape, 3).to(dtype)
    alpha = torch.linspace(0.8, 1.0, shape[0], dtype=torch.float64, device=DEVICE)
    out, mean, eps = K.langevin_step_triton(x, s, 0.16, alpha, z=z, return_mean=True)
    ref, ref_mean, ref_eps = K.langevin_step_ref(x, s, 0.16, alpha, z=z, return_mean=True)
    # Truth in float64 from the stored inputs: ε = 2 α (snr ‖z‖/‖s‖)², x + ε s + √(2ε) z.
    xd, sd, zd = x.double(), s.double(), z.double()
    eps_true = 2 * alpha * (0.16 * zd.flatten(1).norm(dim=1) / sd.flatten(1).norm(dim=1)) ** 2
    col = eps_true.reshape((-1,) + (1,) * (x.dim() - 1))
    torch.testing.assert_close(eps.double(), eps_true, rtol=2e-6, atol=0)
    assert_as_accurate(out, ref, xd + col * sd + (2 * col).sqrt() * zd, f"langevin {dtype} {shape}")
    assert_as_accurate(mean, ref_mean, xd + col * sd, f"langevin mean {dtype} {shape}")
    torch.testing.assert_close(eps, ref_eps, rtol=2e-6, atol=0)


@pytest.mark.parametrize("per_sample", [True, False])
def test_langevin_step_in_kernel_noise_and_zero_score(per_sample):
    shape = (5, 3, 7)
    x, s = _randn(shape, 1).float(), _randn(shape, 2).float()
    s[2] = 0.0  # ‖s‖ = 0: ε = 0 for that sample under the per-sample rule
    kw = dict(per_sample_norm=per_sample, seed=SEED, sample_index=torch.arange(10, 15, device=DEVICE), stream=9)
    out, eps = K.langevin_step_triton(x, s, 0.2, 0.9, **kw)
    ref, ref_eps = K.langevin_step_ref(x, s, 0.2, 0.9, **kw)
    torch.testing.assert_close(eps, ref_eps, rtol=1e-5, atol=0)
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-5)
    if per_sample:
        assert eps[2].item() == 0.0 and torch.equal(out[2], x[2])
    else:
        assert bool((eps == eps[0]).all())


def _rk_truth(y, ks, h, rtol, atol):
    yd, hd = y.double(), h.double().reshape((-1,) + (1,) * (y.dim() - 1))
    inc = sum(w * k.double() for w, k in zip(DOPRI5.b, ks))
    err = hd * sum(w * k.double() for w, k in zip(DOPRI5.b_error, ks))
    y_new = yd + hd * inc
    scale = atol + rtol * torch.maximum(yd.abs(), y_new.abs())
    return y_new, (err / scale).flatten(1).pow(2).mean(1).sqrt()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_rk_combine_matches_reference_and_the_solver_formula(dtype, shape):
    y = _randn(shape, 0).to(dtype)
    ks = [_randn(shape, i + 1).to(dtype) for i in range(DOPRI5.stages)]
    h = torch.linspace(-0.05, -0.2, shape[0], device=DEVICE)  # signed per-sample steps (backwards in time)
    out, norm = K.rk_combine_triton(y, ks, DOPRI5.b, DOPRI5.b_error, h, 1e-3, 1e-4)
    ref, ref_norm = K.rk_combine_ref(y, ks, DOPRI5.b, DOPRI5.b_error, h, 1e-3, 1e-4)
    y_true, norm_true = _rk_truth(y, ks, h, 1e-3, 1e-4)
    assert out.dtype == dtype and norm.dtype == torch.float32 and norm.shape == (shape[0],)
    assert_as_accurate(out, ref, y_true, f"rk y_new {dtype} {shape}")
    # The norm is formed from float32 arithmetic on the stored inputs in both implementations.
    torch.testing.assert_close(norm.double(), norm_true, rtol=1e-4, atol=0)
    torch.testing.assert_close(norm, ref_norm, rtol=1e-5, atol=0)


def test_rk_combine_scalar_step_and_in_place():
    y = _randn((4, 10), 0).float()
    ks = [_randn((4, 10), i + 1).float() for i in range(3)]
    b, b_err = [1 / 6, 2 / 3, 1 / 6], [1 / 6, -1 / 3, 1 / 6]
    ref, ref_norm = K.rk_combine_ref(y, ks, b, b_err, 0.1, 1e-3, 1e-3)
    buf = y.clone()
    out, norm = K.rk_combine_triton(buf, ks, b, b_err, 0.1, 1e-3, 1e-3, out=buf)
    assert out is buf
    torch.testing.assert_close(out, ref, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(norm, ref_norm, rtol=1e-5, atol=0)


def test_kernels_are_batch_size_invariant():
    """The same sample index gives bit-identical results in batches of 1, 7 and 64."""
    D = (3, 37)
    x_all, s_all = _randn((64,) + D, 1).float(), _randn((64,) + D, 2).float()
    idx_all = torch.arange(1000, 1064, device=DEVICE)
    ks_all = [_randn((64,) + D, 10 + i).float() for i in range(DOPRI5.stages)]
    h_all = torch.linspace(0.01, 0.1, 64, device=DEVICE)

    def run(rows):
        x, s, idx = x_all[rows], s_all[rows], idx_all[rows]
        kw = dict(seed=SEED, sample_index=idx, stream=5)
        aff = K.affine_update_triton(x, s, 0.9, 0.1, 0.5, **kw)
        lan, eps = K.langevin_step_triton(x, s, 0.16, **kw)
        rk, nrm = K.rk_combine_triton(x, [k[rows] for k in ks_all], DOPRI5.b, DOPRI5.b_error, h_all[rows], 1e-3, 1e-3)
        return aff, lan, eps, rk, nrm

    full = run(torch.arange(64))
    for rows in (torch.tensor([41]), torch.arange(20, 27)):
        for part, whole in zip(run(rows), full):
            assert torch.equal(part, whole[rows])


def test_backend_resolution(monkeypatch):
    x = torch.zeros(2, 3)
    monkeypatch.delenv(K.ENV_VAR, raising=False)
    assert K.resolve_backend(None, "cpu", torch.float32) == "torch"  # auto uses the kernels on CUDA only
    assert K.resolve_backend("triton", DEVICE, torch.float32) == "triton"
    assert K.resolve_backend("auto", "cuda", torch.float64) == "torch"
    with pytest.raises(RuntimeError, match="float64"):
        K.resolve_backend("triton", DEVICE, torch.float64)
    with pytest.raises(ValueError, match="backend must be one of"):
        K.resolve_backend("cuda", "cpu", torch.float32)
    monkeypatch.setenv(K.ENV_VAR, "triton")
    assert K.resolve_backend(None, DEVICE, torch.float32) == "triton"
    monkeypatch.setenv(K.ENV_VAR, "fast")
    with pytest.raises(ValueError, match=r"\$SDEKIT_BACKEND must be one of"):
        K.affine_update(x, x, 1.0, 1.0)


@pytest.mark.parametrize(
    "call, err, match",
    [
        (lambda x: K.affine_update_triton(x, x, 1.0, 1.0, 1.0), ValueError, "seed must be given"),
        (lambda x: K.affine_update_triton(x, x[:1], 1.0, 1.0), ValueError, "s must have the shape of x"),
        (lambda x: K.affine_update_triton(x, x, torch.ones(3, device=DEVICE), 1.0), ValueError, r"a must be .*\(4,\)"),
        (lambda x: K.affine_update_triton(x, x, 1.0, float("nan")), TypeError, "b must be a finite"),
        (lambda x: K.affine_update_triton(x.double(), x.double(), 1.0, 1.0), TypeError, "float64"),
        (lambda x: K.affine_update_triton(x, x, 1.0, 1.0, 1.0, seed=1, stream=2**32), ValueError, "stream"),
        (lambda x: K.affine_update_triton(x, x, 1.0, 1.0, 1.0, seed=-1), ValueError, "seed"),
        (lambda x: K.affine_update_triton(x, x, 1.0, 1.0, 1.0, seed=1, sample_index=torch.arange(3, device=DEVICE)),
         ValueError, r"sample_index must have shape \(4,\)"),
        (lambda x: K.affine_update_triton(x, x, 1.0, 1.0, out=x.t()), ValueError, "out must be"),
        (lambda x: K.langevin_step_triton(x, x, 0.0, seed=1), ValueError, "snr"),
        (lambda x: K.rk_combine_triton(x, [x, x], [1.0], [0.0, 0.0], 0.1, 1e-3, 1e-3), ValueError, "b must hold 2"),
        (lambda x: K.rk_combine_triton(x, [x] * 13, [0.0] * 13, [0.0] * 13, 0.1, 1e-3, 1e-3), ValueError, "at most 12"),
        (lambda x: K.rk_combine_triton(x, [x], [1.0], [0.0], 0.1, 0.0, 0.0), ValueError, "rtol and atol"),
    ],
)
def test_argument_errors_name_the_argument(call, err, match):
    with pytest.raises(err, match=match):
        call(torch.zeros(4, 4, device=DEVICE))
