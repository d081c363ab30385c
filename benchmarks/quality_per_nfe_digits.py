"""Deterministic sample error per NFE on a trained network: the digits ε-model of ``python -m sdekit.demo.digits``.

    python benchmarks/quality_per_nfe_digits.py [--quick] [--out benchmarks/results/quality_per_nfe_digits.md]

The same rows, metric and conventions as ``quality_per_nfe_deterministic.py`` (its module docstring), on a real
model instead of an exact mixture denoiser: the main job's ε-MLP (its default training config, 8×8 digits in
[−1, 1], VP SDE β 0.1…20; loaded from the job's cache ``digits_out/`` or trained there first, ~80 s), in
float64, as a denoiser in the VP SDE's noise-level form ``D(x̃, σ̃) = E[x_0 | x_t]`` at ``σ̃ = σ/α``
(:class:`sdekit.sampling.sigma_space.ScaledDenoiser`; the time is ``t(σ̃)`` in closed form), from
``σ̃_max = σ̃(1) ≈ 152`` to ``σ̃_min = σ̃(10⁻³) ≈ 0.0100`` then 0 — the VP run's own end points.  Starts
``x_T = σ̃_max ε`` (1024 held-out, 256 for sdekit's grid fitting; ``--quick``: 128 and 32), reference dopri5 at
1e-10.  The network was trained, not built: its flow is smooth but not that of any closed form, so this checks
that what the grid optimiser and the higher-order samplers gain on mixtures carries over to a learned model.
"""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path

import quality_per_nfe_deterministic as Q
import torch
from timing import quick_or_full

import sdekit
from sdekit.demo.checkpoint import load_or_train
from sdekit.demo.data import load_labelled_splits
from sdekit.demo.digits import build_parser
from sdekit.demo.train import TrainConfig
from sdekit.sampling.sigma_space import ScaledDenoiser, sigma_of_time

HERE = Path(__file__).resolve().parent
FULL = {"dims": (64,), "nfes": (5, 10, 20), "n_eval": 1024, "n_calib": 256, "max_evals": 150}
QUICK = {"dims": (64,), "nfes": (5,), "n_eval": 128, "n_calib": 32, "max_evals": 20}
EPS = 1e-3


class CountingDenoiser:
    """``ScaledDenoiser`` of the digits score, counting the rows it sees (``rows``) as the benchmark's models do."""

    def __init__(self, score, sde):
        self.inner, self.rows = ScaledDenoiser(score, sde), 0

    def __call__(self, x, sigma):
        self.rows += x.shape[0]
        with torch.no_grad():
            return self.inner(x, sigma)


def digits_model():
    args = build_parser().parse_args([])
    sde = sdekit.VPSDE(beta_min=0.1, beta_max=20.0, T=1.0)
    train_levels, _, _, _ = load_labelled_splits(seed=args.seed)
    config = TrainConfig(steps=args.train_steps, batch_size=args.batch_size, lr=args.lr, width=args.width,
                         depth=args.depth, time_sampling=args.time_sampling, seed=args.seed)
    t0 = time.perf_counter()
    trained = load_or_train(train_levels, sde, config, HERE.parent / "digits_out", split_seed=args.seed,
                            progress=False)
    net = trained.net.double().eval()
    return sdekit.score_from_epsilon(net, sde), sde, time.perf_counter() - t0


def main(argv=None):
    quick, out = quick_or_full(argv, __doc__, "NFE 5 only, small batches (checks it runs)", "quality_per_nfe_digits", HERE)
    cfg = QUICK if quick else FULL
    start = time.perf_counter()
    score, sde, t_model = digits_model()
    Q.SIGMA_MAX, Q.SIGMA_MIN = (float(v) for v in sigma_of_time(sde, torch.tensor([sde.T, EPS], dtype=Q.DTYPE)))
    model = CountingDenoiser(score, sde)
    g_eval, g_cal = (torch.Generator().manual_seed(s) for s in (Q.SEED_EVAL, Q.SEED_CALIB))
    x_eval = Q.SIGMA_MAX * torch.randn(cfg["n_eval"], 64, generator=g_eval, dtype=Q.DTYPE)
    x_cal = Q.SIGMA_MAX * torch.randn(cfg["n_calib"], 64, generator=g_cal, dtype=Q.DTYPE)
    t0 = time.perf_counter()
    ref_eval, info = Q.solve_reference(model, x_eval)
    ref_cal = Q.solve_reference(model, x_cal)[0]
    loose = Q.skd.sample_dopri5(model, x_eval, torch.tensor([Q.SIGMA_MAX, Q.SIGMA_MIN, 0.0], dtype=Q.DTYPE),
                                rtol=1e-8, atol=1e-8)
    problem = {"d": 64, "model": "digits ε-MLP (sdekit.demo.digits defaults), VP", "model_load_s": t_model,
               "reference_nfe_mean": float(info["nfe"].double().mean()), "reference_time_s": time.perf_counter() - t0,
               "reference_vs_rtol_1e-8": Q.rms(loose, ref_eval), "sigma_max": Q.SIGMA_MAX, "sigma_min": Q.SIGMA_MIN}
    print(f"digits: model {t_model:.0f} s; reference mean NFE {problem['reference_nfe_mean']:.0f}, "
          f"vs rtol 1e-8 {problem['reference_vs_rtol_1e-8']:.1e}")
    result = Q.run_model(problem, model, x_eval, x_cal, ref_eval, ref_cal, cfg, print)
    elapsed = time.perf_counter() - start
    summary, table, companion = Q.summarize([result], cfg)
    cmd = "python benchmarks/quality_per_nfe_digits.py" + (" --quick" if quick else "")
    parts = [f"# Deterministic sample error per NFE on the digits model{' (--quick)' if quick else ''}", "",
             (f"Command: `{cmd}` (one torch thread; {elapsed:.0f} s on {platform.processor() or platform.machine()}, "
              f"Python {platform.python_version()}, torch {torch.__version__}).  σ̃ from {Q.SIGMA_MAX:.4g} to "
              f"{Q.SIGMA_MIN:.4g}, then 0; {cfg['n_eval']} held-out starts, grids fitted on {cfg['n_calib']} others; "
              f"reference dopri5 at 1e-10 (mean NFE {problem['reference_nfe_mean']:.0f}; RMS difference to 1e-8: "
              f"{problem['reference_vs_rtol_1e-8']:.1e}).  Metric and rows: quality_per_nfe_deterministic.py."), "",
             "## Best peer vs best sdekit", "", table, "", companion, "", "## All rows", "",
             Q.full_table(result, cfg), ""]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(parts))
    out.with_suffix(".json").write_text(json.dumps({"config": cfg, "elapsed_s": elapsed, "summary": summary,
                                                    "result": result}, indent=1))
    print(table)


if __name__ == "__main__":
    main()
