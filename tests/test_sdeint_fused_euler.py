"""sdeint's Euler–Maruyama on generator noise: the hand-written loop's fused step, on the same path.

With ``generator=`` each step is ``torch.add(y, f, alpha=h).addcmul_(G, z, value=√h)`` on the standard
normals the generator gives; it must be the same solution as Euler–Maruyama on ``ΔW = √h z`` (up to the
rounding of the fused operations), for torchsde-style and sdekit-style SDEs, with gradients.
"""

import math

import pytest
import torch

import sdekit
from sdekit.sdes import OrnsteinUhlenbeck
from sdekit.testing import GBM

F64 = {"dtype": torch.float64}
B, D, STEPS = 6, 3, 40


def replayed_euler(drift, diffusion, y0, steps, seed, T=1.0):
    """Euler–Maruyama by hand on the generator's draws (one randn of y0's shape per step)."""
    g = torch.Generator().manual_seed(seed)
    h = T / steps
    y = y0
    for k in range(steps):
        t = torch.tensor(k * h, dtype=y0.dtype)
        z = torch.randn(y0.shape, generator=g, dtype=y0.dtype)
        y = y + drift(t, y) * h + diffusion(t, y) * (math.sqrt(h) * z)
    return y


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_torchsde_style_gbm_matches_the_replayed_loop(dtype):
    y0 = torch.linspace(0.5, 1.5, B * D, dtype=dtype).reshape(B, D)
    sde = GBM(0.7, 0.4)
    ours = sdekit.sdeint(sde, y0, [0.0, 1.0], method="euler", dt=1.0 / STEPS,
                         generator=torch.Generator().manual_seed(3))[-1]
    ref = replayed_euler(sde.f, sde.g, y0, STEPS, 3)
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    torch.testing.assert_close(ours, ref, rtol=tol, atol=tol)


def test_sdekit_style_ou_with_per_sample_diffusion_matches_the_replayed_loop():
    ou = OrnsteinUhlenbeck(1.3, 0.6, 0.2)
    y0 = torch.randn(B, D, generator=torch.Generator().manual_seed(0), **F64)
    ours = sdekit.sdeint(ou, y0, [0.0, 1.0], method="euler", dt=1.0 / STEPS,
                         generator=torch.Generator().manual_seed(5))[-1]
    ref = replayed_euler(lambda t, y: ou.drift(y, t.expand(B)), lambda t, y: ou.diffusion(y, t.expand(B))[:, None],
                         y0, STEPS, 5)
    torch.testing.assert_close(ours, ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("method", ["euler", "milstein", "srk"])
def test_gradients_flow_through_steps_on_generator_noise(method):
    """Backprop through the solver on generator noise (whose draws reuse one buffer without a graph).

    Euler: d y_N / d y0 for GBM's recursion is Π_k (1 + μh + σ√h z_k), elementwise.
    """
    mu, sigma = 0.7, 0.4
    y0 = torch.full((B, D), 1.2, requires_grad=True, **F64)
    yN = sdekit.sdeint(GBM(mu, sigma), y0, [0.0, 1.0], method=method, dt=1.0 / STEPS,
                       generator=torch.Generator().manual_seed(9))[-1]
    (grad,) = torch.autograd.grad(yN.sum(), y0)
    if method != "euler":  # GBM is linear in y0: the gradient is y_N / y0
        torch.testing.assert_close(grad, yN.detach() / 1.2, rtol=1e-12, atol=1e-12)
        return
    g = torch.Generator().manual_seed(9)
    h = 1.0 / STEPS
    expected = torch.ones(B, D, **F64)
    for _ in range(STEPS):
        expected = expected * (1 + mu * h + sigma * math.sqrt(h) * torch.randn(B, D, generator=g, **F64))
    torch.testing.assert_close(grad, expected, rtol=1e-12, atol=1e-12)


def test_a_torchsde_bm_keeps_torchsdes_step_bit_for_bit():
    """The fused step is for generator noise only: with a bm the step is y + f h + G ΔW in torchsde's order."""
    torchsde = pytest.importorskip("torchsde")
    y0 = torch.linspace(0.5, 1.5, B * D, **F64).reshape(B, D)
    ts = torch.tensor([0.0, 0.5, 1.0], **F64)
    bm = torchsde.BrownianInterval(0.0, 1.0, (B, D), dtype=torch.float64, entropy=4)
    ours = sdekit.sdeint(GBM(0.7, 0.4), y0, ts, bm=bm, method="euler", dt=2.0**-4)  # steps land on ts
    theirs = torchsde.sdeint(GBM(0.7, 0.4), y0, ts, bm=bm, method="euler", dt=2.0**-4)  # the same (cached) path
    assert torch.equal(ours, theirs)


def test_gradients_with_a_state_free_diffusion():
    """OU (diffusion free of y): d y_N / d y0 = (1 − θh)^N through the fused step."""
    theta = 1.3
    y0 = torch.ones(B, D, requires_grad=True, **F64)
    yN = sdekit.sdeint(OrnsteinUhlenbeck(theta, 0.6, 0.2), y0, [0.0, 1.0], method="euler", dt=1.0 / STEPS,
                       generator=torch.Generator().manual_seed(2))[-1]
    (grad,) = torch.autograd.grad(yN.sum(), y0)
    torch.testing.assert_close(grad, torch.full_like(grad, (1 - theta / STEPS) ** STEPS), rtol=1e-12, atol=0)


@pytest.mark.parametrize("method", ["milstein", "derivative_free_milstein"])
def test_milstein_on_additive_noise_is_the_euler_step(method):
    """Additive noise: Milstein's correction vanishes, so on generator noise it takes the fused Euler step."""
    ou = OrnsteinUhlenbeck(1.3, 0.6, 0.2)
    y0 = torch.randn(B, D, generator=torch.Generator().manual_seed(0), **F64)
    run = lambda m: sdekit.sdeint(ou, y0, [0.0, 1.0], method=m, dt=1.0 / STEPS,  # noqa: E731
                                  generator=torch.Generator().manual_seed(5))
    assert torch.equal(run(method), run("euler"))
