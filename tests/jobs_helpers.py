"""Shared settings of the tests/test_jobs_*.py files: small, fast job configurations and subprocess helpers."""

import os
import subprocess
import sys

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODEL = "sdekit.testing.job_models:mixture_score"
DATA = "sdekit.testing.job_models:mixture_data"

# Adaptive probability-flow sampling: samples take different numbers of steps.
ODE_SAMPLE = dict(model=MODEL, shape=[2], seed=3, method="ode", rtol=1e-4, atol=1e-4)
# Fixed-step Euler–Maruyama: every step draws keyed noise.
EM_SAMPLE = dict(model=MODEL, shape=[2], seed=5, method="euler_maruyama", steps=20)
LOGLIK = dict(model=MODEL, data=DATA, data_kwargs={"n": 24}, seed=7, probes=2, rtol=1e-4, atol=1e-4,
              levels=256, data_range=[-4.0, 4.0])


def env():
    """Environment of a job subprocess: this checkout (and tests/, for the factories below) first on the path."""
    path = os.pathsep.join([ROOT, os.path.join(ROOT, "tests"), os.environ.get("PYTHONPATH", "")])
    e = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=path)
    e.pop("SDEKIT_JOBS_KILL_AFTER_SHARDS", None)
    return e


def run(args, extra_env=None, timeout=150):
    """Run ``python ARGS`` in a subprocess; returns the CompletedProcess."""
    return subprocess.run([sys.executable] + list(args), env=dict(env(), **(extra_env or {})), cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)


def file_bytes(path):
    with open(path, "rb") as f:
        return f.read()


def load(path):
    return torch.load(path, weights_only=True)


# --- conditional jobs (tests/test_jobs_conditioning*.py) -------------------------------------------------
# Factories named "jobs_helpers:..." are imported from tests/ (on sys.path under pytest, and in env()).
COND_MODEL = "jobs_helpers:label_gaussian_score"
COND_DATA = "jobs_helpers:label_gaussian_data"
LABELS = "sdekit.jobs.conditioning:class_labels"
SIGMA0 = 0.5


def label_mean(y, dtype=torch.float32):
    """``(b, 2)`` mean of class ``y`` (``(b,)`` int64): ``[(y - 4.5) / 2, (y mod 3) - 1]``."""
    return torch.stack([(y.to(dtype) - 4.5) * 0.5, torch.remainder(y, 3).to(dtype) - 1.0], dim=1)


def label_gaussian_score(sde="VPSDE"):
    """Exact score of x | y ~ N(label_mean(y), SIGMA0² I) under ``sdekit.<sde>()`` (``y=None``: mean 0).

    Elementwise arithmetic only, so batch-invariant bit for bit.  ``score(x, t, y=None)``, x ``(B, 2)``.
    """
    import sdekit

    sde_obj = getattr(sdekit, sde)()

    def score(x, t, y=None):
        mu = torch.zeros_like(x) if y is None else label_mean(y, x.dtype)
        m = sde_obj.mean_coeff(t).to(x.dtype)[:, None]
        s = sde_obj.std(t).to(x.dtype)[:, None]
        return -(x - m * mu) / (m * m * SIGMA0**2 + s * s)

    return score


def label_gaussian_log_prob(x, y, eps=1e-5):
    """float64 ``(B,)`` log-density (nats) that ``sdekit.log_likelihood`` computes for the model above (VPSDE).

    The probability-flow ODE of a Gaussian is affine: ``x_t = m_t mu + sqrt(v_t / v_eps) (x - m_eps mu)``
    with ``v_t = m_t² SIGMA0² + s_t²``, so the result is ``log N(x_T; 0, I) + D/2 log(v_T / v_eps)``
    (the N(0, I) prior at T, not the exact marginal there, which has mean ``m_T mu``).
    """
    import sdekit

    sde = sdekit.VPSDE()
    t = torch.tensor([eps, sde.T], dtype=torch.float64)
    m, s = sde.mean_coeff(t), sde.std(t)
    v = m * m * SIGMA0**2 + s * s
    mu = torch.zeros_like(x, dtype=torch.float64) if y is None else label_mean(y, torch.float64)
    x_T = m[1] * mu + torch.sqrt(v[1] / v[0]) * (x.double() - m[0] * mu)
    D = x.shape[1]
    return (-0.5 * (x_T * x_T + torch.log(torch.tensor(2 * torch.pi)))).sum(1) + 0.5 * D * torch.log(v[1] / v[0])


def label_gaussian_data(n=12, num_classes=10, seed=0):
    """``(n, 2)`` float32 exact draws: row i from class ``i mod num_classes`` (seeded)."""
    g = torch.Generator().manual_seed(seed)
    y = torch.remainder(torch.arange(n), num_classes)
    return (label_mean(y, torch.float64) + SIGMA0 * torch.randn(n, 2, generator=g, dtype=torch.float64)).float()


def bad_cond(kind):
    """Conditioning factories that break the contract (for error tests)."""
    if kind == "not_callable":
        return 3
    if kind == "not_mapping":
        return lambda idx: torch.remainder(idx, 10)
    if kind == "short":  # one row too few
        return lambda idx: {"y": torch.remainder(idx, 10)[:-1]}
    if kind == "late_short":  # right for batches below index 4, one row short from there on
        return lambda idx: {"y": torch.remainder(idx, 10)[: len(idx) - (int(idx[-1]) >= 4)]}
    raise ValueError(kind)


# --- two jobs racing on one directory (tests/test_jobs_integrity.py) --------------------------------------
RACE_JOB = dict(EM_SAMPLE, num_samples=24, shard_size=4, batch_size=4)


def race_main(out, seed, ready, go):
    """One racer: import everything, write ``ready``, wait for ``go`` to exist, run the job in ``out``.

    Prints ``OK <seed>`` (exit 0) or ``REFUSED <ErrorType>: <message>`` (exit 3).
    """
    import time

    from sdekit.jobs import ConfigMismatchError, OutputDirectoryBusyError, run_sample_job

    with open(ready, "w") as f:
        f.write("ready")
    deadline = time.monotonic() + 60
    while not os.path.exists(go):
        if time.monotonic() > deadline:
            raise SystemExit("no go signal")
        time.sleep(0.0005)
    try:
        run_sample_job(out, **dict(RACE_JOB, seed=int(seed)))
    except (OutputDirectoryBusyError, ConfigMismatchError) as err:
        print(f"REFUSED {type(err).__name__}: {err}", flush=True)
        raise SystemExit(3) from None
    print(f"OK {seed}", flush=True)


# --- model fingerprints (tests/test_jobs_fingerprint.py) --------------------------------------------------
class DiagonalEpsNet(torch.nn.Module):
    """ε̂(x, t) = scale ⊙ x + shift (per-row, element-wise: batch-invariant); parameters ``(2,)`` each."""

    def __init__(self):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.full((2,), 0.5))
        self.shift = torch.nn.Parameter(torch.zeros(2))

    def forward(self, x, t):
        return x * self.scale + self.shift


def save_eps_net(path, scale=0.5, shift=0.0):
    """Write the weights of a :class:`DiagonalEpsNet` to ``path`` (a "checkpoint", retrained = other values)."""
    net = DiagonalEpsNet()
    with torch.no_grad():
        net.scale.fill_(scale)
        net.shift.fill_(shift)
    torch.save(net.state_dict(), path)


def eps_net_score(path):
    """Model factory: a :class:`DiagonalEpsNet` loaded from ``path``, as a score via ``score_from_epsilon`` (VPSDE)."""
    import sdekit

    net = DiagonalEpsNet()
    net.load_state_dict(torch.load(path, weights_only=True))
    return sdekit.score_from_epsilon(net.requires_grad_(False), sdekit.VPSDE())
