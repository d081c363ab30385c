"""Sharded, resumable sampling: :func:`run_sample_job`.

Sample ``i`` of the job is ``sdekit.sample(..., seed=seed, sample_index=[i])``
(with ``model_kwargs=conditioner([i])`` in a job with conditioning,
:mod:`sdekit.jobs.conditioning`) whatever shard, batch or rank computes it: every random draw is keyed by
``(seed, i)`` (:mod:`sdekit.noise`) and the adaptive ODE solver controls each
sample's steps on its own.  Bitwise equality across batch sizes and numbers
of ranks needs a batch-invariant score model on the device used: a model
whose output row ``b`` depends only on input row ``b`` *bit for bit*.
Element-wise and per-row arithmetic is; a matrix multiply may not be (on
the CPU a batch of 1 takes a different kernel than a batch of 7).
"""

from __future__ import annotations

import math

import torch

from .._checks import check_choice, check_positive_int
from ..faults import NonFiniteMonitor
from ..sampling.sample import SAMPLE_METHODS, sample
from .conditioning import build_conditioning, check_cond_spec
from .config import environment
from .defaults import SAMPLE
from .distributed import join
from .factory import build, build_sde, check_sde_spec, check_spec
from .fault_policy import apply_policy, check_policy
from .fingerprint import check_model_version, fingerprint_entry
from .runner import JobSpec, run_job
from .split import batches

DTYPES = {"float32": torch.float32, "float64": torch.float64}


def sample_config(*, model, model_kwargs=None, sde="VPSDE", sde_kwargs=None, shape, num_samples, shard_size,
                  seed, method=SAMPLE["method"], steps=SAMPLE["steps"], corrector=SAMPLE["corrector"],
                  snr=SAMPLE["snr"], corrector_steps=SAMPLE["corrector_steps"], eps=SAMPLE["eps"],
                  denoise=SAMPLE["denoise"], rtol=SAMPLE["rtol"], atol=SAMPLE["atol"],
                  max_steps=SAMPLE["max_steps"], dtype="float32",
                  device="cpu", on_nonfinite="raise", cond=None, cond_kwargs=None) -> dict:
    """The checked configuration of a sampling job (arguments as in :func:`run_sample_job`).

    A job with conditioning has the key ``"cond"`` (``{"factory", "kwargs"}``);
    one without has none (its hash is unchanged by the conditioning feature).

    Raises:
        ValueError / TypeError: naming the bad argument.
    """
    check_choice("method", method, SAMPLE_METHODS)
    check_choice("dtype", dtype, tuple(DTYPES))
    check_choice("device", device, ("cpu", "cuda"))
    shape = [check_positive_int("shape entry", s) for s in shape]
    if not shape:
        raise ValueError("shape must be the per-sample shape D (at least one entry), got []")
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63:
        raise ValueError(f"seed must be an integer in [0, 2**63), got {seed!r}")
    cond_spec = check_cond_spec(cond, cond_kwargs)
    config = {"model": check_spec("model", model, model_kwargs), "sde": check_sde_spec(sde, sde_kwargs),
              "shape": shape, "num_samples": check_positive_int("num_samples", num_samples),
              "shard_size": check_positive_int("shard_size", shard_size), "seed": seed, "method": method,
              "steps": check_positive_int("steps", steps), "corrector": corrector, "snr": float(snr),
              "corrector_steps": check_positive_int("corrector_steps", corrector_steps),
              "eps": None if eps is None else float(eps), "denoise": bool(denoise), "rtol": float(rtol),
              "atol": float(atol), "max_steps": check_positive_int("max_steps", max_steps), "dtype": dtype,
              "device_type": device, "on_nonfinite": check_policy(on_nonfinite), **environment()}
    if cond_spec is not None:
        config["cond"] = cond_spec
    return config


def run_sample_job(out_dir, *, batch_size: int = 64, model_version: str | None = None, **config_args):
    """Draw ``num_samples`` samples into ``out_dir`` in shards; resume if it holds this job already.

    Under ``torchrun --nproc-per-node N`` each rank computes its shards
    (:mod:`sdekit.jobs.split`), then rank 0 writes ``samples.pt`` (tensors
    ``sample_index`` ``(N,)`` int64, ``x`` ``(N, *shape)``, ``nfe`` and
    ``steps`` ``(N,)`` int64) and ``result.json``; see :mod:`sdekit.jobs.runner`.

    Args:
        out_dir: output directory (created if needed).
        batch_size: samples per :func:`sdekit.sample` call (not part of the
            configuration: results do not depend on it).
        model: import path ``"package.module:factory"``; ``factory(**model_kwargs)``
            returns the score model ``score(x, t)`` (``(B, *shape)``, ``(B,)`` → ``(B, *shape)``),
            called ``score(x, t, **conditioner(sample_index))`` in a job with ``cond``.
        model_kwargs: JSON object of keyword arguments for the factory (not the
            model's per-sample conditioning: that is ``cond``).
        sde, sde_kwargs: name of an SDE class of :mod:`sdekit.sdes` and its arguments.
        shape: per-sample shape ``D`` (list of ints).
        num_samples, shard_size: sample indices ``[0, num_samples)``, ``shard_size`` per shard.
        seed: noise key, integer in [0, 2⁶³).
        method, steps, corrector, snr, corrector_steps, eps, denoise, rtol,
            atol, max_steps: as in :func:`sdekit.sample`.
        dtype: ``"float32"`` or ``"float64"``; device: ``"cpu"`` or ``"cuda"``.
        on_nonfinite: ``"raise"`` or ``"mark"`` (:mod:`sdekit.jobs.fault_policy`).
        cond: ``None`` (unconditional) or a conditioning factory
            ``"package.module:factory"``: ``factory(**cond_kwargs)`` returns
            ``conditioner(sample_index)``, which maps the ``(b,)`` int64 global
            indices of a batch to the model's keyword arguments (tensors
            ``(b, …)``); sample ``i`` is then ``sdekit.sample(...,
            sample_index=[i], model_kwargs=conditioner([i]))``
            (:mod:`sdekit.jobs.conditioning`).
        cond_kwargs: JSON object of keyword arguments for the conditioning factory.
        model_version: ``None`` (default) to identify the model by the sha256 of
            its weights (the state dicts of the ``nn.Module`` it is or wraps), or a
            non-empty string used instead (``"version:<text>"``); a model with no
            module is ``"unfingerprinted"``.  Part of the configuration as
            ``"model_fingerprint"`` (:mod:`sdekit.jobs.fingerprint`).
    Returns:
        :class:`~sdekit.jobs.runner.JobResult`; its ``summary`` (rank 0) has
        ``num_samples``, ``excluded`` (faulted samples) and ``mean_nfe`` over the others.
    Raises:
        ValueError / TypeError: on a bad argument (named).
        ConfigMismatchError: if ``out_dir`` holds a job with another configuration
            (also another ``cond`` or ``cond_kwargs``, or one with and one without;
            other model weights or ``model_version``, naming ``model_fingerprint``;
            or a directory written before model fingerprints existed).
        OutputDirectoryBusyError: if another job is running in ``out_dir``
            (names the directory and the holder's pid and host; :mod:`sdekit.jobs.lock`).
        TypeError / ValueError: naming the conditioning factory, if it returns no
            callable, or a conditioner's output is not a mapping of ``(b, …)`` tensors.
        NonFiniteError: under ``on_nonfinite="raise"``, with sample index, step and ``t``.
        ToleranceNotMetError: if RK45 exceeds ``max_steps`` (``method="ode"``).
    """
    config = sample_config(**config_args)
    batch_size = check_positive_int("batch_size", batch_size)
    model_version = check_model_version(model_version)
    ctx = join(config["device_type"])
    score, sde = build("model", config["model"]), build_sde(config["sde"])
    config["model_fingerprint"] = fingerprint_entry(score, model_version)
    cond = build_conditioning(config.get("cond"), ctx.device)
    compute = _shard_computer(config, score, sde, cond, batch_size, ctx.device)
    tensors: dict[str, tuple[str, list[int]]] = {  # what every shard holds (checked on resume)
        "sample_index": ("int64", []), "x": (config["dtype"], list(config["shape"])),
        "nfe": ("int64", []), "steps": ("int64", [])}
    spec = JobSpec("sample", config, config["num_samples"], config["shard_size"], "samples.pt", compute,
                   _summarize, tensors)
    return run_job(out_dir, spec, ctx)


def _shard_computer(config: dict, score, sde, cond, batch_size: int, device):
    kw = {k: config[k] for k in ("method", "steps", "corrector", "snr", "corrector_steps", "eps", "denoise",
                                 "rtol", "atol", "max_steps", "seed")}
    shape, dtype = tuple(config["shape"]), DTYPES[config["dtype"]]

    def compute(start: int, stop: int):
        out: dict[str, list[torch.Tensor]] = {"sample_index": [], "x": [], "nfe": [], "steps": []}
        faults: list[dict] = []
        for lo, hi in batches(start, stop, batch_size):
            idx = torch.arange(lo, hi, dtype=torch.int64, device=device)
            monitor = NonFiniteMonitor(idx)
            model_kwargs = None if cond is None else cond(idx)
            with torch.no_grad():
                res = sample(score, sde, (hi - lo,) + shape, sample_index=idx, monitor=monitor, device=device,
                             dtype=dtype, model_kwargs=model_kwargs, **kw)
            faults += apply_policy(monitor, config["on_nonfinite"], "sampling")
            for key, v in (("sample_index", idx), ("x", res.x), ("nfe", res.nfe), ("steps", res.steps)):
                out[key].append(v.cpu())
        return {k: torch.cat(v) for k, v in out.items()}, faults

    return compute


def _summarize(merged: dict, faults: list) -> dict:
    keep = torch.ones(merged["sample_index"].shape[0], dtype=torch.bool)
    keep[[f["sample_index"] for f in faults]] = False
    n = int(keep.sum())
    mean_nfe = float(merged["nfe"][keep].double().mean()) if n else None
    return {"num_samples": int(keep.numel()), "excluded": len(faults), "included": n,
            "mean_nfe": None if mean_nfe is None or math.isnan(mean_nfe) else mean_nfe}
