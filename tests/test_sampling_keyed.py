"""Keyed noise in sdekit.sample: batch-size invariance on both backends, seeds, and the sync-free loop.

The score model is the exact score of Gaussian data under the VP SDE, an
element-wise function of ``(x, t)``, so any dependence of a sample on its batch
would come from the sampler itself.  The Triton backend runs in Triton's
interpreter without a GPU (small sizes: it is slow).
"""

import importlib

import pytest
import torch

import sdekit
from sdekit import kernels as K

sample_module = importlib.import_module("sdekit.sampling.sample")

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
KERNELS = K.HAS_TRITON and (K.INTERPRETED or torch.cuda.is_available())
needs_kernels = pytest.mark.skipif(not KERNELS, reason="needs Triton with a CUDA GPU, or TRITON_INTERPRET=1")
BACKENDS = ["torch", pytest.param("triton", marks=needs_kernels)]
VP = sdekit.VPSDE()
DATA_VAR = 0.5
SEED = 2**40 + 3
D = (3, 5)
CONFIGS = [(m, c) for m in ("euler_maruyama", "reverse_diffusion", "ancestral") for c in (None, "langevin")]


def gaussian_score(sde, var=DATA_VAR):
    """Exact score of x_0 ~ N(0, var I) at time t: −x / (m(t)² var + σ(t)²)."""

    def score(x, t):
        t64 = t.double()
        v = (sde.mean_coeff(t64) ** 2 * var + sde.std(t64) ** 2).to(x.dtype)
        return -x / v.reshape((-1,) + (1,) * (x.dim() - 1))

    return score


SCORE = gaussian_score(VP)


def _run(idx, method, corrector, backend, steps, **kw):
    return sdekit.sample(SCORE, VP, (len(idx),) + D, method=method, corrector=corrector, steps=steps, seed=SEED,
                         sample_index=idx.to(DEVICE), backend=backend, device=DEVICE, **kw).x


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("method, corrector", CONFIGS)
def test_samples_do_not_depend_on_the_batch(method, corrector, backend):
    """Batches of 1, 7 and 64 give bit-identical samples for the same global sample indices (prior included)."""
    steps = 3 if backend == "triton" else 8
    full = _run(torch.arange(100, 164), method, corrector, backend, steps)
    assert full.shape == (64,) + D and bool(torch.isfinite(full).all())
    assert torch.equal(_run(torch.tensor([137]), method, corrector, backend, steps), full[37:38])
    assert torch.equal(_run(torch.arange(120, 127), method, corrector, backend, steps), full[20:27])


@needs_kernels
@pytest.mark.parametrize("method, corrector", CONFIGS + [("reverse_diffusion", "annealed_langevin")])
def test_kernel_and_reference_backends_draw_the_same_samples(method, corrector):
    """Same seed, same noise up to float32 rounding of log/cos/sin: the two backends agree closely.

    The noise differs by at most 1e-5 per draw (tests/test_kernels.py) and enters with
    coefficients <= 1 here; float32 rounding adds a few ulp of the samples' scale.
    """
    idx = torch.arange(8)
    a = _run(idx, method, corrector, "triton", 3)
    b = _run(idx, method, corrector, "torch", 3)
    torch.testing.assert_close(a, b, rtol=0, atol=1e-5 * (1 + b.abs().max().item()))
    assert not torch.equal(a, _run(idx + 8, method, corrector, "triton", 3))


def test_seed_and_generator():
    run = lambda **kw: sdekit.sample(SCORE, VP, (6,) + D, steps=5, corrector="langevin", **kw).x  # noqa: E731
    assert torch.equal(run(seed=1), run(seed=1))
    assert not torch.isclose(run(seed=1), run(seed=2)).any()
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    assert torch.equal(run(generator=g()), run(generator=g()))
    with pytest.raises(ValueError, match="either seed or generator"):
        run(seed=1, generator=g())
    with pytest.raises(ValueError, match="seed"):
        run(seed=2**64)


@pytest.mark.parametrize(
    "idx, err, match",
    [(torch.arange(5), ValueError, r"sample_index must have shape \(6,\)"),
     (torch.tensor([0, 1, 2, 3, 4, -1]), ValueError, r"sample_index values must lie in \[0, 2\*\*32\)"),
     (torch.zeros(6), TypeError, "sample_index must be an integer")],
)
def test_bad_sample_index(idx, err, match):
    with pytest.raises(err, match=match):
        sdekit.sample(SCORE, VP, (6,) + D, steps=2, seed=0, sample_index=idx)


class CubicSDE(sdekit.AbstractSDE):
    """dx = −x³ dt + g dW with g a per-sample scalar or element-wise: no affine coefficients, no keyed prior."""

    def __init__(self, elementwise: bool):
        self.elementwise = elementwise

    def drift(self, x, t):
        return -(x**3)

    def diffusion(self, x, t):
        return torch.full_like(x, 0.7) if self.elementwise else torch.full_like(t, 0.7)

    def prior_sample(self, shape, *, generator=None, device=None, dtype=None):
        return torch.randn(shape, generator=generator, device=device, dtype=dtype)

    def prior_log_prob(self, z):
        return -0.5 * (z**2).flatten(1).sum(1)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("elementwise", [False, True])
def test_euler_maruyama_on_a_nonlinear_sde_is_batch_invariant(elementwise, backend):
    sde = CubicSDE(elementwise)
    x_init = torch.randn((16,) + D, generator=torch.Generator().manual_seed(0)).to(DEVICE)

    def run(rows):
        return sdekit.sample(lambda x, t: -x, sde, (len(rows),) + D, steps=3, seed=SEED, x_init=x_init[rows],
                             sample_index=rows.to(DEVICE), denoise=False, backend=backend).x

    full = run(torch.arange(16))
    assert torch.equal(run(torch.tensor([9])), full[9:10])
    assert torch.equal(run(torch.arange(3, 10)), full[3:10])


def test_capturable_loop_gives_the_same_samples():
    for kw in (dict(corrector="langevin"), dict(method="ancestral", x_init=torch.ones((5,) + D))):
        normal = sdekit.sample(SCORE, VP, (5,) + D, steps=6, seed=4, **kw)
        captured = sdekit.sample(SCORE, VP, (5,) + D, steps=6, seed=4, capturable=True, **kw)
        assert torch.equal(normal.x, captured.x) and torch.equal(normal.nfe, captured.nfe)


def test_capturable_rejects_what_it_cannot_capture():
    with pytest.raises(ValueError, match="capturable=True needs a fixed-step method"):
        sdekit.sample(SCORE, VP, (2,) + D, method="ode", capturable=True)
    with pytest.raises(ValueError, match="capturable=True needs x_init"):
        sdekit.sample(lambda x, t: -x, CubicSDE(False), (2,) + D, steps=2, denoise=False, seed=0, capturable=True)


def _plan_and_parts(corrector):
    score = sdekit.score_models.checked_score(SCORE)
    predictor = sdekit.sampling.EulerMaruyamaPredictor(VP, score)
    fix = sdekit.sampling.Langevin(VP, score, 0.16, 1) if corrector else None
    plan = sample_module._plan(VP, predictor, fix, 3, 1e-3, None, SEED, None, True, True)
    return plan, score, predictor, fix


def test_fixed_step_loop_compiles_in_one_graph():
    """torch.compile(fullgraph=True) fails on any graph break, e.g. a host sync (.item(), bool(), .tolist())."""
    plan, score, predictor, fix = _plan_and_parts(corrector=True)
    loop = lambda x, idx: sample_module.run_plan(plan, x, score, predictor, fix, idx, "torch")  # noqa: E731
    x, idx = torch.randn((4,) + D, generator=torch.Generator().manual_seed(1)), torch.arange(4)
    compiled = torch.compile(loop, fullgraph=True, backend="eager")
    assert torch.equal(compiled(x, idx), loop(x, idx))


def test_whole_sample_compiles_with_only_the_host_plan_outside_the_graph():
    run = lambda idx: sdekit.sample(  # noqa: E731
        SCORE, VP, (4,) + D, steps=3, corrector="langevin", seed=SEED, sample_index=idx, capturable=True,
        backend="torch").x
    idx = torch.arange(4)
    graphs = []

    def count_graphs(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    compiled = torch.compile(run, backend=count_graphs)
    assert torch.equal(compiled(idx), run(idx)) and torch.equal(compiled(idx + 4), run(idx + 4))
    assert len(graphs) <= 2  # one graph break: the torch.compiler.disable'd host plan


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graph capture needs a GPU")
@pytest.mark.parametrize("backend", ["torch", pytest.param("triton", marks=needs_kernels)])
def test_cuda_graph_replays_the_sample_and_new_indices_give_new_samples(backend):
    shape = (4,) + D
    idx = torch.arange(4, device="cuda")
    run = lambda: sdekit.sample(SCORE, VP, shape, steps=10, corrector="langevin", seed=SEED,  # noqa: E731
                                sample_index=idx, capturable=True, backend=backend, device="cuda").x
    expected = run()  # also compiles the kernels before the capture
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_out = run()
    graph.replay()
    assert torch.equal(static_out, expected)
    idx.copy_(torch.arange(40, 44, device="cuda"))
    graph.replay()
    assert torch.equal(static_out, run())


@pytest.mark.parametrize("sde", [sdekit.VPSDE(), sdekit.SubVPSDE(), sdekit.VESDE(), sdekit.EDMSDE(),
                                 sdekit.OrnsteinUhlenbeck(1.2, 0.7, mu=0.3)], ids=lambda s: type(s).__name__)
def test_keyed_prior_does_not_depend_on_the_batch(sde):
    """Every built-in SDE draws its prior from keyed normals, so x_init-free sampling is batch-invariant."""
    score = lambda x, t: -x  # noqa: E731  (any score: only the prior draw is under test with steps=1)
    full = sdekit.sample(score, sde, (5, 3), steps=1, denoise=False, seed=SEED).x
    one = sdekit.sample(score, sde, (1, 3), steps=1, denoise=False, seed=SEED, sample_index=torch.tensor([3])).x
    assert torch.equal(full[3:4], one)
