"""Divergence ``∇·f(x)`` of a vector field by vector–Jacobian products."""

from __future__ import annotations

import torch


def probe_noise(shape, kind: str, *, generator=None, device=None, dtype=None) -> torch.Tensor:
    """Hutchinson probes ``v`` with ``E[v vᵀ] = I``: Rademacher (±1) or standard Gaussian.

    Source: Hutchinson 1989; Grathwohl et al. 2019 (FFJORD), eq. 7.
    Args: shape: e.g. ``(B, P, *D)``; kind: ``"rademacher"`` | ``"gaussian"``.
    """
    if kind == "gaussian":
        return torch.randn(shape, generator=generator, device=device, dtype=dtype)
    bits = torch.randint(0, 2, shape, generator=generator, device=device)
    return bits.to(dtype) * 2 - 1


def hutchinson_divergence(f: torch.Tensor, x: torch.Tensor, probes: torch.Tensor) -> torch.Tensor:
    """Per-probe estimates ``vₚᵀ (∂f/∂x) vₚ``, one VJP per probe.

    Args:
        f: ``(B, *D)`` output of a graph built from ``x``.
        x: ``(B, *D)`` input with ``requires_grad``.
        probes: ``(B, P, *D)``, fixed over an integration.
    Returns:
        ``(B, P)`` estimates; their mean is unbiased for ``tr(∂f/∂x)``.
    """
    P = probes.shape[1]
    out = []
    for p in range(P):
        v = probes[:, p]
        (vjp,) = torch.autograd.grad(f, x, v, retain_graph=p < P - 1)
        out.append((vjp * v).flatten(1).sum(1))
    return torch.stack(out, dim=1)


def exact_divergence(f: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Exact ``tr(∂f/∂x)`` per sample, ``(B, 1)``, by ``D`` VJPs with basis vectors.

    Cost: ``D`` backward passes per call; meant for small ``D`` and for tests.
    """
    f_flat = f.flatten(1)
    D = f_flat.shape[1]
    trace = torch.zeros(f.shape[0], dtype=f.dtype, device=f.device)
    for i in range(D):
        (g,) = torch.autograd.grad(f_flat[:, i].sum(), x, retain_graph=i < D - 1)
        trace = trace + g.flatten(1)[:, i]
    return trace[:, None]
