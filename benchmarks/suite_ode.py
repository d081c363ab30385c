"""ODE solves: ``sdekit.odeint`` (dopri5, tsit5) against torchdiffeq, scipy and torchode at equal tolerances.

What is measured (issue 5, "ODE solves"), all in float64 with ``rtol = atol = tol``:

* **Tolerance sweep** (``tol = 1e-3 … 1e-8``) on problems with closed forms, each a
  batch of 16 initial values solved to ``t1`` (full mode):

  - ``y' = y cos t`` on [0, 10], ``y = y₀ e^{sin t}`` (:data:`sdekit.testing.ode_problems.YCOS`);
  - DETEST A2 ``y' = −y³/2`` on [0, 10], ``y = y₀ / √(1 + y₀² t)``;
  - a random stable linear system ``y' = Ay`` (d = 8, :func:`~sdekit.testing.ode_problems.linear_system`)
    on [0, 5], ``y(t) = exp(tA) y₀`` by ``torch.linalg.matrix_exp``.

  The error is the largest absolute error at ``t1`` over the batch and components.
* **Mixed decay rates**: ``y' = −λ_b y``, ``y₀ = 1`` on [0, 5] with ``λ_b`` log-spaced
  from 0.1 to 100 over the batch (256 samples in full mode), at ``tol = 1e-4`` and
  ``1e-7``.  The samples need very different steps (the fast ones are limited by the
  explicit stability region).  Reported: function evaluations per sample and in total.

NFE: a wrapper counts calls of the right-hand side and the rows it evaluates.
*Total function evaluations* are the rows evaluated (one row = one sample's state),
the cost that scales with the batch; *calls* is the number of batched calls.

Implementations and how they treat the batch:

* ``sdekit dopri5`` / ``sdekit tsit5``: ``sdekit.odeint(func, y0, t, method=..., rtol, atol, per_sample=True)``
  with ``y0`` ``(B, d)``: per-sample step sizes and error norms; finished samples drop
  out of the batch (``func`` sees only the active rows).  Default PI controller.
* ``torchdiffeq dopri5``: ``torchdiffeq.odeint(func, y0, t, rtol=, atol=, method="dopri5")``
  — the batch is one system with one step size (RMS norm over all elements).
* ``scipy RK45``: ``scipy.integrate.solve_ivp(..., method="RK45")`` over the flattened
  batch with the right-hand side evaluated in torch (as score_sde's likelihood does);
  one step size for the batch (RMS norm).
* ``torchode I`` / ``torchode PID``: torchode ``Dopri5`` with ``IntegralController`` or
  ``PIDController(pcoeff=0.2, icoeff=0.65, dcoeff=0)`` (the gains of sdekit's default PI
  controller, ``β₁ = 0.85, β₂ = 0.2``), ``AutoDiffAdjoint`` without JIT compilation:
  per-sample step sizes, but the whole batch is evaluated on every call until the last
  sample finishes.  ``PID`` only in the mixed-decay case.

Times are medians of 3 after a warm-up (``--quick``: one call, batch 4, two tolerances).
"""

from __future__ import annotations

import math

import pytest
import torch

import sdekit
from sdekit.testing.ode_problems import linear_system

SUITE = "ode"
F64 = torch.float64
SWEEP_IMPLS = ("sdekit dopri5", "sdekit tsit5", "torchdiffeq dopri5", "scipy RK45", "torchode I")
MIXED_IMPLS = SWEEP_IMPLS + ("torchode PID",)
TOLS_FULL = (1e-3, 1e-4, 1e-5, 1e-6, 1e-7, 1e-8)
TOLS_QUICK = (1e-3, 1e-6)
MIXED_TOLS = (1e-4, 1e-7)


def sizes(quick: bool) -> dict:
    return dict(batch=4, mixed_batch=16) if quick else dict(batch=16, mixed_batch=256)


# ---------------------------------------------------------------------------- problems


class Problem:
    """``func(t, y, *args)`` (``t`` broadcastable against ``y`` ``(b, d)``), ``y0`` ``(B, d)``, exact ``y(t1)``."""

    def __init__(self, name, func, y0, t1, exact, args=()):
        self.name, self.func, self.y0, self.t1, self.exact, self.args = name, func, y0, t1, exact, args


def problem(name: str, batch: int) -> Problem:
    if name == "ycos":
        y0 = torch.linspace(0.5, 2.0, batch, dtype=F64).unsqueeze(1)
        return Problem("y' = y cos t", lambda t, y: y * torch.cos(t), y0, 10.0, y0 * math.exp(math.sin(10.0)))
    if name == "a2":
        y0 = torch.linspace(0.5, 2.0, batch, dtype=F64).unsqueeze(1)
        return Problem("A2 y' = -y^3/2", lambda t, y: -0.5 * y**3, y0, 10.0, y0 / torch.sqrt(1 + y0**2 * 10.0))
    if name == "linear":
        A, _ = linear_system(seed=0, d=8)
        y0 = torch.randn(batch, 8, generator=torch.Generator().manual_seed(1), dtype=F64)
        return Problem("linear y' = Ay (d=8)", lambda t, y: y @ A.T, y0, 5.0, y0 @ torch.linalg.matrix_exp(5.0 * A).T)
    if name == "mixed":
        lam = torch.logspace(-1, 2, batch, dtype=F64).unsqueeze(1)
        y0 = torch.ones(batch, 1, dtype=F64)
        return Problem("mixed decay", lambda t, y, rate: -rate * y, y0, 5.0, torch.exp(-5.0 * lam), args=(lam,))
    raise ValueError(name)


class Counter:
    """Counts calls of a right-hand side and the rows (samples) it evaluates."""

    def __init__(self, func, rows_per_call=None):
        self.func, self.rows_per_call = func, rows_per_call
        self.calls = self.rows = 0

    def __call__(self, t, y, *args):
        self.calls += 1
        self.rows += self.rows_per_call or y.shape[0]
        return self.func(t, y, *args)


# ---------------------------------------------------------------------------- implementations


def solve(impl: str, p: Problem, tol: float) -> dict:
    """Solve ``p`` with ``impl`` at ``rtol = atol = tol``; returns the metrics (error, NFE)."""
    B = p.y0.shape[0]
    per_sample = None
    if impl.startswith("sdekit"):
        f = Counter(p.func)
        sol = sdekit.odeint(f, p.y0, torch.tensor([0.0, p.t1], dtype=F64), method=impl.split()[1], rtol=tol,
                            atol=tol, args=p.args, per_sample=True, return_solution=True, max_steps=100_000)
        yT, per_sample = sol.ys[-1], sol.nfe
    else:
        full_args = p.args

        def closure(t, y):
            return p.func(t, y, *full_args)

        if impl == "torchdiffeq dopri5":
            import torchdiffeq

            f = Counter(closure)
            yT = torchdiffeq.odeint(f, p.y0, torch.tensor([0.0, p.t1], dtype=F64), rtol=tol, atol=tol,
                                    method="dopri5")[-1]
        elif impl == "scipy RK45":
            from scipy.integrate import solve_ivp

            f = Counter(closure, rows_per_call=B)
            shape = p.y0.shape

            def fun(t, y):
                yt = torch.from_numpy(y).reshape(shape)
                return f(torch.tensor(t, dtype=F64), yt).reshape(-1).numpy()

            res = solve_ivp(fun, (0.0, p.t1), p.y0.reshape(-1).numpy(), method="RK45", rtol=tol, atol=tol)
            if not res.success:
                raise RuntimeError(f"scipy RK45 failed: {res.message}")
            yT = torch.from_numpy(res.y[:, -1]).reshape(shape)
        else:  # torchode
            import torchode

            f = Counter(lambda t, y: closure(t.unsqueeze(1), y))
            term = torchode.ODETerm(f)
            step = torchode.Dopri5(term=term)
            if impl == "torchode I":
                ctrl = torchode.IntegralController(atol=tol, rtol=tol, term=term)
            else:
                ctrl = torchode.PIDController(atol=tol, rtol=tol, pcoeff=0.2, icoeff=0.65, dcoeff=0.0, term=term)
            solver = torchode.AutoDiffAdjoint(step, ctrl, max_steps=100_000)
            t_eval = torch.tensor([0.0, p.t1], dtype=F64).expand(B, 2)
            sol = solver.solve(torchode.InitialValueProblem(y0=p.y0, t_eval=t_eval))
            if not bool((sol.status == 0).all()):
                raise RuntimeError(f"torchode did not finish every sample (status {sol.status.tolist()})")
            yT = sol.ys[:, -1]
            per_sample = sol.stats["n_f_evals"]
    if per_sample is None:
        per_sample = torch.full((B,), f.calls)
    return {
        "error": float((yT - p.exact).abs().max()),
        "calls": f.calls,
        "total_evals": f.rows,
        "nfe_min": int(per_sample.min()),
        "nfe_median": int(per_sample.median()),
        "nfe_max": int(per_sample.max()),
    }


# ---------------------------------------------------------------------------- tests


SWEEP = [(name, impl, tol) for name in ("ycos", "a2", "linear") for tol in TOLS_FULL for impl in SWEEP_IMPLS]


@pytest.mark.parametrize("name,impl,tol", SWEEP, ids=[f"{n}-{i}-{t:g}" for n, i, t in SWEEP])
def test_sweep(measure, quick, name, impl, tol):
    if quick and tol not in TOLS_QUICK:
        pytest.skip("two tolerances under --quick")
    p = problem(name, sizes(quick)["batch"])
    measure(lambda: solve(impl, p, tol), suite=SUITE, case=f"{p.name}, tol {tol:g}", impl=impl,
            baseline=not impl.startswith("sdekit"), kind="sweep", problem=p.name, tol=tol, batch=p.y0.shape[0])


MIXED = [(impl, tol) for tol in MIXED_TOLS for impl in MIXED_IMPLS]


@pytest.mark.parametrize("impl,tol", MIXED, ids=[f"{i}-{t:g}" for i, t in MIXED])
def test_mixed_decay(measure, quick, impl, tol):
    p = problem("mixed", sizes(quick)["mixed_batch"])
    measure(lambda: solve(impl, p, tol), suite=SUITE, case=f"mixed decay, tol {tol:g}", impl=impl,
            baseline=not impl.startswith("sdekit"), kind="mixed", problem=p.name, tol=tol, batch=p.y0.shape[0])


# ---------------------------------------------------------------------------- report


def summarize(rows, out_dir) -> str:
    from report import goal, savefig, table

    lines = ["## ODE solves (sdekit.odeint vs torchdiffeq, scipy, torchode)", ""]
    sweep = [r for r in rows if r.get("kind") == "sweep"]
    if sweep:
        lines += [f"Batch of {sweep[0]['batch']} initial values, float64, rtol = atol = tol.  Error: max |y(t1) − exact|; "
                  "total evals: rows evaluated (calls × active samples); time / sdekit dopri5 > 1: sdekit faster.", ""]
        body = []
        for case in dict.fromkeys(r["case"] for r in sweep):
            by = {r["impl"]: r for r in sweep if r["case"] == case}
            ref = by.get("sdekit dopri5")
            for impl in SWEEP_IMPLS:
                if impl in by:
                    r = by[impl]
                    body.append([case, impl, r["median_s"], r["median_s"] / ref["median_s"] if ref else None,
                                 r["calls"], r["total_evals"], r["error"]])
        lines += [table(["case", "implementation", "time (s)", "time / sdekit dopri5", "calls", "total evals",
                         "error"], body), ""]
        lines += [_plot(sweep, out_dir, savefig), ""]
    mixed = [r for r in rows if r.get("kind") == "mixed"]
    goals = []
    if mixed:
        lines += [f"Mixed decay rates: y' = −λ y, λ log-spaced 0.1…100 over {mixed[0]['batch']} samples, t ∈ [0, 5].  "
                  "Per-sample NFE: evaluations spent on each sample (torchdiffeq / scipy: every call evaluates "
                  "every sample; torchode: per-sample steps, but each call evaluates the whole batch until the last "
                  "sample is done).", ""]
        body = []
        for case in dict.fromkeys(r["case"] for r in mixed):
            by = {r["impl"]: r for r in mixed if r["case"] == case}
            for impl in MIXED_IMPLS:
                if impl in by:
                    r = by[impl]
                    body.append([case, impl, r["median_s"], r["nfe_min"], r["nfe_median"], r["nfe_max"],
                                 r["calls"], r["total_evals"], r["error"]])
            ours = by["sdekit dopri5"]["total_evals"] if "sdekit dopri5" in by else None
            for peer in ("torchdiffeq dopri5", "torchode I", "torchode PID"):
                if peer in by and ours:
                    goals.append(goal(f"{case}: total evals of {peer} / sdekit dopri5 > 1",
                                      by[peer]["total_evals"] / ours, 1.0 + 1e-12))
        lines += [table(["case", "implementation", "time (s)", "NFE/sample min", "median", "max", "calls",
                         "total evals", "error"], body), ""]
    if goals:
        lines += ["Goals (issue 5): the mixed-decay batch costs fewer total function evaluations than torchdiffeq "
                  "and torchode.", ""] + goals + [""]
    return "\n".join(lines) + "\n"


def _plot(sweep, out_dir, savefig) -> str:
    import matplotlib.pyplot as plt

    cases = list(dict.fromkeys(r["problem"] for r in sweep))
    fig, axes = plt.subplots(2, len(cases), figsize=(4.2 * len(cases), 7), squeeze=False)
    for j, name in enumerate(cases):
        for impl in SWEEP_IMPLS:
            rs = sorted((r for r in sweep if r["problem"] == name and r["impl"] == impl), key=lambda r: -r["tol"])
            if not rs:
                continue
            err = [max(r["error"], 1e-17) for r in rs]
            style = "-" if impl.startswith("sdekit") else "--"
            axes[0, j].loglog([r["median_s"] for r in rs], err, style, marker="o", ms=3, label=impl)
            axes[1, j].loglog([r["total_evals"] for r in rs], err, style, marker="o", ms=3, label=impl)
        axes[0, j].set_title(name, fontsize=9)
        axes[0, j].set_xlabel("wall time (s)")
        axes[1, j].set_xlabel("total function evaluations (rows)")
        for ax in axes[:, j]:
            ax.set_ylabel("max abs error at t1")
            ax.grid(True, which="both", alpha=0.3)
    axes[0, 0].legend(fontsize=7)
    fig.suptitle("Work-precision: error vs wall time (top) and vs function evaluations (bottom)")
    fig.tight_layout()
    return savefig(fig, out_dir, "ode_work_precision.png")
