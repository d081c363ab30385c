"""SDEs with closed-form solutions (torchsde's protocol), for order tests, cross-checks and benchmarks.

Each problem gives the exact solution as a function of ``W_T`` on the same Brownian
path, so the strong error ``E|Y_N − Y(T)|`` is measured pathwise.

* Geometric Brownian motion ``dY = μY dt + σY dW``: ``Y_t = Y₀ exp((μ − σ²/2)t + σW_t)``.
* The scalar problem ``dY = −p² sin Y cos³Y dt + p cos²Y dW``: ``Y_t = arctan(pW_t + tan Y₀)``
  (Kloeden & Platen 1992, §4.4, eq. (4.40)).
* The additive problem ``dY = (b/√(1+t) − Y/(2(1+t))) dt + ab/√(1+t) dW``:
  ``Y_t = Y₀/√(1+t) + (b/√(1+t))(t + aW_t)`` (Kloeden & Platen 1992, §4.4, eq. (4.6)).

Stratonovich forms use the drift ``f − ½ g ∂g/∂y`` (same solution): GBM ``(μ − σ²/2) Y``;
the scalar problem has drift 0 (``Y = arctan(pW + tan Y₀)`` is the chain rule); additive
noise needs no correction.

Shapes: ``y`` is ``(B, d)``; ``f`` returns ``(B, d)``; ``g`` returns ``(B, d)`` (diagonal),
``(B, d, 1)`` (scalar) or ``(B, d, d)`` (additive); ``exact(y0, t, W)`` takes ``W = W_t − W_0``
of shape ``(B, m)`` and returns ``(B, d)``.  Time is SDE time; ``t`` arrives as a 0-dim tensor.
"""

from __future__ import annotations

import math

import torch


class GBM:
    """Geometric Brownian motion ``dY = μY dt + σY dW``, diagonal noise, ``d`` independent coordinates.

    Args:
        mu, sigma: drift and volatility rates (1 / time, 1 / √time).
        sde_type: "ito", or "stratonovich" for the equivalent Stratonovich form (drift ``(μ − σ²/2)Y``).
    """

    noise_type = "diagonal"

    def __init__(self, mu=1.0, sigma=0.8, sde_type="ito"):
        self.mu, self.sigma, self.sde_type = mu, sigma, sde_type

    def f(self, t, y):
        mu = self.mu if self.sde_type == "ito" else self.mu - 0.5 * self.sigma**2
        return mu * y

    def g(self, t, y):
        return self.sigma * y

    def exact(self, y0, t, W):
        return y0 * torch.exp((self.mu - 0.5 * self.sigma**2) * t + self.sigma * W)

    def mean(self, y0, t):
        return y0 * math.exp(self.mu * t)


class ScalarNoiseGBM(GBM):
    """GBM driven by one Brownian motion shared by all coordinates (``g`` of shape ``(B, d, 1)``)."""

    noise_type = "scalar"

    def g(self, t, y):
        return (self.sigma * y).unsqueeze(-1)

    def exact(self, y0, t, W):  # W: (B, 1)
        return y0 * torch.exp((self.mu - 0.5 * self.sigma**2) * t + self.sigma * W)


class ArctanProblem:
    """``dY = −p² sin Y cos³Y dt + p cos²Y dW`` (diagonal noise, nonlinear); Stratonovich form: drift 0.

    Args:
        p: noise scale.
        sde_type: "ito" or "stratonovich".
    """

    noise_type = "diagonal"

    def __init__(self, p=1.0, sde_type="ito"):
        self.p, self.sde_type = p, sde_type

    def f(self, t, y):
        if self.sde_type == "stratonovich":
            return torch.zeros_like(y)
        return -self.p**2 * torch.sin(y) * torch.cos(y) ** 3

    def g(self, t, y):
        return self.p * torch.cos(y) ** 2

    def exact(self, y0, t, W):
        return torch.atan(self.p * W + torch.tan(y0))


class AdditiveProblem:
    """``dY = (b/√(1+t) − Y/(2(1+t))) dt + ab/√(1+t) dW`` (additive noise, ``g`` of shape ``(B, d, d)``).

    Linear with an exact solution depending on ``W_t`` only: it flatters SRA and the Heun family
    (they reach strong order 2 here); Euler–Maruyama shows its additive-noise order 1.

    Args:
        a, b: the parameters of Kloeden & Platen's eq. (4.6).
        sde_type: "ito" or "stratonovich" (identical for additive noise).
    """

    noise_type = "additive"

    def __init__(self, a=1.0, b=1.0, sde_type="ito"):
        self.a, self.b, self.sde_type = a, b, sde_type

    def f(self, t, y):
        return self.b / torch.sqrt(1 + t) - y / (2 * (1 + t))

    def g(self, t, y):
        B, d = y.shape
        scale = self.a * self.b / torch.sqrt(1 + t)
        return scale * torch.eye(d, dtype=y.dtype, device=y.device).expand(B, d, d)

    def exact(self, y0, t, W):
        s = math.sqrt(1 + t)
        return y0 / s + (self.b / s) * (t + self.a * W)


class NonlinearAdditiveProblem:
    """``dY = −sin(Y) dt + σ/√(1+t) dW`` (additive noise, nonlinear drift; no closed form).

    Linear problems with additive noise flatter additive-noise schemes (SRA and the Heun
    family reach order 2.0 on :class:`AdditiveProblem`, whose solution depends on ``W_T``
    only); the drift's curvature here brings out the leading error term ``f'' g² I_(1,1,0)``
    that limits them to their declared orders.  Reference solutions come from a fine step.

    Args:
        sigma: noise scale.
        sde_type: "ito" or "stratonovich" (identical for additive noise).
    """

    noise_type = "additive"

    def __init__(self, sigma=1.0, sde_type="ito"):
        self.sigma, self.sde_type = sigma, sde_type

    def f(self, t, y):
        return -torch.sin(y)

    def g(self, t, y):
        B, d = y.shape
        return (self.sigma / torch.sqrt(1 + t)) * torch.eye(d, dtype=y.dtype, device=y.device).expand(B, d, d)
