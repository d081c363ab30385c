"""Likelihood suite: ``sdekit.log_likelihood`` vs score_sde's scipy route vs k-diffusion's ``log_likelihood``.

Routes, all in float64 on the CPU, the same score model and the same data:

* **sdekit**: ``sdekit.log_likelihood`` — Dormand–Prince RK45 with per-sample
  error control on the augmented probability-flow ODE, swept over tolerances.
* **scipy (score_sde route)**: score_sde's ``likelihood.py`` re-implemented —
  ``scipy.integrate.solve_ivp(method="RK45")`` over the flattened batch
  ``(x, Δlog p)``, the drift and divergence computed in torch with a numpy
  round trip per evaluation, one step size for the whole batch; its defaults
  rtol = atol = 1e-5, eps = 1e-5.  The divergence is computed by the *same*
  sdekit function as the sdekit route (exact or Hutchinson with the same
  probe), so the ratio measures the ODE solve, not the trace code.
* **k-diffusion**: ``k_diffusion.sampling.log_likelihood`` (torchdiffeq dopri5
  on the EDM ODE ``dx/dσ = (x − D(x, σ))/σ``, one Rademacher probe, its
  defaults rtol = atol = 1e-4), on the EDM SDE (σ(t) = t) with the mixture's
  exact denoiser; we reproduce its probe (``torch.manual_seed`` before the
  call) and hand the same probe to the other routes.

Cases:

* ``mixture VP, exact trace`` — a 3-component Gaussian mixture in 8-D under
  the VP SDE (β 0.1…20), exact trace, error against the closed-form
  ``log p_eps`` (the end point is scored by the mixture's exact marginal at T,
  so only the ODE solve errs);
* ``mixture EDM, Hutchinson`` — the same mixture under the EDM SDE
  (σ 0.002…80), one Rademacher probe shared by all routes; error against the
  same-probe reference (sdekit at rtol = atol = 1e-10);
* ``digits VP, Hutchinson`` — the main job's ε-MLP on the 360 held-out
  dequantised digits (64-D), one shared probe; error against the same-probe
  reference.  Full mode trains or reuses the main job's checkpoint in
  ``digits_out/`` (about 80 s the first time); ``--quick`` uses an untrained
  network.  k-diffusion is not run here (it needs a VE denoiser; the
  mixture-EDM case covers it).

Reported: median wall time, NFE (slowest sample, mean), max and mean absolute
error in nats; ratios at the default tolerances and at equal or smaller
error (the fastest sdekit tolerance whose max error is at most the
baseline's).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.integrate import solve_ivp

import sdekit
from sdekit.likelihood import exact_divergence, hutchinson_divergence, probe_noise
from sdekit.testing import GaussianMixture

from kdiffusion_loader import load_k_sampling
from report import fmt, goal, savefig, table

SUITE = "likelihood"
EPS_VP = 1e-5
SDEKIT_TOLS = (1e-3, 3e-4, 1e-4, 3e-5, 1e-5, 3e-6)
SCIPY_TOLS = (1e-4, 1e-5, 1e-6)
KD_TOLS = (1e-4, 1e-5)
REF_TOL = 1e-10
PROBE_SEED = 7
COLORS = {"sdekit": "C0", "scipy": "C1", "k-diffusion": "C2"}
CASES = ("mixture VP, exact trace", "mixture EDM, Hutchinson", "digits VP, Hutchinson")


def make_mixture(dim: int, seed: int = 0) -> GaussianMixture:
    g = torch.Generator().manual_seed(seed)
    mu = 1.5 * torch.randn(3, dim, generator=g, dtype=torch.float64)
    a = 0.4 * torch.randn(3, dim, dim, generator=g, dtype=torch.float64)
    covs = a @ a.transpose(1, 2) + 0.2 * torch.eye(dim, dtype=torch.float64)
    return GaussianMixture(torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64), mu, covs)


def kd_probe(x: torch.Tensor) -> torch.Tensor:
    """k-diffusion's probe for ``x`` after ``torch.manual_seed(PROBE_SEED)``: Rademacher, ``(B, 1, *D)``."""
    torch.manual_seed(PROBE_SEED)
    return (torch.randint_like(x, 2) * 2 - 1)[:, None]


class Problem:
    """Score, SDE, data, probe (or None for the exact trace) and the answer to score errors against."""

    def __init__(self, case: str, quick: bool):
        self.case = case
        dim, batch = 8, (16 if quick else 256)
        if case.startswith("mixture"):
            mix = make_mixture(dim)
            self.sde = sdekit.VPSDE() if "VP" in case else sdekit.EDMSDE()
            self.eps = EPS_VP if "VP" in case else self.sde.sigma_min
            self.x, _ = mix.sample(batch, generator=torch.Generator().manual_seed(1))
            self.score = mix.score_model(self.sde)
            self.mix = mix
        else:
            self.sde, self.eps, self.mix = sdekit.VPSDE(), EPS_VP, None
            self.score, self.x = digits_problem(quick)
        self.probe = None if "exact" in case else kd_probe(self.x)
        ref_tol = 1e-7 if quick else REF_TOL
        self.reference = None if self.mix is not None and self.probe is None else self.solve_sdekit(ref_tol)[0]

    def answer(self, delta, x_T):
        """``Δlog p`` and end point → ``log p_eps(x)``: the end point scored by the exact marginal at T
        when the mixture is exact, else by the prior (as every route does)."""
        if self.mix is not None and self.probe is None:
            return delta + self.mix.log_prob(x_T, self.sde, self.sde.T)
        return delta + self.sde.prior_log_prob(x_T)

    def errors(self, log_p) -> dict:
        target = self.mix.log_prob(self.x, self.sde, self.eps) if self.reference is None else self.reference
        err = (log_p - target).abs()
        return {"err_max": err.max().item(), "err_mean": err.mean().item()}

    def solve_sdekit(self, tol):
        gen = None
        kw = {"trace": "exact"}
        if self.probe is not None:
            kw = {"trace": "hutchinson", "probes": 1}
            gen = torch.Generator().manual_seed(PROBE_SEED)  # the same bits as k-diffusion's probe (checked)
        r = sdekit.log_likelihood(self.score, self.sde, self.x, rtol=tol, atol=tol, eps=self.eps, generator=gen, **kw,
                                  max_steps=100_000)
        return self.answer(r.log_prob - r.prior_log_prob, r.x_T), r.nfe

    def solve_scipy(self, tol):
        delta, x_T, nfev = scipy_route(self.score, self.sde, self.x, tol, self.eps, self.probe)
        return self.answer(delta, x_T), torch.full((len(self.x),), nfev)

    def solve_kdiffusion(self, tol):
        k = load_k_sampling()
        if isinstance(k, str):
            pytest.skip(k)
        denoiser = denoiser_from_score(self.score)
        torch.manual_seed(PROBE_SEED)
        ll, info = k.log_likelihood(denoiser, self.x, self.sde.sigma_min, self.sde.sigma_max, atol=tol, rtol=tol)
        return ll, torch.full((len(self.x),), info["fevals"])


def denoiser_from_score(score):
    """``D(x, σ) = x + σ² s(x, σ)`` for the EDM SDE, whose time is σ."""
    return lambda x, sigma: x + sigma[:, None] ** 2 * score(x, sigma)


def digits_problem(quick: bool):
    """The main job's ε-MLP (float64) and 360 held-out dequantised digits."""
    from sdekit.demo.checkpoint import load_or_train
    from sdekit.demo.data import load_labelled_splits
    from sdekit.demo.digits import DATA_RANGE, LEVELS
    from sdekit.demo.train import TrainConfig

    sde = sdekit.VPSDE()
    train, _, test, _ = load_labelled_splits(seed=0)
    if quick:
        config, out, test = TrainConfig(steps=2), Path(tempfile.mkdtemp(prefix="sdekit-bench-digits-")), test[:8]
    else:
        config, out = TrainConfig(), Path(__file__).resolve().parents[1] / "digits_out"
    net = load_or_train(train, sde, config, out, split_seed=0, progress=False).net.double()
    x = sdekit.dequantize(test, LEVELS, DATA_RANGE, generator=torch.Generator().manual_seed(3)).double()
    return sdekit.score_from_epsilon(net, sde), x


def scipy_route(score, sde, x, tol, eps, probe=None):
    """score_sde's likelihood: ``solve_ivp`` RK45 on the flattened ``(x, Δlog p)`` of the whole batch."""
    flow = sde.probability_flow(score)
    B, shape = x.shape[0], x.shape[1:]
    D = x[0].numel()

    def rhs(t, y):
        xt = torch.from_numpy(y[: B * D].reshape((B,) + tuple(shape))).requires_grad_(True)
        tt = torch.full((B,), t, dtype=x.dtype)
        with torch.enable_grad():
            f = flow.drift(xt, tt)
            div = exact_divergence(f, xt) if probe is None else hutchinson_divergence(f, xt, probe)
        return np.concatenate([f.detach().numpy().ravel(), div[:, 0].detach().numpy()])

    y0 = np.concatenate([x.numpy().ravel(), np.zeros(B)])
    sol = solve_ivp(rhs, (eps, sde.T), y0, rtol=tol, atol=tol, method="RK45")
    if not sol.success:
        raise RuntimeError(f"solve_ivp failed: {sol.message}")
    y = sol.y[:, -1]
    return torch.from_numpy(y[B * D:]), torch.from_numpy(y[: B * D].reshape(x.shape)), sol.nfev


_PROBLEMS: dict = {}


def problem(case: str, quick: bool) -> Problem:
    if case not in _PROBLEMS:
        _PROBLEMS[case] = Problem(case, quick)
    return _PROBLEMS[case]


def runs():
    for case in CASES:
        yield from ((case, "sdekit", tol) for tol in SDEKIT_TOLS)
        yield from ((case, "scipy", tol) for tol in SCIPY_TOLS)
        if "EDM" in case:
            yield from ((case, "k-diffusion", tol) for tol in KD_TOLS)


@pytest.mark.parametrize("case,impl,tol", list(runs()))
def test_likelihood(measure, quick, case, impl, tol):
    default = {"scipy": 1e-5, "k-diffusion": 1e-4, "sdekit": 1e-5}[impl]
    if quick and tol != default:
        pytest.skip("--quick: default tolerances only")
    p = problem(case, quick)
    if p.probe is not None:  # the routes must share one probe, or the errors compare different estimators
        ours = probe_noise((len(p.x), 1) + tuple(p.x.shape[1:]), "rademacher",
                           generator=torch.Generator().manual_seed(PROBE_SEED), dtype=p.x.dtype)
        assert torch.equal(ours, p.probe), "sdekit's seeded probe differs from k-diffusion's; fix the shared probe"
    solve = {"sdekit": p.solve_sdekit, "scipy": p.solve_scipy, "k-diffusion": p.solve_kdiffusion}[impl]

    def run():
        log_p, nfe = solve(tol)
        return {"nfe_max": int(nfe.max()), "nfe_mean": nfe.double().mean().item(), **p.errors(log_p)}

    measure(run, suite=SUITE, case=case, impl=impl, tol=tol, default_tol=tol == default,
            baseline=impl != "sdekit", batch=len(p.x), dim=p.x[0].numel())


def _fastest_within(rows, err):
    """The fastest sdekit row whose max error is at most ``err`` (None if none)."""
    ok = [r for r in rows if r["impl"] == "sdekit" and r["err_max"] <= err]
    return min(ok, key=lambda r: r["median_s"]) if ok else None


def summarize(rows, out_dir: Path) -> str:
    import matplotlib.pyplot as plt

    parts = ["## Likelihood (probability-flow ODE, float64, CPU)", "",
             "Ratio = baseline time / sdekit time in the same run (> 1: sdekit faster).  "
             "\"equal error\": sdekit at its fastest tolerance whose max error ≤ the baseline's at its default.", ""]
    fig, axes = plt.subplots(1, len(CASES), figsize=(5 * len(CASES), 4), squeeze=False)
    best_ratio = {}
    for ax, case in zip(axes[0], CASES):
        cr = [r for r in rows if r["case"] == case]
        if not cr:
            continue
        body = [[r["impl"], r["tol"], r["median_s"], r["nfe_max"], r["nfe_mean"], r["err_max"], r["err_mean"]]
                for r in sorted(cr, key=lambda r: (r["impl"], -r["tol"]))]
        parts += [f"### {case} (batch {cr[0]['batch']}, dim {cr[0]['dim']})", "",
                  table(["route", "rtol = atol", "wall s", "NFE max", "NFE mean", "max |err| nats",
                         "mean |err| nats"], body), ""]
        ours_default = next((r for r in cr if r["impl"] == "sdekit" and r["default_tol"]), None)
        for base in [r for r in cr if r["baseline"] and r["default_tol"]]:
            at_tol = base["median_s"] / ours_default["median_s"] if ours_default else None
            match = _fastest_within(cr, base["err_max"])
            at_err = base["median_s"] / match["median_s"] if match else None
            best_ratio[(case, base["impl"])] = at_err
            parts.append(f"- vs {base['impl']} (tol {fmt(base['tol'])}): {fmt(at_tol)}× at sdekit's default "
                         f"tolerance; {fmt(at_err)}× at equal or smaller error"
                         + (f" (sdekit tol {fmt(match['tol'])}: max err {fmt(match['err_max'])} vs "
                            f"{fmt(base['err_max'])})" if match else " (no sdekit tolerance reached its error)"))
        parts.append("")
        for impl in sorted({r["impl"] for r in cr}):
            pts = sorted((r["median_s"], r["err_max"]) for r in cr if r["impl"] == impl)
            ax.loglog([p[0] for p in pts], [max(p[1], 1e-16) for p in pts], "o-", label=impl, color=COLORS[impl])
        ax.set(title=case, xlabel="wall time (s)", ylabel="max |error| (nats)")
        ax.legend()
    parts.append(savefig(fig, out_dir, "likelihood_work_precision.png"))
    scipy_ratios = [v for (c, impl), v in best_ratio.items() if impl == "scipy" and v is not None]
    parts += ["", "Goal:",
              goal("likelihood ≥ 5× faster than the scipy route at equal or smaller error (worst case)",
                   min(scipy_ratios) if scipy_ratios else None, 5.0), ""]
    return "\n".join(parts)
