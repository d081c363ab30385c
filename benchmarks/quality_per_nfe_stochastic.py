"""Stochastic sampler quality per NFE: a distribution metric with its standard error, sdekit vs k-diffusion.

    python benchmarks/quality_per_nfe_stochastic.py [--quick] [--out benchmarks/results/quality_per_nfe_stochastic.md]

Problems: the Gaussian mixtures of ``quality_per_nfe_deterministic.py`` (d = 2 and 16; 4 anisotropic
components, weights 0.4/0.3/0.2/0.1) in EDM/VE form, σ ∈ [0.002, 80], with the exact denoiser, float64.
Every sampler draws ``N`` samples from ``x_T = σ_max ε`` and ends at σ = 0 (k-diffusion: its final step to 0;
sdekit's ``sample()``: the grid to σ_min, then ``denoise=True``, the same ``D(x, σ_min)``).

Metric (no reference solution exists for a stochastic sampler; the target is the data law): with the
responsibilities ``r_nk = p(k | x_n)`` under the data mixture, the soft weights ``ŵ_k = mean_n r_nk`` and the
soft component moments ``μ̂_k``, ``Σ̂_k``:

* ``TV``: ``½ Σ_k |ŵ_k − w_k|`` (mixture-weight total variation);
* ``moments``: ``Σ_k w_k (‖L_k⁻¹(μ̂_k − μ_k)‖² + ‖L_k⁻¹ Σ̂_k L_k⁻ᵀ − I‖_F²)^{1/2}/√d`` (``Σ_k = L_k L_kᵀ``):
  per-component mean and covariance errors in the component's own units, weighted by the true weights.

Each is given with its bootstrap standard error (200 resamples of the N samples).  Both metrics are biased
upwards by sampling noise (a norm of noisy estimates): the row ``exact`` applies them to N exact samples of the
mixture and gives that floor.  A sampler's error is significant where its value exceeds the floor by several
SE.  NFE: denoiser evaluations per sample, counted (rows the model sees / N).

Rows: sdekit's stochastic samplers through ``sdekit.sample(score, EDMSDE(0.002, 80), ...)`` (keyed noise):
the noise-level family ``euler_ancestral``, ``dpm_2_ancestral``, ``dpmpp_2s_ancestral``, ``dpmpp_2m_sde``,
``dpmpp_3m_sde``, ``heun`` with EDM's ImageNet churn (Karras et al. 2022, Table 5: S_churn = 40 at 256 steps,
i.e. γ = 40/256 per step, kept here as ``s_churn = 40 n/256`` for n steps; S_tmin = 0.05, S_tmax = 50,
S_noise = 1.003), each on its registry default grid and on the Karras grid; the
predictors ``ancestral`` and ``euler_maruyama`` and PC ``reverse_diffusion`` + Langevin (snr 0.16) on the
Karras grid.  k-diffusion 0.1.1.post1's own ``sample_euler_ancestral``, ``sample_dpm_2_ancestral``,
``sample_dpmpp_2s_ancestral``, ``sample_dpmpp_2m_sde`` (its Brownian-tree noise), ``sample_dpmpp_3m_sde`` and
``sample_heun`` (same churn) on ``get_sigmas_karras(n, 0.002, 80)`` (its convention), seeded by the global RNG.
"""

from __future__ import annotations

import json
import math
import platform
import time
from pathlib import Path

import torch
from kdiffusion_loader import load_k_sampling
from quality_per_nfe_deterministic import SIGMA_MAX, SIGMA_MIN, MixtureDenoiser, benchmark_mixture
from timing import quick_or_full

import sdekit
from sdekit.integrations.k_diffusion import denoiser_score
from sdekit.sampling import karras_sigmas

torch.set_num_threads(1)
DTYPE = torch.float64
FULL = {"dims": (2, 16), "nfes": (10, 20, 50), "n": 20000, "boot": 200}
QUICK = {"dims": (2,), "nfes": (10,), "n": 2000, "boot": 50}
KD = load_k_sampling()
HERE = Path(__file__).resolve().parent


def churn(n_steps: int) -> dict:
    return {"s_churn": 40.0 * n_steps / 256, "s_tmin": 0.05, "s_tmax": 50.0, "s_noise": 1.003}


def steps_for(calls_per_step: int, nfe: int, final_free: bool) -> int:
    """Steps giving at most ``nfe`` calls: k-diffusion's last step to 0 is one call; sdekit adds one denoise call."""
    if final_free:  # k-diffusion: n steps cost calls_per_step·n − (calls_per_step − 1)
        return (nfe + calls_per_step - 1) // calls_per_step
    return (nfe - 1) // calls_per_step


SDEKIT = {  # name: (method, calls per step, options(n) or None, grid override)
    "euler_ancestral": ("euler_ancestral", 1, None),
    "dpm_2_ancestral": ("dpm_2_ancestral", 2, None),
    "dpmpp_2s_ancestral": ("dpmpp_2s_ancestral", 2, None),
    "dpmpp_2m_sde": ("dpmpp_2m_sde", 1, None),
    "dpmpp_3m_sde": ("dpmpp_3m_sde", 1, None),
    "heun (EDM churn)": ("heun", 2, churn),
}
PREDICTORS = {"ancestral": ("ancestral", 1, {}), "euler_maruyama": ("euler_maruyama", 1, {}),
              "reverse_diffusion + langevin": ("reverse_diffusion", 2, {"corrector": "langevin", "snr": 0.16})}


def metrics(x: torch.Tensor, mixture, params, boot: int, seed: int) -> dict:
    w, mu = params[:2]
    r = mixture.responsibilities(x)  # (N, K) under the data law
    chol = torch.linalg.cholesky(mixture.covs)
    d = x.shape[1]

    def stats(idx):
        rr, xx = r[idx], x[idx]
        w_hat = rr.mean(0)
        tv = 0.5 * float((w_hat - w).abs().sum())
        mom = 0.0
        for k in range(len(w)):
            rk = rr[:, k]
            m = (rk[:, None] * xx).sum(0) / rk.sum()
            c = ((xx - m) * rk[:, None]).T @ (xx - m) / rk.sum()
            e_mean = torch.linalg.solve_triangular(chol[k], (m - mu[k])[:, None], upper=False)
            a = torch.linalg.solve_triangular(chol[k], c, upper=False)
            white = torch.linalg.solve_triangular(chol[k], a.T, upper=False)
            err = float((e_mean**2).sum() + ((white - torch.eye(d, dtype=x.dtype)) ** 2).sum())
            mom += float(w[k]) * math.sqrt(err / d)
        return tv, mom

    n = x.shape[0]
    tv, mom = stats(torch.arange(n))
    g = torch.Generator().manual_seed(seed)
    draws = [stats(torch.randint(0, n, (n,), generator=g)) for _ in range(boot)]
    se = [float(torch.tensor(v, dtype=DTYPE).std()) for v in zip(*draws)]
    return {"tv": tv, "tv_se": se[0], "moments": mom, "moments_se": se[1]}


def run_sdekit(model, method, nfe, grid, extra, n, seed):
    calls = extra[1]
    steps = steps_for(calls, nfe, final_free=False)
    options = extra[2](steps) if callable(extra[2]) else None
    kwargs = dict(extra[2]) if isinstance(extra[2], dict) else {}
    sde = sdekit.EDMSDE(SIGMA_MIN, SIGMA_MAX)
    model.rows = 0
    out = sdekit.sample(denoiser_score(model), sde, (n, model.mu.shape[1]), method=method, steps=steps, seed=seed,
                        dtype=DTYPE, grid=grid, method_options=options, **kwargs)
    return out.x, model.rows / n


def run_k_diffusion(model, name, nfe, n, seed):
    calls = {"euler_ancestral": 1, "dpm_2_ancestral": 2, "dpmpp_2s_ancestral": 2, "dpmpp_2m_sde": 1,
             "dpmpp_3m_sde": 1, "heun (EDM churn)": 2}[name]
    steps = steps_for(calls, nfe, final_free=True)
    sigmas = karras_sigmas(steps, SIGMA_MIN, SIGMA_MAX).to(DTYPE)
    torch.manual_seed(seed)
    x = torch.randn(n, model.mu.shape[1], dtype=DTYPE) * SIGMA_MAX
    model.rows = 0
    if name == "heun (EDM churn)":
        out = KD.sample_heun(model, x, sigmas, disable=True, **churn(steps))
    else:
        out = getattr(KD, "sample_" + name)(model, x, sigmas, disable=True)
    return out, model.rows / n


def run_problem(d: int, cfg: dict, log) -> dict:
    mixture, params = benchmark_mixture(d)
    model = MixtureDenoiser(params)
    rows = []
    exact = mixture.sample(cfg["n"], generator=torch.Generator().manual_seed(3))[0]
    rows.append({"library": "exact", "sampler": "mixture samples", "grid": "-", "nfe_budget": 0, "nfe": 0,
                 **metrics(exact, mixture, params, cfg["boot"], 0)})
    for nfe in cfg["nfes"]:
        for name, spec in SDEKIT.items():
            for grid in (None, "karras"):
                if grid == "karras" and name in ("euler_ancestral", "dpm_2_ancestral", "heun (EDM churn)"):
                    continue  # their default is Karras already
                t0 = time.perf_counter()
                x, used = run_sdekit(model, spec[0], nfe, grid, spec, cfg["n"], seed=10 + nfe)
                from sdekit.sampling.sigma_samplers import SIGMA_SAMPLERS

                rows.append({"library": "sdekit", "sampler": name, "grid": grid or SIGMA_SAMPLERS[spec[0]].grid,
                             "nfe_budget": nfe, "nfe": used, "time_s": time.perf_counter() - t0,
                             **metrics(x, mixture, params, cfg["boot"], nfe)})
                log(f"  d={d} NFE {nfe} sdekit {name} ({rows[-1]['grid']}): TV {rows[-1]['tv']:.4f}")
        for name, spec in PREDICTORS.items():
            x, used = run_sdekit(model, spec[0], nfe, "karras", spec, cfg["n"], seed=10 + nfe)
            rows.append({"library": "sdekit", "sampler": name, "grid": "karras", "nfe_budget": nfe, "nfe": used,
                         **metrics(x, mixture, params, cfg["boot"], nfe)})
        if not isinstance(KD, str):
            for name in SDEKIT:
                x, used = run_k_diffusion(model, name, nfe, cfg["n"], seed=20 + nfe)
                rows.append({"library": "k-diffusion", "sampler": name, "grid": "karras", "nfe_budget": nfe,
                             "nfe": used, **metrics(x, mixture, params, cfg["boot"], nfe)})
                log(f"  d={d} NFE {nfe} k-diffusion {name}: TV {rows[-1]['tv']:.4f}")
    return {"d": d, "rows": rows}


def table(res: dict) -> str:
    lines = ["| NFE budget | library | sampler | grid | NFE | TV ± SE | moments ± SE |", "|---|---|---|---|---|---|---|"]
    for r in res["rows"]:
        lines.append(f"| {r['nfe_budget'] or '-'} | {r['library']} | {r['sampler']} | {r['grid']} | {r['nfe']:.0f} | "
                     f"{r['tv']:.4f} ± {r['tv_se']:.4f} | {r['moments']:.4f} ± {r['moments_se']:.4f} |")
    return "\n".join(lines)


def best(res: dict, nfe: int, library: str, key: str):
    rows = [r for r in res["rows"] if r["nfe_budget"] == nfe and r["library"] == library]
    return min(rows, key=lambda r: r[key]) if rows else None


def summary(results: list, cfg: dict) -> str:
    lines = ["| d | NFE | metric | exact floor | best sdekit (row) | best k-diffusion (row) | difference / SE |",
             "|---|---|---|---|---|---|---|"]
    for res in results:
        floor = res["rows"][0]
        for nfe in cfg["nfes"]:
            for key in ("tv", "moments"):
                a, b = best(res, nfe, "sdekit", key), best(res, nfe, "k-diffusion", key)
                if b is None:
                    continue
                z = (a[key] - b[key]) / math.hypot(a[key + "_se"], b[key + "_se"])
                lines.append(f"| {res['d']} | {nfe} | {key} | {floor[key]:.4f} | {a[key]:.4f} ({a['sampler']}, "
                             f"{a['grid']}) | {b[key]:.4f} ({b['sampler']}) | {z:+.1f} |")
    return "\n".join(lines)


def main(argv=None):
    quick, out = quick_or_full(argv, __doc__, "d = 2, NFE 10, 2000 samples (checks it runs)", "quality_per_nfe_stochastic", HERE)
    cfg = QUICK if quick else FULL
    t0 = time.perf_counter()
    results = [run_problem(d, cfg, print) for d in cfg["dims"]]
    elapsed = time.perf_counter() - t0
    cmd = "python benchmarks/quality_per_nfe_stochastic.py" + (" --quick" if quick else "")
    parts = [f"# Stochastic sampler quality per NFE{' (--quick)' if quick else ''}", "",
             (f"Command: `{cmd}` (one torch thread; {elapsed:.0f} s on {platform.processor() or platform.machine()}, "
              f"Python {platform.python_version()}, torch {torch.__version__}); N = {cfg['n']} samples per row, "
              f"bootstrap SE from {cfg['boot']} resamples.  Metrics and rows: the module docstring."), "",
             "## Best sdekit row vs best k-diffusion row", "",
             ("Negative difference: sdekit's best row is better.  The `exact` floor is the metric's value on exact "
              "mixture samples (its noise bias)."), "", summary(results, cfg), ""]
    for res in results:
        parts += [f"## d = {res['d']}", "", table(res), ""]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(parts))
    out.with_suffix(".json").write_text(json.dumps({"config": cfg, "elapsed_s": elapsed, "results": results},
                                                   indent=1))
    print(summary(results, cfg))


if __name__ == "__main__":
    main()
