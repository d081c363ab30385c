"""Sample quality per NFE: sdekit's samplers vs k-diffusion's and diffusers' on an exact-score mixture.

Reference problem: a 2-D Gaussian mixture (4 components, weights 0.4/0.3/0.2/0.1,
anisotropic and one tight covariance; :func:`reference_mixture`) whose score,
marginals and samples are exact under every SDE (:class:`sdekit.testing.GaussianMixture`).
Every sampler is given the *exact* score (or the denoiser / ε-prediction made
from it, in float64) and starts from the *exact* marginal at its own start
time, so the only error left is the sampler's discretisation (plus sampling
noise, shown as the floor).

Samplers and NFE (score / denoiser / ε evaluations per sample; budgets
10, 20, 50, 100, 1000, ``--quick``: 10 and 20):

* sdekit on the VP SDE (β 0.1…20, T = 1, start x_T ~ p_1, end eps = 1e-3 then
  Tweedie's denoising step): Euler–Maruyama, reverse diffusion, ancestral
  (``steps = NFE − 1``), PC = reverse diffusion + 1 Langevin corrector step at
  snr 0.16, score_sde's default (``steps = (NFE − 1)//2``; that snr is too large
  for this problem: its error grows with NFE — a one-off check at NFE 99 with
  4 000 samples gave sliced W2 0.92 at snr 0.16, 0.31 at 0.05, 0.078 at 0.01 —
  and it is not tuned here), DPM-Solver++(2M) (``method="dpmpp_2m"``,
  ``steps = NFE − 1``) on its default uniform log-SNR grid and on the
  "time-quadratic" grid ``t_i = (√T + (i/N)(√eps − √T))²`` (Lu et al. 2022a,
  Appendix D) passed as ``timesteps=``, probability flow with
  adaptive RK45 (``method="ode"``: rtol = atol chosen per budget by bisection on
  a 256-sample calibration batch so that the mean NFE stays within the budget;
  the achieved mean NFE is reported beside the error).
* sdekit's k-diffusion-signature samplers (:mod:`sdekit.integrations.k_diffusion`)
  and k-diffusion 0.1.1.post1's own (its ``sampling`` module alone, loaded as in
  ``tests/k_diffusion_reference.py``): the VP model in denoiser form
  ``D(x, σ) = x + σ² ∇ log p_σ(x)`` with ``x = x_vp/α``, ``σ = σ_vp/α`` (the
  EDM/VE parameterisation, :class:`sdekit.EDMSDE`), on Karras et al.'s schedule
  (ρ = 7) from σ_max = σ_vp(1)/α(1) ≈ 152 to σ_min = σ_vp(eps)/α(eps) ≈ 0.010 — the
  VP run's end points — then 0 (the step to 0 is the denoising step).  euler,
  dpmpp_2m, lms, euler_ancestral: ``n = NFE`` steps; heun: ``n = (NFE + 1)//2``
  steps (2n − 1 evaluations: the last step to 0 is an Euler step); sdekit's
  dopri5 calibrated as RK45 above.  k-diffusion's euler_ancestral gets a seeded
  ``noise_sampler``.  k-diffusion's dpmpp_2m also runs on the σ's of the
  time-quadratic VP grid (``σ_vp/α`` at those times, then 0): it is the same
  algorithm as sdekit's ``dpmpp_2m`` (tests/test_dpm_solver.py checks agreement to
  rounding), so on the same grid the two give the same samples — any sdekit lead
  over k-diffusion's dpmpp_2m on Karras σ's is the grid, not the integrator.
* diffusers 0.42 schedulers with their default configuration (1000 training
  steps, linear β 1e-4…0.02), driven by hand (``set_timesteps(n)``, then
  ``step(model_output, t, x)``), ``n = NFE``: DDPMScheduler, DDIMScheduler
  (both ``clip_sample=False``: the mixture lives outside [−1, 1]),
  DPMSolverMultistepScheduler (DPM-Solver++ order 2), EulerDiscreteScheduler.
  The ε-prediction is exact: ``ε = −σ_k ∇ log p(x)`` under the DDPM marginal at
  timestep ``k`` (:class:`sdekit.DiscreteVPSDE` built from the scheduler's
  ``alphas_cumprod``; EulerDiscrete's interpolated σ's are handled in its VE
  form through :class:`sdekit.EDMSDE`).  Start: exact marginal at the first
  timestep of the schedule (900 for DDPM/DDIM's default "leading" spacing, 999
  otherwise); end: DDPM, DDIM and Euler return the x̂_0 of timestep 0
  (σ ≈ 0.010, as everyone else); DPMSolverMultistep's default schedule makes its
  last evaluation at timestep ≈ 1000/n and jumps to σ = 0 from there (its default
  ``final_sigmas_type="zero"``).  At 1000 steps its "linspace" spacing rounds two
  timesteps to the same integer (a zero step) and its output is NaN: shown as
  "non-finite".

Metrics, each against the data distribution p_0 (``N_FULL`` = 10 000 samples
per sampler in full mode, 512 under ``--quick``), all in float64:

(10 000 rather than more: the full run makes ~21 000 exact-score evaluations
of the whole batch, ~10 ms each here; the low-NFE errors stay several times
the floor.)

* ``sw2``: sliced 2-Wasserstein distance to an exact sample set of the same size
  (256 seeded random directions; 1-D W2 by sorted samples; root mean square
  over directions);
* ``tv``: total variation ``½ Σ_k |mean_i p(k | x_i) − w_k|`` of the mixture
  weights, by exact responsibilities;
* ``mean_err`` / ``cov_err``: the largest over components of the Euclidean /
  Frobenius error of the responsibility-weighted mean / covariance
  (``Σ_i p(k|x_i) x_i / Σ_i p(k|x_i)``, unbiased for exact samples).

The floor of each metric is the mean over 4 further exact sample sets of the
same size (``floor`` row): errors near it are sampling noise, not sampler error.
Times are recorded (one round, no warm-up, one torch thread) but are not the
point; every sampler runs with fixed seeds, so the errors are deterministic.
"""

from __future__ import annotations

import functools
from pathlib import Path

import pytest
import torch

import sdekit
from sdekit.integrations import k_diffusion as skd
from sdekit.testing import GaussianMixture

from kdiffusion_loader import load_k_sampling

SUITE = "quality"
NFES = (10, 20, 50, 100, 1000)
NFES_QUICK = (10, 20)
N_FULL, N_QUICK = 10_000, 512
N_FLOOR_SETS = 4
N_CALIBRATE = 128
N_DIRECTIONS = 256
DTYPE = torch.float64
VP = sdekit.VPSDE()
EPS = VP.sampling_eps
EDM = sdekit.EDMSDE()  # only σ(t) = t is used
KD = load_k_sampling()


def reference_mixture() -> GaussianMixture:
    """The 2-D, 4-component mixture of this suite (unequal weights, anisotropic and one tight covariance)."""
    w = torch.tensor([0.4, 0.3, 0.2, 0.1], dtype=DTYPE)
    mu = torch.tensor([[-2.0, 0.5], [1.5, 1.5], [0.5, -2.0], [2.5, -1.0]], dtype=DTYPE)
    covs = torch.tensor([
        [[0.30, 0.20], [0.20, 0.25]],
        [[0.05, 0.00], [0.00, 0.50]],
        [[0.40, -0.15], [-0.15, 0.10]],
        [[0.02, 0.00], [0.00, 0.02]],
    ], dtype=DTYPE)
    return GaussianMixture(w, mu, covs)


MIX = reference_mixture()


def ve_sigma(t: float) -> float:
    """σ_vp(t)/α(t) of the VP SDE: the EDM/VE noise level of VP time ``t``."""
    t = torch.tensor(t, dtype=DTYPE)
    return float(VP.std(t) / VP.mean_coeff(t))


SIGMA_MAX, SIGMA_MIN = ve_sigma(VP.T), ve_sigma(EPS)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def single_threaded(fn):
    """Run ``fn`` with one torch thread: on 2-D data the per-op work is tiny and thread wake-ups dominate."""
    @functools.wraps(fn)
    def wrapped(*args, **kwargs):
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return fn(*args, **kwargs)
        finally:
            torch.set_num_threads(threads)
    return wrapped


# ---------------------------------------------------------------- metrics

@functools.cache
def directions() -> torch.Tensor:
    """``(D, P)`` seeded unit directions for the sliced Wasserstein distance."""
    v = torch.randn(MIX.D, N_DIRECTIONS, generator=gen(12345), dtype=DTYPE)
    return v / v.norm(dim=0, keepdim=True)


@functools.cache
def exact_set(n: int, which: int) -> torch.Tensor:
    """Exact samples of p_0: ``which = 0`` is the reference, ``1`` the independent set for the floor."""
    return MIX.sample(n, generator=gen(1000 + which))[0]


def sliced_w2(x: torch.Tensor, y: torch.Tensor) -> float:
    """Sliced W2 between equal-size sample sets ``(n, D)``: √(mean over directions of the 1-D W2²)."""
    px, _ = torch.sort(x.to(DTYPE) @ directions(), dim=0)
    py, _ = torch.sort(y.to(DTYPE) @ directions(), dim=0)
    return float(((px - py) ** 2).mean().sqrt())


def mixture_errors(x: torch.Tensor) -> dict:
    """TV of the weights and the worst component mean / covariance error, by exact responsibilities."""
    x = x.to(DTYPE)
    r = MIX.responsibilities(x)  # (n, K)
    mass = r.sum(0)
    tv = 0.5 * float((mass / x.shape[0] - MIX.weights).abs().sum())
    mean = (r.T @ x) / mass[:, None]  # (K, D)
    diff = x[:, None, :] - mean  # (n, K, D)
    cov = torch.einsum("nk,nki,nkj->kij", r, diff, diff) / mass[:, None, None]
    return {
        "tv": tv,
        "mean_err": float((mean - MIX.means).norm(dim=1).max()),
        "cov_err": float((cov - MIX.covs).flatten(1).norm(dim=1).max()),
    }


def metrics(x: torch.Tensor, nfe: float) -> dict:
    if not bool(torch.isfinite(x).all()):
        return {"nfe": float(nfe), "finite": False, "sw2": None, "tv": None, "mean_err": None, "cov_err": None}
    return {"nfe": float(nfe), "finite": True, "sw2": sliced_w2(x, exact_set(x.shape[0], 0)), **mixture_errors(x)}


# ---------------------------------------------------------------- models

def vp_score(x, t):
    return MIX.score(x, VP, t)


def denoiser(x, sigma):
    """Exact denoiser ``D(x, σ) = x + σ² ∇ log p_σ(x)`` of the mixture in the EDM/VE form."""
    return x + sigma[:, None] ** 2 * MIX.score(x, EDM, sigma)


def karras(n: int) -> torch.Tensor:
    """Karras et al. 2022 (eq. 5, ρ = 7) schedule σ_max → σ_min in ``n`` points, then 0."""
    ramp = torch.linspace(0, 1, n, dtype=DTYPE)
    lo, hi = SIGMA_MIN ** (1 / 7), SIGMA_MAX ** (1 / 7)
    return torch.cat([(hi + ramp * (lo - hi)) ** 7, torch.zeros(1, dtype=DTYPE)])


def vp_start(n: int, seed: int) -> torch.Tensor:
    return MIX.sample(n, VP, VP.T, generator=gen(seed))[0]


def ve_start(n: int, sigma: float, seed: int) -> torch.Tensor:
    return MIX.sample(n, EDM, sigma, generator=gen(seed))[0]


# ---------------------------------------------------------------- samplers: fn(nfe_budget, n, seed) -> (x, nfe)

def sdekit_predictor(method, corrector=None):
    def run(budget, n, seed, **kw):
        steps = budget - 1 if corrector is None else (budget - 1) // 2
        res = sdekit.sample(vp_score, VP, (n, MIX.D), method=method, steps=steps, corrector=corrector,
                            x_init=vp_start(n, seed), seed=seed, **kw)
        return res.x, float(res.nfe.double().mean())
    return run


def time_quadratic(steps: int) -> torch.Tensor:
    """VP times ``t_i = (√T + (i/N)(√eps − √T))²``, ``i = 0 … N`` (Lu et al. 2022a, App. D, "time quadratic")."""
    return torch.linspace(VP.T ** 0.5, EPS ** 0.5, steps + 1, dtype=DTYPE) ** 2


def sdekit_dpmpp_2m_quadratic(budget, n, seed):
    res = sdekit.sample(vp_score, VP, (n, MIX.D), method="dpmpp_2m", timesteps=time_quadratic(budget - 1),
                        x_init=vp_start(n, seed))
    return res.x, float(res.nfe.double().mean())


def kd_dpmpp_2m_quadratic(budget, n, seed):
    """k-diffusion's dpmpp_2m on the σ's of the time-quadratic VP grid (σ = σ_vp/α), then 0."""
    t = time_quadratic(budget - 1)
    sig = torch.cat([VP.std(t) / VP.mean_coeff(t), torch.zeros(1, dtype=DTYPE)])
    return KD.sample_dpmpp_2m(denoiser, ve_start(n, float(sig[0]), seed), sig, disable=True), float(budget)


def sdekit_ode(budget, n, seed, tol=None):
    tol = calibrated_tol("sdekit ode (RK45)", budget) if tol is None else tol
    if tol is None:
        return None, None
    res = sdekit.sample(vp_score, VP, (n, MIX.D), method="ode", rtol=tol, atol=tol, x_init=vp_start(n, seed),
                        seed=seed)
    return res.x, float(res.nfe.double().mean())


def sdekit_kd_dopri5(budget, n, seed, tol=None):
    tol = calibrated_tol("sdekit kd dopri5", budget) if tol is None else tol
    if tol is None:
        return None, None
    x, info = skd.sample_dopri5(denoiser, ve_start(n, SIGMA_MAX, seed), karras(2), rtol=tol, atol=tol,
                                return_info=True)
    return x, float(info["nfe"].double().mean())


def kd_sampler(module, name):
    def run(budget, n, seed):
        steps = (budget + 1) // 2 if name == "heun" else budget
        sig = karras(steps)
        x = ve_start(n, SIGMA_MAX, seed)
        fn = getattr(module, f"sample_{name}")
        kw = {"disable": True}
        if name == "euler_ancestral":
            g = gen(seed + 1)
            kw["noise_sampler"] = lambda s, s_next: torch.randn(x.shape, generator=g, dtype=DTYPE)
        out = fn(denoiser, x, sig, **kw)
        return out, float(2 * steps - 1 if name == "heun" else steps)
    return run


def diffusers_sampler(name):
    def run(budget, n, seed):
        import diffusers

        config = {"clip_sample": False} if name in ("DDPMScheduler", "DDIMScheduler") else {}
        sched = getattr(diffusers, name)(**config)
        sched.set_timesteps(budget)
        dvp = sdekit.DiscreteVPSDE(sched.alphas_cumprod.to(DTYPE))
        euler = name == "EulerDiscreteScheduler"
        if euler:  # VE form: x = x_vp/α at the scheduler's σ's (interpolated between timesteps)
            sigmas = sched.sigmas.to(DTYPE)
            x = ve_start(n, float(sigmas[0]), seed)
        else:
            x = MIX.sample(n, dvp, dvp.timestep_to_time(int(sched.timesteps[0])), generator=gen(seed))[0]
        g = gen(seed + 1)
        for i, k in enumerate(sched.timesteps):
            if euler:
                s = sigmas[i]
                eps = -s * MIX.score(x, EDM, s.expand(n))  # ε = −σ ∇ log p_σ(x_ve)
            else:
                t = dvp.timestep_to_time(int(k))
                eps = -dvp.std(t) * MIX.score(x, dvp, t.expand(n))
            kw = {"generator": g} if name == "DDPMScheduler" else {}
            x = sched.step(eps, k, x, **kw).prev_sample
        return x, float(len(sched.timesteps))
    return run


SDEKIT = {
    "sdekit euler_maruyama": sdekit_predictor("euler_maruyama"),
    "sdekit reverse_diffusion": sdekit_predictor("reverse_diffusion"),
    "sdekit ancestral": sdekit_predictor("ancestral"),
    "sdekit PC (reverse_diffusion + langevin)": sdekit_predictor("reverse_diffusion", "langevin"),
    "sdekit dpmpp_2m": sdekit_predictor("dpmpp_2m"),
    "sdekit dpmpp_2m (time-quadratic grid)": sdekit_dpmpp_2m_quadratic,
    "sdekit ode (RK45)": sdekit_ode,
    "sdekit kd euler": kd_sampler(skd, "euler"),
    "sdekit kd heun": kd_sampler(skd, "heun"),
    "sdekit kd dopri5": sdekit_kd_dopri5,
}
PEERS = {}
if not isinstance(KD, str):
    PEERS.update({f"k-diffusion {name}": kd_sampler(KD, name)
                  for name in ("euler", "heun", "dpmpp_2m", "lms", "euler_ancestral")})
    PEERS["k-diffusion dpmpp_2m (time-quadratic σ's)"] = kd_dpmpp_2m_quadratic
PEERS.update({f"diffusers {name.removesuffix('Scheduler')}": diffusers_sampler(name)
              for name in ("DDPMScheduler", "DDIMScheduler", "DPMSolverMultistepScheduler",
                           "EulerDiscreteScheduler")})
SAMPLERS = {**SDEKIT, **PEERS}
ADAPTIVE = {"sdekit ode (RK45)": sdekit_ode, "sdekit kd dopri5": sdekit_kd_dopri5}


@functools.cache
def calibrated_tol(name: str, budget: int):
    """The tightest rtol = atol (bisection in log10 over [1e-10, 1]) whose mean NFE on a
    128-sample calibration batch is at most ``budget``; None if even tolerance 1 costs more."""
    fn = ADAPTIVE[name]
    cost = lambda log_tol: fn(budget, N_CALIBRATE, 7, tol=10.0 ** log_tol)[1]  # noqa: E731
    lo, hi = -10.0, 0.0  # cost(lo) > budget (assumed), cost(hi) <= budget (checked)
    if cost(hi) > budget:
        return None
    for _ in range(7):  # tolerance resolved to a factor 10^(10/128) ≈ 1.2
        mid = 0.5 * (lo + hi)
        if cost(mid) <= budget:
            hi = mid
        else:
            lo = mid
    return 10.0 ** hi


# ---------------------------------------------------------------- tests

def _nfes(quick: bool):
    return NFES_QUICK if quick else NFES


@pytest.mark.parametrize("budget", NFES)
@pytest.mark.parametrize("impl", list(SAMPLERS))
def test_quality(measure, quick, impl, budget):
    if budget not in _nfes(quick):
        pytest.skip("--quick runs NFE 10 and 20 only")
    n = N_QUICK if quick else N_FULL
    fn = SAMPLERS[impl]

    @single_threaded
    def work():
        x, nfe = fn(budget, n, seed=0)
        if x is None:  # adaptive solver cannot get within the budget
            return {"nfe": None, "sw2": None, "tv": None, "mean_err": None, "cov_err": None}
        return metrics(x, nfe)

    measure(work, suite=SUITE, case=f"NFE {budget}", impl=impl, budget=budget, n_samples=n,
            library=impl.split()[0], rounds=1, warmup=False)


def test_floor(measure, quick):
    n = N_QUICK if quick else N_FULL

    @single_threaded
    def work():  # the mean over independent exact sets (each against the reference set for sw2)
        runs = [metrics(exact_set(n, which), 0) for which in range(1, 1 + N_FLOOR_SETS)]
        out = {}
        for key in runs[0]:
            v = torch.tensor([r[key] for r in runs], dtype=DTYPE)
            out[key], out[f"{key}_std"] = float(v.mean()), float(v.std())
        return out

    measure(work, suite=SUITE, case="floor", impl="exact samples", baseline=True, budget=None, n_samples=n,
            library="exact", rounds=1, warmup=False)


# ---------------------------------------------------------------- report

METRICS = (("sw2", "sliced W2 to an exact sample set"), ("tv", "TV of the mixture weights"),
           ("mean_err", "worst component mean error"), ("cov_err", "worst component covariance error (Frobenius)"))


def _cell(row, key):
    from report import fmt

    if row is not None and row.get("finite") is False:
        return "non-finite"
    if row is None or row.get(key) is None:
        return "–"
    if row.get("budget") is None:  # the floor: mean ± standard deviation over the exact sets
        return f"{fmt(row[key])} ± {fmt(row[key + '_std'])}"
    if row["impl"] in ADAPTIVE or row["nfe"] != row["budget"]:
        return f"{fmt(row[key])} @{fmt(row['nfe'])}"
    return fmt(row[key])


def best_at(rows, library_pred, budget, key="sw2"):
    """Lowest ``key`` among rows of the libraries that ``library_pred`` accepts with achieved NFE <= budget."""
    cands = [r for r in rows if r.get(key) is not None and r.get("nfe") is not None and r["nfe"] <= budget
             and r.get("budget") == budget and library_pred(r["library"])]
    return min(cands, key=lambda r: r[key], default=None)


def summarize(rows, out_dir: Path) -> str:
    import matplotlib.pyplot as plt
    from report import goal, savefig, table

    floor = next((r for r in rows if r["case"] == "floor"), None)
    runs = [r for r in rows if r["case"] != "floor"]
    budgets = sorted({r["budget"] for r in runs})
    impls = [i for i in SAMPLERS if any(r["impl"] == i for r in runs)]
    by = {(r["impl"], r["budget"]): r for r in runs}
    n = runs[0]["n_samples"] if runs else None
    out = [
        "## Sample quality per NFE",
        "",
        f"2-D, 4-component Gaussian mixture with its exact score; every sampler starts from the exact marginal at "
        f"its start time and ends at data (σ ≈ {SIGMA_MIN:.3f}, then x̂_0); {n:,} samples per run, float64.  "
        "Entries are errors against p_0 (lower is better); `x @N` marks an achieved NFE N other than the budget "
        "(adaptive solvers: tolerance calibrated to stay within the budget; Heun/PC: odd counts).  "
        f"The floor is an exact sample set of the same size (mean ± standard deviation over {N_FLOOR_SETS} sets): "
        "differences smaller than ~3 of its standard deviations are sampling noise.  `–`: an adaptive solver "
        "cannot get within the budget at any tolerance.  Setup, peers' settings and deviations: "
        "`benchmarks/suite_quality.py`.",
        "",
    ]
    for key, title in METRICS[:2]:
        out += [f"**{title}** (floor {_cell(floor, key) if floor else '–'})", ""]
        out.append(table(["sampler"] + [f"NFE {b}" for b in budgets],
                         [[i] + [_cell(by.get((i, b)), key) for b in budgets] for i in impls]))
        out.append("")
    out += ["**worst component mean / covariance error** (floor "
            f"{_cell(floor, 'mean_err') if floor else '–'} / {_cell(floor, 'cov_err') if floor else '–'})", ""]
    out.append(table(["sampler"] + [f"NFE {b}" for b in budgets],
                     [[i] + [f"{_cell(by.get((i, b)), 'mean_err')} / {_cell(by.get((i, b)), 'cov_err')}"
                             for b in budgets] for i in impls]))
    out.append("")

    fig, axes = plt.subplots(1, 2, figsize=(13, 5))
    cmap = plt.get_cmap("tab20")
    for ax, (key, title) in zip(axes, METRICS[:2]):
        for j, impl in enumerate(impls):
            pts = sorted((r["nfe"], r[key]) for r in runs if r["impl"] == impl and r.get(key) is not None
                         and r.get("nfe"))
            if pts:
                style = "-" if impl.startswith("sdekit") else "--"
                ax.plot(*zip(*pts), style, marker="o", ms=3, color=cmap(j % 20), label=impl)
        if floor and floor.get(key) is not None:
            ax.axhline(floor[key], color="k", lw=1, ls=":", label="floor (exact vs exact)")
        ax.set(xscale="log", yscale="log", xlabel="NFE per sample", ylabel=title, title=title)
        ax.grid(True, which="both", alpha=0.3)
    axes[1].legend(fontsize=7, loc="upper right", ncol=1, bbox_to_anchor=(1.62, 1.0))
    out += [savefig(fig, out_dir, "quality_vs_nfe.png"), ""]

    is_peer = lambda lib: lib in ("k-diffusion", "diffusers")  # noqa: E731
    noise = 3 * floor["sw2_std"] if floor else 0.0
    for b in [b for b in budgets if b <= 20]:
        ours, theirs = best_at(runs, lambda lib: lib == "sdekit", b), best_at(runs, is_peer, b)
        # 4 significant digits: the same algorithm on the same grid gives the same samples up to rounding (a tie)
        ratio = float(f"{ours['sw2'] / theirs['sw2']:.4g}") if ours and theirs else None
        who = f" ({ours['impl']} {ours['sw2']:.3g} vs {theirs['impl']} {theirs['sw2']:.3g}" if ratio else ""
        if ratio:
            who += "; a tie: same samples up to rounding" if ratio == 1.0 else ""
            who += "; difference within noise)" if abs(ours["sw2"] - theirs["sw2"]) < noise else ")"
        out.append(goal(f"NFE ≤ {b}: sdekit's best sliced W2 / best k-diffusion or diffusers sliced W2 ≤ 1{who}",
                        ratio, 1.0, higher_is_better=False))
    own = [r for r in runs if "time-quadratic" not in r["impl"] or r["library"] == "sdekit"]
    for b in [b for b in budgets if b <= 20]:  # the peers on their own schedules only
        ours, theirs = best_at(own, lambda lib: lib == "sdekit", b), best_at(own, is_peer, b)
        if ours and theirs:
            out.append(f"- NFE ≤ {b}, peers on their own schedules only (k-diffusion on Karras σ's, diffusers "
                       f"defaults): {ours['impl']} {ours['sw2']:.3g} vs {theirs['impl']} {theirs['sw2']:.3g}, ratio "
                       f"{ours['sw2'] / theirs['sw2']:.3g}"
                       + (" (within noise)" if abs(ours["sw2"] - theirs["sw2"]) < noise else ""))
    behind = []
    for b in budgets:
        ours, theirs = best_at(runs, lambda lib: lib == "sdekit", b), best_at(runs, is_peer, b)
        if ours and theirs and float(f"{ours['sw2'] / theirs['sw2']:.4g}") > 1.0:
            within = " (within noise)" if ours["sw2"] - theirs["sw2"] < noise else ""
            behind.append(f"NFE {b}: {theirs['impl']} {theirs['sw2']:.3g} < {ours['impl']} {ours['sw2']:.3g}{within}")
    out += ["", "Where sdekit's best sliced W2 is behind the peers' best, per budget (noise: 3 floor standard "
            f"deviations = {noise:.2g}): " + ("; ".join(behind) if behind else "nowhere"), ""]
    return "\n".join(out)
