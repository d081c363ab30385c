"""The C fast path of the keyed noise (sdekit._native) against the torch reference in sdekit.noise.

Philox words must be the reference's bit for bit.  Normals may differ by float32
rounding only: the C code evaluates ln, sin and cos with float32 polynomials of
its own (measured over all 2²⁴ uniforms against float64: ≤ 0.82 ulp for
r = √(−2 ln u), ≤ 1.4 ulp for r·cos θ and r·sin θ), torch with its own
(≤ 1.05 and ≤ 0.96 ulp), so the two are within ~2.5 ulp of each other plus the
rounding of the product; measured ≤ 3 ulp over all 2²⁴ uniforms.  The tests
assert ``ULP_BOUND = 4`` ulp (distance in representable float32 values).
"""

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from sdekit import _native
from sdekit.noise import (
    _philox_words,
    counter_normal,
    counter_normal_unchecked,
    counter_rademacher,
    split_seed,
    uint32_to_unit,
)

ULP_BOUND = 4
LIB = _native.library()
needs_lib = pytest.mark.skipif(LIB is None, reason="no C compiler: the torch path is used (tested below)")

EDGE = [0, 1, 2**31 - 1, 2**31, 2**32 - 2, 2**32 - 1]
SEEDS = [0, 1, 2**32 - 1, 2**32, 2**63 + 12345, 2**64 - 1]


def _ulps(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Distance in float32 representable values (monotone integer map of the bit patterns)."""
    def key(x):
        i = x.contiguous().view(torch.int32).to(torch.int64)
        return torch.where(i < 0, -(i & 0x7FFFFFFF), i)
    return (key(a) - key(b)).abs()


def _reference(monkeypatch, fn, *args, **kwargs):
    with monkeypatch.context() as m:
        m.setenv("SDEKIT_NATIVE", "0")
        return fn(*args, **kwargs)


def _indices(batch, seed=0):
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, 2**32, (batch,), generator=g, dtype=torch.int64)
    idx[: min(batch, len(EDGE))] = torch.tensor(EDGE[:batch])
    return idx


@needs_lib
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("groups", [1, 3, 256, 257, 1025])
def test_words_equal_the_reference_bitwise(seed, groups):
    k0, k1 = split_seed(seed)
    idx = _indices(37, seed=groups)
    streams = _indices(37, seed=groups + 1).flip(0)
    for stream in (0, 7, 2**32 - 1, streams):
        ref = torch.stack(_philox_words(k0, k1, stream, idx, groups), dim=-1)
        assert torch.equal(_native.words(k0, k1, stream, idx, groups), ref)
    one = idx[-1:]  # B = 1
    assert torch.equal(_native.words(k0, k1, 3, one, groups), torch.stack(_philox_words(k0, k1, 3, one, groups), -1))


@needs_lib
def test_words_on_the_parallel_path_equal_the_reference():
    """128 × 300 groups = 153,600 elements: above the OpenMP threshold."""
    k0, k1 = split_seed(2**64 - 1)
    idx = _indices(128)
    ref = torch.stack(_philox_words(k0, k1, 2**32 - 1, idx, 300), dim=-1)
    assert torch.equal(_native.words(k0, k1, 2**32 - 1, idx, 300), ref)


@needs_lib
@pytest.mark.parametrize("shape", [(), (1,), (2,), (3,), (5,), (3, 5, 7), (1023,), (1024,), (1025,), (4100,), (2, 1, 3)])
@pytest.mark.parametrize("batch", [1, 6])
def test_normals_within_a_few_ulp_of_the_reference(monkeypatch, shape, batch):
    idx = _indices(batch)
    for stream in (0, 2**32 - 1, _indices(batch, seed=5)):
        z = counter_normal(2**63 + 12345, stream, idx, shape)
        ref = _reference(monkeypatch, counter_normal, 2**63 + 12345, stream, idx, shape)
        assert z.shape == ref.shape == (batch,) + shape and z.dtype == torch.float32
        assert int(_ulps(z, ref).max()) <= ULP_BOUND


@needs_lib
def test_box_muller_within_a_few_ulp_on_every_uniform():
    """All 2²⁴ uniforms as the radius word and as the angle word (in chunks): ≤ ULP_BOUND ulp from torch's."""
    other = torch.tensor([0x80000000, 0x000000FF, 0xFFFFFFFF, 0x40000000], dtype=torch.int64)
    worst = 0
    for start in range(0, 2**24, 2**21):
        m = torch.arange(start, start + 2**21, dtype=torch.int64) << 8
        words = torch.stack([m, other[(m >> 8) % 4], m.flip(0), m], dim=-1)  # radius, angle, both
        i0, i1, i2, i3 = words.unbind(-1)
        r0 = torch.sqrt(-2.0 * torch.log(uint32_to_unit(i0)))
        r1 = torch.sqrt(-2.0 * torch.log(uint32_to_unit(i2)))
        th0 = (2.0 * math.pi) * uint32_to_unit(i1)
        th1 = (2.0 * math.pi) * uint32_to_unit(i3)
        ref = torch.stack([r0 * torch.cos(th0), r0 * torch.sin(th0), r1 * torch.cos(th1), r1 * torch.sin(th1)], -1)
        worst = max(worst, int(_ulps(_native.box_muller(words), ref).max()))
    assert worst <= ULP_BOUND


@needs_lib
def test_batch_and_thread_count_invariant_bitwise():
    """A row drawn alone (one thread, no OpenMP) equals the same row in a batch drawn in parallel."""
    idx = _indices(512)
    full = counter_normal_unchecked(11, 12, 13, idx, (8, 9))  # 36,864 elements: the parallel path
    for rows in (torch.tensor([0]), torch.tensor([511, 3, 1]), torch.arange(100, 140)):
        assert torch.equal(counter_normal_unchecked(11, 12, 13, idx[rows], (8, 9)), full[rows])
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        assert torch.equal(counter_normal_unchecked(11, 12, 13, idx, (8, 9)), full)
    finally:
        torch.set_num_threads(threads)
    idx32 = torch.arange(0, 2**31 - 1, 2**24, dtype=torch.int32)  # any integer dtype, as the reference
    assert torch.equal(counter_normal_unchecked(11, 12, 13, idx32, (8, 9)),
                       counter_normal_unchecked(11, 12, 13, idx32.to(torch.int64), (8, 9)))


@needs_lib
@pytest.mark.parametrize("shape", [(1,), (7,), (4, 5)])
def test_rademacher_equals_the_reference(monkeypatch, shape):
    idx = _indices(9)
    for dtype in (torch.float32, torch.float64, torch.int8):
        out = counter_rademacher(2**64 - 1, 2**32 - 1, idx, shape, dtype=dtype)
        ref = _reference(monkeypatch, counter_rademacher, 2**64 - 1, 2**32 - 1, idx, shape, dtype=dtype)
        assert out.dtype == dtype and torch.equal(out, ref)


def test_empty_draws():
    assert counter_normal(1, 2, torch.zeros(0, dtype=torch.int64), (3,)).shape == (0, 3)
    assert counter_normal(1, 2, torch.arange(4), (0, 5)).shape == (4, 0, 5)


def test_sdekit_native_0_runs_the_torch_code(monkeypatch):
    monkeypatch.setenv("SDEKIT_NATIVE", "0")

    def boom(*args, **kwargs):
        raise AssertionError("native path called with SDEKIT_NATIVE=0")

    monkeypatch.setattr(_native, "normals", boom)
    monkeypatch.setattr(_native, "rademacher", boom)
    idx = torch.tensor([0, 2**32 - 1, 5])
    z = counter_normal_unchecked(3, 4, 5, idx, (6,))
    i0, i1, _, _ = _philox_words(3, 4, 5, idx, 2)
    r0 = torch.sqrt(-2.0 * torch.log(uint32_to_unit(i0)))
    th0 = (2.0 * math.pi) * uint32_to_unit(i1)
    assert torch.equal(z[:, 0], (r0 * torch.cos(th0))[:, 0]) and torch.equal(z[:, 5], (r0 * torch.sin(th0))[:, 1])
    counter_rademacher(3, 5, idx, (6,))


def test_non_cpu_tensors_take_the_torch_path(monkeypatch):
    monkeypatch.setattr(_native, "normals", lambda *a: pytest.fail("native path on a meta tensor"))
    z = counter_normal_unchecked(3, 4, 5, torch.arange(3, device="meta"), (6,))
    assert z.device.type == "meta" and z.shape == (3, 6)


def test_without_a_compiler_the_torch_path_gives_the_reference(monkeypatch, tmp_path):
    monkeypatch.setattr(_native, "_state", {})
    monkeypatch.setenv("CC", "sdekit-no-such-compiler")
    monkeypatch.setenv("SDEKIT_CACHE", str(tmp_path))
    idx = torch.arange(5)
    z = counter_normal_unchecked(3, 4, 5, idx, (6,))
    assert _native.library() is None and _native.normals(3, 4, 5, idx, 6) is None
    assert torch.equal(z, _reference(monkeypatch, counter_normal_unchecked, 3, 4, 5, idx, (6,)))
    assert list(tmp_path.iterdir()) == []


@needs_lib
def test_builds_into_a_fresh_cache_atomically(monkeypatch, tmp_path):
    monkeypatch.setattr(_native, "_state", {})
    monkeypatch.setenv("SDEKIT_CACHE", str(tmp_path / "cache"))
    lib = _native.library()
    assert lib is not None
    files = sorted(p.name for p in (tmp_path / "cache").iterdir())
    assert len(files) == 1 and files[0].startswith("noise-") and files[0].endswith(".so"), files  # no temporaries
    idx = torch.arange(3)
    assert torch.equal(_native.normals(1, 2, 3, idx, 10), counter_normal_unchecked(1, 2, 3, idx, (10,)))
    monkeypatch.setattr(_native, "_state", {})
    assert _native.library() is not None  # loaded from the cache, nothing rebuilt
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == files


def test_import_sdekit_builds_and_imports_nothing_native():
    root = str(Path(_native.__file__).resolve().parents[1])
    probe = "import sys, sdekit, sdekit.noise; print('sdekit._native' in sys.modules)"
    env = dict(os.environ, PYTHONPATH=root)
    out = subprocess.run([sys.executable, "-c", probe], cwd=root, env=env, capture_output=True, text=True, timeout=300,
                         check=False)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "False"


def test_compiled_draw_equals_the_eager_draw():
    """Under torch.compile the CPU draw is the custom op sdekit::keyed_normal: the eager bits, no graph break."""
    def draw(idx, stream):
        return counter_normal_unchecked(5, 6, stream, idx, (3, 7)) * 2

    idx = torch.tensor([0, 2**32 - 1, 9])
    compiled = torch.compile(draw, fullgraph=True, backend="eager")
    for stream in (4, torch.tensor([1, 2**32 - 1, 3])):
        assert torch.equal(compiled(idx, stream), draw(idx, stream))
