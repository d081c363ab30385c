"""Probability-flow likelihood: sdekit's per-sample RK45 vs score_sde's scipy route, same run.

score_sde's route (re-implemented here as the baseline): ``scipy.integrate.solve_ivp``
RK45 over the flattened batch, the drift computed in torch, a numpy round trip
per evaluation, one step size for the whole batch.  Both use the exact trace,
so the error against the closed form measures the ODE solve alone.

    python benchmarks/likelihood_vs_scipy.py [--batch 256] [--dim 8] [--repeats 3]

Prints wall time (median), NFE and max |error| vs the exact mixture log-density,
and the time ratio scipy/sdekit.  Needs scipy (the ``benchmarks`` extra).
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
from scipy.integrate import solve_ivp

import sdekit
from sdekit.likelihood import exact_divergence
from sdekit.testing import GaussianMixture


def make_mixture(dim: int, seed: int = 0) -> GaussianMixture:
    g = torch.Generator().manual_seed(seed)
    mu = 1.5 * torch.randn(3, dim, generator=g, dtype=torch.float64)
    a = 0.4 * torch.randn(3, dim, dim, generator=g, dtype=torch.float64)
    covs = a @ a.transpose(1, 2) + 0.2 * torch.eye(dim, dtype=torch.float64)
    return GaussianMixture(torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64), mu, covs)


def scipy_route(score, sde, x, tol, eps):
    """score_sde's likelihood: solve_ivp RK45 on the flattened (x, Δlogp) of the whole batch."""
    flow = sde.probability_flow(score)
    B, D = x.shape

    def rhs(t, y):
        xt = torch.from_numpy(y[: B * D].reshape(B, D)).requires_grad_(True)
        tt = torch.full((B,), t, dtype=torch.float64)
        with torch.enable_grad():
            f = flow.drift(xt, tt)
            div = exact_divergence(f, xt)[:, 0]
        return np.concatenate([f.detach().numpy().ravel(), div.detach().numpy()])

    y0 = np.concatenate([x.numpy().ravel(), np.zeros(B)])
    sol = solve_ivp(rhs, (eps, sde.T), y0, rtol=tol, atol=tol, method="RK45")
    y = sol.y[:, -1]
    x_T = torch.from_numpy(y[: B * D].reshape(B, D))
    return torch.from_numpy(y[B * D :]), x_T, sol.nfev


def mlp_score(dim: int, sde, seed: int = 0):
    """A small random time-conditioned ε-network as a score, ``−ε̂/σ(t)``: a network's cost and stiffness."""
    torch.manual_seed(seed)
    net = torch.nn.Sequential(
        torch.nn.Linear(dim + 1, 128), torch.nn.SiLU(), torch.nn.Linear(128, 128), torch.nn.SiLU(), torch.nn.Linear(128, dim)
    ).double()
    return sdekit.score_from_epsilon(lambda x, t: 0.5 * x + 0.2 * net(torch.cat([x, t[:, None]], dim=1)), sde)


def run_routes(score, sde, x, tol, eps, repeats):
    """Median wall time, NFE and the (Δlogp, x_T) answer of both routes."""

    def ours():
        r = sdekit.log_likelihood(score, sde, x, trace="exact", rtol=tol, atol=tol, eps=eps)
        return r.log_prob - r.prior_log_prob, r.x_T, int(r.nfe.max()), r.nfe.double().mean().item()

    def theirs():
        delta, x_T, nfev = scipy_route(score, sde, x, tol, eps)
        return delta, x_T, nfev, float(nfev)

    rows = {}
    for name, fn in (("sdekit RK45 (per-sample)", ours), ("scipy solve_ivp RK45 (score_sde route)", theirs)):
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            out = fn()
            times.append(time.perf_counter() - t0)
        rows[name] = (statistics.median(times),) + out
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--dim", type=int, default=8)
    p.add_argument("--tol", type=float, default=1e-5)
    p.add_argument("--repeats", type=int, default=3)
    a = p.parse_args(argv)
    sde, eps = sdekit.VPSDE(), 1e-5
    mix = make_mixture(a.dim)
    x, _ = mix.sample(a.batch, generator=torch.Generator().manual_seed(1))
    exact = mix.log_prob(x, sde, eps)
    print(f"batch {a.batch}, dim {a.dim}, rtol=atol={a.tol}, eps={eps}, exact trace, float64, {torch.get_num_threads()} threads")
    print("\nAccuracy, exact Gaussian-mixture score (error vs the closed-form log p_eps):")
    print("| route | NFE (slowest sample) | NFE per sample (mean) | max abs error (nats) |\n|---|---|---|---|")
    for name, (_, delta, x_T, per, mean) in run_routes(mix.score_model(sde), sde, x, a.tol, eps, 1).items():
        err = (delta + mix.log_prob(x_T, sde, sde.T) - exact).abs().max().item()
        print(f"| {name} | {per} | {mean:.1f} | {err:.2e} |")
    print("\nSpeed, small MLP score (same network and data for both):")
    print("| route | median wall s | NFE (slowest sample) | NFE per sample (mean) |\n|---|---|---|---|")
    rows = run_routes(mlp_score(a.dim, sde), sde, x, a.tol, eps, a.repeats)
    for name, (wall, _, _, per, mean) in rows.items():
        print(f"| {name} | {wall:.3f} | {per} | {mean:.1f} |")
    ours, theirs = rows.values()
    print(f"time ratio scipy / sdekit: {theirs[0] / ours[0]:.2f}x")


if __name__ == "__main__":
    main()
