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
    """Environment of a job subprocess: this checkout first on the path, one thread."""
    e = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
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
