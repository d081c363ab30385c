"""The diffusers scheduler's one-call multistep methods (lms, deis, dpmpp_3m, dpmpp_2m_sde, dpmpp_3m_sde).

Each runs the stepper of :mod:`sdekit.integrations.k_diffusion_multistep` on the scaled state: the scheduler's
loop equals :func:`sdekit.sample` (the same stepper through k-diffusion's loop) on the scheduler's grid, and
reproduces diffusers' own scheduler where diffusers has the method (``DPMSolverMultistepScheduler``,
``DEISMultistepScheduler``, ``LMSDiscreteScheduler``) on the same timesteps, network and noise.
"""

import pytest
import torch
from sdekit.kernels import normal

import sdekit
from sdekit.integrations import k_diffusion as K

diffusers = pytest.importorskip("diffusers", reason="diffusers is not installed (pip install sdekit[diffusers])")
from sdekit.integrations.diffusers_scheduler import SDEScheduler


def network(x, k):
    """A fixed smooth stand-in for an ε-prediction UNet at timestep ``k`` (a number, or ``(B,)`` per sample)."""
    k = torch.as_tensor(k, dtype=x.dtype).reshape((-1,) + (1,) * (x.dim() - 1))
    return torch.tanh(0.7 * x + 1e-3 * k) - 0.1 * x


def _start(seed=0):
    return torch.randn(3, 2, 4, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _loop(scheduler, x, timesteps, noise=None):
    """The pipeline loop; ``noise[j]`` is handed to diffusers' DPM-Solver as ``variance_noise``, and sdekit's
    scheduler draws the same keyed noise itself (``seed=7``: stream ``1 + j``)."""
    for j, k in enumerate(timesteps):
        kw = {}
        if noise is not None:
            kw = {"variance_noise": noise[j]} if not isinstance(scheduler, SDEScheduler) else {"seed": 7}
        x = scheduler.step(network(x, k), k, x, **kw).prev_sample
    return x


def _keyed(n):
    return [normal(7, torch.arange(3), 1 + j, (2, 4), dtype=torch.float64) for j in range(n)]


class KeepFloat64(torch.Tensor):
    """A float64 tensor that ignores ``.to(torch.float32)``: DPMSolverMultistepScheduler.step casts the
    sample (and the noise) to float32 before its update, which would hide float64 round-off agreement."""

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        if func is torch.Tensor.to:
            args = tuple(a for a in args if a is not torch.float32)
            if kwargs.get("dtype") is torch.float32:
                del kwargs["dtype"]
        return super().__torch_function__(func, types, args, kwargs)


def _rel(a, b) -> float:
    assert bool(torch.isfinite(b).all())
    return float((a - b).abs().max() / b.abs().max())


@pytest.mark.parametrize("steps", [8, 20])
@pytest.mark.parametrize("method, config", [
    ("dpmpp_3m", {"solver_order": 3}),  # midpoint second step, lower orders on the last steps (diffusers' defaults)
    ("dpmpp_3m", {"solver_order": 3, "solver_type": "heun", "lower_order_final": False,
                  "timestep_spacing": "trailing"}),
    ("dpmpp_2m_sde", {"algorithm_type": "sde-dpmsolver++"}),
    ("dpmpp_2m_sde", {"algorithm_type": "sde-dpmsolver++", "solver_type": "heun"}),
])
def test_dpm_solver_methods_reproduce_dpm_solver_multistep_scheduler(method, config, steps):
    """In float64 on both sides: diffusers' σ from the same float32 ᾱ, its step kept from casting to float32."""
    theirs = diffusers.DPMSolverMultistepScheduler(**config)
    ac = theirs.alphas_cumprod.double()
    theirs.alphas_cumprod = ac
    theirs.set_timesteps(steps)
    ks = theirs.timesteps.tolist()
    theirs.sigmas = torch.cat([((1 - ac[ks]) / ac[ks]) ** 0.5, torch.zeros(1, dtype=torch.float64)])
    ours = SDEScheduler.from_config(theirs.config, method=method, clip_sample=False)
    ours.set_timesteps(timesteps=ks)
    x, noise = _start(), _keyed(steps)
    expected = _loop(theirs, x.as_subclass(KeepFloat64), theirs.timesteps,
                     [z.as_subclass(KeepFloat64) for z in noise]).as_subclass(torch.Tensor)
    assert expected.dtype == torch.float64
    assert _rel(_loop(ours, x, ours.timesteps, noise), expected) < 1e-12


def test_dpmpp_3m_sde_differs_from_diffusers_by_its_third_order_term():
    """diffusers' ``sde-dpmsolver++`` at order 3 weights the second difference by ``φ − ½`` where k-diffusion
    (and diffusers' own ODE 3M) have ``½ − φ``; sdekit follows k-diffusion.  Same run up to the third step."""
    theirs = diffusers.DPMSolverMultistepScheduler(algorithm_type="sde-dpmsolver++", solver_order=3,
                                                   solver_type="heun", lower_order_final=False)
    theirs.set_timesteps(10)
    ks = theirs.timesteps.tolist()
    ours = SDEScheduler.from_config(theirs.config, method="dpmpp_3m_sde", clip_sample=False)
    ours.set_timesteps(timesteps=ks)
    x, noise = _start(), _keyed(10)
    assert _rel(_loop(ours, x, ours.timesteps[:2], noise), _loop(theirs, x, theirs.timesteps[:2], noise)) < 1e-6
    theirs.set_timesteps(10)  # a fresh run on both sides
    ours.set_timesteps(timesteps=ks)
    assert _rel(_loop(ours, x, ours.timesteps, noise), _loop(theirs, x, theirs.timesteps, noise)) > 1e-2


@pytest.mark.parametrize("steps", [6, 20])
@pytest.mark.parametrize("config", [{}, {"solver_order": 3}, {"solver_order": 3, "lower_order_final": False},
                                    {"solver_order": 1, "timestep_spacing": "trailing"}])
def test_deis_reproduces_deis_multistep_scheduler(config, steps):
    """Every step but the last: diffusers' DEIS ends at timestep 0's σ, the scheduler at σ = 0 (x̂₀ there)."""
    theirs = diffusers.DEISMultistepScheduler(**config)
    ac = theirs.alphas_cumprod.double()  # float64 on both sides, from the same float32 ᾱ
    theirs.alphas_cumprod = ac
    theirs.set_timesteps(steps)
    ks = theirs.timesteps.tolist()
    theirs.sigmas = (((1 - ac[ks + [0]]) / ac[ks + [0]]) ** 0.5).double()
    ours = SDEScheduler.from_config(theirs.config, method="deis", clip_sample=False)
    ours.set_timesteps(timesteps=ks)
    x = _start()
    assert _rel(_loop(ours, x, ours.timesteps[:-1]), _loop(theirs, x, theirs.timesteps[:-1])) < 1e-12
    last = ours.timesteps[-1]
    ours.set_timesteps(timesteps=ks)
    before = _loop(ours, x, ours.timesteps[:-1])
    out = ours.step(network(before, last), last, before)
    assert torch.equal(out.prev_sample, out.pred_original_sample)  # the step to σ = 0 returns x̂₀


@pytest.mark.parametrize("spacing", ["leading", "trailing"])
def test_lms_reproduces_lms_discrete_scheduler(spacing):
    """LMSDiscreteScheduler steps the scaled sample ``x̃ = x √(1 + σ²)`` (``scale_model_input`` divides it
    back); the scheduler steps ``x``: compared in ``x``'s units, with LMS's σ in float64 (it keeps float32)."""
    theirs = diffusers.LMSDiscreteScheduler(timestep_spacing=spacing)
    ac = theirs.alphas_cumprod.double()
    theirs.set_timesteps(12)
    ks = [int(k) for k in theirs.timesteps.tolist()]
    theirs.sigmas = torch.cat([((1 - ac[ks]) / ac[ks]) ** 0.5, torch.zeros(1, dtype=torch.float64)])  # float64
    ours = SDEScheduler.from_config(theirs.config, method="lms", clip_sample=False)
    ours.set_timesteps(timesteps=ks)
    x = _start()
    scaled = x * float((theirs.sigmas[0] ** 2 + 1) ** 0.5)
    for k in theirs.timesteps:
        inp = theirs.scale_model_input(scaled, k)
        scaled = theirs.step(network(inp, k), k, scaled).prev_sample
    assert _rel(_loop(ours, x, ours.timesteps), scaled) < 1e-12


@pytest.mark.parametrize("method, config, options", [
    ("lms", {}, {}),
    ("deis", {"solver_order": 3}, {"order": 3}),
    ("dpmpp_3m", {"solver_type": "heun", "lower_order_final": False}, {}),
    ("dpmpp_2m_sde", {}, {}),
    ("dpmpp_3m_sde", {"solver_type": "heun", "lower_order_final": False}, {}),
])
def test_scheduler_equals_sample_on_its_grid(method, config, options):
    """One implementation: the scheduler's loop is :func:`sdekit.sample`'s run of the same method (the
    k-diffusion function on ``x/α`` at ``σ/α``) on the scheduler's grid, with the same keyed noise."""
    ours = SDEScheduler(method=method, clip_sample=False, **config)
    ours.set_timesteps(9)
    score = sdekit.score_from_epsilon(network, ours.sde, time_input=ours.sde.time_to_timestep)
    x = _start()
    ref = sdekit.sample(score, ours.sde, x.shape, method=method, timesteps=ours._plan.grid, x_init=x,
                        dtype=torch.float64, seed=7, method_options=options or None).x
    assert _rel(_loop(ours, x, ours.timesteps, noise=_keyed(9)), ref) < 1e-12


@pytest.mark.parametrize("method", ["deis", "dpmpp_2m_sde"])
def test_a_loop_that_starts_midway_is_a_fresh_run(method):
    """Image-to-image: entries 3… of the schedule are the k-diffusion sampler on the rest of the grid (it
    starts at first order, as the scheduler's stepper does with nothing stored), with the same noise."""
    ours = SDEScheduler(method=method, clip_sample=False, lower_order_final=False)
    ours.set_timesteps(8)
    _loop(ours, _start(2), ours.timesteps, noise=_keyed(8))  # a whole run first: nothing may leak
    ours.set_timesteps(8)
    t = ours._plan.grid
    alpha, sigma = ours.sde.mean_coeff(t), ours.sde.std(t)
    sig = sigma / alpha
    x = _start(1)
    mid = x.clone()
    for k in ours.timesteps[3:]:
        mid = ours.step(network(mid, k), k, mid, seed=7).prev_sample
    timestep_of = {float(s): k for s, k in zip(sig.tolist(), ours.timesteps.tolist())}

    def denoiser(x_scaled, s):  # D = x̃ − σ̃ ε(α x̃)
        v = float(s[0])
        return x_scaled - v * network((v * v + 1) ** -0.5 * x_scaled, timestep_of[v])

    draws = {i: normal(7, torch.arange(3), 1 + 3 + i, (2, 4), dtype=torch.float64) for i in range(5)}
    options = {"order": 2, "lower_order_final": False} if method == "deis" else {}
    if method != "deis":
        options["noise_sampler"] = lambda s, s_next: draws[[round(v, 12) for v in sig.tolist()].index(
            round(float(s), 12)) - 3]
    fresh = getattr(K, f"sample_{method}")(denoiser, x / alpha[3], sig[3:], disable=True, **options)
    assert _rel(mid, fresh) < 1e-12


def test_multistep_options_are_checked():
    with pytest.raises(ValueError, match="solver_type"):
        SDEScheduler(method="dpmpp_2m_sde", solver_type="bh2")
    with pytest.raises(ValueError, match="solver_type"):
        SDEScheduler(method="deis", solver_type="midpoint")
    with pytest.raises((ValueError, TypeError), match="solver_order"):
        SDEScheduler(method="lms", solver_order=0)
    with pytest.raises(ValueError, match="corrector"):
        SDEScheduler(method="deis", corrector="langevin")
