"""Path simulation: ``sdekit.sdeint`` against torchsde and a plain PyTorch Euler–Maruyama loop.

What is measured (issue 5, "Path simulation"):

* **Speed.**  Ornstein–Uhlenbeck ``dX = θ(μ − X) dt + σ dW`` (additive noise;
  θ = 1, μ = 0.5, σ = 0.5) and geometric Brownian motion ``dY = μY dt + σY dW``
  (diagonal noise; μ = 0.5, σ = 0.5), batch 4096 × dim 64, 1000 steps of
  ``dt = 1e-3`` on ``[0, 1]``, float32, output at ``t = 1`` only, with
  Euler–Maruyama (``euler``), Milstein (``milstein``) and the order-1.5 stochastic
  Runge–Kutta scheme (sdekit ``sra1`` for additive-noise OU and ``sri2`` for
  diagonal GBM; torchsde ``srk``, which picks the same two Rößler schemes).
  Implementations:

  - ``sdekit``: ``sdekit.sdeint(..., generator=torch.Generator())`` — increments
    drawn step by step (:class:`sdekit.brownian.SequentialBrownian`), sdekit's
    fastest source on CPU.  OU is :class:`sdekit.sdes.OrnsteinUhlenbeck`
    (sdekit's protocol, diffusion ``(B,)``); GBM is
    :class:`sdekit.testing.GBM` (torchsde's protocol), the same object torchsde gets.
  - ``sdekit seed=`` (case ``keyed paths`` only): ``sdeint(..., seed=...)``, the
    counter-based :class:`sdekit.brownian.BrownianTree` (a path that is the same
    at every ``dt`` and in every batch), evaluated on the CPU by its C evaluator
    (``sdekit/_native_tree.c``).  This case is run at 100 steps (not 1000) because
    torchsde's default interval takes seconds per hundred steps here; sdekit and
    the tuned interval are timed as median of 3 after a warm-up, the default once.
  - ``torchsde default``: ``torchsde.sdeint(sde, y0, ts, method, dt=dt)`` with its
    default Brownian motion (a ``BrownianInterval`` built without a step hint).
  - ``torchsde tuned BI``: ``bm=torchsde.BrownianInterval(t0, t1, size, dt=dt,
    levy_area_approximation=...)`` — the step hint torchsde's docs recommend for
    fixed-step solvers, with its default ``pool_size=8`` and ``cache_size=45``
    (``cache_size=None`` needs all 1000 increments in memory and was slower here).
    torchsde's OU defines ``f`` and ``g_prod`` (``σ·v``), so no ``(B, d, d)``
    diffusion matrix is built; GBM is diagonal noise.
  - ``torch loop`` (Euler–Maruyama only): preallocated noise buffer,
    ``torch.randn(..., generator=g, out=z)`` and in-place ``add_``/``addcmul_``
    updates — the loop a user would write by hand.

  The torchsde baselines take seconds to tens of seconds per call here, so they are
  timed once with no warm-up (sdekit and the torch loop: median of 3 after a
  warm-up).  Ratios are ``time(baseline) / time(sdekit)`` from the same run.
  Because one torchsde run spans seconds of a shared machine's load, each is
  also bracketed by two sdekit runs (just before and just after it): the
  *paired ratio* ``time(torchsde) / mean(bracketing sdekit times)`` sees the
  same load on both sides, and the goals are taken on it.

* **Strong error at equal work.**  GBM (closed form ``Y₀ exp((μ − σ²/2)t + σW_t)``
  on the same Brownian path), batch 4096 × dim 16, ``dt = 2^-4 … 2^-9``: the
  mean over the batch of ``|Y_N − Y(1)|`` against the wall time of the solve.
  Each implementation uses its own Brownian source; ``W_1`` comes from the
  ``BrownianInterval`` (torchsde), from replaying the seeded generator (sdekit: one
  ``randn`` per step, two for ``sri2``) or from the loop's own increments.  The
  error is computed in a separate untimed solve with the same seed.  OU is left
  out: its exact solution needs ``∫ e^{−θ(t−s)} dW_s``, which the increments alone
  do not determine.

Torch's default thread count is used for every implementation.  ``--quick``
shrinks everything (batch 64 × 8, 20 steps) so the suite only checks that it runs.
"""

from __future__ import annotations

import math
import time

import pytest
import torch

import sdekit
from sdekit.sdes import OrnsteinUhlenbeck
from sdekit.testing import GBM

SUITE = "paths"
T = 1.0
THETA, MU_OU, SIGMA_OU = 1.0, 0.5, 0.5
MU_GBM, SIGMA_GBM = 0.5, 0.5
SEED = 20240611
METHODS = ("euler", "milstein", "srk")
SDEKIT_SRK = {"ou": "sra1", "gbm": "sri2"}
IMPLS = ("sdekit", "torch loop", "torchsde default", "torchsde tuned BI")
ERROR_IMPLS = ("sdekit", "torchsde tuned BI", "torch loop")


def sizes(quick: bool) -> dict:
    if quick:
        return dict(batch=64, dim=8, steps=20, keyed_steps=8, err_batch=64, err_dim=4, err_steps=(4, 16))
    return dict(batch=4096, dim=64, steps=1000, keyed_steps=100, err_batch=4096, err_dim=16,
                err_steps=(16, 32, 64, 128, 256, 512))


# ---------------------------------------------------------------------------- problems


class TorchsdeOU:
    """OU in torchsde's protocol: additive noise given by ``g_prod`` (``σ v``), no ``(B, d, d)`` matrix."""

    noise_type = "additive"
    sde_type = "ito"

    def f(self, t, y):
        return THETA * (MU_OU - y)

    def g_prod(self, t, y, v):
        return SIGMA_OU * v


def sdekit_problem(problem: str):
    return OrnsteinUhlenbeck(THETA, SIGMA_OU, MU_OU) if problem == "ou" else GBM(MU_GBM, SIGMA_GBM)


def torchsde_problem(problem: str):
    return TorchsdeOU() if problem == "ou" else GBM(MU_GBM, SIGMA_GBM)


def initial(batch: int, dim: int) -> torch.Tensor:
    return torch.ones(batch, dim)


# ---------------------------------------------------------------------------- implementations


def run_sdekit(problem, method, y0, steps, seed, keyed=False):
    name = SDEKIT_SRK[problem] if method == "srk" else method
    noise = dict(seed=seed) if keyed else dict(generator=torch.Generator().manual_seed(seed))
    return sdekit.sdeint(sdekit_problem(problem), y0, [0.0, T], method=name, dt=T / steps, **noise)[-1]


def brownian_interval(y0, steps, method, seed, tuned: bool):
    import torchsde

    area = "space-time" if method == "srk" else "none"
    hint = dict(dt=T / steps) if tuned else {}
    return torchsde.BrownianInterval(0.0, T, tuple(y0.shape), dtype=y0.dtype, levy_area_approximation=area,
                                     entropy=seed, **hint)


def run_torchsde(problem, method, y0, steps, seed, tuned: bool):
    import torchsde

    bm = brownian_interval(y0, steps, method, seed, tuned)
    ys = torchsde.sdeint(torchsde_problem(problem), y0, torch.tensor([0.0, T]), method=method, dt=T / steps, bm=bm)
    return ys[-1], bm


def run_loop(problem, y0, steps, seed, record_w=False):
    """Euler–Maruyama by hand: preallocated noise, in-place updates; optionally also returns ``W(T)``."""
    g = torch.Generator().manual_seed(seed)
    dt = T / steps
    sq = math.sqrt(dt)
    y = y0.clone()
    z = torch.empty_like(y)
    W = torch.zeros_like(y) if record_w else None
    for _ in range(steps):
        torch.randn(y.shape, generator=g, out=z)
        if problem == "ou":
            f = THETA * (MU_OU - y)
            y.add_(f, alpha=dt).add_(z, alpha=SIGMA_OU * sq)
        else:
            gy = SIGMA_GBM * y
            y.add_(MU_GBM * y, alpha=dt).addcmul_(gy, z, value=sq)
        if record_w:
            W.add_(z, alpha=sq)
    return y, W


def sdekit_w(method, y0, steps, seed):
    """``W(T)`` seen by ``sdeint(..., generator=Generator().manual_seed(seed))``: replay its draws.

    :class:`~sdekit.brownian.SequentialBrownian` draws ``ΔW = √h z`` per step, then (for
    methods using the area, here ``sri2``) a second normal for the area.
    """
    g = torch.Generator().manual_seed(seed)
    h = T / steps
    W = torch.zeros_like(y0)
    for _ in range(steps):
        W += math.sqrt(h) * torch.randn(y0.shape, generator=g, dtype=y0.dtype)
        if method == "srk":
            torch.randn(y0.shape, generator=g, dtype=y0.dtype)
    return W


def gbm_strong_error(impl, method, y0, steps, seed) -> dict:
    """Mean ``|Y_N − Y(T)|`` over the batch (and its standard error) on ``impl``'s own Brownian path."""
    if impl == "sdekit":
        yT, W = run_sdekit("gbm", method, y0, steps, seed), sdekit_w(method, y0, steps, seed)
    elif impl == "torch loop":
        yT, W = run_loop("gbm", y0, steps, seed, record_w=True)
    else:
        yT, bm = run_torchsde("gbm", method, y0, steps, seed, tuned=True)
        W = bm(0.0, T)
    exact = GBM(MU_GBM, SIGMA_GBM).exact(y0.double(), T, W.double())
    err = (yT.double() - exact).abs()
    return {"error": float(err.mean()), "error_se": float(err.std() / math.sqrt(err.numel()))}


# ---------------------------------------------------------------------------- speed tests


SPEED_CASES = [(p, m, impl) for p in ("ou", "gbm") for m in METHODS for impl in IMPLS
               if impl != "torch loop" or m == "euler"]


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


@pytest.mark.parametrize("problem,method,impl", SPEED_CASES, ids=[f"{p}-{m}-{i}" for p, m, i in SPEED_CASES])
def test_speed(measure, benchmark, quick, problem, method, impl):
    s = sizes(quick)
    y0 = initial(s["batch"], s["dim"])
    steps = s["steps"]
    paired = None
    if impl.startswith("torchsde"):  # sdekit timed just before and just after, under the same load
        def paired():
            run_sdekit(problem, method, y0, steps, SEED)

        paired()  # warm-up
        before = timed(paired)
    if impl == "sdekit":
        def fn():
            run_sdekit(problem, method, y0, steps, SEED)
    elif impl == "torch loop":
        def fn():
            run_loop(problem, y0, steps, SEED)
    else:
        tuned = impl == "torchsde tuned BI"

        def fn():
            run_torchsde(problem, method, y0, steps, SEED, tuned)
    slow = impl.startswith("torchsde")
    measure(fn, suite=SUITE, case=f"{problem.upper()} {method}", impl=impl, baseline=impl != "sdekit",
            rounds=1 if slow else 3, warmup=not slow, kind="speed", problem=problem, method=method,
            steps=steps, batch=s["batch"], dim=s["dim"])
    if paired is not None:
        benchmark.extra_info["paired_sdekit_s"] = [before, timed(paired)]


KEYED_IMPLS = ("sdekit seed=", "torchsde default", "torchsde tuned BI")


@pytest.mark.parametrize("impl", KEYED_IMPLS)
def test_keyed_paths(measure, quick, impl):
    """Euler–Maruyama on OU with path objects (queryable, reproducible Brownian motion) on both sides."""
    s = sizes(quick)
    y0 = initial(s["batch"], s["dim"])
    steps = s["keyed_steps"]
    if impl == "sdekit seed=":
        def fn():
            run_sdekit("ou", "euler", y0, steps, SEED, keyed=True)
    else:
        def fn():
            run_torchsde("ou", "euler", y0, steps, SEED, impl == "torchsde tuned BI")
    slow = impl == "torchsde default"
    measure(fn, suite=SUITE, case="OU euler, keyed paths", impl=impl, baseline=impl != "sdekit seed=",
            rounds=1 if slow else 3, warmup=not slow, kind="keyed", problem="ou", method="euler", steps=steps, batch=s["batch"], dim=s["dim"])


# ---------------------------------------------------------------------------- strong error vs time


ERROR_CASES = [(impl, m, k) for k in range(len(sizes(False)["err_steps"])) for impl in ERROR_IMPLS for m in METHODS
               if impl != "torch loop" or m == "euler"]


@pytest.mark.parametrize("impl,method,idx", ERROR_CASES, ids=[f"{i}-{m}-{k}" for i, m, k in ERROR_CASES])
def test_strong_error(measure, quick, impl, method, idx):
    s = sizes(quick)
    if idx >= len(s["err_steps"]):
        pytest.skip("fewer step sizes under --quick")  # the quick grid is shorter
    steps = s["err_steps"][idx]
    y0 = initial(s["err_batch"], s["err_dim"])
    metrics = gbm_strong_error(impl, method, y0, steps, SEED + idx)
    if impl == "sdekit":
        def fn():
            run_sdekit("gbm", method, y0, steps, SEED + idx)
    elif impl == "torch loop":
        def fn():
            run_loop("gbm", y0, steps, SEED + idx)
    else:
        def fn():
            run_torchsde("gbm", method, y0, steps, SEED + idx, tuned=True)
    measure(fn, suite=SUITE, case=f"GBM strong error, {steps} steps", impl=f"{impl} {method}",
            baseline=impl != "sdekit", rounds=1 if impl.startswith("torchsde") else 3, kind="error",
            lib=impl, method=method, steps=steps, dt=T / steps, batch=s["err_batch"], dim=s["err_dim"], **metrics)


# ---------------------------------------------------------------------------- report


def summarize(rows, out_dir) -> str:
    from report import goal, savefig, table

    speed = [r for r in rows if r.get("kind") == "speed"]
    lines = ["## Path simulation (sdekit.sdeint vs torchsde vs a torch loop)", ""]
    if speed:
        r0 = speed[0]
        lines += [f"Batch {r0['batch']} × dim {r0['dim']}, {r0['steps']} steps on [0, 1], float32.  "
                  "sdekit draws increments from a `torch.Generator`; ratios are time(baseline) / time(sdekit) "
                  "(> 1: sdekit faster); torchsde is timed once (seconds per call), the others are medians of 3; "
                  "each torchsde run is bracketed by two sdekit runs (the paired ratio).",
                  ""]
    body, ratios = [], {"torchsde default": [], "torchsde tuned BI": [], "torch loop": []}
    for case in dict.fromkeys(r["case"] for r in speed):
        by = {r["impl"]: r for r in speed if r["case"] == case}
        ours = by.get("sdekit")
        for impl in IMPLS:
            if impl not in by:
                continue
            ratio = by[impl]["median_s"] / ours["median_s"] if ours and impl != "sdekit" else None
            pair = by[impl].get("paired_sdekit_s")
            paired = by[impl]["median_s"] / (sum(pair) / len(pair)) if pair else None
            if impl != "sdekit":
                ratios[impl].append(paired if paired is not None else ratio)
            body.append([case, impl, by[impl]["median_s"], ratio, paired,
                         f"{pair[0]:.3g}, {pair[1]:.3g}" if pair else "–"])
    if body:
        lines += [table(["case", "implementation", "time (s)", "time / sdekit", "paired ratio",
                         "paired sdekit (s, before, after)"], body), "",
                  "Paired ratio: the torchsde time over the mean of two sdekit runs timed just before and just "
                  "after it, so that both see the same load (the goals below use it; the torch loop's ratio is "
                  "against sdekit's median).", ""]
    keyed = [r for r in rows if r.get("kind") == "keyed"]
    if keyed:
        ours = next((r for r in keyed if r["impl"] == "sdekit seed="), None)
        lines += [f"Path objects (Brownian motion queryable at any time; OU, Euler–Maruyama, {keyed[0]['steps']} "
                  "steps, same batch): sdekit's counter-based BrownianTree vs torchsde's BrownianInterval.", ""]
        lines += [table(["implementation", "time (s)", "time / sdekit seed="],
                        [[r["impl"], r["median_s"], r["median_s"] / ours["median_s"] if ours else None]
                         for r in keyed]), ""]
    lines += ["Goals (issue 5; worst case over problems and methods, sdekit with `generator=`):", ""]
    lines.append(goal("≥ 8× faster than torchsde with its default Brownian motion",
                      min(ratios["torchsde default"]) if ratios["torchsde default"] else None, 8.0))
    lines.append(goal("≥ 2× faster than torchsde with a dt-tuned BrownianInterval",
                      min(ratios["torchsde tuned BI"]) if ratios["torchsde tuned BI"] else None, 2.0))
    loop = ratios["torch loop"]
    lines.append(goal("within 1.2× of the plain PyTorch loop (time(sdekit) / time(loop), Euler–Maruyama)",
                      max(1.0 / r for r in loop) if loop else None, 1.2, higher_is_better=False))
    if keyed and ours:
        tuned = next((r for r in keyed if r["impl"] == "torchsde tuned BI"), None)
        lines.append(goal("with `seed=` (keyed BrownianTree), at least as fast as torchsde's tuned BrownianInterval "
                          "(time(tuned BI) / time(sdekit seed=), issue 15)",
                          tuned["median_s"] / ours["median_s"] if tuned else None, 1.0))
    lines.append("")

    err = [r for r in rows if r.get("kind") == "error"]
    if err:
        import matplotlib.pyplot as plt

        lines += [f"Strong error at equal work: GBM, batch {err[0]['batch']} × dim {err[0]['dim']}, "
                  "mean |Y_N − Y(1)| against the closed form on each implementation's own Brownian path.", ""]
        fig, ax = plt.subplots(figsize=(6, 4.2))
        series = {}
        for r in err:
            series.setdefault((r["lib"], r["method"]), []).append(r)
        body = []
        styles = {"sdekit": "-", "torchsde tuned BI": "--", "torch loop": ":"}
        markers = {"euler": "o", "milstein": "s", "srk": "^"}
        for (lib, method), rs in series.items():
            rs.sort(key=lambda r: r["steps"])
            ax.loglog([r["median_s"] for r in rs], [r["error"] for r in rs], styles[lib], marker=markers[method],
                      label=f"{lib} {method}")
            body += [[lib, method, r["steps"], r["median_s"], r["error"]] for r in rs]
        ax.set_xlabel("wall time (s)")
        ax.set_ylabel("strong error E|Y_N − Y(1)|")
        ax.set_title("GBM: strong error vs wall time")
        ax.legend(fontsize=7)
        ax.grid(True, which="both", alpha=0.3)
        lines += [table(["library", "method", "steps", "time (s)", "strong error"], body), ""]
        lines += [savefig(fig, out_dir, "paths_strong_error.png"), ""]
    return "\n".join(lines) + "\n"
