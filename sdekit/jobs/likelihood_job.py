"""Sharded, resumable log-likelihood / bits-per-dim over a data set: :func:`run_likelihood_job`.

Row ``i`` of the data is scored by ``sdekit.log_likelihood(..., seed=seed,
sample_index=[i])`` (with ``model_kwargs=conditioner([i])`` in a job with
conditioning, :mod:`sdekit.jobs.conditioning`: the pair of data row ``i`` and
the condition of index ``i``): its Hutchinson probes are keyed by ``(seed, i)``,
and the adaptive ODE controls each row's steps on its own, so the numbers do
not depend on the batch size or number of ranks (given a batch-invariant
score model, see :mod:`sdekit.jobs.sample_job`).  Ranks never exchange anything
while integrating (k-diffusion's DDP likelihood hangs when ranks take
different NFE); the summary is computed once, by rank 0, from the shards.
"""

from __future__ import annotations

import math

import torch

from .._checks import check_choice, check_positive_int
from ..faults import NonFiniteMonitor
from ..likelihood.bits import bits_per_dim
from ..likelihood.log_likelihood import log_likelihood
from .conditioning import build_conditioning, check_cond_spec
from .config import environment
from .defaults import LIKELIHOOD
from .distributed import join
from .factory import build, build_sde, check_sde_spec, check_spec
from .fault_policy import apply_policy, check_policy
from .fingerprint import check_model_version, fingerprint_entry
from .runner import JobSpec, run_job
from .sample_job import DTYPES
from .split import batches


def likelihood_config(*, model, model_kwargs=None, data, data_kwargs=None, num_samples, sde="VPSDE",
                      sde_kwargs=None, shard_size, seed, trace=LIKELIHOOD["trace"], probes=LIKELIHOOD["probes"],
                      noise=LIKELIHOOD["noise"], rtol=LIKELIHOOD["rtol"], atol=LIKELIHOOD["atol"],
                      eps=LIKELIHOOD["eps"], max_steps=LIKELIHOOD["max_steps"], levels=None, data_range=None,
                      dtype="float32", device="cpu", on_nonfinite="raise", cond=None, cond_kwargs=None) -> dict:
    """The checked configuration of a likelihood job (arguments as in :func:`run_likelihood_job`).

    ``"cond"`` is a key only of a job with conditioning (see :func:`~sdekit.jobs.sample_job.sample_config`).

    Raises:
        ValueError / TypeError: naming the bad argument.
    """
    check_choice("trace", trace, ("hutchinson", "exact"))
    check_choice("noise", noise, ("rademacher", "gaussian"))
    check_choice("dtype", dtype, tuple(DTYPES))
    check_choice("device", device, ("cpu", "cuda"))
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63:
        raise ValueError(f"seed must be an integer in [0, 2**63), got {seed!r}")
    if (levels is None) != (data_range is None):
        raise ValueError("levels and data_range go together (both for bits/dim, or neither)")
    if levels is not None:
        levels = check_positive_int("levels", levels)
        data_range = [float(v) for v in data_range]
        if len(data_range) != 2 or not data_range[1] > data_range[0]:
            raise ValueError(f"data_range must be [lo, hi] with hi > lo, got {data_range}")
    cond_spec = check_cond_spec(cond, cond_kwargs)
    config = {"model": check_spec("model", model, model_kwargs), "data": check_spec("data", data, data_kwargs),
              "num_samples": check_positive_int("num_samples", num_samples),
              "sde": check_sde_spec(sde, sde_kwargs), "shard_size": check_positive_int("shard_size", shard_size),
              "seed": seed, "trace": trace, "probes": check_positive_int("probes", probes), "noise": noise,
              "rtol": float(rtol), "atol": float(atol), "eps": float(eps),
              "max_steps": check_positive_int("max_steps", max_steps), "levels": levels, "data_range": data_range,
              "dtype": dtype, "device_type": device, "on_nonfinite": check_policy(on_nonfinite), **environment()}
    if cond_spec is not None:
        config["cond"] = cond_spec
    return config


def run_likelihood_job(out_dir, *, batch_size: int = 64, num_samples: int | None = None,
                       model_version: str | None = None, **config_args):
    """Score every row of a data set into ``out_dir`` in shards; resume if it holds this job already.

    Rank 0 writes ``log_likelihood.pt`` (``sample_index`` ``(N,)``, ``log_prob``,
    ``stderr``, ``prior_log_prob`` ``(N,)`` in nats, ``nfe`` ``(N,)`` int64) and
    ``result.json`` whose summary holds the mean log-likelihood (nats) with
    its standard error over the data, bits/dim (with ``levels`` and
    ``data_range``; convention of :func:`sdekit.bits_per_dim`), and how many
    rows were excluded as faults.

    Args:
        out_dir: output directory.
        batch_size: rows per :func:`sdekit.log_likelihood` call (not part of the configuration).
        num_samples: rows to score, ``[0, num_samples)`` (default: all of the data).
        model, model_kwargs: score-model factory (see :func:`~sdekit.jobs.run_sample_job`).
        data, data_kwargs: data factory ``"package.module:factory"`` returning a
            float tensor ``(N, *D)`` of (already dequantised) data, the same
            on every call (seed any dequantisation noise in the factory).
        sde, sde_kwargs, trace, probes, noise, rtol, atol, eps, max_steps: as
            in :func:`sdekit.log_likelihood`; seed keys the probes.
        levels, data_range: for bits/dim (:func:`sdekit.bits_per_dim`), or ``None``.
        dtype, device, on_nonfinite: as in :func:`~sdekit.jobs.run_sample_job`.
        cond, cond_kwargs: conditioning factory and its arguments, as in
            :func:`~sdekit.jobs.run_sample_job`: row ``i`` is scored with
            ``model_kwargs=conditioner([i])``, so ``log_prob[i]`` is
            ``log p(x_i | c_i)`` for the pair (data row ``i``, condition of index ``i``).
        model_version: as in :func:`~sdekit.jobs.run_sample_job` (``None``: the
            weights' sha256; a string: used instead), the configuration's
            ``"model_fingerprint"`` (:mod:`sdekit.jobs.fingerprint`).
    Returns:
        :class:`~sdekit.jobs.runner.JobResult`.
    Raises:
        ValueError / TypeError: on a bad argument (named) or data of the wrong kind.
        ConfigMismatchError: if ``out_dir`` holds a job with another configuration
            (``cond`` and ``cond_kwargs`` included; other model weights or
            ``model_version``, naming ``model_fingerprint``; or a directory
            written before model fingerprints existed).
        OutputDirectoryBusyError: if another job is running in ``out_dir``
            (names the directory and the holder's pid and host; :mod:`sdekit.jobs.lock`).
        TypeError / ValueError: naming the conditioning factory, if it returns no
            callable, or a conditioner's output is not a mapping of ``(b, …)`` tensors.
        NonFiniteError: under ``on_nonfinite="raise"``, with row index, evaluation and ``t``.
    """
    batch_size = check_positive_int("batch_size", batch_size)
    model_version = check_model_version(model_version)
    probe = likelihood_config(num_samples=1, **config_args)  # checks the arguments before building anything
    device = probe["device_type"]
    data = build("data", probe["data"])
    if not isinstance(data, torch.Tensor) or not data.is_floating_point() or data.dim() < 2:
        raise TypeError(f"data factory {probe['data']['factory']!r} must return a float tensor (N, *D)")
    n = data.shape[0] if num_samples is None else num_samples
    if not 1 <= n <= data.shape[0]:
        raise ValueError(f"num_samples must lie in [1, {data.shape[0]}] (the data's rows), got {num_samples}")
    config = likelihood_config(num_samples=n, **config_args)
    config["data_shape"] = list(data.shape[1:])
    ctx = join(device)
    score, sde = build("model", config["model"]), build_sde(config["sde"])
    config["model_fingerprint"] = fingerprint_entry(score, model_version)
    cond = build_conditioning(config.get("cond"), ctx.device)
    data = data.to(device=ctx.device, dtype=DTYPES[config["dtype"]])
    compute = _shard_computer(config, score, sde, cond, data, batch_size, ctx.device)
    dt = config["dtype"]
    tensors: dict[str, tuple[str, list[int]]] = {  # what every shard holds (checked on resume)
        "sample_index": ("int64", []), "log_prob": (dt, []), "stderr": (dt, []),
        "prior_log_prob": (dt, []), "nfe": ("int64", [])}
    spec = JobSpec("loglik", config, n, config["shard_size"], "log_likelihood.pt", compute,
                   lambda merged, faults: _summarize(merged, faults, config), tensors)
    return run_job(out_dir, spec, ctx)


def _shard_computer(config: dict, score, sde, cond, data, batch_size: int, device):
    kw = {k: config[k] for k in ("trace", "probes", "noise", "rtol", "atol", "eps", "max_steps", "seed")}

    def compute(start: int, stop: int):
        keys = ("sample_index", "log_prob", "stderr", "prior_log_prob", "nfe")
        out: dict[str, list[torch.Tensor]] = {k: [] for k in keys}
        faults: list[dict] = []
        for lo, hi in batches(start, stop, batch_size):
            idx = torch.arange(lo, hi, dtype=torch.int64, device=device)
            monitor = NonFiniteMonitor(idx)
            model_kwargs = None if cond is None else cond(idx)
            res = log_likelihood(score, sde, data[lo:hi], sample_index=idx, monitor=monitor,
                                 model_kwargs=model_kwargs, **kw)
            faults += apply_policy(monitor, config["on_nonfinite"], "the likelihood ODE")
            for key, v in (("sample_index", idx), ("log_prob", res.log_prob), ("stderr", res.stderr),
                           ("prior_log_prob", res.prior_log_prob), ("nfe", res.nfe)):
                out[key].append(v.detach().cpu())
        return {k: torch.cat(v) for k, v in out.items()}, faults

    return compute


def _mean_and_stderr(v: torch.Tensor):
    n = v.numel()
    if n == 0:
        return None, None
    mean = float(v.double().mean())
    return mean, (float(v.double().std() / math.sqrt(n)) if n > 1 else None)


def _summarize(merged: dict, faults: list, config: dict) -> dict:
    keep = torch.ones(merged["sample_index"].shape[0], dtype=torch.bool)
    keep[[f["sample_index"] for f in faults]] = False
    log_prob = merged["log_prob"][keep]
    mean, se = _mean_and_stderr(log_prob)
    summary = {"num_samples": int(keep.numel()), "excluded": len(faults), "included": int(keep.sum()),
               "log_prob_mean": mean, "log_prob_stderr": se,
               "mean_nfe": float(merged["nfe"][keep].double().mean()) if bool(keep.any()) else None}
    if config["levels"] is not None:
        dim = math.prod(config["data_shape"])
        bpd = bits_per_dim(log_prob.double(), dim, config["levels"], tuple(config["data_range"]))
        summary["bits_per_dim"], summary["bits_per_dim_stderr"] = _mean_and_stderr(bpd)
    return summary
